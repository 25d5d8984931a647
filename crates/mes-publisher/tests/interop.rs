//! Records the publisher writes, in each content mode, read back by an
//! independent client library (confluent-kafka, i.e. librdkafka) and decoded
//! by an independent CloudEvents implementation (the Python SDK's Kafka
//! binding). Needs `MES_TEST_PYTHON` with both installed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use mes_events_types::{ContentMode, EventMetadata, Timestamp};
use mes_publisher::{EventPublisher, PublisherConfig};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_and_the_python_sdk_read_both_modes() {
    let brokers = mes_testkit::kafka_brokers();
    let event_type = unique_event_type("interop");
    let topic = event_type.topic().unwrap();
    let structured = connect(&brokers).await;
    create_topic(&structured, &topic, 3).await;
    let binary =
        EventPublisher::connect(PublisherConfig::new([brokers.as_str()]).content_mode(ContentMode::Binary))
            .await
            .unwrap();

    let mut sent = HashMap::new();
    for (i, entity) in ["P-12345", "WO-1001", "T-77", "a"].iter().enumerate() {
        let event = raw_event(&event_type, entity, json!({"i": i, "name": "Strut Ω"}))
            .with_correlation_id(format!("req-{i}"))
            .with_metadata(EventMetadata::for_user("user-1"));
        let (publisher, mode) = if i % 2 == 0 {
            (&structured, "structured")
        } else {
            (&binary, "binary")
        };
        let landed = publisher.publish(&event).await.unwrap();
        sent.insert(event.id().to_string(), (event, landed, mode));
    }

    let output = Command::new(mes_testkit::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/consume_confluent.py"
        ))
        .args([&brokers, &topic, "3", &sent.len().to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read.len(), sent.len());
    for record in read {
        let id = record["attributes"]["id"].as_str().unwrap();
        let (event, landed, mode) = &sent[id];
        assert_eq!(record["partition"], landed.partition, "{mode}");
        assert_eq!(record["offset"], landed.offset, "{mode}");
        assert_eq!(record["key"], event.entity_id().unwrap(), "{mode}");
        let headers = &record["headers"];
        // The legacy headers are there in both modes (the default).
        assert_eq!(headers["ce-id"], id, "{mode}");
        assert_eq!(headers["ce-type"], event_type.as_str(), "{mode}");
        assert_eq!(
            headers["ce-correlationid"],
            event.correlation_id().unwrap(),
            "{mode}"
        );
        match *mode {
            "structured" => {
                assert_eq!(
                    headers["content-type"],
                    "application/cloudevents+json; charset=UTF-8"
                );
            }
            _ => {
                assert_eq!(headers["content-type"], "application/json");
                assert_eq!(headers["ce_id"], id);
            }
        }
        let attributes = &record["attributes"];
        assert_eq!(attributes["type"], event_type.as_str(), "{mode}");
        assert_eq!(attributes["source"], "test-service", "{mode}");
        assert_eq!(attributes["entityid"], event.entity_id().unwrap(), "{mode}");
        assert_eq!(
            attributes["correlationid"],
            event.correlation_id().unwrap(),
            "{mode}"
        );
        assert_eq!(
            Timestamp::parse(attributes["time"].as_str().unwrap()).unwrap(),
            event.time(),
            "{mode}"
        );
        assert_eq!(&record["data"], event.data(), "{mode}");
    }
}
