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
use rskafka::BackoffConfig;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, warn};

use crate::TopicSpec;
use crate::config::{PublisherConfig, SaslMechanism, TopicSettings};
use crate::error::{ClientError, Delivery, Error};
use crate::produce::{Connector, PartitionProducer};
use crate::wire::WireRecord;

/// An encoded event on its way to one partition.
pub(crate) struct Pending {
    payload: Payload,
    timestamp_ms: i64,
    size: usize,
    reply: oneshot::Sender<Result<i64, Error>>,
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
}

/// A topic's partitions as last read from the broker.
pub(crate) struct TopicHandle {
    partitions: Vec<Arc<PartitionSlot>>,
    count: NonZeroU32,
    fetched_at: Instant,
}

pub(crate) struct KafkaBackend {
    client: Client,
    /// How the partition workers reach the brokers.
    connector: Arc<Connector>,
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
        let client = build_client(&config).await?;
        let connector = Connector::for_config(&config)?;
        Ok(Self {
            client,
            connector,
            config,
            topics: RwLock::new(Some(HashMap::new())),
            refresh: Mutex::new(()),
            tasks: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// An rskafka client for `config`: its brokers, client id, SASL, TLS, a
/// retry budget as the back-off deadline (rskafka retries forever without
/// one), and the connect timeout. A rejected broker certificate ends the
/// connect at once ([`Error::TlsHandshake`]) rather than at the timeout.
pub(crate) async fn build_client(config: &PublisherConfig) -> Result<Client, Error> {
    let budget = config.retry.retry_budget();
    let backoff = BackoffConfig {
        init_backoff: config.retry.initial_backoff,
        max_backoff: config.retry.max_backoff,
        base: 2.0,
        // rskafka retries forever without a deadline.
        deadline: Some(budget.max(Duration::from_millis(1))),
    };
    let mut builder = ClientBuilder::new(config.brokers.clone())
        .client_id(config.client_id.as_str())
        .backoff_config(backoff);
    if let Some(sasl) = &config.sasl {
        let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    #[cfg(feature = "tls")]
    let rejections = match &config.tls {
        Some(settings) => {
            let (tls, rejections) = crate::tls::client_config(settings)?;
            builder = builder.tls_config(tls);
            Some(rejections)
        }
        None => None,
    };
    #[cfg(not(feature = "tls"))]
    if config.tls.is_some() {
        return Err(Error::Config {
            reason: "TLS is configured, which needs mes-publisher's `tls` feature".to_owned(),
        });
    }
    let connect_error = |source: ClientError| Error::Connect {
        brokers: config.brokers.clone(),
        source,
    };
    let connect = async {
        match tokio::time::timeout(config.connect_timeout, builder.build()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(connect_error(opaque(e))),
            Err(elapsed) => Err(connect_error(opaque(elapsed))),
        }
    };
    #[cfg(feature = "tls")]
    if let Some(rejections) = rejections {
        return tokio::select! {
            connected = connect => connected.map_err(|e| rejections.explain(e)),
            rejected = rejections.first() => Err(rejected),
        };
    }
    connect.await
}

impl KafkaBackend {
    /// Partition counts of every topic, read from the broker now.
    async fn partition_counts(&self) -> Result<HashMap<String, usize>, Error> {
        let topics = self.admin("list topics", self.client.list_topics()).await?;
        Ok(topics.into_iter().map(|t| (t.name, t.partitions.len())).collect())
    }

    async fn admin<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, Error> {
        let bound = self.config.request_timeout + self.config.retry.retry_budget();
        let admin_error = |source| Error::Admin {
            what: what.to_owned(),
            source,
        };
        match tokio::time::timeout(bound, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(admin_error(opaque(e))),
            Err(elapsed) => Err(admin_error(opaque(elapsed))),
        }
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
            self.create_topic(&spec.name, spec.settings).await?;
            created.push(spec.name.clone());
        }
        Ok(created)
    }

    async fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<(), Error> {
        let controller = self.client.controller_client().map_err(|e| Error::Admin {
            what: format!("create topic {name}"),
            source: opaque(e),
        })?;
        let timeout_ms = i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX);
        let request = controller.create_topic(
            name,
            i32::from(settings.partitions),
            i16::try_from(settings.replication).unwrap_or(i16::MAX),
            timeout_ms,
        );
        match self.admin(&format!("create topic {name}"), request).await {
            Ok(()) => Ok(()),
            // Another publisher created it meanwhile: that is what we wanted.
            Err(Error::Admin { source, .. }) if source.to_string().contains("TopicAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The cached handle of a topic, unless it is missing or stale.
    fn cached_topic(&self, name: &str) -> Result<Option<Arc<TopicHandle>>, Error> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let topics = topics.as_ref().ok_or(Error::Disconnected)?;
        Ok(topics
            .get(name)
            .filter(|h| h.fetched_at.elapsed() < self.config.metadata_max_age)
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
        let mut count = self.partition_counts().await?.get(name).copied();
        if count.is_none()
            && let Some(settings) = self.config.auto_create_topics
        {
            self.create_topic(name, settings).await?;
            count = self.partition_counts().await?.get(name).copied();
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
                        Arc::new(PartitionSlot {
                            partition: i32::try_from(p).unwrap_or(i32::MAX),
                            queue: OnceCell::new(),
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
                let producer = PartitionProducer::new(Arc::clone(&self.connector), topic, slot.partition);
                let (queue, receiver) = mpsc::channel(self.config.queue_capacity);
                let worker = PartitionWorker {
                    producer,
                    topic: topic.to_owned(),
                    partition: slot.partition,
                    linger: self.config.linger,
                    max_batch_bytes: self.config.max_batch_bytes,
                    bound: self.config.request_timeout + self.config.retry.retry_budget(),
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
        };
        let sent = match slot.queue.get() {
            Some(queue) => queue.send(pending).await,
            None => self.queue(topic, slot).await?.send(pending).await,
        };
        sent.map_err(|_| Error::Disconnected)?;
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
            let (batch, replies): (Vec<Timed>, Vec<_>) = batch
                .into_iter()
                .map(|p| (Timed(p.payload, p.timestamp_ms), p.reply))
                .unzip();
            let outcome = tokio::time::timeout(self.bound, self.producer.produce(&batch)).await;
            match outcome {
                Ok(Ok(offsets)) if offsets.len() == count => {
                    for (reply, offset) in replies.into_iter().zip(offsets) {
                        // The publisher may have stopped waiting; the event is written anyway.
                        let _ = reply.send(Ok(offset));
                    }
                }
                failure => {
                    let (delivery, source): (Delivery, ClientError) = match failure {
                        Ok(Ok(offsets)) => (
                            Delivery::MaybeWritten,
                            format!("broker acknowledged {} of {count} records", offsets.len()).into(),
                        ),
                        Ok(Err(failed)) => failed,
                        Err(elapsed) => (Delivery::MaybeWritten, opaque(elapsed)),
                    };
                    warn!(error = %source, records = count, ?delivery, "batch failed");
                    let message = source.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Error::Produce {
                            topic: self.topic.clone(),
                            partition: self.partition,
                            delivery,
                            source: message.clone().into(),
                        }));
                    }
                    // Nothing queued behind the failed batch may overtake it.
                    let behind = carry.take().into_iter();
                    for pending in behind.chain(std::iter::from_fn(|| queue.try_recv().ok())) {
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
        match build_client(&config).await {
            Err(Error::Config { reason }) => assert!(reason.contains("`tls` feature"), "{reason}"),
            other => panic!("expected a Config error, got {:?}", other.map(drop)),
        }
    }
}
