//! The crate's one error type, and Kafka's error codes.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::DecodeError;

/// A boxed cause from a library below this one (rustls, rsasl), kept
/// opaque so upgrading it is not a breaking change.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration (or the environment it was read from) is unusable.
    #[error("invalid Kafka configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// A TCP connection to the broker could not be made within the connect
    /// timeout.
    #[error("cannot connect to Kafka broker {address}")]
    Connect {
        /// The broker's `host:port`.
        address: String,
        /// Why (a timeout when the bound elapsed first).
        #[source]
        source: Arc<std::io::Error>,
    },

    /// None of the bootstrap brokers answered.
    #[error("no Kafka broker of {brokers:?} could be reached")]
    NoBroker {
        /// The brokers tried.
        brokers: Vec<String>,
        /// What happened with the last one.
        #[source]
        last: Box<Error>,
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
        source: BoxError,
    },

    /// A broker's certificate failed verification: signed by an untrusted
    /// CA, expired, or not naming the host. Retrying cannot fix it.
    #[error("the TLS certificate of Kafka broker {server:?} was rejected")]
    TlsHandshake {
        /// The name the certificate was checked against.
        server: String,
        /// Why it was rejected.
        #[source]
        source: BoxError,
    },

    /// SASL authentication failed: the broker does not offer the mechanism,
    /// or refused the credentials. Retrying cannot fix it.
    #[error("SASL {mechanism} with Kafka broker {address} failed: {what}")]
    Sasl {
        /// The broker.
        address: String,
        /// The mechanism.
        mechanism: &'static str,
        /// What failed.
        what: String,
        /// The broker's error code or the SASL library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The connection broke (the broker closed it, or a read or write
    /// failed). Every request waiting on it gets this one cause.
    #[error("the connection to Kafka broker {address} broke")]
    Io {
        /// The broker.
        address: String,
        /// The failure, shared by every request that was in flight.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A request got no answer within the request timeout. The connection
    /// is closed: the request may still have been carried out.
    #[error("{api} request to Kafka broker {address} got no answer within {timeout:?}")]
    Timeout {
        /// The broker.
        address: String,
        /// The API.
        api: &'static str,
        /// The bound that elapsed.
        timeout: Duration,
    },

    /// An answer could not be read.
    #[error("malformed {api} answer from Kafka broker {address}")]
    Decode {
        /// The broker.
        address: String,
        /// The API.
        api: &'static str,
        /// What was wrong with it.
        #[source]
        source: DecodeError,
    },

    /// The broker speaks no version of an API that this client does.
    #[error(
        "Kafka broker {address} speaks no version of {api} this client does \
         (client: {ours:?}, broker: {})",
        broker.as_ref().map_or_else(|| "none".to_owned(), |b| format!("{b:?}"))
    )]
    UnsupportedVersion {
        /// The broker.
        address: String,
        /// The API.
        api: &'static str,
        /// The versions this client speaks.
        ours: RangeInclusive<i16>,
        /// The versions the broker speaks, if any.
        broker: Option<RangeInclusive<i16>>,
    },

    /// The broker answered with an error code.
    #[error("{what}: the broker refused")]
    Broker {
        /// What was asked (API, topic, partition, group).
        what: String,
        /// The code.
        #[source]
        code: ErrorCode,
    },

    /// The topic does not exist.
    #[error("topic {topic:?} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
}

impl Error {
    /// Whether trying again (after a metadata refresh, on a new connection)
    /// may succeed: connection failures, timeouts and Kafka's retriable
    /// error codes; not configuration, TLS, SASL or version mismatches.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::NoBroker { .. } | Self::Io { .. } | Self::Timeout { .. } => true,
            Self::Broker { code, .. } => code.is_retriable(),
            Self::Decode { .. } => true,
            _ => false,
        }
    }

    /// The Kafka error code, when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn broker(what: impl Into<String>, code: i16) -> Self {
        Self::Broker {
            what: what.into(),
            code: ErrorCode(code),
        }
    }
}

