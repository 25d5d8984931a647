//! The crate's one error type.

/// A cause kept opaque, so a client upgrade is not a breaking change.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can stop a consumer from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid consumer configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The Redis that keeps the group's state cannot be reached or failed a
    /// command.
    #[error("consumer state in Redis: {what}")]
    State {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// Kafka cannot be reached or failed a request.
    #[error("Kafka: {what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// Publishing a dead letter failed (the partition stops and retries).
    #[error("dead-letter publish failed")]
    DeadLetter(#[source] mes_publisher::Error),
}
