//! Reading a whole topic back from the broker, as an independent client.

use mes_events_types::KafkaRecord;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::{Client, ClientBuilder};

/// A record read back from the broker.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key, headers and value.
    pub record: KafkaRecord,
}

/// Every record of every partition of `topic`, partition by partition in
/// offset order, read up to the high watermark each fetch reports (tansu's
/// ListOffsets(latest) is wrong on memory storage after multi-record
/// batches; the fetch watermark is right).
///
/// # Panics
/// When the broker cannot be reached or the topic does not exist.
pub async fn read_topic(brokers: &str, topic: &str) -> Vec<ReadRecord> {
    let client = ClientBuilder::new(brokers.split(',').map(str::to_owned).collect())
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {brokers}: {e}"));
    read_topic_with(&client, topic).await
}

/// [`read_topic`] through a client of the caller's (one over TLS, say).
///
/// # Panics
/// When the topic does not exist or cannot be read.
pub async fn read_topic_with(client: &Client, topic: &str) -> Vec<ReadRecord> {
    let partitions = client
        .list_topics()
        .await
        .unwrap_or_else(|e| panic!("cannot list the topics: {e}"))
        .into_iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("topic {topic} not found"))
        .partitions;
    let mut all = Vec::new();
    for partition in partitions {
        let client = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap_or_else(|e| panic!("cannot read {topic}/{partition}: {e}"));
        let mut offset = 0;
        loop {
            let (records, high_watermark) = client
                .fetch_records(offset, 1..4_000_000, 100)
                .await
                .unwrap_or_else(|e| panic!("cannot fetch {topic}/{partition}@{offset}: {e}"));
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
