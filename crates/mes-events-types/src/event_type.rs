//! The event types of the fleet, per domain, and [`EventType`] for any type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

macro_rules! domain_event_types {
    (
        $(#[$meta:meta])*
        $name:ident in EventType::$outer:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = concat!("`", $wire, "`")] $variant, )+
        }

        impl $name {
            /// Every type of this domain, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The type string on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )+
                }
            }

            fn from_wire(text: &str) -> Option<Self> {
                match text {
                    $( $wire => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl From<$name> for EventType {
            fn from(value: $name) -> Self {
                EventType::$outer(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<$name> for EventType {
            fn eq(&self, other: &$name) -> bool {
                matches!(self, EventType::$outer(t) if t == other)
            }
        }
    };
}

domain_event_types! {
    /// Events of the Material service (topic `mes.material.events`).
    MaterialEventType in EventType::Material {
        PartCreated => "material.part.created",
        PartUpdated => "material.part.updated",
        PartDeleted => "material.part.deleted",
        LotCreated => "material.lot.created",
        LotUpdated => "material.lot.updated",
        SerialCreated => "material.serial.created",
        SerialUpdated => "material.serial.updated",
    }
}

domain_event_types! {
    /// Events of the Resource service (topic `mes.resource.events`).
    ResourceEventType in EventType::Resource {
        WorkCenterCreated => "resource.workcenter.created",
        WorkCenterUpdated => "resource.workcenter.updated",
        PersonnelCreated => "resource.personnel.created",
        PersonnelUpdated => "resource.personnel.updated",
        ProductCreated => "resource.product.created",
        ProductUpdated => "resource.product.updated",
    }
}

domain_event_types! {
    /// Events of the Auth service (topic `mes.auth.events`).
    AuthEventType in EventType::Auth {
        UserCreated => "auth.user.created",
        UserUpdated => "auth.user.updated",
        UserDeleted => "auth.user.deleted",
    }
}

domain_event_types! {
    /// Events of the Work Order service (topic `mes.workorder.events`).
    WorkOrderEventType in EventType::WorkOrder {
        WorkOrderCreated => "workorder.created",
        WorkOrderUpdated => "workorder.updated",
        StatusChanged => "workorder.status.changed",
        WorkOrderCompleted => "workorder.completed",
    }
}

domain_event_types! {
    /// Events of the Quality service (topic `mes.quality.events`).
    QualityEventType in EventType::Quality {
        InspectionCompleted => "quality.inspection.completed",
        NcrCreated => "quality.ncr.created",
        NcrUpdated => "quality.ncr.updated",
    }
}

/// The type of an event: one the fleet declares, or any other non-empty
/// string.
///
/// Parsing always yields the domain variant for a declared type, so two
/// `EventType`s are equal exactly when their strings are. Types no enum
/// knows (a service newer than this crate, another team's events) are
/// [`EventType::Other`] and round-trip unchanged.
///
/// ```
/// use mes_events_types::{EventType, MaterialEventType};
///
/// let t: EventType = "material.part.updated".parse().unwrap();
/// assert_eq!(t, MaterialEventType::PartUpdated);
/// assert_eq!(t.topic().unwrap(), "mes.material.events");
///
/// let other: EventType = "maintenance.tool.calibrated".parse().unwrap();
/// assert_eq!(other.as_str(), "maintenance.tool.calibrated");
/// assert_eq!(other.topic().unwrap(), "mes.maintenance.events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventType {
    /// A Material event.
    Material(MaterialEventType),
    /// A Resource event.
    Resource(ResourceEventType),
    /// An Auth event.
    Auth(AuthEventType),
    /// A Work Order event.
    WorkOrder(WorkOrderEventType),
    /// A Quality event.
    Quality(QualityEventType),
    /// A type none of the enums above declares.
    Other(UnknownEventType),
}

/// A non-empty event type string that no domain enum declares.
///
/// Only made by parsing, so it never holds a declared type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnknownEventType(String);

impl UnknownEventType {
    /// The type string on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl EventType {
    /// Every type the fleet declares, over all domains.
    pub fn known() -> impl Iterator<Item = EventType> {
        let material = MaterialEventType::ALL.iter().map(|t| EventType::from(*t));
        let resource = ResourceEventType::ALL.iter().map(|t| EventType::from(*t));
        let auth = AuthEventType::ALL.iter().map(|t| EventType::from(*t));
        let work_order = WorkOrderEventType::ALL.iter().map(|t| EventType::from(*t));
        let quality = QualityEventType::ALL.iter().map(|t| EventType::from(*t));
        material
            .chain(resource)
            .chain(auth)
            .chain(work_order)
            .chain(quality)
    }

    /// Parses a type string; fails only on an empty one.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.is_empty() {
            return Err(Error::InvalidAttribute {
                name: "type",
                reason: "must not be empty".into(),
            });
        }
        let known = MaterialEventType::from_wire(text)
            .map(Self::Material)
            .or_else(|| ResourceEventType::from_wire(text).map(Self::Resource))
            .or_else(|| AuthEventType::from_wire(text).map(Self::Auth))
            .or_else(|| WorkOrderEventType::from_wire(text).map(Self::WorkOrder))
            .or_else(|| QualityEventType::from_wire(text).map(Self::Quality));
        Ok(known.unwrap_or_else(|| Self::Other(UnknownEventType(text.to_owned()))))
    }

    /// The type string on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Material(t) => t.as_str(),
            Self::Resource(t) => t.as_str(),
            Self::Auth(t) => t.as_str(),
            Self::WorkOrder(t) => t.as_str(),
            Self::Quality(t) => t.as_str(),
            Self::Other(t) => t.as_str(),
        }
    }

    /// Whether one of the domain enums declares this type.
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// The Kafka topic events of this type go to; see [`topic_for_type`](crate::topic_for_type).
    pub fn topic(&self) -> Result<String, Error> {
        crate::routing::topic_for_type(self.as_str())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_type_parses_to_its_variant_and_back() {
        let all: Vec<EventType> = EventType::known().collect();
        assert_eq!(all.len(), 23);
        for t in all {
            let parsed = EventType::parse(t.as_str()).unwrap();
            assert!(parsed.is_known());
            assert_eq!(parsed, t);
        }
    }

    #[test]
    fn unknown_types_are_carried_and_empty_is_rejected() {
        let t = EventType::parse("maintenance.tool.calibrated").unwrap();
        assert!(!t.is_known());
        assert_eq!(t.to_string(), "maintenance.tool.calibrated");
        assert!(EventType::parse("").is_err());
    }
}
