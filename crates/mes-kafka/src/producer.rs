//! Producing to one partition: one batch at a time, retried within the
//! retry budget, idempotent by default.
//!
//! # Idempotence
//!
//! A [`ProducerIdentity`] (one per publisher) holds the producer id and
//! epoch that `InitProducerId` gave; each [`PartitionProducer`] numbers its
//! batches with a sequence of its own. A retried batch is sent again byte
//! for byte, same sequence, so a broker that wrote it before answers
//! `DUPLICATE_SEQUENCE_NUMBER` (or the first write's offset) instead of
//! writing it twice, and counts it as written.
//!
//! When the broker no longer knows the producer (`UNKNOWN_PRODUCER_ID`,
//! `OUT_OF_ORDER_SEQUENCE_NUMBER` after it lost state, an epoch fence), the
//! identity is renewed (a new producer id), this partition's sequence starts
//! again at 0, and the same batch is sent again: it may then be written a
//! second time (the answer to the first write was lost with the broker's
//! state), but it is never reordered, since each partition has one batch in
//! flight and the next waits for it.

use std::sync::Arc;
use tokio::time::Instant;

use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::client::KafkaClient;
use crate::connection::BrokerConnection;
use crate::error::{Error, ErrorCode};
use crate::metrics::ProducerMetrics;
use crate::protocol::produce::{ProduceRequest, write_produce_body};
use crate::protocol::record_batch::{Compression, ProducerStamp, WireRecord, write_record_batch};
use crate::protocol::{self, Request};

/// Whether records that failed to produce may be on the topic anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Certainly not written: producing them again cannot duplicate them.
    NotWritten,
    /// The broker may have written them (a request went out and no clear
    /// answer came back): producing them again may duplicate them.
    MaybeWritten,
}

/// A failed produce: why, and whether the records may be on the topic.
#[derive(Debug, thiserror::Error)]
#[error("producing to {topic}/{partition} failed ({delivery:?})")]
pub struct ProduceError {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Whether the records may be on the topic anyway.
    pub delivery: Delivery,
    /// Why.
    #[source]
    pub error: Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    producer_id: i64,
    epoch: i16,
    /// Counts renewals, so a partition knows its sequence belongs to an
    /// older identity.
    generation: u64,
}

/// The producer id and epoch shared by the partitions of one idempotent
/// producer, asked for on first use and renewed when a broker no longer
/// knows them.
pub struct ProducerIdentity {
    client: KafkaClient,
    current: Mutex<Option<Identity>>,
}

impl std::fmt::Debug for ProducerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIdentity").finish_non_exhaustive()
    }
}

impl ProducerIdentity {
    /// An identity to be asked of the cluster on first use.
    pub fn new(client: KafkaClient) -> Arc<Self> {
        Arc::new(Self {
            client,
            current: Mutex::new(None),
        })
    }

    async fn get(&self) -> Result<Identity, Error> {
        let mut current = self.current.lock().await;
        if let Some(identity) = *current {
            return Ok(identity);
        }
        let answer = self.client.init_producer_id().await.map_err(|e| match e {
            Error::UnsupportedVersion { .. } => Error::Config {
                reason: format!("{e}: this broker cannot take an idempotent producer; turn idempotence off"),
            },
            other => other,
        })?;
        let identity = Identity {
            producer_id: answer.producer_id,
            epoch: answer.producer_epoch,
            generation: 0,
        };
        debug!(
            producer_id = identity.producer_id,
            epoch = identity.epoch,
            "producer id"
        );
        *current = Some(identity);
        Ok(identity)
    }

    /// A new identity, unless another partition renewed `seen` already.
    async fn renew(&self, seen: Identity) -> Result<Identity, Error> {
        let mut current = self.current.lock().await;
        if let Some(identity) = *current
            && identity.generation != seen.generation
        {
            return Ok(identity);
        }
        let answer = self.client.init_producer_id().await?;
        let identity = Identity {
            producer_id: answer.producer_id,
            epoch: answer.producer_epoch,
            generation: seen.generation + 1,
        };
        warn!(
            producer_id = identity.producer_id,
            epoch = identity.epoch,
            "the broker lost the producer's state; producing under a new producer id"
        );
        *current = Some(identity);
        Ok(identity)
    }
}

/// Produces one partition's batches, one at a time.
pub struct PartitionProducer {
    client: KafkaClient,
    identity: Option<Arc<ProducerIdentity>>,
    topic: String,
    partition: i32,
    compression: Compression,
    connection: Option<Arc<BrokerConnection>>,
    frame: Vec<u8>,
    /// The next batch's base sequence, under `sequence_of`.
    sequence: i32,
    sequence_of: Option<Identity>,
    metrics: ProducerMetrics,
}

