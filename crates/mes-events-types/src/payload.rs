//! Typed payloads, one per event type of the fleet.
//!
//! Every payload type knows the one event type it is published under
//! ([`EventPayload::EVENT_TYPE`]), so [`DomainEvent::new`](crate::DomainEvent::new)
//! cannot put a [`PartUpdated`] under any other type. Field names are the
//! camelCase of the legacy services; optional fields are omitted when
//! absent, never written as `null`.
//!
//! Types for which the fleet declares no payload schema (`material.lot.updated`
//! and others) get a newtype over the raw JSON, so they still have a Rust
//! type without guessing a schema.
//!
//! Fields the typed view does not declare are ignored when decoding; the raw
//! event ([`DomainEvent<serde_json::Value>`](crate::DomainEvent)) keeps them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event_type::{
    AuthEventType, EventType, MaterialEventType, QualityEventType, ResourceEventType, WorkOrderEventType,
};
use crate::timestamp::Timestamp;

/// A payload type and the event type it is published under.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The event type of every event carrying this payload.
    const EVENT_TYPE: EventType;
}

/// A free-form JSON object (`Record` in the legacy schemas).
pub type JsonObject = Map<String, Value>;

macro_rules! payload_event_type {
    ($($payload:ty => $event_type:expr;)+) => {
        $(
            impl EventPayload for $payload {
                const EVENT_TYPE: EventType = $event_type;
            }
        )+

        /// Calls `$callback!(PayloadType)` for every payload type of the
        /// crate. Lets tests and services cover every type without a list
        /// of their own that drifts.
        #[macro_export]
        macro_rules! for_each_payload_type {
            ($callback:ident) => {
                $( $callback!($payload); )+
            };
        }
    };
}

macro_rules! undeclared_payload {
    ($($(#[$meta:meta])* $name:ident;)+) => {
        $(
            $(#[$meta])*
            ///
            /// The fleet declares no schema for this payload: it is carried as
            /// raw JSON.
            #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
            #[serde(transparent)]
            pub struct $name(pub Value);
        )+
    };
}

/// The part fields of `material.part.created`, each optional: what changed
/// (`changes`) or what it was before (`previousValues`) in `material.part.updated`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartFields {
    /// Id of the part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_id: Option<String>,
    /// Part number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    /// Part name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_name: Option<String>,
    /// Revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Unit of measure, e.g. `EA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_measure: Option<String>,
    /// Material type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_type: Option<String>,
}

/// `material.part.created`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartCreated {
    /// Id of the part.
    pub part_id: String,
    /// Part number.
    pub part_number: String,
    /// Part name.
    pub part_name: String,
    /// Revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Unit of measure, e.g. `EA`.
    pub unit_of_measure: String,
    /// Material type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_type: Option<String>,
}

/// `material.part.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUpdated {
    /// Id of the part.
    pub part_id: String,
    /// Part number after the change.
    pub part_number: String,
    /// Part name after the change.
    pub part_name: String,
    /// Revision after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The fields that changed, with their new values.
    pub changes: PartFields,
    /// The changed fields' values before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_values: Option<PartFields>,
}

/// `material.part.deleted`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartDeleted {
    /// Id of the part.
    pub part_id: String,
    /// Part number.
    pub part_number: String,
    /// When the part was deleted.
    pub deleted_at: Timestamp,
}

/// `material.lot.created`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LotCreated {
    /// Id of the lot.
    pub lot_id: String,
    /// Lot number.
    pub lot_number: String,
    /// Id of the part the lot is of.
    pub part_id: String,
    /// Number of that part.
    pub part_number: String,
    /// Quantity received.
    pub quantity: f64,
    /// When the lot was received.
    pub received_date: Timestamp,
}

/// `material.serial.created`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerialCreated {
    /// Id of the serial.
    pub serial_id: String,
    /// Serial number.
    pub serial_number: String,
    /// Id of the part.
    pub part_id: String,
    /// Part number.
    pub part_number: String,
    /// Lot the serial belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot_number: Option<String>,
    /// Work order that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
}

/// `resource.workcenter.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkCenterUpdated {
    /// Id of the work center.
    pub work_center_id: String,
    /// Work center code.
    pub work_center_code: String,
    /// Work center name.
    pub work_center_name: String,
    /// Status, e.g. `ACTIVE`.
    pub status: String,
    /// The fields that changed, with their new values.
    pub changes: JsonObject,
}

/// `resource.personnel.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonnelUpdated {
    /// Id of the personnel record.
    pub personnel_id: String,
    /// The user behind it.
    pub user_id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The fields that changed, with their new values.
    pub changes: JsonObject,
}

/// `resource.product.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductUpdated {
    /// Id of the product.
    pub product_id: String,
    /// Product code.
    pub product_code: String,
    /// Product name.
    pub product_name: String,
    /// The fields that changed, with their new values.
    pub changes: JsonObject,
}

/// `auth.user.created`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    /// Id of the user.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

/// `auth.user.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    /// Id of the user.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The fields that changed, with their new values.
    pub changes: JsonObject,
}

/// `auth.user.deleted`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeleted {
    /// Id of the user.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// When the user was deleted.
    pub deleted_at: Timestamp,
}

