//! The MES event consumer that keeps each service's cached copies in sync.
//!
//! [`EventConsumer`] reads the domain events of the fleet (CloudEvents
//! structured, binary and legacy records alike) and calls typed handlers.
//! It fetches with `mes-kafka`, the workspace's Kafka client layer (a
//! record that cannot be read fails alone and is dead-lettered), takes part
//! in a Kafka consumer group, and keeps its progress and effects in Redis:
//!
//! - **Order and progress.** Each partition is processed strictly in offset
//!   order, partitions in parallel. A record's offset is committed only
//!   after its handler succeeded or it went to the dead-letter topic:
//!   delivery is at least once. Event ids are remembered for a window, so a
//!   redelivered event does not run its handler again.
//! - **Groups.** Instances of one service share the partitions by Kafka's
//!   consumer-group protocol with kafkajs's `RoundRobinAssigner`, so Rust
//!   and kafkajs instances can share one group during a rolling deploy. A
//!   dead instance's partitions are reassigned after its session timeout.
//!   Commits go to Redis under a per-partition owner (generation and
//!   member) that only a newer generation replaces and that lapses when the
//!   member stops heartbeating (fencing), so two instances never both
//!   advance one partition. Offsets are mirrored to Kafka at each heartbeat
//!   and on every rebalance, for Kafka's tooling and lag exporters; an
//!   offset there that someone else moved (kafkajs, an operator's reset)
//!   is where a newly assigned partition starts. Redis keeps a record of
//!   each mirror, on a replica before Kafka gets it, so a Redis failover
//!   never makes a mirror look like someone else's. Behind a Sentinel the
//!   consumer follows the master the Sentinels name, also through a
//!   switchover that leaves the old master up.
//! - **Failures.** A failing handler is retried with exponential back-off,
//!   then its record goes to `{topic}.dlq` with the reason, attempt count,
//!   group and source position in its headers; an undecodable record goes
//!   there at once. If the dead-letter topic cannot be written, the
//!   partition waits and retries: nothing is dropped. [`read_dead_letters`]
//!   lists them with those headers read, and [`DeadLetterReplay`] puts
//!   chosen ones back on their topic (both behind `mes dlq`).
//! - **Exactly-once Redis effects.** A handler may return [`Effects`],
//!   applied atomically with the commit. Each commit continues from the
//!   offset the last one wrote; when a Redis failover (Sentinel, Cluster)
//!   lost acknowledged writes, the next commit is refused (or, with
//!   nothing more to read, a check every second finds it) and the
//!   partition goes back to the offset Redis still holds, handling again
//!   the events whose effects were lost with it
//!   (`mes.consumer.commits.diverged`).
//! - **Cache sync rules as data.** [`CacheSync`] says which cache entries an
//!   event makes stale ([`CacheSync::fleet`] is the ready set for the
//!   fleet's reference data); [`EventConsumer::sync`] applies them with a
//!   `mes_cache::ReferenceDataCache`.
//! - **In process, for tests.** [`EventConsumer::dispatch`] runs a
//!   consumer's cache rules and handler on one event (from an in-memory
//!   publisher, say) without Kafka or Redis, and returns what a running
//!   consumer would have done with it.
//!
//! # Example
//!
//! A Work Order service's consumer reacting to part updates; run as a doc
//! test against the broker and Redis `cargo xtask test` provides:
//!
//! ```
//! use mes_events_types::{DomainEvent, PartFields, PartUpdated};
//! use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
//! use mes_sync::{ConsumerConfig, Effects, EventConsumer, KafkaConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kafka = KafkaConfig::from_env()?; // KAFKA_BROKERS, like the legacy services
//! let redis_url = std::env::var("REDIS_URL")?; // where the group keeps its state
//! let topic = TopicSpec::new("mes.material.events", TopicSettings::default());
//! let publisher = EventPublisher::connect(PublisherConfig::with_kafka(kafka.clone())).await?;
//! publisher.ensure_topics(&[topic]).await?;
//!
//! let (renamed, mut renames) = tokio::sync::mpsc::unbounded_channel();
//! let consumer = EventConsumer::new(ConsumerConfig::new("work-order-service", kafka, redis_url))
//!     .on(move |event: DomainEvent<PartUpdated>| {
//!         let renamed = renamed.clone();
//!         async move {
//!             // Real handlers update the service's own copy here; Effects
//!             // are Redis writes applied once, with the commit.
//!             let _ = renamed.send((event.id().clone(), event.data().part_name.clone()));
//!             Effects::none()
//!         }
//!     })
//!     .start()
//!     .await?;
//! // A new group starts at the end of each partition: wait until it has them.
//! let partitions = usize::from(TopicSettings::default().partitions);
//! consumer.wait_for(|stats| stats.owned().len() == partitions).await;
//!
//! let update = DomainEvent::new(
//!     "material-service",
//!     PartUpdated {
//!         part_id: "P-12345".into(),
//!         part_number: "P-12345".into(),
//!         part_name: "Landing Gear Strut Mk II".into(),
//!         revision: None,
//!         changes: PartFields { part_name: Some("Landing Gear Strut Mk II".into()), ..Default::default() },
//!         previous_values: None,
//!     },
//! )
//! .with_entity("Part", "P-12345");
//! publisher.publish(&update).await?;
//!
//! // The topic is shared: other part updates may arrive too.
//! while let Some((id, name)) = renames.recv().await {
//!     if &id == update.id() {
//!         assert_eq!(name, "Landing Gear Strut Mk II");
//!         break;
//!     }
//! }
//! consumer.shutdown().await; // finishes, commits, releases the partitions
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](::metrics) facade: without a
//! recorder installed they cost nothing, and the crate never picks an
//! exporter. Names follow OpenTelemetry's messaging conventions where one
//! exists; no event or entity id is ever a label.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `messaging.client.consumed.messages` | counter | group, topic, partition, `mes.outcome` | records consumed, by outcome: `handled`, `duplicate`, `ignored`, `dead_lettered` |
//! | `messaging.process.duration` | histogram (s) | group, topic | one handler attempt, cache rules included |
//! | `mes.consumer.retries` | counter | group, topic | failed handler attempts that were retried |
//! | `mes.consumer.lag` | gauge | group, topic, partition | records not yet committed, as of the last fetch |
//! | `mes.consumer.commit.duration` | histogram (s) | group, `mes.store` | a commit: `redis` (offset, marks and effects) or `kafka` (the mirrored offsets) |
//! | `mes.consumer.commits.diverged` | counter | group, topic | a partition found Redis no longer held the offset it had reached (a failover lost acknowledged writes), by a refused commit or, idle, by asking every second; the partition went back to Redis's offset and handled those events again |
//! | `mes.consumer.rebalances` | counter | group, `mes.reason` | partitions given up to join again: `rebalance`, `session_lost`, `partitions_changed` |
//! | `mes.consumer.subscription_gaps` | gauge | group | topics some instance reads and the leader does not (nobody consumes them); alarm above 0 |
//!
//! The group label is `messaging.consumer.group.name`, the topic
//! `messaging.destination.name`, the partition
//! `messaging.destination.partition.id`.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | no | TLS to the brokers: turns on `mes-kafka`'s and `mes-publisher`'s `tls`. The consumer's Kafka client and its dead-letter publisher are both built from [`ConsumerConfig`]'s [`KafkaConfig`], so its TLS settings (or `KAFKA_TLS*` through [`KafkaConfig::from_env`]) apply to both |

mod config;
mod consumer;
mod dispatch;
mod error;
mod handler;
mod metrics;
mod replay;
mod state;
mod stats;
mod sync;
mod worker;

pub use config::{ConsumerConfig, HandlerRetry, StartPosition};
pub use consumer::{EventConsumer, RunningConsumer};
pub use dispatch::{DispatchError, Dispatched};
pub use error::{BoxError, Error};
pub use handler::{Effects, HandlerError};
pub use mes_kafka::KafkaConfig;
pub use replay::{
    DeadLetter, DeadLetterReplay, ReplayReport, ReplayedLetter, UnreadableDeadLetter, read_dead_letters,
};
pub use state::TopicPartition;
pub use stats::{ConsumerStats, GroupStats, PartitionStats};
pub use sync::CacheSync;