impl std::fmt::Debug for PartitionProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionProducer")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed.
struct Attempt {
    error: Error,
    maybe_written: bool,
    /// The kept connection had been closed: try a new one at once.
    stale_connection: bool,
}

impl Attempt {
    /// Failed before the request went out.
    fn unsent(error: Error) -> Self {
        Self {
            error,
            maybe_written: false,
            stale_connection: false,
        }
    }

    /// Failed after the request went out: the batch may be written.
    fn maybe_written(error: Error) -> Self {
        Self {
            maybe_written: true,
            ..Self::unsent(error)
        }
    }
}

enum Outcome {
    Written(i64),
    Failed(Attempt),
    /// The broker no longer knows the producer: renew and send again.
    LostProducer(Attempt),
}

impl PartitionProducer {
    /// A producer of `partition` of `topic`; idempotent when given an
    /// identity.
    pub fn new(
        client: KafkaClient,
        identity: Option<Arc<ProducerIdentity>>,
        topic: &str,
        partition: i32,
        compression: Compression,
    ) -> Self {
        Self {
            client,
            identity,
            topic: topic.to_owned(),
            partition,
            compression,
            connection: None,
            frame: Vec::new(),
            sequence: 0,
            sequence_of: None,
            metrics: ProducerMetrics::new(topic, partition),
        }
    }

    fn failed(&self, delivery: Delivery, error: Error) -> ProduceError {
        ProduceError {
            topic: self.topic.clone(),
            partition: self.partition,
            delivery,
            error,
        }
    }

