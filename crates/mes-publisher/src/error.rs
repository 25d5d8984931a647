//! The crate's one error type.

/// The underlying client's error, kept opaque so a Kafka client upgrade is
/// not a breaking change.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

pub use mes_kafka::Delivery;

/// Everything that can go wrong connecting to Kafka or publishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration (or the environment it was read from) is unusable.
    #[error("invalid publisher configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// No broker could be reached within the connect timeout.
    #[error("cannot connect to the Kafka brokers {brokers:?}")]
    Connect {
        /// The bootstrap brokers tried.
        brokers: Vec<String>,
        /// Why; a timeout when the bound elapsed first.
        #[source]
        source: ClientError,
    },

    /// The TLS settings cannot be used: a CA, certificate or key file cannot
    /// be read, holds no PEM of the expected kind, or the client key does not
    /// match the client certificate; or no trusted root certificate was
    /// found. Found before any connection is made.
    #[error("unusable TLS settings: {what}")]
    TlsSetup {
        /// What is wrong, naming the file when there is one.
        what: String,
        /// The underlying error (never showing key material).
        #[source]
        source: ClientError,
    },

    /// A broker's certificate failed verification while connecting (signed
    /// by an untrusted CA, expired, or not naming the host): the connect
    /// ends at once, since retrying cannot fix it.
    #[error("the TLS certificate of Kafka broker {server:?} was rejected")]
    TlsHandshake {
        /// The name the certificate was checked against (the broker's host,
        /// or the configured server name).
        server: String,
        /// Why it was rejected.
        #[source]
        source: ClientError,
    },

    /// The event cannot be encoded (its type makes no topic name, or its
    /// payload does not serialise). Not written.
    #[error("event cannot be encoded")]
    Encode(#[source] mes_events_types::Error),

    /// The topic does not exist and automatic creation is off.
    #[error("topic {topic:?} does not exist (create it with ensure_topics, or turn on auto_create_topics)")]
    TopicNotFound {
        /// The missing topic.
        topic: String,
    },

    /// The record is larger than the publisher or the broker accepts. Not
    /// written.
    #[error("record of {size} bytes for topic {topic:?} exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The record's size (key, value and headers).
        size: usize,
        /// The publisher's `max_record_bytes`, or 0 when the broker refused it.
        limit: usize,
    },

    /// The broker did not acknowledge the event.
    #[error("publishing to {topic}/{partition} failed ({delivery:?})")]
    Produce {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Whether the event may be on the topic anyway.
        delivery: Delivery,
        /// The client's error.
        #[source]
        source: ClientError,
    },

    /// An earlier batch of the same partition failed, so this event was not
    /// sent: sending it would have put it before events its producer may
    /// retry. Not written; retrying it in order is safe.
    #[error("not sent: an earlier batch to {topic}/{partition} failed")]
    EarlierBatchFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },

    /// Creating a topic, reading metadata or a health check failed.
    #[error("Kafka admin request failed: {what}")]
    Admin {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },

    /// A statement on the outbox table failed (feature `outbox-postgres`):
    /// the database is unreachable, the table is missing, or an event with
    /// the same id is already enqueued.
    #[error("outbox: cannot {what}")]
    Outbox {
        /// What was being done.
        what: String,
        /// The database client's error.
        #[source]
        source: ClientError,
    },

    /// The publisher was disconnected.
    #[error("the publisher is disconnected")]
    Disconnected,
}

impl Error {
    /// For a failed publish: whether the event may be on the topic anyway.
    pub fn delivery(&self) -> Delivery {
        match self {
            Self::Produce { delivery, .. } => *delivery,
            _ => Delivery::NotWritten,
        }
    }
}

impl From<mes_kafka::Error> for Error {
    /// Connection-level failures of the Kafka layer, in this crate's terms.
    fn from(error: mes_kafka::Error) -> Self {
        use mes_kafka::Error as K;
        match error {
            K::Config { reason } => Self::Config { reason },
            K::TlsSetup { what, source } => Self::TlsSetup { what, source },
            K::TlsHandshake { server, source } => Self::TlsHandshake { server, source },
            K::UnknownTopic { topic } => Self::TopicNotFound { topic },
            K::NoBroker { brokers, last } => match *last {
                // The reason every broker gave: keep its variant.
                K::TlsHandshake { server, source } => Self::TlsHandshake { server, source },
                K::TlsSetup { what, source } => Self::TlsSetup { what, source },
                last => Self::Connect {
                    brokers,
                    source: Box::new(last),
                },
            },
            other => Self::Connect {
                brokers: Vec::new(),
                source: Box::new(other),
            },
        }
    }
}
