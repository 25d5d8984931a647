//! Conversion to and from [`cloudevents::Event`] (feature `cloudevents`).
//!
//! What does not map one to one:
//!
//! - `metadata` is a JSON object, which CloudEvents extension values cannot
//!   be; it travels as the string extension `metadata` holding that object's
//!   JSON, and is parsed back on the way in.
//! - `entityId`, `entityType`, `correlationId` and `causationId` become the
//!   string extensions `entityid`, `entitytype`, `correlationid`, `causationid`.
//! - cloudevents-sdk keeps time in `chrono` with nanosecond precision; this
//!   crate keeps any precision too, so nothing is lost either way.
//! - cloudevents-sdk's own JSON deserializer (`serde_json::from_slice::<Event>`)
//!   refuses a structured record whose value has the object-valued
//!   `metadata` the legacy wire requires. Decode such records with
//!   [`decode`](crate::decode) and convert the result instead.
//! - An SDK event whose data is not JSON (binary or a non-JSON string), or
//!   which lacks `time`, cannot become a [`DomainEvent`]: that is an error.
//!   Extensions other than the ones above are dropped.

use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde::Serialize;
use serde_json::Value;

use crate::codec::DATA_CONTENT_TYPE;
use crate::event::{EnvelopeParts, EventId};
use crate::{DomainEvent, Error, EventMetadata, EventType, Timestamp};

impl<T: Serialize> TryFrom<&DomainEvent<T>> for Event {
    type Error = Error;

    fn try_from(event: &DomainEvent<T>) -> Result<Self, Error> {
        let serialize_error = |source| Error::Serialize {
            event_type: event.event_type().clone(),
            source,
        };
        let data = serde_json::to_value(event.data()).map_err(serialize_error)?;
        let mut builder = EventBuilderV10::new()
            .id(event.id().as_str())
            .source(event.source())
            .ty(event.event_type().as_str())
            .time(event.time().to_string())
            .data(DATA_CONTENT_TYPE, data);
        if let Some(subject) = event.subject() {
            builder = builder.subject(subject);
        }
        let extensions = [
            ("entityid", event.entity_id()),
            ("entitytype", event.entity_type()),
            ("correlationid", event.correlation_id()),
            ("causationid", event.causation_id()),
        ];
        for (name, value) in extensions {
            if let Some(value) = value {
                builder = builder.extension(name, value);
            }
        }
        if let Some(metadata) = event.metadata() {
            let json = serde_json::to_string(metadata).map_err(serialize_error)?;
            builder = builder.extension("metadata", json);
        }
        builder.build().map_err(|e| Error::InvalidAttribute {
            name: "event",
            reason: e.to_string(),
        })
    }
}

impl TryFrom<Event> for DomainEvent<Value> {
    type Error = Error;

    fn try_from(event: Event) -> Result<Self, Error> {
        let extension = |name: &str| event.extension(name).map(ExtensionValue::to_string);
        let time = event.time().ok_or(Error::MissingAttribute { name: "time" })?;
        let time = Timestamp::parse(&time.to_rfc3339())?;
        let metadata =
            match extension("metadata") {
                None => None,
                Some(json) => Some(serde_json::from_str::<EventMetadata>(&json).map_err(|e| {
                    Error::InvalidAttribute {
                        name: "metadata",
                        reason: e.to_string(),
                    }
                })?),
            };
        let data = match event.data() {
            None => Value::Null,
            Some(Data::Json(value)) => value.clone(),
            Some(Data::String(text)) => serde_json::from_str(text).map_err(|source| Error::InvalidJson {
                what: "event data",
                source,
            })?,
            Some(Data::Binary(bytes)) => {
                serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson {
                    what: "event data",
                    source,
                })?
            }
        };
        let parts = EnvelopeParts {
            id: EventId::parse(event.id())?,
            event_type: EventType::parse(event.ty())?,
            source: event.source().to_string(),
            time,
            subject: event.subject().map(str::to_owned),
            entity_id: extension("entityid"),
            entity_type: extension("entitytype"),
            correlation_id: extension("correlationid"),
            causation_id: extension("causationid"),
            metadata,
        };
        Ok(DomainEvent::from_parts(parts, data))
    }
}
