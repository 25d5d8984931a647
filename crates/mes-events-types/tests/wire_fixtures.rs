//! The records the TypeScript services write decode to the events they
//! mean, and what Rust writes from them decodes back to the same events.
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mes_events_types::{
    ContentMode, DomainEvent, EncodeOptions, EventType, InspectionCompleted, InspectionResult, KafkaRecord,
    MaterialEventType, PartUpdated, RecordFormat, Timestamp, WorkOrderStatusChanged, decode, detect_format,
    encode, encode_parts, partition_for_key,
};
use mes_testkit::{WireRecordFixture, partitioner_rows};
use serde_json::{Value, json};
use std::num::NonZeroU32;

fn record_of(fixture: &WireRecordFixture) -> KafkaRecord {
    KafkaRecord {
        key: Some(fixture.key.as_bytes().to_vec()),
        headers: fixture
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect(),
        value: Some(fixture.value.as_bytes().to_vec()),
    }
}

fn decoded(name: &str) -> DomainEvent<Value> {
    let fixture = WireRecordFixture::load(name);
    let record = record_of(&fixture);
    assert_eq!(detect_format(&record).unwrap(), RecordFormat::Legacy, "{name}");
    let event = decode(&record).unwrap();
    assert_eq!(event.topic().unwrap(), fixture.topic, "{name}: topic");
    event
}

#[test]
fn part_updated_fixture_decodes_with_entity_from_key_and_metadata() {
    let event = decoded("event-part-updated.json");
    assert_eq!(event.event_type(), &MaterialEventType::PartUpdated);
    assert_eq!(event.id().as_str(), "evt_1760789696789_k3j9x0a1b");
    assert_eq!(event.source(), "material-service");
    assert_eq!(
        event.time(),
        Timestamp::parse("2025-10-18T12:14:56.789Z").unwrap()
    );
    assert_eq!(event.entity_id(), Some("P-12345"));
    assert_eq!(event.entity_type(), None, "the legacy wire does not carry it");
    assert_eq!(event.correlation_id(), None);
    let metadata = event.metadata().unwrap();
    assert_eq!(metadata.user_id.as_deref(), Some("user-123"));
    assert_eq!(metadata.extra.get("action"), Some(&json!("update")));

    let typed = event.into_typed::<PartUpdated>().unwrap();
    let data = typed.data();
    assert_eq!(data.part_id, "P-12345");
    assert_eq!(data.part_number, "P-99999");
    assert_eq!(data.part_name, "Landing Gear Strut");
    assert_eq!(data.changes.part_number.as_deref(), Some("P-99999"));
    assert_eq!(
        data.previous_values
            .as_ref()
            .and_then(|p| p.part_number.as_deref()),
        Some("P-12345")
    );
}

#[test]
fn status_changed_fixture_takes_correlation_and_causation_from_headers() {
    let event = decoded("event-workorder-status-changed.json");
    assert_eq!(event.event_type().as_str(), "workorder.status.changed");
    assert_eq!(event.id().as_str(), "evt_1760789696790_q8w2e4r6t");
    assert_eq!(event.source(), "work-order-service");
    assert_eq!(event.entity_id(), Some("WO-1001"));
    assert_eq!(event.correlation_id(), Some("req-5f2c"));
    assert_eq!(event.causation_id(), Some("evt_1760789696789_k3j9x0a1b"));
    let typed = event.into_typed::<WorkOrderStatusChanged>().unwrap();
    assert_eq!(typed.data().new_status, "IN_PROGRESS");
    assert_eq!(
        typed.data().changed_at,
        Timestamp::parse("2025-10-18T12:14:56.790Z").unwrap()
    );
}

#[test]
fn inspection_fixture_keyed_by_event_id_has_no_entity() {
    let event = decoded("event-inspection-completed-no-entity.json");
    assert_eq!(event.entity_id(), None);
    assert_eq!(event.partition_key(), "evt_1760789696791_a1s2d3f4g");
    let typed = event.into_typed::<InspectionCompleted>().unwrap();
    assert_eq!(typed.data().result, InspectionResult::Fail);
    assert_eq!(typed.data().part_id, None);
}

#[test]
fn unknown_type_fixture_is_carried_and_routed() {
    let event = decoded("event-unknown-type.json");
    assert!(!event.event_type().is_known());
    assert_eq!(event.event_type().as_str(), "maintenance.tool.calibrated");
    assert_eq!(event.entity_id(), Some("T-77"));
    assert_eq!(
        event.data(),
        &json!({"toolId": "T-77", "calibratedBy": "user-3", "nextDue": "2026-04-18"})
    );
    let error = event.clone().into_typed::<PartUpdated>().unwrap_err();
    assert_eq!(
        error.into_raw_event(),
        Some(event),
        "the raw event survives a failed typed view"
    );
}

