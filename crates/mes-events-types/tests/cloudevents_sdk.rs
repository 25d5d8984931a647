//! Conversion to and from cloudevents-sdk's `Event` (feature `cloudevents`).
#![cfg(feature = "cloudevents")]
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cloudevents::EventBuilder;
use cloudevents::event::{AttributesReader, ExtensionValue};
use mes_events_types::{
    ContentMode, DomainEvent, EncodeOptions, EventMetadata, PartFields, PartUpdated, Timestamp, encode,
};
use serde_json::Value;

fn part_event() -> DomainEvent<PartUpdated> {
    DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-1".into(),
            part_number: "P-2".into(),
            part_name: "Strut".into(),
            revision: Some("C".into()),
            changes: PartFields {
                part_number: Some("P-2".into()),
                ..PartFields::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", "P-1")
    .with_subject("parts/P-1")
    .with_correlation_id("req-1")
    .with_causation_id("evt-0")
    .with_time(Timestamp::parse("2025-10-18T12:14:56.123456789Z").unwrap())
}

#[test]
fn round_trips_through_the_sdk_event() {
    let event = part_event().with_metadata(EventMetadata::for_user("user-1"));
    let sdk = cloudevents::Event::try_from(&event).unwrap();
    assert_eq!(sdk.ty(), "material.part.updated");
    assert_eq!(sdk.id(), event.id().as_str());
    assert_eq!(
        sdk.extension("entityid"),
        Some(&ExtensionValue::String("P-1".into()))
    );
    assert_eq!(
        sdk.extension("metadata"),
        Some(&ExtensionValue::String(r#"{"userId":"user-1"}"#.into())),
        "metadata travels as a JSON string extension"
    );
    let back = DomainEvent::<Value>::try_from(sdk).unwrap();
    assert_eq!(back.into_typed::<PartUpdated>().unwrap(), event);
}

#[test]
fn the_sdk_reads_our_structured_value_without_metadata() {
    let event = part_event();
    let record = encode(&event, &EncodeOptions::default().mode(ContentMode::Structured)).unwrap();
    let sdk: cloudevents::Event = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
    let back = DomainEvent::<Value>::try_from(sdk).unwrap();
    assert_eq!(back.into_typed::<PartUpdated>().unwrap(), event);
}

#[test]
fn an_sdk_event_without_time_is_an_error() {
    let sdk = cloudevents::EventBuilderV10::new()
        .id("e-1")
        .source("s")
        .ty("x.y")
        .build()
        .unwrap();
    assert!(DomainEvent::<Value>::try_from(sdk).is_err());
}

/// The legacy wire needs `metadata` as a JSON object in the value, which
/// cloudevents-sdk's own JSON deserializer refuses (extension values are
/// scalars). Services on the SDK decode with this crate and convert, which
/// works; this test pins the limitation documented in the `sdk` module.
#[test]
fn sdk_json_refuses_object_metadata_but_decode_then_convert_works() {
    let event = part_event().with_metadata(EventMetadata::for_user("user-1"));
    let record = encode(&event, &EncodeOptions::default()).unwrap();
    let direct = serde_json::from_slice::<cloudevents::Event>(record.value.as_deref().unwrap());
    assert!(direct.is_err());
    let decoded = mes_events_types::decode(&record).unwrap();
    let sdk = cloudevents::Event::try_from(&decoded).unwrap();
    let back = DomainEvent::<Value>::try_from(sdk).unwrap();
    assert_eq!(back.into_typed::<PartUpdated>().unwrap(), event);
}
