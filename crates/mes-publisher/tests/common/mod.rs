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

use std::path::PathBuf;
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

/// A folder of this test's own, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mes-publisher-{test}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The message of an error and of every error under it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Every record of `topic`, read with mes-kafka's fetch path over the
/// connection settings `kafka` (TLS, SASL): the path mes-sync's consumer
/// fetches on.
pub async fn read_topic_through_mes_kafka(
    kafka: &mes_kafka::KafkaConfig,
    topic: &str,
) -> Vec<mes_testkit::kafka::ReadRecord> {
    let client = mes_kafka::KafkaClient::connect(kafka.clone()).await.unwrap();
    let partitions = client.topic(topic).await.unwrap().partitions.len();
    let mut all = Vec::new();
    for partition in 0..i32::try_from(partitions).unwrap() {
        let mut fetcher = mes_kafka::PartitionFetcher::new(client.clone(), topic, partition)
            .max_wait(Duration::from_millis(100));
        // Up to the high watermark the fetches report: tansu's memory engine
        // answers ListOffsets(latest) wrongly after a multi-record batch.
        let mut offset = 0;
        loop {
            let fetched = fetcher.fetch(offset).await.unwrap();
            let high_watermark = fetched.high_watermark;
            for record in fetched.records {
                let record = record.unwrap();
                all.push(mes_testkit::kafka::ReadRecord {
                    partition,
                    offset: record.offset,
                    record: mes_events_types::KafkaRecord {
                        key: record.key,
                        headers: record
                            .headers
                            .into_iter()
                            .map(|(n, v)| (String::from_utf8(n).unwrap(), v))
                            .collect(),
                        value: record.value,
                    },
                });
            }
            offset = fetched.next_offset;
            if offset >= high_watermark {
                break;
            }
        }
    }
    all
}