#[test]
fn every_fixture_reencodes_in_both_modes_to_an_equal_event() {
    let fixtures = WireRecordFixture::all();
    assert_eq!(fixtures.len(), 4);
    for fixture in fixtures {
        let event = decode(&record_of(&fixture)).unwrap();
        for mode in [ContentMode::Structured, ContentMode::Binary] {
            for legacy in [true, false] {
                let options = EncodeOptions::default().mode(mode).legacy_headers(legacy);
                let record = encode(&event, &options).unwrap();
                assert_eq!(
                    record.key.as_deref(),
                    Some(fixture.key.as_bytes()),
                    "{}",
                    fixture.name
                );
                assert_eq!(
                    decode(&record).unwrap(),
                    event,
                    "{} {mode:?} legacy={legacy}",
                    fixture.name
                );
            }
        }
    }
}

#[test]
fn encode_parts_writes_what_encode_writes() {
    for fixture in WireRecordFixture::all() {
        let event = decode(&record_of(&fixture)).unwrap();
        for mode in [ContentMode::Structured, ContentMode::Binary] {
            for legacy in [true, false] {
                let options = EncodeOptions::default().mode(mode).legacy_headers(legacy);
                let mut value = b"kept".to_vec();
                let mut headers = Vec::new();
                encode_parts(&event, &options, &mut value, |name, v| {
                    headers.push((name.to_owned(), v.as_bytes().to_vec()));
                })
                .unwrap();
                let record = encode(&event, &options).unwrap();
                let what = format!("{} {mode:?} legacy={legacy}", fixture.name);
                assert_eq!(value.get(..4), Some(&b"kept"[..]), "{what}: appends");
                assert_eq!(record.value.as_deref(), value.get(4..), "{what}");
                assert_eq!(record.headers, headers, "{what}");
            }
        }
    }
}

#[test]
fn structured_records_keep_the_legacy_value_and_headers() {
    // A legacy consumer reads the value and the ce-* headers; everything it
    // reads from a legacy record must be in a Rust record with the same values.
    for fixture in WireRecordFixture::all() {
        let event = decode(&record_of(&fixture)).unwrap();
        let record = encode(&event, &EncodeOptions::default()).unwrap();
        for (name, value) in &fixture.headers {
            assert_eq!(
                record.header(name),
                Some(value.as_bytes()),
                "{}: header {name}",
                fixture.name
            );
        }
        let legacy: Value = serde_json::from_str(&fixture.value).unwrap();
        let ours: Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        for (field, value) in legacy.as_object().unwrap() {
            assert_eq!(
                ours.get(field),
                Some(value),
                "{}: value field {field}",
                fixture.name
            );
        }
        assert_eq!(
            record.header("content-type"),
            Some(&b"application/cloudevents+json; charset=UTF-8"[..])
        );
    }
}

#[test]
fn partitioner_matches_every_kafkajs_row() {
    let rows = partitioner_rows();
    assert_eq!(rows.len(), 28);
    for (key, partitions, expected) in rows {
        let count = NonZeroU32::new(partitions).unwrap();
        assert_eq!(
            partition_for_key(key.as_bytes(), count),
            expected,
            "key {key:?} over {partitions} partitions"
        );
    }
}

#[test]
fn typed_events_encode_under_their_own_type_only() {
    let event = DomainEvent::new(
        "work-order-service",
        WorkOrderStatusChanged {
            work_order_id: "WO-1".into(),
            work_order_number: "WO-2025-1".into(),
            previous_status: "RELEASED".into(),
            new_status: "IN_PROGRESS".into(),
            changed_at: Timestamp::now(),
            changed_by: "user-7".into(),
        },
    );
    assert_eq!(
        event.event_type(),
        &EventType::parse("workorder.status.changed").unwrap()
    );
    let record = encode(&event, &EncodeOptions::default()).unwrap();
    let error = mes_events_types::decode_typed::<PartUpdated>(&record).unwrap_err();
    assert!(
        matches!(error, mes_events_types::Error::WrongEventType { .. }),
        "{error}"
    );
}

/// An empty entity id is no entity id: the record is keyed by the event id,
/// as a legacy producer keys an event without an entity, in both content
/// modes, and no empty `entityid` travels.
#[test]
fn an_empty_entity_id_keys_the_record_by_the_event_id() {
    use mes_events_types::{ContentMode, DomainEvent, EncodeOptions, PartDeleted, Timestamp, encode};
    let event = DomainEvent::new(
        "material-service",
        PartDeleted {
            part_id: "P-1".into(),
            part_number: "N-1".into(),
            deleted_at: Timestamp::now(),
        },
    )
    .with_entity("Part", "");
    assert_eq!(event.entity_id(), None);
    assert_eq!(event.partition_key(), event.id().as_str());
    assert_eq!(
        event.clone().with_entity_id("").partition_key(),
        event.id().as_str()
    );
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        let record = encode(&event, &EncodeOptions::default().mode(mode)).unwrap();
        assert_eq!(
            record.key.as_deref(),
            Some(event.id().as_str().as_bytes()),
            "{mode:?}"
        );
        assert!(record.header("ce_entityid").is_none(), "{mode:?}");
        let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
        assert!(!value.contains("\"entityid\":\"\""), "{mode:?}: {value}");
    }
}
