//! What the Rust codec writes, in structured and in binary mode, is decoded
//! correctly by an independent implementation: the Kafka binding of the
//! Python `cloudevents` SDK (`cloudevents.core.bindings.kafka`).
//!
//! Needs `MES_TEST_PYTHON`: an interpreter with `cloudevents` installed;
//! `cargo xtask test` provides one.
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::process::{Command, Stdio};

use mes_events_types::{
    ContentMode, DomainEvent, EncodeOptions, EventMetadata, EventType, KafkaRecord, PartFields, PartUpdated,
    Timestamp, encode,
};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn python_decode(records: &[KafkaRecord]) -> Vec<Value> {
    let input: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "key": r.key.as_deref().map(hex),
                "headers": r.headers.iter().map(|(n, v)| json!([n, hex(v)])).collect::<Vec<_>>(),
                "value": hex(r.value.as_deref().unwrap_or_default()),
            })
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/decode_kafka.py");
    let mut child = Command::new(mes_testkit::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python interpreter of MES_TEST_PYTHON");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&input).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Python SDK failed to decode: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn sample_events() -> Vec<DomainEvent> {
    let part = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: "P-99999".into(),
            part_name: "Landing Gear Strut Ω".into(),
            revision: None,
            changes: PartFields {
                part_number: Some("P-99999".into()),
                ..PartFields::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", "P-12345")
    .with_subject("parts/P-12345")
    .with_correlation_id("req-5f2c")
    .with_causation_id("evt_1760789696789_k3j9x0a1b")
    .with_metadata(EventMetadata::for_user("user-123"))
    .into_raw()
    .unwrap();
    let unknown = DomainEvent::new_raw(
        EventType::parse("maintenance.tool.calibrated").unwrap(),
        "maintenance-service",
        json!({"toolId": "T-77", "nested": {"list": [1, 2.5, null, true]}}),
    )
    .with_time(Timestamp::parse("2025-10-18T12:14:56.792Z").unwrap());
    vec![part, unknown]
}

#[test]
fn python_sdk_decodes_structured_and_binary_records() {
    let events = sample_events();
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for event in &events {
        for (mode, name) in [
            (ContentMode::Structured, "structured"),
            (ContentMode::Binary, "binary"),
        ] {
            // With the legacy ce-* headers (the publisher's default) and without.
            for legacy in [true, false] {
                let options = EncodeOptions::default().mode(mode).legacy_headers(legacy);
                records.push(encode(event, &options).unwrap());
                expected.push((event, name));
            }
        }
    }
    let decoded = python_decode(&records);
    assert_eq!(decoded.len(), records.len());
    for (got, (event, mode)) in decoded.iter().zip(expected) {
        assert_eq!(got["mode"], mode, "the SDK detected the wrong content mode");
        let attributes = &got["attributes"];
        let context = format!("{mode} {}", event.id());
        assert_eq!(attributes["specversion"], "1.0", "{context}");
        assert_eq!(attributes["id"], event.id().as_str(), "{context}");
        assert_eq!(attributes["type"], event.event_type().as_str(), "{context}");
        assert_eq!(attributes["source"], event.source(), "{context}");
        assert_eq!(attributes["datacontenttype"], "application/json", "{context}");
        let time = Timestamp::parse(attributes["time"].as_str().unwrap()).unwrap();
        assert_eq!(time, event.time(), "{context}");
        assert_eq!(attributes["partitionkey"], event.partition_key(), "{context}");
        assert_eq!(&got["data"], event.data(), "{context}");
        let optional = [
            ("subject", event.subject()),
            ("entityid", event.entity_id()),
            ("entitytype", event.entity_type()),
            ("correlationid", event.correlation_id()),
            ("causationid", event.causation_id()),
        ];
        for (name, value) in optional {
            assert_eq!(
                attributes.get(name).and_then(Value::as_str),
                value,
                "{context}: {name}"
            );
        }
        let metadata = match &attributes["metadata"] {
            Value::Null => None,
            // Binary mode carries it as a JSON string header.
            Value::String(text) => Some(serde_json::from_str::<Value>(text).unwrap()),
            object => Some(object.clone()),
        };
        let expected_metadata = event.metadata().map(|m| serde_json::to_value(m).unwrap());
        assert_eq!(metadata, expected_metadata, "{context}: metadata");
    }
}
