//! [`EventPublisher`]: the one type services publish through.

use std::sync::Arc;

use mes_events_types::{DomainEvent, EncodeOptions, KafkaRecord, encode};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::config::{PublisherConfig, TopicSettings};
use crate::error::Error;
use crate::kafka::{EncodedRecord, KafkaBackend, Payload, TopicHandle};
use crate::memory::{MemoryBackend, RecordedEvents};
use crate::metrics;

/// Where the broker put an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the broker assigned.
    pub offset: i64,
}

/// A topic to create, for [`EventPublisher::ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name, e.g. `mes.material.events`.
    pub name: String,
    /// Partitions and replication.
    pub settings: TopicSettings,
}

impl TopicSpec {
    /// A topic with these settings.
    pub fn new(name: impl Into<String>, settings: TopicSettings) -> Self {
        Self {
            name: name.into(),
            settings,
        }
    }
}

/// Publishes domain events to Kafka as CloudEvents, in order per entity.
///
/// Cheap to clone: clones share one connection and one queue per partition.
/// Each event goes to the topic of its type, keyed by its entity id, on the
/// partition the kafkajs/Java murmur2 partitioner picks, so Rust and
/// TypeScript producers of one entity's events agree on the partition.
/// `publish` returns only once the broker acknowledged the event.
///
/// For services' unit tests, [`EventPublisher::in_memory`] gives the same
/// type backed by a recorder instead of Kafka.
#[derive(Clone)]
pub struct EventPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    encode: EncodeOptions,
}