    /// Sends `records` as one batch (acks = all) and returns the offset of
    /// the first, retrying within the retry budget; or why not, and whether
    /// they may be on the topic anyway. The offset is -1 when the broker
    /// only said it had the batch already (`DUPLICATE_SEQUENCE_NUMBER`).
    pub async fn produce<R: WireRecord>(&mut self, records: &[R]) -> Result<i64, ProduceError> {
        let retry = self.client.config().retry;
        let deadline = Instant::now() + retry.retry_budget();
        let mut backoff = retry.initial_backoff;
        let mut maybe_written = false;
        let delivery = |maybe: bool| {
            if maybe {
                Delivery::MaybeWritten
            } else {
                Delivery::NotWritten
            }
        };
        let mut identity = match &self.identity {
            Some(identity) => Some(
                identity
                    .get()
                    .await
                    .map_err(|e| self.failed(Delivery::NotWritten, e))?,
            ),
            None => None,
        };
        self.encode(records, identity)
            .map_err(|e| self.failed(Delivery::NotWritten, e))?;
        loop {
            let (attempt, renewed) = match self.attempt().await {
                Outcome::Written(base_offset) => {
                    self.metrics.batches.increment(1);
                    self.metrics.records.increment(records.len() as u64);
                    self.metrics.bytes.increment(self.frame.len() as u64);
                    self.sequence = self
                        .sequence
                        .wrapping_add(i32::try_from(records.len()).unwrap_or(i32::MAX));
                    if self.sequence < 0 {
                        self.sequence = 0;
                    }
                    return Ok(base_offset);
                }
                Outcome::Failed(attempt) => (attempt, false),
                Outcome::LostProducer(attempt) => {
                    maybe_written |= attempt.maybe_written;
                    let (Some(shared), Some(seen)) = (&self.identity, identity) else {
                        return Err(self.failed(delivery(maybe_written), attempt.error));
                    };
                    let renewed = shared
                        .renew(seen)
                        .await
                        .map_err(|e| self.failed(delivery(maybe_written), e))?;
                    identity = Some(renewed);
                    self.encode(records, identity)
                        .map_err(|e| self.failed(delivery(maybe_written), e))?;
                    (attempt, true)
                }
            };
            maybe_written |= attempt.maybe_written;
            self.metrics.failed(&attempt.error);
            if attempt.stale_connection {
                self.metrics.retries.increment(1);
                continue;
            }
            // Under a renewed identity the batch is sent again (its code,
            // not retriable as such, was answered by the renewal).
            if !(renewed || attempt.error.is_retriable()) || Instant::now() + backoff > deadline {
                return Err(self.failed(delivery(maybe_written), attempt.error));
            }
            debug!(error = %attempt.error, ?backoff, "produce failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(retry.max_backoff);
            self.metrics.retries.increment(1);
        }
    }

    /// Writes the request frame for `records`, stamped for `identity`.
    fn encode<R: WireRecord>(&mut self, records: &[R], identity: Option<Identity>) -> Result<(), Error> {
        let stamp = match identity {
            Some(identity) => {
                if self.sequence_of.map(|i| i.generation) != Some(identity.generation) {
                    self.sequence = 0;
                    self.sequence_of = Some(identity);
                }
                ProducerStamp {
                    producer_id: identity.producer_id,
                    producer_epoch: identity.epoch,
                    base_sequence: self.sequence,
                }
            }
            None => ProducerStamp::NONE,
        };
        let timeout_ms = i32::try_from(self.client.request_timeout().as_millis()).unwrap_or(i32::MAX);
        // The version is set per connection in `attempt`; v3-v8 bodies are alike.
        protocol::start_frame(
            &mut self.frame,
            ProduceRequest::API_KEY,
            3,
            self.client.config().get_client_id(),
        );
        let compression = self.compression;
        write_produce_body(
            &mut self.frame,
            -1,
            timeout_ms,
            &self.topic,
            self.partition,
            |buf| write_record_batch(buf, records, compression, stamp),
        )
        .map_err(|e| Error::Config {
            reason: format!("cannot compress a batch with {compression:?}: {e}"),
        })?;
        protocol::finish_frame(&mut self.frame);
        Ok(())
    }

    async fn attempt(&mut self) -> Outcome {
        let (connection, kept) = match self.connection.take() {
            Some(connection) if !connection.is_broken() => (connection, true),
            _ => match self.client.leader(&self.topic, self.partition).await {
                Ok(connection) => (connection, false),
                Err(error) => {
                    return Outcome::Failed(Attempt::unsent(error));
                }
            },
        };
        let version = match connection.version::<ProduceRequest<'_>>() {
            Ok(version) => version,
            Err(error) => {
                return Outcome::Failed(Attempt::unsent(error));
            }
        };
        set_version(&mut self.frame, version);
        let bound = connection.request_timeout();
        let answer = match connection
            .send_frame(&mut self.frame, ProduceRequest::NAME, bound)
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                // A kept connection the broker had closed (it restarted, or
                // closed it as idle) is replaced at once rather than spend a
                // retry and a back-off on what is no fault of the batch.
                let stale_connection =
                    kept && matches!(&error, Error::Io { source, .. } if closed_by_peer(source));
                return Outcome::Failed(Attempt {
                    stale_connection,
                    ..Attempt::maybe_written(error)
                });
            }
        };
        let decoded =
            ProduceRequest::decode_response(version, answer.body()).map_err(|source| Error::Decode {
                address: connection.address().to_owned(),
                api: ProduceRequest::NAME,
                source,
            });
        let answer = match decoded {
            Ok(answer) => answer,
            Err(error) => {
                return Outcome::Failed(Attempt::maybe_written(error));
            }
        };
        let Some(partition) = answer.partition(&self.topic, self.partition) else {
            return Outcome::Failed(Attempt::maybe_written(Error::broker(
                self.what(),
                ErrorCode::UNKNOWN_SERVER_ERROR.0,
            )));
        };
        let code = ErrorCode(partition.error_code);
        match code {
            ErrorCode::NONE | ErrorCode::DUPLICATE_SEQUENCE_NUMBER => {
                self.connection = Some(connection);
                Outcome::Written(partition.base_offset)
            }
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
            | ErrorCode::UNKNOWN_PRODUCER_ID
            | ErrorCode::INVALID_PRODUCER_EPOCH
            | ErrorCode::PRODUCER_FENCED => {
                self.connection = Some(connection);
                Outcome::LostProducer(Attempt::unsent(Error::broker(self.what(), code.0)))
            }
            _ => {
                if code.is_stale_metadata() {
                    self.client.invalidate_topic(&self.topic);
                } else {
                    self.connection = Some(connection);
                }
                let error = Error::broker(self.what(), code.0);
                // The broker may have appended before timing out.
                let appended = matches!(
                    code,
                    ErrorCode::REQUEST_TIMED_OUT | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                );
                Outcome::Failed(if appended {
                    Attempt::maybe_written(error)
                } else {
                    Attempt::unsent(error)
                })
            }
        }
    }

    fn what(&self) -> String {
        format!("Produce to {}/{}", self.topic, self.partition)
    }
}

fn closed_by_peer(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// Sets the API version of a request frame.
fn set_version(frame: &mut [u8], version: i16) {
    if let Some(slot) = frame.get_mut(6..8) {
        slot.copy_from_slice(&version.to_be_bytes());
    }
}
