//! Shared helpers of the publisher suites: a reader of whole topics and
//! unique topic names.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mes_events_types::{DomainEvent, EventType, KafkaRecord};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::{Client, ClientBuilder};
use serde_json::Value;

/// A record read back from the broker.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub record: KafkaRecord,
}

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

/// Every record of every partition of `topic`, read up to the high
/// watermark each fetch reports (tansu's ListOffsets(latest) is wrong on
/// memory storage after multi-record batches, the fetch watermark is right).
pub async fn read_topic(brokers: &str, topic: &str) -> Vec<ReadRecord> {
    let client = ClientBuilder::new(brokers.split(',').map(str::to_owned).collect())
        .build()
        .await
        .unwrap();
    read_topic_with(&client, topic).await
}

/// [`read_topic`] through a client of the caller's.
pub async fn read_topic_with(client: &Client, topic: &str) -> Vec<ReadRecord> {
    let partitions = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("topic {topic} not found"))
        .partitions;
    let mut all = Vec::new();
    for partition in partitions {
        let pc = client
            .partition_client(topic, partition, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = pc.fetch_records(offset, 1..4_000_000, 100).await.unwrap();
            for r in records {
                offset = r.offset + 1;
                all.push(ReadRecord {
                    partition,
                    offset: r.offset,
                    record: KafkaRecord {
                        key: r.record.key,
                        headers: r.record.headers.into_iter().collect(),
                        value: r.record.value,
                    },
                });
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    all
}

pub const PATIENCE: Duration = Duration::from_secs(120);
