//! Builds an event, encodes it as the Kafka record a Rust service sends,
//! and decodes a record written by a TypeScript service.

use std::num::NonZeroU32;

use mes_events_types::{
    DomainEvent, EncodeOptions, KafkaRecord, PartFields, PartUpdated, decode, encode, partition_for_key,
};

fn main() -> Result<(), mes_events_types::Error> {
    let event = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: "P-99999".into(),
            part_name: "Landing Gear Strut".into(),
            revision: None,
            changes: PartFields {
                part_number: Some("P-99999".into()),
                ..Default::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", "P-12345");
    let record = encode(&event, &EncodeOptions::default())?;
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
    let partitions = NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN);
    println!(
        "encoded {} for topic {}, key {key}, partition {} of {partitions}",
        event.event_type(),
        event.topic()?,
        partition_for_key(key.as_bytes(), partitions)
    );
    let back = decode(&record)?.into_typed::<PartUpdated>()?;
    assert_eq!(back, event, "encode then decode is the identity");

    // What the TypeScript Material service writes today (testdata/wire/event-part-updated.json).
    let legacy = KafkaRecord {
        key: Some(b"P-12345".to_vec()),
        headers: vec![
            ("ce-specversion".into(), b"1.0".to_vec()),
            ("ce-type".into(), b"material.part.updated".to_vec()),
            ("ce-source".into(), b"material-service".to_vec()),
            ("ce-id".into(), b"evt_1760789696789_k3j9x0a1b".to_vec()),
            ("ce-time".into(), b"2025-10-18T12:14:56.789Z".to_vec()),
            ("ce-datacontenttype".into(), b"application/json".to_vec()),
        ],
        value: Some(
            br#"{"specversion":"1.0","type":"material.part.updated","source":"material-service","id":"evt_1760789696789_k3j9x0a1b","time":"2025-10-18T12:14:56.789Z","datacontenttype":"application/json","data":{"partId":"P-12345","partNumber":"P-99999","partName":"Landing Gear Strut","changes":{"partNumber":"P-99999"},"previousValues":{"partNumber":"P-12345"}},"metadata":{"userId":"user-123","action":"update"}}"#
                .to_vec(),
        ),
    };
    let decoded = decode(&legacy)?.into_typed::<PartUpdated>()?;
    println!(
        "decoded legacy record {}: part {} renumbered to {} ({})",
        decoded.id(),
        decoded.data().part_id,
        decoded.data().part_number,
        decoded.data().part_name
    );
    Ok(())
}