/// `workorder.created`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderCreated {
    /// Id of the work order.
    pub work_order_id: String,
    /// Work order number.
    pub work_order_number: String,
    /// Id of the part to make.
    pub part_id: String,
    /// Number of that part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    /// Quantity to make.
    pub quantity: f64,
    /// Status, e.g. `RELEASED`.
    pub status: String,
}

/// `workorder.status.changed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderStatusChanged {
    /// Id of the work order.
    pub work_order_id: String,
    /// Work order number.
    pub work_order_number: String,
    /// Status before.
    pub previous_status: String,
    /// Status after.
    pub new_status: String,
    /// When it changed.
    pub changed_at: Timestamp,
    /// Who changed it.
    pub changed_by: String,
}

/// `workorder.completed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderCompleted {
    /// Id of the work order.
    pub work_order_id: String,
    /// Work order number.
    pub work_order_number: String,
    /// Good quantity made.
    pub quantity_completed: f64,
    /// Quantity scrapped.
    pub quantity_scrapped: f64,
    /// When it was completed.
    pub completed_at: Timestamp,
}

/// Outcome of an inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InspectionResult {
    /// `PASS`
    Pass,
    /// `FAIL`
    Fail,
}

/// `quality.inspection.completed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectionCompleted {
    /// Id of the inspection.
    pub inspection_id: String,
    /// Inspection number.
    pub inspection_number: String,
    /// Part inspected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_id: Option<String>,
    /// Work order inspected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// Pass or fail.
    pub result: InspectionResult,
    /// When the inspection was completed.
    pub completed_at: Timestamp,
    /// Who inspected.
    pub inspected_by: String,
}

/// `quality.ncr.created` (non-conformance report)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NcrCreated {
    /// Id of the NCR.
    pub ncr_id: String,
    /// NCR number.
    pub ncr_number: String,
    /// Part concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_id: Option<String>,
    /// Severity, e.g. `MAJOR`.
    pub severity: String,
    /// What is wrong.
    pub problem_description: String,
}

undeclared_payload! {
    /// `material.lot.updated`
    LotUpdated;
    /// `material.serial.updated`
    SerialUpdated;
    /// `resource.workcenter.created`
    WorkCenterCreated;
    /// `resource.personnel.created`
    PersonnelCreated;
    /// `resource.product.created`
    ProductCreated;
    /// `workorder.updated`
    WorkOrderUpdated;
    /// `quality.ncr.updated`
    NcrUpdated;
}

payload_event_type! {
    PartCreated => EventType::Material(MaterialEventType::PartCreated);
    PartUpdated => EventType::Material(MaterialEventType::PartUpdated);
    PartDeleted => EventType::Material(MaterialEventType::PartDeleted);
    LotCreated => EventType::Material(MaterialEventType::LotCreated);
    LotUpdated => EventType::Material(MaterialEventType::LotUpdated);
    SerialCreated => EventType::Material(MaterialEventType::SerialCreated);
    SerialUpdated => EventType::Material(MaterialEventType::SerialUpdated);
    WorkCenterCreated => EventType::Resource(ResourceEventType::WorkCenterCreated);
    WorkCenterUpdated => EventType::Resource(ResourceEventType::WorkCenterUpdated);
    PersonnelCreated => EventType::Resource(ResourceEventType::PersonnelCreated);
    PersonnelUpdated => EventType::Resource(ResourceEventType::PersonnelUpdated);
    ProductCreated => EventType::Resource(ResourceEventType::ProductCreated);
    ProductUpdated => EventType::Resource(ResourceEventType::ProductUpdated);
    UserCreated => EventType::Auth(AuthEventType::UserCreated);
    UserUpdated => EventType::Auth(AuthEventType::UserUpdated);
    UserDeleted => EventType::Auth(AuthEventType::UserDeleted);
    WorkOrderCreated => EventType::WorkOrder(WorkOrderEventType::WorkOrderCreated);
    WorkOrderUpdated => EventType::WorkOrder(WorkOrderEventType::WorkOrderUpdated);
    WorkOrderStatusChanged => EventType::WorkOrder(WorkOrderEventType::StatusChanged);
    WorkOrderCompleted => EventType::WorkOrder(WorkOrderEventType::WorkOrderCompleted);
    InspectionCompleted => EventType::Quality(QualityEventType::InspectionCompleted);
    NcrCreated => EventType::Quality(QualityEventType::NcrCreated);
    NcrUpdated => EventType::Quality(QualityEventType::NcrUpdated);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_declared_type_has_exactly_one_payload_type() {
        let mut covered = BTreeSet::new();
        macro_rules! collect {
            ($t:ty) => {
                assert!(
                    covered.insert(<$t as EventPayload>::EVENT_TYPE),
                    "two payload types claim {}",
                    <$t as EventPayload>::EVENT_TYPE
                );
            };
        }
        for_each_payload_type!(collect);
        let known: BTreeSet<EventType> = EventType::known().collect();
        assert_eq!(covered, known);
    }

    #[test]
    fn optional_fields_are_omitted_not_null() {
        let p = UserCreated {
            user_id: "u-1".into(),
            username: "jdoe".into(),
            email: "j@x".into(),
            first_name: None,
            last_name: Some("Doe".into()),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"userId":"u-1","username":"jdoe","email":"j@x","lastName":"Doe"}"#
        );
    }
}
