//! The event schemas of the MES fleet and their Kafka wire codec.
//!
//! This crate is the bottom of the MES shared libraries: the domain event
//! envelope ([`DomainEvent`]), every event type the fleet exchanges
//! ([`EventType`] and one enum per domain), a typed payload for each
//! ([`PartUpdated`], ...), where events go ([`topic_for_type`],
//! [`partition_for_key`]) and the codec between an event and a Kafka record
//! ([`encode`], [`decode`]).
//!
//! # Who should depend on it
//!
//! Every service that produces or reads MES domain events, and only needs
//! their shapes: it does no I/O and pulls in no async runtime, Redis or
//! Kafka client. Services that publish depend on `mes-publisher`, services
//! that consume on `mes-sync`; both re-use this crate's types and codec, so a
//! record means the same thing everywhere.
//!
//! # Example
//!
//! ```
//! use mes_events_types::{
//!     decode, encode, ContentMode, DomainEvent, EncodeOptions, PartFields, PartUpdated,
//! };
//!
//! // The Material service announces a change of a part...
//! let event = DomainEvent::new(
//!     "material-service",
//!     PartUpdated {
//!         part_id: "P-12345".into(),
//!         part_number: "P-99999".into(),
//!         part_name: "Landing Gear Strut".into(),
//!         revision: Some("C".into()),
//!         changes: PartFields { part_number: Some("P-99999".into()), ..Default::default() },
//!         previous_values: Some(PartFields { part_number: Some("P-12345".into()), ..Default::default() }),
//!     },
//! )
//! .with_entity("Part", "P-12345")
//! .with_correlation_id("req-5f2c");
//!
//! // ...as a CloudEvents structured-mode record keyed by the part id...
//! assert_eq!(event.topic()?, "mes.material.events");
//! let record = encode(&event, &EncodeOptions::default())?;
//! assert_eq!(record.key.as_deref(), Some(&b"P-12345"[..]));
//!
//! // ...which any consumer decodes back into the same typed event.
//! let decoded = decode(&record)?.into_typed::<PartUpdated>()?;
//! assert_eq!(decoded, event);
//!
//! // Binary mode on request.
//! let binary = encode(&event, &EncodeOptions::default().mode(ContentMode::Binary))?;
//! assert_eq!(decode(&binary)?.into_typed::<PartUpdated>()?, event);
//! # Ok::<(), mes_events_types::Error>(())
//! ```
//!
//! # Compatibility with the TypeScript services
//!
//! [`decode`] reads the records the legacy services write (see the table in
//! the [`codec`] module); what [`encode`] writes in structured mode is a
//! superset of them (the same JSON value and `ce-*` headers, plus a
//! `content-type` header and the envelope fields the legacy wire drops), so
//! legacy consumers read it unchanged. Dates are RFC 3339 in UTC with
//! millisecond precision, like JavaScript's `toISOString()`.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cloudevents` | no | `TryFrom` between [`DomainEvent`] and `cloudevents::Event` (cloudevents-sdk without transport bindings); see the `sdk` module docs for what does not map |

pub mod codec;
mod error;
mod event;
mod event_type;
pub mod payload;
mod routing;
#[cfg(feature = "cloudevents")]
pub mod sdk;
mod timestamp;

pub use codec::{
    ContentMode, EncodeOptions, KafkaRecord, RecordFormat, decode, decode_typed, detect_format, encode,
    encode_parts,
};
pub use error::Error;
pub use event::{DomainEvent, EventId, EventMetadata};
pub use event_type::{
    AuthEventType, EventType, MaterialEventType, QualityEventType, ResourceEventType, UnknownEventType,
    WorkOrderEventType,
};
pub use payload::*;
pub use routing::{FALLBACK_TOPIC, murmur2, partition_for_key, topic_for_type};
pub use timestamp::Timestamp;
