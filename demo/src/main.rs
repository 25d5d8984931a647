//! `cargo xtask demo`: the cache-sync scenario of the legacy docs, narrated.
//!
//! So far the workspace has the event schemas and their Kafka codec; the
//! Redis cache, the publisher and the consumer arrive with their crates.
//! Until then the demo shows the part of the scenario that exists: the
//! event the Material service announces, exactly as it goes on the wire,
//! and how a legacy TypeScript record of the same change is read.

use std::num::NonZeroU32;
use std::process::ExitCode;

use mes_events_types::{
    ContentMode, DomainEvent, EncodeOptions, EventMetadata, KafkaRecord, PartFields, PartUpdated, decode,
    encode, partition_for_key,
};

const LEGACY_RECORD_VALUE: &str = r#"{"specversion":"1.0","type":"material.part.updated","source":"material-service","id":"evt_1760789696789_k3j9x0a1b","time":"2025-10-18T12:14:56.789Z","datacontenttype":"application/json","data":{"partId":"P-12345","partNumber":"P-99999","partName":"Landing Gear Strut","changes":{"partNumber":"P-99999"},"previousValues":{"partNumber":"P-12345"}},"metadata":{"userId":"user-123","action":"update"}}"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn show_record(record: &KafkaRecord) {
    println!(
        "    key     {}",
        String::from_utf8_lossy(record.key.as_deref().unwrap_or_default())
    );
    for (name, value) in &record.headers {
        println!("    header  {name}: {}", String::from_utf8_lossy(value));
    }
    println!(
        "    value   {}",
        String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
    );
}

fn run() -> Result<(), mes_events_types::Error> {
    println!("MES cache-sync demo");
    println!("===================");
    println!("Available in this build: the event schemas and their Kafka wire codec (mes-events-types).");
    println!("Not yet built: the Redis cache (mes-cache), the Kafka publisher (mes-publisher) and the");
    println!("consumer (mes-sync); the Redis and Kafka steps of the scenario arrive with them.\n");

    println!("1. The Material service renames part P-12345's number to P-99999 and announces it:");
    let event = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: "P-99999".into(),
            part_name: "Landing Gear Strut".into(),
            revision: Some("C".into()),
            changes: PartFields {
                part_number: Some("P-99999".into()),
                ..PartFields::default()
            },
            previous_values: Some(PartFields {
                part_number: Some("P-12345".into()),
                ..PartFields::default()
            }),
        },
    )
    .with_entity("Part", "P-12345")
    .with_metadata(EventMetadata::for_user("user-123"));
    let six = NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN);
    println!(
        "   event {} of type {}, topic {}, partition {} of 6 (kafkajs-compatible murmur2 of the key)\n",
        event.id(),
        event.event_type(),
        event.topic()?,
        partition_for_key(event.partition_key().as_bytes(), six)
    );

    println!("2. On the wire, CloudEvents structured mode with the legacy ce-* headers (the default):");
    let record = encode(&event, &EncodeOptions::default())?;
    show_record(&record);
    println!("\n   and in binary mode, on request:");
    show_record(&encode(
        &event,
        &EncodeOptions::default().mode(ContentMode::Binary),
    )?);

    println!("\n3. A work-order service decodes it back into the typed event:");
    let decoded = decode(&record)?.into_typed::<PartUpdated>()?;
    println!(
        "   {} now has number {} (was {}); identical to what was sent: {}",
        decoded.data().part_id,
        decoded.data().part_number,
        decoded
            .data()
            .previous_values
            .as_ref()
            .and_then(|p| p.part_number.as_deref())
            .unwrap_or("?"),
        decoded == event
    );

    println!("\n4. The same change as a TypeScript service writes it today is read the same way:");
    let legacy = KafkaRecord {
        key: Some(b"P-12345".to_vec()),
        headers: vec![("ce-type".into(), b"material.part.updated".to_vec())],
        value: Some(LEGACY_RECORD_VALUE.as_bytes().to_vec()),
    };
    let legacy_event = decode(&legacy)?.into_typed::<PartUpdated>()?;
    println!(
        "   legacy event {} for entity {}: number {}, changed by {}",
        legacy_event.id(),
        legacy_event.entity_id().unwrap_or("?"),
        legacy_event.data().part_number,
        legacy_event
            .metadata()
            .and_then(|m| m.user_id.as_deref())
            .unwrap_or("?")
    );
    Ok(())
}
