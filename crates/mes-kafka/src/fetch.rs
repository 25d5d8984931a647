//! Fetching one partition's records from an offset.

use std::sync::Arc;
use std::time::Duration;

use crate::client::KafkaClient;
use crate::connection::BrokerConnection;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::FetchMetrics;
use crate::protocol::fetch::{FetchPartition, FetchRequest, FetchTopic, IsolationLevel};
use crate::protocol::record_batch::{Record, RecordError};

/// What one fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The offset the next record will get.
    pub high_watermark: i64,
    /// The first offset the partition still holds (-1 if the broker did not say).
    pub log_start_offset: i64,
    /// From the offset asked for on, in offset order: each record, or why
    /// a record (or a batch's range of offsets) cannot be read. A failure
    /// covers only its own offsets: the ones after it are still here.
    pub records: Vec<std::result::Result<Record, RecordError>>,
    /// Where the next fetch starts: after the last record or failure here,
    /// or the offset asked for when nothing came.
    pub next_offset: i64,
}

/// Fetches one partition, on a connection to the leader of its own (kept
/// between fetches): a broker answers one connection's requests in order and
/// holds a fetch up to its max wait, so a shared connection would make the
/// partitions wait for each other.
pub struct PartitionFetcher {
    client: KafkaClient,
    topic: String,
    partition: i32,
    connection: Option<Arc<BrokerConnection>>,
    max_wait: Duration,
    max_bytes: i32,
    isolation: IsolationLevel,
    metrics: FetchMetrics,
}

impl std::fmt::Debug for PartitionFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionFetcher")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// Largest partition fetch this crate grows to when one batch does not fit.
const MAX_PARTITION_BYTES: i32 = 64 * 1024 * 1024;

impl PartitionFetcher {
    /// A fetcher of `partition` of `topic`: waits up to 500 ms for records,
    /// up to 1 MiB per fetch (grown when a single batch is larger).
    pub fn new(client: KafkaClient, topic: &str, partition: i32) -> Self {
        Self {
            client,
            topic: topic.to_owned(),
            partition,
            connection: None,
            max_wait: Duration::from_millis(500),
            max_bytes: 1024 * 1024,
            isolation: IsolationLevel::ReadUncommitted,
            metrics: FetchMetrics::new(topic, partition),
        }
    }

    /// How long the broker may hold a fetch while no record is there.
    #[must_use]
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// How many bytes one fetch asks for (the broker still returns a first
    /// batch larger than this).
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = i32::try_from(bytes).unwrap_or(i32::MAX).max(1);
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Fetches from `offset`. A leader change or a broken connection is an
    /// error for this call ([`Error::is_retriable`]); the next call finds
    /// the new leader. `OFFSET_OUT_OF_RANGE` is [`Error::Broker`] with that
    /// code: the caller decides where to go on.
    pub async fn fetch(&mut self, offset: i64) -> Result<Fetched> {
        loop {
            // A connection of its own: see `KafkaClient::dedicated_connection`.
            let connection = match self.connection.take() {
                Some(connection) if !connection.is_broken() => connection,
                _ => {
                    let leader = self.client.leader_address(&self.topic, self.partition).await?;
                    Arc::new(self.client.dedicated_connection(&leader).await?)
                }
            };
            let request = FetchRequest {
                max_wait_ms: i32::try_from(self.max_wait.as_millis()).unwrap_or(i32::MAX),
                min_bytes: 1,
                max_bytes: self.max_bytes,
                isolation_level: self.isolation,
                topics: vec![FetchTopic {
                    topic: self.topic.clone(),
                    partitions: vec![FetchPartition::new(self.partition, offset, self.max_bytes)],
                }],
            };
            let bound = connection.request_timeout() + self.max_wait;
            let answer = connection.call_within(&request, bound).await?;
            let what = || format!("Fetch of {}/{}", self.topic, self.partition);
            let Some(found) = answer
                .topics
                .into_iter()
                .filter(|t| t.topic == self.topic)
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == self.partition)
            else {
                return Err(Error::broker(what(), ErrorCode::UNKNOWN_SERVER_ERROR.0));
            };
            let code = ErrorCode(found.error_code);
            if code != ErrorCode::NONE {
                if code.is_stale_metadata() {
                    self.client.invalidate_topic(&self.topic);
                } else {
                    self.connection = Some(connection);
                }
                return Err(Error::Broker { what: what(), code });
            }
            self.connection = Some(connection);
            let mut fetched = Fetched {
                high_watermark: found.high_watermark,
                log_start_offset: found.log_start_offset,
                records: Vec::new(),
                next_offset: offset,
            };
            let Some(set) = found.records else {
                return Ok(fetched);
            };
            self.metrics.bytes.increment(set.len() as u64);
            let mut batches = set.batches().from_offset(offset);
            for batch in &mut batches {
                match batch {
                    Ok(batch) => fetched
                        .records
                        .extend(batch.records.into_iter().filter(|r| end_offset(r) >= offset)),
                    Err(failed) => {
                        let last_offset = failed.last_offset.unwrap_or(failed.base_offset).max(offset);
                        fetched.records.push(Err(RecordError {
                            first_offset: failed.base_offset.max(offset),
                            last_offset,
                            error: failed.error,
                        }));
                    }
                }
            }
            let after_failures = fetched.records.last().map_or(offset, |r| match r {
                Ok(record) => record.offset + 1,
                Err(failed) => failed.last_offset + 1,
            });
            fetched.next_offset = batches
                .next_offset()
                .unwrap_or(offset)
                .max(after_failures)
                .max(offset);
            if fetched.records.is_empty() && batches.is_partial() && fetched.next_offset == offset {
                // One batch larger than what was asked for: ask for more.
                if self.max_bytes >= MAX_PARTITION_BYTES {
                    return Err(Error::broker(
                        format!("{}: a batch larger than {MAX_PARTITION_BYTES} bytes", what()),
                        10,
                    ));
                }
                self.max_bytes = self.max_bytes.saturating_mul(2).min(MAX_PARTITION_BYTES);
                continue;
            }
            let readable = fetched.records.iter().filter(|r| r.is_ok()).count();
            self.metrics.records.increment(readable as u64);
            return Ok(fetched);
        }
    }
}

fn end_offset(record: &std::result::Result<Record, RecordError>) -> i64 {
    match record {
        Ok(record) => record.offset,
        Err(failed) => failed.last_offset,
    }
}
