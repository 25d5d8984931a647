//! Shared helpers of the publisher suites: the reader of whole topics and
//! unique topic names.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
pub use mes_testkit::kafka::{read_topic, read_topic_with};
use serde_json::Value;

/// An event type of a domain no other test uses, so its topic
/// (`mes.{domain}.events`) is this test's alone.
pub fn unique_event_type(test: &str) -> EventType {
    let domain = format!(
        "t{}{}",
        test.replace(['_', '-'], ""),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    EventType::parse(&format!("{domain}.thing.happened")).unwrap()
}

pub fn raw_event(event_type: &EventType, entity: &str, data: Value) -> DomainEvent<Value> {
    DomainEvent::new_raw(event_type.clone(), "test-service", data).with_entity("Thing", entity)
}

pub async fn connect(brokers: &str) -> EventPublisher {
    EventPublisher::connect(PublisherConfig::new(brokers.split(',')).client_id("mes-publisher-tests"))
        .await
        .expect("connect to the test broker")
}

pub async fn create_topic(publisher: &EventPublisher, topic: &str, partitions: u16) {
    let settings = TopicSettings {
        partitions,
        replication: 1,
    };
    let created = publisher
        .ensure_topics(&[TopicSpec::new(topic, settings)])
        .await
        .unwrap();
    assert_eq!(created, [topic.to_owned()]);
}

pub const PATIENCE: Duration = Duration::from_secs(120);
