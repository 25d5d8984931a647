//! The domain event envelope.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payload::{EventPayload, JsonObject};
use crate::{Error, EventType, Timestamp};

/// The id of an event.
///
/// New events get a ULID (sortable by creation time, 26 characters); ids
/// from the legacy services (`evt_1760789696789_k3j9x0a1b`) and any other
/// non-empty string are accepted as they are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// A new ULID.
    pub fn new_ulid() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    /// Wraps an existing id; fails on an empty one.
    pub fn parse(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::InvalidAttribute {
                name: "id",
                reason: "must not be empty".into(),
            });
        }
        Ok(Self(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Who or what caused an event: the legacy `metadata` object.
///
/// The four named fields are the ones the legacy schema declares; any other
/// key is kept in [`extra`](Self::extra) and written back unchanged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The user who made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// That user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Every other key.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl EventMetadata {
    /// Metadata naming the user who made the change.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }
}

/// A domain event: the CloudEvents envelope of the fleet around a payload.
///
/// `T` is a typed payload (every one knows its event type, see
/// [`EventPayload`]) or [`serde_json::Value`] for an event of any type, as
/// the decoder returns it. [`DomainEvent::into_typed`] and
/// [`DomainEvent::into_raw`] convert between the two.
///
/// ```
/// use mes_events_types::{DomainEvent, EventMetadata, MaterialEventType, PartFields, PartUpdated};
///
/// let event = DomainEvent::new(
///     "material-service",
///     PartUpdated {
///         part_id: "P-12345".into(),
///         part_number: "P-99999".into(),
///         part_name: "Landing Gear Strut".into(),
///         revision: None,
///         changes: PartFields { part_number: Some("P-99999".into()), ..Default::default() },
///         previous_values: None,
///     },
/// )
/// .with_entity("Part", "P-12345")
/// .with_metadata(EventMetadata::for_user("user-123"));
///
/// assert_eq!(event.event_type(), &MaterialEventType::PartUpdated);
/// assert_eq!(event.partition_key(), "P-12345");
/// assert_eq!(event.id().as_str().len(), 26); // a ULID
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent<T = Value> {
    id: EventId,
    event_type: EventType,
    source: String,
    time: Timestamp,
    data: T,
    subject: Option<String>,
    entity_id: Option<String>,
    entity_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    metadata: Option<EventMetadata>,
}

impl<T: EventPayload> DomainEvent<T> {
    /// A new event of `payload`'s type, with a fresh ULID id and the current
    /// time (millisecond precision); the legacy `createDomainEvent`.
    pub fn new(source: impl Into<String>, payload: T) -> Self {
        Self::with_parts(T::EVENT_TYPE, source.into(), payload)
    }

    /// The same event with its payload as raw JSON.
    pub fn into_raw(self) -> Result<DomainEvent<Value>, Error> {
        let data = serde_json::to_value(&self.data).map_err(|source| Error::Serialize {
            event_type: self.event_type.clone(),
            source,
        })?;
        Ok(self.map_data(|_| data))
    }
}

impl DomainEvent<Value> {
    /// A new event of any type with raw JSON data, a fresh ULID id and the
    /// current time. Prefer [`DomainEvent::new`] with a typed payload for the
    /// fleet's own types.
    pub fn new_raw(event_type: EventType, source: impl Into<String>, data: Value) -> Self {
        Self::with_parts(event_type, source.into(), data)
    }

    /// The typed view of this event.
    ///
    /// Fails with [`Error::WrongEventType`] when the event is of another
    /// type than `T`'s, and with [`Error::PayloadMismatch`] when the data does
    /// not match `T`'s schema. Both errors give the untouched raw event back
    /// through [`Error::into_raw_event`].
    pub fn into_typed<T: EventPayload>(self) -> Result<DomainEvent<T>, Error> {
        if self.event_type != T::EVENT_TYPE {
            return Err(Error::WrongEventType {
                expected: T::EVENT_TYPE,
                event: Box::new(self),
            });
        }
        match T::deserialize(&self.data) {
            Ok(data) => Ok(self.map_data(|_| data)),
            Err(source) => Err(Error::PayloadMismatch {
                event: Box::new(self),
                source,
            }),
        }
    }
}

impl<T> DomainEvent<T> {
    fn with_parts(event_type: EventType, source: String, data: T) -> Self {
        Self {
            id: EventId::new_ulid(),
            event_type,
            source,
            time: Timestamp::now(),
            data,
            subject: None,
            entity_id: None,
            entity_type: None,
            correlation_id: None,
            causation_id: None,
            metadata: None,
        }
    }

    /// The event's id.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The event's type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The producing service, e.g. `material-service`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When the event happened (CloudEvents `time`, legacy `timestamp`).
    pub fn time(&self) -> Timestamp {
        self.time
    }

    /// The payload (CloudEvents `data`).
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The payload, mutably.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.data
    }

    /// The payload, by value.
    pub fn into_data(self) -> T {
        self.data
    }

    /// CloudEvents `subject`.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Id of the entity the event is about; the partition key.
    pub fn entity_id(&self) -> Option<&str> {
        self.entity_id.as_deref()
    }

    /// Type of that entity, e.g. `Part`.
    pub fn entity_type(&self) -> Option<&str> {
        self.entity_type.as_deref()
    }

    /// Id that ties together everything one request caused.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// Id of the event that caused this one.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// Who or what made the change.
    pub fn metadata(&self) -> Option<&EventMetadata> {
        self.metadata.as_ref()
    }

    /// The Kafka record key: the entity id, else the event id, so that all
    /// events of one entity land on one partition.
    pub fn partition_key(&self) -> &str {
        self.entity_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(self.id.as_str())
    }

    /// The Kafka topic of this event; see [`topic_for_type`](crate::topic_for_type).
    pub fn topic(&self) -> Result<String, Error> {
        self.event_type.topic()
    }

    /// Replaces the id (to re-create a stored event, or in tests).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Replaces the time.
    #[must_use]
    pub fn with_time(mut self, time: Timestamp) -> Self {
        self.time = time;
        self
    }

    /// Sets the CloudEvents `subject`.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the entity the event is about: its type (`Part`) and id, which
    /// becomes the partition key. An empty id is no id: the event is then
    /// keyed by its event id, as the legacy producers do.
    #[must_use]
    pub fn with_entity(mut self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Self {
        self.entity_type = Some(entity_type.into());
        self.entity_id = non_empty(entity_id.into());
        self
    }

    /// Sets the entity id alone (an empty one is no id, as for
    /// [`with_entity`](Self::with_entity)).
    #[must_use]
    pub fn with_entity_id(mut self, entity_id: impl Into<String>) -> Self {
        self.entity_id = non_empty(entity_id.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Marks this event as caused by `cause`: its id becomes the causation id
    /// and its correlation id (or, without one, its id) the correlation id.
    #[must_use]
    pub fn caused_by<U>(mut self, cause: &DomainEvent<U>) -> Self {
        self.causation_id = Some(cause.id.as_str().to_owned());
        self.correlation_id = Some(
            cause
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.id.as_str().to_owned()),
        );
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The same envelope around another payload of the same event type.
    fn map_data<U>(self, f: impl FnOnce(T) -> U) -> DomainEvent<U> {
        DomainEvent {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            time: self.time,
            data: f(self.data),
            subject: self.subject,
            entity_id: self.entity_id,
            entity_type: self.entity_type,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata,
        }
    }
}

/// Every envelope field at once; what the codec builds a decoded event from.
pub(crate) struct EnvelopeParts {
    pub(crate) id: EventId,
    pub(crate) event_type: EventType,
    pub(crate) source: String,
    pub(crate) time: Timestamp,
    pub(crate) subject: Option<String>,
    pub(crate) entity_id: Option<String>,
    pub(crate) entity_type: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
    pub(crate) metadata: Option<EventMetadata>,
}

impl DomainEvent<Value> {
    pub(crate) fn from_parts(parts: EnvelopeParts, data: Value) -> Self {
        Self {
            id: parts.id,
            event_type: parts.event_type,
            source: parts.source,
            time: parts.time,
            data,
            subject: parts.subject,
            entity_id: parts.entity_id,
            entity_type: parts.entity_type,
            correlation_id: parts.correlation_id,
            causation_id: parts.causation_id,
            metadata: parts.metadata,
        }
    }
}

/// An empty entity id is no entity id: the legacy producers key such an
/// event by its event id, and an empty record key would put every such
/// event on one partition with no key at all.
fn non_empty(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}