/// A Kafka error code from a broker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    /// No error.
    pub const NONE: Self = Self(0);
    /// The server experienced an unexpected error.
    pub const UNKNOWN_SERVER_ERROR: Self = Self(-1);
    /// The requested offset is not within the range the partition holds.
    pub const OFFSET_OUT_OF_RANGE: Self = Self(1);
    /// The record failed its CRC check or is otherwise corrupt.
    pub const CORRUPT_MESSAGE: Self = Self(2);
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: Self = Self(3);
    /// The partition has no leader right now (an election is running).
    pub const LEADER_NOT_AVAILABLE: Self = Self(5);
    /// The broker is not the partition's leader.
    pub const NOT_LEADER_OR_FOLLOWER: Self = Self(6);
    /// The request timed out on the broker.
    pub const REQUEST_TIMED_OUT: Self = Self(7);
    /// The record is larger than the broker accepts.
    pub const MESSAGE_TOO_LARGE: Self = Self(10);
    /// The coordinator is loading its state.
    pub const COORDINATOR_LOAD_IN_PROGRESS: Self = Self(14);
    /// The coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: Self = Self(15);
    /// The broker is not the group's coordinator.
    pub const NOT_COORDINATOR: Self = Self(16);
    /// Not enough in-sync replicas.
    pub const NOT_ENOUGH_REPLICAS: Self = Self(19);
    /// Written, but not to enough in-sync replicas.
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: Self = Self(20);
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: Self = Self(22);
    /// The member id is not in the group.
    pub const UNKNOWN_MEMBER_ID: Self = Self(25);
    /// The group is rebalancing.
    pub const REBALANCE_IN_PROGRESS: Self = Self(27);
    /// The topic already exists.
    pub const TOPIC_ALREADY_EXISTS: Self = Self(36);
    /// The broker does not support this version of the request.
    pub const UNSUPPORTED_VERSION: Self = Self(35);
    /// The batch's sequence number is not the one the broker expects.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: Self = Self(45);
    /// The batch was written before (an idempotent retry).
    pub const DUPLICATE_SEQUENCE_NUMBER: Self = Self(46);
    /// The producer epoch is older than the broker's.
    pub const INVALID_PRODUCER_EPOCH: Self = Self(47);
    /// The broker no longer knows the producer id.
    pub const UNKNOWN_PRODUCER_ID: Self = Self(59);
    /// The group needs a member id first (JoinGroup v4+).
    pub const MEMBER_ID_REQUIRED: Self = Self(79);
    /// A newer producer with the same transactional id exists.
    pub const PRODUCER_FENCED: Self = Self(90);

    /// Kafka's name of the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NONE",
            -1 => "UNKNOWN_SERVER_ERROR",
            1 => "OFFSET_OUT_OF_RANGE",
            2 => "CORRUPT_MESSAGE",
            3 => "UNKNOWN_TOPIC_OR_PARTITION",
            4 => "INVALID_FETCH_SIZE",
            5 => "LEADER_NOT_AVAILABLE",
            6 => "NOT_LEADER_OR_FOLLOWER",
            7 => "REQUEST_TIMED_OUT",
            10 => "MESSAGE_TOO_LARGE",
            13 => "NETWORK_EXCEPTION",
            14 => "COORDINATOR_LOAD_IN_PROGRESS",
            15 => "COORDINATOR_NOT_AVAILABLE",
            16 => "NOT_COORDINATOR",
            17 => "INVALID_TOPIC_EXCEPTION",
            18 => "RECORD_LIST_TOO_LARGE",
            19 => "NOT_ENOUGH_REPLICAS",
            20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            21 => "INVALID_REQUIRED_ACKS",
            22 => "ILLEGAL_GENERATION",
            23 => "INCONSISTENT_GROUP_PROTOCOL",
            24 => "INVALID_GROUP_ID",
            25 => "UNKNOWN_MEMBER_ID",
            26 => "INVALID_SESSION_TIMEOUT",
            27 => "REBALANCE_IN_PROGRESS",
            29 => "TOPIC_AUTHORIZATION_FAILED",
            30 => "GROUP_AUTHORIZATION_FAILED",
            33 => "UNSUPPORTED_SASL_MECHANISM",
            34 => "ILLEGAL_SASL_STATE",
            35 => "UNSUPPORTED_VERSION",
            36 => "TOPIC_ALREADY_EXISTS",
            37 => "INVALID_PARTITIONS",
            38 => "INVALID_REPLICATION_FACTOR",
            41 => "NOT_CONTROLLER",
            42 => "INVALID_REQUEST",
            45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            46 => "DUPLICATE_SEQUENCE_NUMBER",
            47 => "INVALID_PRODUCER_EPOCH",
            56 => "KAFKA_STORAGE_ERROR",
            58 => "SASL_AUTHENTICATION_FAILED",
            59 => "UNKNOWN_PRODUCER_ID",
            79 => "MEMBER_ID_REQUIRED",
            87 => "INVALID_RECORD",
            90 => "PRODUCER_FENCED",
            _ => "an unlisted error",
        }
    }

    /// Kafka's retriable codes: the same request may succeed later, after a
    /// metadata refresh or a coordinator look-up.
    pub fn is_retriable(self) -> bool {
        matches!(self.0, 5 | 6 | 7 | 13 | 14 | 15 | 16 | 19 | 20 | 56)
    }

    /// Whether the broker tells the client its metadata (leader or
    /// coordinator) is out of date.
    pub fn is_stale_metadata(self) -> bool {
        matches!(self.0, 3 | 5 | 6 | 15 | 16)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kafka error {} ({})", self.name(), self.0)
    }
}

impl std::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_and_classified() {
        assert_eq!(ErrorCode(6).to_string(), "Kafka error NOT_LEADER_OR_FOLLOWER (6)");
        assert!(ErrorCode::NOT_LEADER_OR_FOLLOWER.is_retriable());
        assert!(!ErrorCode::TOPIC_ALREADY_EXISTS.is_retriable());
        assert_eq!(ErrorCode(9999).name(), "an unlisted error");
        let error = Error::broker("Produce to t/0", 6);
        assert!(error.is_retriable());
        assert_eq!(error.code(), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        // The cause is the source, not repeated in the message.
        assert_eq!(error.to_string(), "Produce to t/0: the broker refused");
    }
}
