//! The Kafka backend: one ordered queue and one batching task per partition.
//!
//! Order per entity: an entity's events always map to one partition; each
//! partition has one task that sends one batch at a time and retries it
//! (within the retry budget) before the next. When a batch
//! fails for good, the events queued behind it are failed unsent
//! ([`Error::EarlierBatchFailed`]) rather than sent ahead of events their
//! producer may publish again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mes_events_types::{DomainEvent, EncodeOptions, KafkaRecord, encode_parts};
use mes_kafka::protocol::create_topics::NewTopic;
use mes_kafka::protocol::record_batch::WireRecord;
use mes_kafka::{KafkaClient, PartitionProducer, ProducerIdentity};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, warn};

use crate::TopicSpec;
use crate::config::{PublisherConfig, TopicSettings};
use crate::error::{ClientError, Delivery, Error};
use crate::metrics::PartitionMetrics;

/// An encoded event on its way to one partition.
pub(crate) struct Pending {
    payload: Payload,
    timestamp_ms: i64,
    size: usize,
    reply: oneshot::Sender<Result<i64, Error>>,
    /// When it was queued: its acknowledgement's latency is counted from here.
    queued_at: Instant,
}

/// What a partition worker sends for one event.
pub(crate) enum Payload {
    /// An event the publisher encoded.
    Encoded(EncodedRecord),
    /// A record that came encoded ([`EventPublisher::publish_record`](crate::EventPublisher::publish_record)).
    Record(KafkaRecord),
}

impl Payload {
    fn key(&self) -> &[u8] {
        match self {
            Payload::Encoded(encoded) => encoded.key(),
            Payload::Record(record) => record.key.as_deref().unwrap_or_default(),
        }
    }

    /// What counts against the batch and record limits: key, value, header
    /// names and values.
    fn size(&self) -> usize {
        match self {
            Payload::Encoded(encoded) => encoded.size(),
            Payload::Record(record) => {
                let bytes = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
                let headers: usize = record.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                bytes(&record.key) + bytes(&record.value) + headers
            }
        }
    }
}

/// One event as [`encode_parts`] writes it, in one buffer: the record value,
/// then the key, then each header as its name's length and its value's
/// length (`usize`, little-endian), its name and its value.
///
/// The publishing task makes this one allocation per event, and the
/// partition worker writes the record straight from it into the request.
pub(crate) struct EncodedRecord {
    buf: Vec<u8>,
    value_len: usize,
    key_len: usize,
    headers: usize,
}

const LEN: usize = std::mem::size_of::<usize>();

thread_local! {
    /// The value and the headers of the event being encoded; reused, so an
    /// event costs one exact allocation whatever its size.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// Scratch buffers grown past this by a large event are let go afterwards.
const SCRATCH_KEPT: usize = 64 * 1024;

impl EncodedRecord {
    pub(crate) fn encode<T: Serialize>(
        event: &DomainEvent<T>,
        options: &EncodeOptions,
    ) -> Result<Self, mes_events_types::Error> {
        SCRATCH.with_borrow_mut(|(value, headers)| {
            value.clear();
            headers.clear();
            let mut count = 0;
            let encoded = encode_parts(event, options, value, |name, text| {
                headers.extend_from_slice(&name.len().to_le_bytes());
                headers.extend_from_slice(&text.len().to_le_bytes());
                headers.extend_from_slice(name.as_bytes());
                headers.extend_from_slice(text.as_bytes());
                count += 1;
            });
            let key = event.partition_key().as_bytes();
            let mut buf = Vec::with_capacity(value.len() + key.len() + headers.len());
            buf.extend_from_slice(value);
            buf.extend_from_slice(key);
            buf.extend_from_slice(headers);
            let record = Self {
                buf,
                value_len: value.len(),
                key_len: key.len(),
                headers: count,
            };
            if value.capacity() > SCRATCH_KEPT {
                *value = Vec::new();
            }
            if headers.capacity() > SCRATCH_KEPT {
                *headers = Vec::new();
            }
            encoded.map(|()| record)
        })
    }

    fn key(&self) -> &[u8] {
        self.buf
            .get(self.value_len..self.value_len + self.key_len)
            .unwrap_or_default()
    }

    /// The headers as [`next_header`] reads them.
    fn header_bytes(&self) -> &[u8] {
        self.buf.get(self.value_len + self.key_len..).unwrap_or_default()
    }

    fn size(&self) -> usize {
        self.buf.len() - 2 * LEN * self.headers
    }
}

/// The first header of an [`EncodedRecord`]'s header bytes and the rest.
fn next_header(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name_len, rest) = bytes.split_first_chunk::<LEN>()?;
    let (value_len, rest) = rest.split_first_chunk::<LEN>()?;
    let (name, rest) = rest.split_at_checked(usize::from_le_bytes(*name_len))?;
    let (value, rest) = rest.split_at_checked(usize::from_le_bytes(*value_len))?;
    Some((name, value, rest))
}

