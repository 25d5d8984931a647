//! The crate's one error type.

use std::time::Duration;

/// A boxed cause: Redis client errors, loader errors. Kept boxed so the
/// client crate's types stay out of the public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to the cache.
///
/// A miss is not an error: reads return `Ok(None)`. A value that is in Redis
/// but cannot be decoded is a (counted, logged) miss too, never an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (bad URL, zero pool size, ...). The URL
    /// is never part of the message, since it may hold a password.
    #[error("invalid cache configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
        /// The underlying parse error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The first connection to Redis could not be made.
    #[error("cannot connect to Redis")]
    Connect {
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// A Redis command failed (connection lost, timeout, server error).
    #[error("Redis {operation} failed")]
    Redis {
        /// What the cache was doing, e.g. `get`, `set_many`, `invalidate_all`.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// A value could not be serialised to JSON for writing.
    #[error("cannot encode the value for key {key:?}")]
    Encode {
        /// The Redis key.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A TTL that the legacy envelope cannot carry (it holds whole seconds,
    /// at least one).
    #[error("invalid TTL {ttl:?}: must be at least one second")]
    InvalidTtl {
        /// The TTL given.
        ttl: Duration,
    },

    /// A loader given to `get_or_load` or `warm_cache` failed.
    #[error("loader failed")]
    Loader {
        /// The loader's error.
        #[source]
        source: BoxError,
    },

    /// The cache was closed with `close()`.
    #[error("the cache is closed")]
    Closed,
}

impl Error {
    pub(crate) fn redis(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Redis {
            operation,
            source: source.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            reason: reason.into(),
            source: None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A scan of a Cluster could not finish without slots moving under it: a
/// reshard went on for longer than the passes allowed, or a migration was
/// left open (`redis-cli --cluster check` shows it; `--cluster fix` closes
/// it). Entries may remain; what was removed stays removed.
#[derive(Debug, thiserror::Error)]
#[error(
    "slots of the cluster kept moving during {passes} scans (a reshard in progress, or a migration left open)"
)]
pub struct SlotsKeptMoving {
    /// How many scans were made.
    pub passes: u32,
}

/// The source of an [`Error::Redis`] when Redis, or the client's routing of
/// a pipeline, answered a batch read with a number of values other than the
/// number of keys asked for. Taking the missing values for misses would
/// hide entries that exist; the read fails instead and can be retried.
#[derive(Debug, thiserror::Error)]
#[error("{command} of {asked} keys answered {answered} values")]
pub struct ShortReply {
    /// The command (`MGET`, or the pipeline as a whole).
    pub command: &'static str,
    /// How many keys (or commands) were sent.
    pub asked: usize,
    /// How many values came back.
    pub answered: usize,
}
