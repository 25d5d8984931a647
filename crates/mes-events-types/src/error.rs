//! The crate's one error type.

use serde_json::Value;

use crate::{DomainEvent, EventType};

/// Everything that can go wrong building, encoding, decoding or typing an
/// event.
///
/// Decoding never panics on input: every malformed record ends here, with
/// the attribute or header at fault named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required CloudEvents attribute (or its header) is absent.
    #[error("required attribute `{name}` is missing")]
    MissingAttribute {
        /// The attribute's name, e.g. `id`.
        name: &'static str,
    },

    /// An attribute is present but unusable (wrong JSON type, empty, ...).
    #[error("attribute `{name}` is invalid: {reason}")]
    InvalidAttribute {
        /// The attribute's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A time that is not RFC 3339 or cannot be written as such.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTimestamp {
        /// The offending text or number.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The record declares a CloudEvents version other than 1.0.
    #[error("unsupported CloudEvents specversion {found:?} (only \"1.0\" is supported)")]
    UnsupportedSpecVersion {
        /// The version found.
        found: String,
    },

    /// The data or the structured event is not in a content type this crate
    /// reads (JSON only; no `data_base64`, no batches).
    #[error("unsupported content type {content_type:?}")]
    UnsupportedContentType {
        /// The content type found.
        content_type: String,
    },

    /// Bytes that should be JSON are not.
    #[error("{what} is not valid JSON")]
    InvalidJson {
        /// What was being parsed, e.g. `record value`.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A header is unusable: not UTF-8, or given twice with different values.
    #[error("header `{name}` is invalid: {reason}")]
    InvalidHeader {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The record key is needed as the entity id but is not UTF-8.
    #[error("record key is not UTF-8")]
    InvalidKey,

    /// The record is none of structured, binary or legacy CloudEvents.
    #[error("record is not a CloudEvent: {reason}")]
    NotACloudEvent {
        /// Why it was not recognised.
        reason: &'static str,
    },

    /// A payload could not be serialised to JSON.
    #[error("payload of a `{event_type}` event cannot be serialised")]
    Serialize {
        /// Type of the event being encoded.
        event_type: EventType,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// A typed view was asked for an event of another type.
    #[error("expected a `{expected}` event, got `{}`", event.event_type())]
    WrongEventType {
        /// The type the payload type belongs to.
        expected: EventType,
        /// The untouched event.
        event: Box<DomainEvent<Value>>,
    },

    /// The data does not match the payload schema of the event's type.
    #[error("data of `{}` event {} does not match its schema", event.event_type(), event.id())]
    PayloadMismatch {
        /// The untouched event, raw JSON included.
        event: Box<DomainEvent<Value>>,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The raw event behind a [`WrongEventType`](Self::WrongEventType) or
    /// [`PayloadMismatch`](Self::PayloadMismatch) error, so nothing is lost.
    pub fn into_raw_event(self) -> Option<DomainEvent<Value>> {
        match self {
            Self::WrongEventType { event, .. } | Self::PayloadMismatch { event, .. } => Some(*event),
            _ => None,
        }
    }
}
