//! The MES event consumer that keeps each service's cached copies in sync.
//!
//! [`EventConsumer`] reads the domain events of the fleet (CloudEvents
//! structured, binary and legacy records alike) and calls typed handlers.
//! rskafka has no consumer groups, so this crate brings its own, with its
//! state in Redis:
//!
//! - **Order and progress.** Each partition is processed strictly in offset
//!   order, partitions in parallel. A record's offset is committed only
//!   after its handler succeeded or it went to the dead-letter topic:
//!   delivery is at least once. Event ids are remembered for a window, so a
//!   redelivered event does not run its handler again.
//! - **Groups.** Instances of one service share the partitions through
//!   leases in Redis; a dead instance's partitions are taken over within the
//!   lease TTL, and a commit under a lost lease is refused (fencing), so two
//!   instances never both advance one partition.
//! - **Failures.** A failing handler is retried with exponential back-off,
//!   then its record goes to `{topic}.dlq` with the reason, attempt count,
//!   group and source position in its headers; an undecodable record goes
//!   there at once. If the dead-letter topic cannot be written, the
//!   partition waits and retries: nothing is dropped.
//! - **Exactly-once Redis effects.** A handler may return [`Effects`],
//!   applied atomically with the commit.
//! - **Cache sync rules as data.** [`CacheSync`] says which cache entries an
//!   event makes stale ([`CacheSync::fleet`] is the ready set for the
//!   fleet's reference data); [`EventConsumer::sync`] applies them with a
//!   `mes_cache::ReferenceDataCache`.
//! - **In process, for tests.** [`EventConsumer::dispatch`] runs a
//!   consumer's cache rules and handler on one event (from an in-memory
//!   publisher, say) without Kafka or Redis, and returns what a running
//!   consumer would have done with it.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none yet) | | |

mod config;
mod consumer;
mod dispatch;
mod error;
mod handler;
mod state;
mod stats;
mod sync;
mod worker;

pub use config::{ConsumerConfig, HandlerRetry, StartPosition};
pub use consumer::{EventConsumer, RunningConsumer};
pub use dispatch::{DispatchError, Dispatched};
pub use error::{BoxError, Error};
pub use handler::{Effects, HandlerError};
pub use state::TopicPartition;
pub use stats::{ConsumerStats, PartitionStats};
pub use sync::CacheSync;