// One per publisher, behind an Arc: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Kafka(KafkaBackend),
    Memory(MemoryBackend),
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.backend {
            Backend::Kafka(_) => "kafka",
            Backend::Memory(_) => "in-memory",
        };
        f.debug_struct("EventPublisher")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// Connects to the brokers; fails within the configured connect timeout
    /// if none answers.
    #[tracing::instrument(name = "publisher_connect", skip_all, fields(brokers = ?config.brokers()))]
    pub async fn connect(config: PublisherConfig) -> Result<Self, Error> {
        let encode = config.encode;
        if encode.content_mode() == mes_events_types::ContentMode::Binary {
            tracing::warn!(
                "this publisher writes CloudEvents in binary mode: the value is the data alone, which \
                 no TypeScript consumer of the fleet can read; use it only on topics no legacy \
                 consumer reads"
            );
        }
        let backend = KafkaBackend::connect(config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Kafka(backend),
                encode,
            }),
        })
    }

    /// A publisher that records events instead of sending them, for unit
    /// tests of services: every topic exists with one partition, every
    /// publish succeeds. The returned handle shows what was published.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use mes_events_types::{DomainEvent, PartDeleted, Timestamp};
    /// use mes_publisher::EventPublisher;
    ///
    /// let (publisher, recorded) = EventPublisher::in_memory();
    /// let event = DomainEvent::new(
    ///     "material-service",
    ///     PartDeleted { part_id: "P-1".into(), part_number: "N-1".into(), deleted_at: Timestamp::now() },
    /// )
    /// .with_entity("Part", "P-1");
    /// let landed = publisher.publish(&event).await.unwrap();
    /// assert_eq!(landed.topic, "mes.material.events");
    /// assert_eq!(recorded.events()[0].id(), event.id());
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn in_memory() -> (Self, RecordedEvents) {
        Self::in_memory_with(&PublisherConfig::new(Vec::<String>::new()), 1)
    }

    /// [`in_memory`](Self::in_memory) with these encode settings and
    /// `partitions` partitions per topic.
    pub fn in_memory_with(config: &PublisherConfig, partitions: u32) -> (Self, RecordedEvents) {
        let (backend, recorded) = MemoryBackend::new(partitions);
        let publisher = Self {
            inner: Arc::new(Inner {
                backend: Backend::Memory(backend),
                encode: config.encode,
            }),
        };
        (publisher, recorded)
    }

    /// Publishes one event and waits for the broker's acknowledgement.
    pub async fn publish<T: Serialize>(&self, event: &DomainEvent<T>) -> Result<Published, Error> {
        let span = tracing::info_span!(
            "publish",
            event_id = %event.id(),
            event_type = %event.event_type(),
            correlation_id = event.correlation_id(),
        );
        async {
            let mut outcomes = self.publish_all(std::slice::from_ref(event)).await;
            outcomes.pop().unwrap_or(Err(Error::Disconnected))
        }
        .instrument(span)
        .await
    }

    /// Publishes events in one go: all are queued in order (so one entity's
    /// events keep their order), batched per partition, and awaited
    /// together. The outcome of each event is at the same index.
    pub async fn publish_batch<T: Serialize>(
        &self,
        events: &[DomainEvent<T>],
    ) -> Vec<Result<Published, Error>> {
        let span = tracing::info_span!("publish_batch", events = events.len());
        self.publish_all(events).instrument(span).await
    }

    /// Publishes a record that is already encoded (a dead letter, a record
    /// relayed as it is) to `topic`, on the partition its key picks.
    pub async fn publish_record(&self, topic: &str, record: KafkaRecord) -> Result<Published, Error> {
        match &self.inner.backend {
            Backend::Memory(memory) => memory.record(topic.to_owned(), record),
            Backend::Kafka(kafka) => {
                let published = async {
                    let handle = kafka.topic(topic).await?;
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                        .unwrap_or_default();
                    let record = Payload::Record(record);
                    let (partition, receiver) = kafka.enqueue(topic, &handle, record, now_ms).await?;
                    await_ack(topic.to_owned(), partition, receiver).await
                };
                counted(published.await)
            }
        }
    }

    /// Creates the topics that do not exist yet; returns the names created.
    /// Existing topics are left as they are.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, Error> {
        match &self.inner.backend {
            Backend::Kafka(kafka) => kafka.ensure_topics(topics).await,
            Backend::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Asks the cluster for its metadata: `Ok` when a broker answers.
    pub async fn health_check(&self) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::Kafka(kafka) => kafka.health_check().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Sends everything queued, waits for the broker's answers, and stops:
    /// later publishes fail with [`Error::Disconnected`].
    pub async fn disconnect(&self) {
        match &self.inner.backend {
            Backend::Kafka(kafka) => kafka.disconnect().await,
            Backend::Memory(memory) => memory.disconnect(),
        }
    }

    fn prepare<T: Serialize>(&self, event: &DomainEvent<T>) -> Result<Prepared, Error> {
        let topic = event.topic().map_err(Error::Encode)?;
        let record = encode(event, &self.inner.encode).map_err(Error::Encode)?;
        Ok(Prepared { topic, record })
    }

    async fn publish_all<T: Serialize>(&self, events: &[DomainEvent<T>]) -> Vec<Result<Published, Error>> {
        match &self.inner.backend {
            Backend::Memory(memory) => events
                .iter()
                .map(|e| self.prepare(e).and_then(|p| memory.record(p.topic, p.record)))
                .collect(),
            Backend::Kafka(kafka) => {
                // Encode and queue one event after the other (the partition
                // workers start sending meanwhile), then wait for the answers.
                let mut topic: Option<CurrentTopic> = None;
                let mut waiting = Vec::with_capacity(events.len());
                for event in events {
                    waiting.push(self.enqueue(kafka, &mut topic, event).await);
                }

                let mut outcomes = Vec::with_capacity(waiting.len());
                for item in waiting {
                    outcomes.push(counted(match item {
                        Ok((topic, partition, receiver)) => await_ack(topic, partition, receiver).await,
                        Err(e) => Err(e),
                    }));
                }
                outcomes
            }
        }
    }

    async fn enqueue<T: Serialize>(
        &self,
        kafka: &KafkaBackend,
        current: &mut Option<CurrentTopic>,
        event: &DomainEvent<T>,
    ) -> Result<(String, i32, oneshot::Receiver<Result<i64, Error>>), Error> {
        // Consecutive events of one type share one topic name and lookup.
        let event_type = event.event_type().as_str();
        let route = match current.take() {
            Some(known) if known.event_type == event_type => Route::Known(known),
            _ => Route::New(event.topic().map_err(Error::Encode)?),
        };
        let record = EncodedRecord::encode(event, &self.inner.encode).map_err(Error::Encode)?;
        let current = current.insert(match route {
            Route::Known(known) => known,
            Route::New(topic) => CurrentTopic {
                event_type: event_type.to_owned(),
                handle: kafka.topic(&topic).await?,
                topic,
            },
        });
        let (partition, receiver) = kafka
            .enqueue(
                &current.topic,
                &current.handle,
                Payload::Encoded(record),
                event.time().unix_millis(),
            )
            .await?;
        Ok((current.topic.clone(), partition, receiver))
    }
}

enum Route {
    Known(CurrentTopic),
    New(String),
}

/// The topic of the event type a batch published last.
struct CurrentTopic {
    event_type: String,
    topic: String,
    handle: Arc<TopicHandle>,
}

/// A publish's outcome, its failure counted in `mes.publisher.errors`.
fn counted(outcome: Result<Published, Error>) -> Result<Published, Error> {
    if let Err(error) = &outcome {
        metrics::failed(error);
    }
    outcome
}

async fn await_ack(
    topic: String,
    partition: i32,
    receiver: oneshot::Receiver<Result<i64, Error>>,
) -> Result<Published, Error> {
    match receiver.await {
        Ok(Ok(offset)) => Ok(Published {
            topic,
            partition,
            offset,
        }),
        Ok(Err(e)) => Err(e),
        // The worker ended without answering: only a panic does that.
        Err(_) => Err(Error::Produce {
            topic,
            partition,
            delivery: crate::Delivery::MaybeWritten,
            source: "the partition producer stopped without an answer".into(),
        }),
    }
}

pub(crate) struct Prepared {
    topic: String,
    record: KafkaRecord,
}
