//! Publishes MES domain events to Kafka as CloudEvents, in order per entity.
//!
//! [`EventPublisher`] takes [`DomainEvent`](mes_events_types::DomainEvent)s
//! from `mes-events-types`, encodes them with that crate's codec (CloudEvents
//! structured mode by default, binary on request, plus the legacy `ce-*`
//! headers the TypeScript tooling reads), and sends each to the topic of
//! its type (`mes.{domain}.events`), keyed by its entity id, on the
//! partition the kafkajs/Java murmur2 partitioner picks. It is pure Rust
//! (no librdkafka), on `mes-kafka`: the workspace's one Kafka client layer,
//! which the consumer (`mes-sync`) shares.
//!
//! # Example
//!
//! Run as a doc test against the broker `cargo xtask test` provides:
//!
//! ```
//! use mes_events_types::{DomainEvent, PartFields, PartUpdated};
//! use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mes_publisher::Error> {
//! // KAFKA_BROKERS and KAFKA_CLIENT_ID, like the legacy services.
//! let publisher = EventPublisher::connect(PublisherConfig::from_env()?).await?;
//! publisher
//!     .ensure_topics(&[TopicSpec::new("mes.material.events", TopicSettings::default())])
//!     .await?;
//!
//! let event = DomainEvent::new(
//!     "material-service",
//!     PartUpdated {
//!         part_id: "P-12345".into(),
//!         part_number: "P-99999".into(),
//!         part_name: "Landing Gear Strut".into(),
//!         revision: None,
//!         changes: PartFields { part_number: Some("P-99999".into()), ..Default::default() },
//!         previous_values: None,
//!     },
//! )
//! .with_entity("Part", "P-12345");
//! let landed = publisher.publish(&event).await?;
//! println!("{} landed at {}/{}@{}", event.id(), landed.topic, landed.partition, landed.offset);
//! publisher.disconnect().await;
//! # Ok(()) }
//! ```
//!
//! # Delivery
//!
//! `publish` returns once the broker acknowledged the event (acks = all) with
//! where it landed, or an [`Error`] whose [`Error::delivery`] says whether
//! the event may be on the topic anyway.
//!
//! The producer is idempotent by default ([`PublisherConfig::idempotence`]):
//! every batch carries the producer id, its epoch and a sequence number per
//! partition, so a batch retried after its answer was lost (a broker
//! restart, a cut connection) is not written twice. Only a broker that
//! lost the producer's state can still see a batch twice. Events also carry
//! stable ids (ULIDs) and the consumer de-duplicates by id, so delivery is
//! effectively once end to end.
//!
//! Events of one entity are never reordered: they share a partition, and
//! each partition sends one batch at a time, retrying it before the next;
//! when a batch fails for good, the events queued behind it fail unsent
//! ([`Error::EarlierBatchFailed`]) instead of overtaking it.
//!
//! # Throughput
//!
//! Events are sent in batches per partition (up to
//! [`PublisherConfig::max_batch_bytes`], after waiting
//! [`PublisherConfig::linger`] for more), all partitions at once, each
//! partition with one batch in flight, all of them sharing one
//! connection per broker. A batch is written straight from the encoded
//! events into one buffer per partition (`RecordBatch` v2 in a `Produce`
//! request): no object per record or header, which is where rskafka's
//! producer spends most of its CPU per event. `cargo xtask bench` compares it with rskafka's and librdkafka's
//! producers on the same broker.
//!
//! Each connection is authenticated with SASL and its batches compressed
//! when so configured.
//!
//! # Metrics
//!
//! Through the [`metrics`](::metrics) facade: without a recorder installed
//! they cost next to nothing (handles are registered once per partition and
//! per outbox table), and the crate never picks an exporter. Names follow
//! OpenTelemetry's messaging conventions where one exists; no event or
//! entity id is ever a label. The topic label is
//! `messaging.destination.name`, the partition
//! `messaging.destination.partition.id`, the outbox table
//! `mes.outbox.table` (schema-qualified).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `messaging.client.sent.messages` | counter | topic, partition | events the broker acknowledged |
//! | `messaging.client.operation.duration` | histogram (s) | `messaging.operation.name` (`send`), topic, partition | an acknowledged event's wait, from queued on its partition to acknowledged |
//! | `mes.publisher.batch.size` | histogram (events) | topic, partition | events per batch sent |
//! | `mes.publisher.queued` | gauge | topic, partition | events queued or in flight, not yet answered |
//! | `mes.publisher.errors` | counter | `error.type` | publishes that failed, by kind: `produce`, `earlier_batch_failed`, `record_too_large`, `topic_not_found`, `encode`, `disconnected`, ... |
//! | `mes.outbox.pending` | gauge | table | rows waiting to be published (not parked) |
//! | `mes.outbox.parked` | gauge | table | parked rows |
//! | `mes.outbox.oldest_pending_age` | gauge (s) | table | how long the oldest pending row has waited (0 when none) |
//! | `mes.outbox.relay.batches` | counter | table | relay rounds that claimed rows |
//! | `mes.outbox.relay.published` | counter | table | rows published and deleted |
//! | `mes.outbox.relay.failed` | counter | table | failed publish attempts of rows |
//! | `mes.outbox.relay.parked` | counter | table | rows parked |
//!
//! Retries of a batch happen in `mes-kafka`'s producer:
//! `mes.kafka.producer.retries` and `mes.kafka.producer.errors` (by Kafka
//! error code) count them. The outbox gauges are set by
//! `Outbox::stats`, which a running relay calls as it polls (when a
//! round finds nothing left after rows moved, else at most once per poll
//! interval) and `OutboxRelay::drain` at its end. The in-memory
//! publisher records no metrics.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `compression-gzip` | no | [`Compression::Gzip`] |
//! | `compression-lz4` | no | [`Compression::Lz4`] |
//! | `compression-snappy` | no | [`Compression::Snappy`] |
//! | `compression-zstd` | no | [`Compression::Zstd`] |
//! | `tls` | no | TLS to the brokers ([`PublisherConfig::tls`], `KAFKA_TLS*` in [`PublisherConfig::from_env`]): rustls with the ring provider; the system's roots or a given CA; client certificates (mTLS) |
//! | `outbox-postgres` | no | the transactional outbox on PostgreSQL (sqlx): `Outbox`, `OutboxRelay` |
//!
//! # TLS
//!
//! With the `tls` feature, [`TlsSettings`] says which CAs to trust (a PEM
//! file or text, else the system's roots), the client certificate and key
//! for brokers that require one, and optionally the name the brokers'
//! certificates must carry. SASL works over TLS as it does without. A
//! broker certificate that fails verification ends
//! [`EventPublisher::connect`] at once with [`Error::TlsHandshake`]; unusable
//! files are [`Error::TlsSetup`] before anything is sent. A broker that
//! refuses the client's certificate (or its absence) closes the connection
//! after the handshake, which shows as [`Error::Connect`] at the connect
//! timeout; when a broker asked for a client certificate and none is
//! configured, that error's cause says so.

mod config;
mod error;
mod kafka;
mod memory;
mod metrics;
#[cfg(feature = "outbox-postgres")]
mod outbox;
mod publisher;

pub use config::{Compression, PublisherConfig, TopicSettings};
pub use error::{ClientError, Delivery, Error};
pub use memory::{RecordedEvents, RecordedRecord};
pub use mes_kafka::{KafkaConfig, RetryPolicy, SaslCredentials, SaslMechanism, TlsSettings};
#[cfg(feature = "outbox-postgres")]
pub use outbox::{
    Acknowledged, BatchOutcome, Outbox, OutboxRelay, OutboxStats, OutboxTable, ParkedEvent, RelayConfig,
    RelayStats, Requeue, RunningRelay, TransactionWork,
};
pub use publisher::{EventPublisher, Published, TopicSpec};
