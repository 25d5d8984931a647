//! The Kafka client layer of the MES crates.
//!
//! `mes-kafka` knows Kafka, not MES events: records with a key, ordered
//! headers (duplicate names kept, names as bytes) and a value. Every byte
//! the MES crates exchange with Kafka goes through it: one TLS set-up, one
//! SASL implementation, one metadata cache.
//!
//! **Who should depend on it:** `mes-publisher` (producing) and `mes-sync`
//! (fetching, consumer groups) are built on it, and a service normally uses
//! those. Depend on `mes-kafka` directly for what they do not offer: admin
//! calls, raw records, a tool. A service that only needs the event schemas
//! takes `mes-events-types` alone.
//!
//! # What is in it
//!
//! - [`protocol`]: the requests and answers of every API the crates use,
//!   one module each, and the `RecordBatch` v2 writer and reader, pure and
//!   bounds-checked (no answer can panic the process or make it allocate
//!   from a length it did not check).
//! - [`BrokerConnection`]: one connection to one broker. Several requests
//!   in flight, matched by correlation id; each frame written whole with
//!   `TCP_NODELAY`; a timeout on every request; versions negotiated with
//!   `ApiVersions` (the highest both sides speak, or an error naming the
//!   API).
//! - [`KafkaClient`]: the bootstrap brokers, one connection per broker
//!   shared by every caller, the cluster metadata (leaders, partition
//!   counts) refreshed on leader errors and on [`KafkaConfig::metadata_max_age`],
//!   and admin calls (create topics, list offsets, producer ids).
//! - [`PartitionProducer`]: one partition's batches, one at a time,
//!   idempotent with a [`ProducerIdentity`].
//! - [`PartitionFetcher`]: one partition's records from an offset; a record
//!   that cannot be read fails alone, never its batch or its partition.
//!
//! # Example
//!
//! Run as a doc test against the broker `cargo xtask test` provides:
//!
//! ```
//! use mes_kafka::protocol::create_topics::NewTopic;
//! use mes_kafka::protocol::record_batch::{Compression, Record};
//! use mes_kafka::{KafkaClient, KafkaConfig, PartitionFetcher, PartitionProducer, ProducerIdentity};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = KafkaClient::connect(KafkaConfig::from_env()?).await?; // KAFKA_BROKERS
//! let topic = format!("mes-kafka-doc-{}", std::process::id());
//! client.create_topic(NewTopic { name: topic.clone(), num_partitions: 1, replication_factor: 1, configs: vec![] }).await?;
//!
//! let identity = ProducerIdentity::new(client.clone()); // idempotent
//! let mut producer = PartitionProducer::new(client.clone(), Some(identity), &topic, 0, Compression::None);
//! let record = Record::new(Some(b"P-1".to_vec()), Some(b"{}".to_vec()))
//!     .header("ce_type", "material.part.updated")
//!     .header("ce_type", "a second header of the same name, kept");
//! let offset = producer.produce(&[record]).await?;
//!
//! let mut fetcher = PartitionFetcher::new(client, &topic, 0);
//! let fetched = fetcher.fetch(offset).await?;
//! let read = fetched.records[0].as_ref().map_err(Clone::clone)?;
//! assert_eq!(read.headers.len(), 2);
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](::metrics) facade: without a recorder installed
//! they cost next to nothing (handles are registered once per connection
//! and API, per producer and per fetcher), and the crate never picks an
//! exporter. Label names follow OpenTelemetry: the broker is
//! `server.address`, the topic `messaging.destination.name`, the partition
//! `messaging.destination.partition.id`, a failure's kind `error.type` (the
//! Kafka error code's name, such as `NOT_LEADER_OR_FOLLOWER`, when the
//! broker answered with one; else `connect`, `io`, `timeout`, `tls`,
//! `sasl`, `decode`, `unknown_topic`, ...).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `mes.kafka.requests` | counter | `mes.kafka.api`, broker | requests sent (`Produce`, `Fetch`, `Metadata`, `JoinGroup`, ...), connection set-up excluded |
//! | `mes.kafka.request.duration` | histogram (s) | `mes.kafka.api`, broker | request written to answer read (or failure) |
//! | `mes.kafka.request.errors` | counter | `mes.kafka.api`, broker, `error.type` | requests that got no answer (`timeout`, `io`); the connection is dropped |
//! | `mes.kafka.connections.opened` | counter | broker | connections opened (TCP, TLS, SASL, `ApiVersions`), reconnections included |
//! | `mes.kafka.connections.failed` | counter | broker, `error.type` | connection attempts that failed |
//! | `mes.kafka.connections.broken` | counter | broker | connections that broke (closed by the broker, a read or write failed, a request timed out) |
//! | `mes.kafka.producer.batches` | counter | topic, partition | batches the broker acknowledged |
//! | `mes.kafka.producer.records` | counter | topic, partition | records in those batches |
//! | `mes.kafka.producer.bytes` | counter | topic, partition | bytes of their `Produce` requests |
//! | `mes.kafka.producer.errors` | counter | topic, `error.type` | failed produce attempts (each retry that fails counts) |
//! | `mes.kafka.producer.retries` | counter | topic, partition | batches sent again after a failed attempt |
//! | `mes.kafka.fetch.records` | counter | topic, partition | readable records fetched |
//! | `mes.kafka.fetch.bytes` | counter | topic, partition | record bytes fetched (as on the wire, compressed or not) |
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `compression-gzip` | no | gzip record batches, written and read |
//! | `compression-lz4` | no | LZ4 record batches (builds C) |
//! | `compression-snappy` | no | Snappy record batches |
//! | `compression-zstd` | no | Zstandard record batches (builds C) |
//! | `tls` | no | TLS to the brokers ([`KafkaConfig::tls`], `KAFKA_TLS*` in [`KafkaConfig::from_env`]): rustls with the ring provider |
//!
//! Without a codec's feature, a fetched batch compressed with it is an error
//! for that batch, naming the feature.
//!
//! # Why not rskafka
//!
//! rskafka (the design's first choice) stays in this workspace's tests, as
//! an independent client that reads back what this crate wrote, and as a
//! benchmark baseline. Production traffic does not use it: it has no
//! consumer groups and no idempotent producer, collapses duplicate header
//! names into a map, fails a whole fetch on one non-UTF-8 header name, and
//! writes a request's length and body in two writes without `TCP_NODELAY`.

mod client;
mod config;
mod connection;
mod error;
mod fetch;
mod group;
mod metrics;
mod producer;
pub mod protocol;
#[cfg(feature = "tls")]
mod tls;

pub use client::{KafkaClient, OffsetSpec, PartitionMetadata, TopicMetadata};
pub use config::{KafkaConfig, RetryPolicy, SaslCredentials, SaslMechanism, TlsSettings};
pub use connection::{BrokerConnection, BrokerStream};
pub use error::{BoxError, Error, ErrorCode, Result};
pub use fetch::{Fetched, PartitionFetcher};
pub use group::{Generation, GroupMember, GroupOptions, ROUND_ROBIN, round_robin};
pub use producer::{Delivery, PartitionProducer, ProduceError, ProducerIdentity};