struct PartitionSlot {
    partition: i32,
    queue: OnceCell<mpsc::Sender<Pending>>,
    metrics: Arc<PartitionMetrics>,
}

/// A topic's partitions as last read from the broker.
pub(crate) struct TopicHandle {
    partitions: Vec<Arc<PartitionSlot>>,
    count: NonZeroU32,
    fetched_at: Instant,
}

pub(crate) struct KafkaBackend {
    client: KafkaClient,
    /// The producer id and epoch of the idempotent producer, if on.
    identity: Option<Arc<ProducerIdentity>>,
    config: PublisherConfig,
    /// `None` once disconnected. Read on every publish, written rarely.
    topics: RwLock<Option<HashMap<String, Arc<TopicHandle>>>>,
    /// Serialises metadata refreshes: one request per stale topic, not one
    /// per waiting publish.
    refresh: Mutex<()>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

fn opaque(error: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    Box::new(error)
}

impl KafkaBackend {
    pub(crate) async fn connect(config: PublisherConfig) -> Result<Self, Error> {
        let client = KafkaClient::connect(config.kafka.clone())
            .await
            .map_err(|e| connect_error(&config, e))?;
        let identity = config.idempotence.then(|| ProducerIdentity::new(client.clone()));
        Ok(Self {
            client,
            identity,
            config,
            topics: RwLock::new(Some(HashMap::new())),
            refresh: Mutex::new(()),
            tasks: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// A failed connect in this crate's terms, naming the brokers tried.
fn connect_error(config: &PublisherConfig, error: mes_kafka::Error) -> Error {
    match Error::from(error) {
        Error::Connect { brokers, source } if brokers.is_empty() => Error::Connect {
            brokers: config.brokers().to_vec(),
            source,
        },
        other => other,
    }
}

impl KafkaBackend {
    /// Partition counts of every topic, read from the broker now.
    async fn partition_counts(&self) -> Result<HashMap<String, usize>, Error> {
        let topics = self.client.list_topics().await.map_err(|e| Error::Admin {
            what: "list topics".to_owned(),
            source: opaque(e),
        })?;
        Ok(topics.into_iter().collect())
    }

    pub(crate) async fn health_check(&self) -> Result<(), Error> {
        self.partition_counts().await.map(drop)
    }

    pub(crate) async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, Error> {
        let existing = self.partition_counts().await?;
        let mut created = Vec::new();
        for spec in topics {
            if existing.contains_key(&spec.name) {
                continue;
            }
            if self.create_topic(&spec.name, spec.settings).await? {
                created.push(spec.name.clone());
            }
        }
        Ok(created)
    }

    /// Creates a topic; `false` when another publisher created it meanwhile,
    /// which is what was wanted.
    async fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<bool, Error> {
        let topic = NewTopic {
            name: name.to_owned(),
            num_partitions: i32::from(settings.partitions),
            replication_factor: i16::try_from(settings.replication).unwrap_or(i16::MAX),
            configs: Vec::new(),
        };
        self.client.create_topic(topic).await.map_err(|e| Error::Admin {
            what: format!("create topic {name}"),
            source: opaque(e),
        })
    }

    /// A topic's partition count read from the cluster now; `None` when it
    /// does not exist.
    async fn partition_count(&self, name: &str) -> Result<Option<usize>, Error> {
        self.client.invalidate_topic(name);
        match self.client.topic(name).await {
            Ok(topic) => Ok(Some(topic.partitions.len())),
            Err(mes_kafka::Error::UnknownTopic { .. }) => Ok(None),
            Err(e) => Err(Error::Admin {
                what: format!("metadata of topic {name}"),
                source: opaque(e),
            }),
        }
    }

    /// The cached handle of a topic, unless it is missing or stale.
    fn cached_topic(&self, name: &str) -> Result<Option<Arc<TopicHandle>>, Error> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let topics = topics.as_ref().ok_or(Error::Disconnected)?;
        Ok(topics
            .get(name)
            .filter(|h| h.fetched_at.elapsed() < self.config.kafka.get_metadata_max_age())
            .cloned())
    }

    /// A topic's partitions, read from the broker when not known or stale.
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<TopicHandle>, Error> {
        if let Some(handle) = self.cached_topic(name)? {
            return Ok(handle);
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(handle) = self.cached_topic(name)? {
            return Ok(handle);
        }
        let mut count = self.partition_count(name).await?;
        if count.is_none()
            && let Some(settings) = self.config.auto_create_topics
        {
            self.create_topic(name, settings).await?;
            count = self.partition_count(name).await?;
        }
        let count = count
            .and_then(|c| NonZeroU32::new(u32::try_from(c).unwrap_or(u32::MAX)))
            .ok_or_else(|| Error::TopicNotFound {
                topic: name.to_owned(),
            })?;
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topics = topics.as_mut().ok_or(Error::Disconnected)?;
        let previous = topics.get(name);
        // Partitions only grow; keep the queues of the known ones so events
        // in flight stay in order.
        let partitions = (0..count.get())
            .map(|p| {
                previous
                    .and_then(|h| h.partitions.get(p as usize).cloned())
                    .unwrap_or_else(|| {
                        let partition = i32::try_from(p).unwrap_or(i32::MAX);
                        Arc::new(PartitionSlot {
                            partition,
                            queue: OnceCell::new(),
                            metrics: Arc::new(PartitionMetrics::new(name, partition)),
                        })
                    })
            })
            .collect();
        if previous.is_some_and(|h| h.count != count) {
            debug!(topic = name, partitions = count, "partition count changed");
        }
        let handle = Arc::new(TopicHandle {
            partitions,
            count,
            fetched_at: Instant::now(),
        });
        topics.insert(name.to_owned(), Arc::clone(&handle));
        Ok(handle)
    }

    async fn queue(&self, topic: &str, slot: &PartitionSlot) -> Result<mpsc::Sender<Pending>, Error> {
        let queue = slot
            .queue
            .get_or_try_init(|| async {
                let producer = PartitionProducer::new(
                    self.client.clone(),
                    self.identity.clone(),
                    topic,
                    slot.partition,
                    self.config.compression,
                );
                let (queue, receiver) = mpsc::channel(self.config.queue_capacity);
                let worker = PartitionWorker {
                    producer,
                    metrics: Arc::clone(&slot.metrics),
                    topic: topic.to_owned(),
                    partition: slot.partition,
                    linger: self.config.linger,
                    max_batch_bytes: self.config.max_batch_bytes,
                    bound: self.config.kafka.get_request_timeout()
                        + self.config.kafka.get_retry().retry_budget(),
                };
                let span = tracing::info_span!("partition_producer", topic, partition = slot.partition);
                let task = tokio::spawn(worker.run(receiver).instrument(span));
                if let Ok(mut tasks) = self.tasks.lock() {
                    tasks.push(task);
                }
                Ok::<_, Error>(queue)
            })
            .await?;
        Ok(queue.clone())
    }

    /// Queues an encoded record on its partition and returns the partition
    /// and where its fate will be told. Queuing happens in call order, so a
    /// caller's events of one entity keep their order.
    pub(crate) async fn enqueue(
        &self,
        topic: &str,
        handle: &TopicHandle,
        payload: Payload,
        timestamp_ms: i64,
    ) -> Result<(i32, oneshot::Receiver<Result<i64, Error>>), Error> {
        let index = mes_events_types::partition_for_key(payload.key(), handle.count) as usize;
        let slot = handle.partitions.get(index).ok_or_else(|| Error::TopicNotFound {
            topic: topic.to_owned(),
        })?;
        let size = payload.size();
        if size > self.config.max_record_bytes {
            return Err(Error::RecordTooLarge {
                topic: topic.to_owned(),
                size,
                limit: self.config.max_record_bytes,
            });
        }
        let (reply, receiver) = oneshot::channel();
        let pending = Pending {
            payload,
            timestamp_ms,
            size,
            reply,
            queued_at: Instant::now(),
        };
        let queue = match slot.queue.get() {
            Some(queue) => queue.clone(),
            None => self.queue(topic, slot).await?,
        };
        // Counted before it is sent: the worker may answer it at once.
        slot.metrics.queued.increment(1.0);
        if queue.send(pending).await.is_err() {
            slot.metrics.queued.decrement(1.0);
            return Err(Error::Disconnected);
        }
        Ok((slot.partition, receiver))
    }

    /// Stops accepting events, sends what is queued, and waits for it.
    pub(crate) async fn disconnect(&self) {
        // Dropping the queues' senders lets each worker drain and stop.
        self.topics.write().unwrap_or_else(PoisonError::into_inner).take();
        let tasks = match self.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => Vec::new(),
        };
        for task in tasks {
            if let Err(e) = task.await {
                warn!(error = %e, "a partition producer ended abnormally");
            }
        }
    }
}

/// A payload and its creation time (ms since the epoch), as sent.
struct Timed(Payload, i64);

impl WireRecord for Timed {
    fn key(&self) -> Option<&[u8]> {
        match &self.0 {
            Payload::Encoded(encoded) => Some(encoded.key()),
            Payload::Record(record) => record.key.as_deref(),
        }
    }

    fn value(&self) -> Option<&[u8]> {
        match &self.0 {
            Payload::Encoded(encoded) => encoded.buf.get(..encoded.value_len),
            Payload::Record(record) => record.value.as_deref(),
        }
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let (encoded, record) = match &self.0 {
            Payload::Encoded(encoded) => (Some(encoded.header_bytes()), None),
            Payload::Record(record) => (None, Some(record.headers.iter())),
        };
        let encoded = encoded.into_iter().flat_map(|mut rest| {
            std::iter::from_fn(move || {
                let (name, value, next) = next_header(rest)?;
                rest = next;
                Some((name, value))
            })
        });
        let record = record
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.as_bytes(), value.as_slice()));
        encoded.chain(record)
    }

    fn timestamp_ms(&self) -> i64 {
        self.1
    }
}

struct PartitionWorker {
    producer: PartitionProducer,
    metrics: Arc<PartitionMetrics>,
    topic: String,
    partition: i32,
    linger: Duration,
    max_batch_bytes: usize,
    bound: Duration,
}

impl PartitionWorker {
    async fn run(mut self, mut queue: mpsc::Receiver<Pending>) {
        // An event that did not fit in the previous batch starts the next.
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(first) => first,
                None => match queue.recv().await {
                    Some(first) => first,
                    None => break,
                },
            };
            let (batch, rest) = self.gather(first, &mut queue).await;
            carry = rest;
            let count = batch.len();
            self.metrics.batch_size.record(count as f64);
            let (batch, replies): (Vec<Timed>, Vec<_>) = batch
                .into_iter()
                .map(|p| (Timed(p.payload, p.timestamp_ms), (p.reply, p.queued_at)))
                .unzip();
            self.metrics.queued.decrement(count as f64);
            let outcome = tokio::time::timeout(self.bound, self.producer.produce(&batch)).await;
            let (delivery, cause): (Delivery, Arc<dyn std::error::Error + Send + Sync>) = match outcome {
                Ok(Ok(base_offset)) => {
                    // -1: the broker had the batch already and did not say where.
                    let offsets = (0..).map(|i| if base_offset < 0 { -1 } else { base_offset + i });
                    self.metrics.sent.increment(count as u64);
                    for ((reply, queued_at), offset) in replies.into_iter().zip(offsets) {
                        self.metrics.duration.record(queued_at.elapsed());
                        // The publisher may have stopped waiting; the event is written anyway.
                        let _ = reply.send(Ok(offset));
                    }
                    continue;
                }
                Ok(Err(failed)) => (failed.delivery, Arc::new(failed.error)),
                Err(elapsed) => (Delivery::MaybeWritten, Arc::new(elapsed)),
            };
            {
                {
                    warn!(error = %cause, records = count, ?delivery, "batch failed");
                    // One cause, shared by every event of the batch.
                    for (reply, _) in replies {
                        let _ = reply.send(Err(Error::Produce {
                            topic: self.topic.clone(),
                            partition: self.partition,
                            delivery,
                            source: Box::new(Arc::clone(&cause)),
                        }));
                    }
                    // Nothing queued behind the failed batch may overtake it.
                    let behind = carry.take().into_iter();
                    for pending in behind.chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                        self.metrics.queued.decrement(1.0);
                        let _ = pending.reply.send(Err(Error::EarlierBatchFailed {
                            topic: self.topic.clone(),
                            partition: self.partition,
                        }));
                    }
                }
            }
        }
    }

    /// The batch that starts with `first`: what is queued, up to the batch
    /// size, after waiting the linger once if nothing was; and the event that
    /// would have overflowed the batch, if any.
    ///
    /// The linger is a plain sleep, not a wait on the queue: waiting on the
    /// queue would wake this task (and a thread) for every event that
    /// arrives, which costs more than the events themselves.
    async fn gather(
        &self,
        first: Pending,
        queue: &mut mpsc::Receiver<Pending>,
    ) -> (Vec<Pending>, Option<Pending>) {
        let mut bytes = first.size;
        let mut batch = vec![first];
        let mut lingered = self.linger.is_zero();
        loop {
            match queue.try_recv() {
                Ok(next) => {
                    if bytes + next.size > self.max_batch_bytes {
                        return (batch, Some(next));
                    }
                    bytes += next.size;
                    batch.push(next);
                }
                Err(mpsc::error::TryRecvError::Empty) if !lingered => {
                    tokio::time::sleep(self.linger).await;
                    lingered = true;
                }
                Err(_) => return (batch, None),
            }
        }
    }
}

#[cfg(all(test, not(feature = "tls")))]
mod tests {
    use super::*;
    use crate::TlsSettings;

    #[tokio::test]
    async fn tls_without_the_feature_is_a_config_error_before_connecting() {
        let config = PublisherConfig::new(["127.0.0.1:9"]).tls(TlsSettings::new());
        match KafkaBackend::connect(config).await {
            Err(Error::Config { reason }) => assert!(reason.contains("`tls` feature"), "{reason}"),
            other => panic!("expected a Config error, got {:?}", other.map(drop)),
        }
    }
}
