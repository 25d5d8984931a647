//! Property tests: decoding never panics, and encode-then-decode is the
//! identity for events of every type in every mode.
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mes_events_types::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn non_empty() -> impl Strategy<Value = String> {
    ".{1,12}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![-1.0e12..1.0e12f64, (-1000i64..1000).prop_map(|n| n as f64)]
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Whole milliseconds like the fleet writes, and finer precision like
    // other producers may.
    (
        0i64..253_402_300_799_999,
        prop_oneof![Just(0i64), 0i64..1_000_000],
    )
        .prop_map(|(ms, sub)| {
            let nanos = i128::from(ms) * 1_000_000 + i128::from(sub);
            Timestamp::try_from(time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap()).unwrap()
        })
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        number().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), json(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn metadata() -> impl Strategy<Value = Option<EventMetadata>> {
    // Extra keys never collide with the four named fields.
    let extra = btree_map("x[a-z]{0,6}", json(), 0..3).prop_map(|m| m.into_iter().collect());
    proptest::option::of((opt_text(), opt_text(), opt_text(), opt_text(), extra).prop_map(
        |(user_id, user_name, ip_address, user_agent, extra)| EventMetadata {
            user_id,
            user_name,
            ip_address,
            user_agent,
            extra,
        },
    ))
}

#[derive(Debug, Clone)]
struct Envelope {
    id: String,
    source: String,
    time: Timestamp,
    subject: Option<String>,
    entity: Option<(String, String)>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    metadata: Option<EventMetadata>,
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        non_empty(),
        non_empty(),
        timestamp(),
        opt_text(),
        proptest::option::of((text(), text())),
        opt_text(),
        opt_text(),
        metadata(),
    )
        .prop_map(
            |(id, source, time, subject, entity, correlation_id, causation_id, metadata)| Envelope {
                id,
                source,
                time,
                subject,
                entity,
                correlation_id,
                causation_id,
                metadata,
            },
        )
}

fn wrap<T>(mut event: DomainEvent<T>, e: Envelope) -> DomainEvent<T> {
    event = event.with_id(EventId::parse(e.id).unwrap()).with_time(e.time);
    if let Some(subject) = e.subject {
        event = event.with_subject(subject);
    }
    if let Some((entity_type, entity_id)) = e.entity {
        event = event.with_entity(entity_type, entity_id);
    }
    if let Some(c) = e.correlation_id {
        event = event.with_correlation_id(c);
    }
    if let Some(c) = e.causation_id {
        event = event.with_causation_id(c);
    }
    if let Some(m) = e.metadata {
        event = event.with_metadata(m);
    }
    event
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    (
        prop_oneof![Just(ContentMode::Structured), Just(ContentMode::Binary)],
        any::<bool>(),
    )
        .prop_map(|(mode, legacy)| EncodeOptions::default().mode(mode).legacy_headers(legacy))
}

fn part_fields() -> impl Strategy<Value = PartFields> {
    (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(a, b, c, d, e, f)| PartFields {
            part_id: a,
            part_number: b,
            part_name: c,
            revision: d,
            unit_of_measure: e,
            material_type: f,
        })
}

/// A strategy for every payload type of the crate.
trait ArbitraryPayload: EventPayload + Clone + PartialEq + std::fmt::Debug + 'static {
    fn strategy() -> BoxedStrategy<Self>;
}

macro_rules! raw_payloads {
    ($($t:ident),+) => {$(
        impl ArbitraryPayload for $t {
            fn strategy() -> BoxedStrategy<Self> {
                json().prop_map($t).boxed()
            }
        }
    )+};
}
raw_payloads!(
    LotUpdated,
    SerialUpdated,
    WorkCenterCreated,
    PersonnelCreated,
    ProductCreated,
    WorkOrderUpdated,
    NcrUpdated
);

macro_rules! payload_strategy {
    ($t:ident, ($($field:ident: $s:expr),+ $(,)?)) => {
        impl ArbitraryPayload for $t {
            fn strategy() -> BoxedStrategy<Self> {
                ($($s,)+).prop_map(|($($field,)+)| $t { $($field,)+ }).boxed()
            }
        }
    };
}

payload_strategy!(PartCreated, (part_id: text(), part_number: text(), part_name: text(),
    revision: opt_text(), unit_of_measure: text(), material_type: opt_text()));
payload_strategy!(PartUpdated, (part_id: text(), part_number: text(), part_name: text(),
    revision: opt_text(), changes: part_fields(), previous_values: proptest::option::of(part_fields())));
payload_strategy!(PartDeleted, (part_id: text(), part_number: text(), deleted_at: timestamp()));
payload_strategy!(LotCreated, (lot_id: text(), lot_number: text(), part_id: text(), part_number: text(),
    quantity: number(), received_date: timestamp()));
payload_strategy!(SerialCreated, (serial_id: text(), serial_number: text(), part_id: text(),
    part_number: text(), lot_number: opt_text(), work_order_id: opt_text()));
payload_strategy!(WorkCenterUpdated, (work_center_id: text(), work_center_code: text(),
    work_center_name: text(), status: text(), changes: json_object()));
payload_strategy!(PersonnelUpdated, (personnel_id: text(), user_id: text(), first_name: text(),
    last_name: text(), changes: json_object()));
payload_strategy!(ProductUpdated, (product_id: text(), product_code: text(), product_name: text(),
    changes: json_object()));
payload_strategy!(UserCreated, (user_id: text(), username: text(), email: text(), first_name: opt_text(),
    last_name: opt_text()));
payload_strategy!(UserUpdated, (user_id: text(), username: text(), email: text(), first_name: opt_text(),
    last_name: opt_text(), changes: json_object()));
payload_strategy!(UserDeleted, (user_id: text(), username: text(), deleted_at: timestamp()));
payload_strategy!(WorkOrderCreated, (work_order_id: text(), work_order_number: text(), part_id: text(),
    part_number: opt_text(), quantity: number(), status: text()));
payload_strategy!(WorkOrderStatusChanged, (work_order_id: text(), work_order_number: text(),
    previous_status: text(), new_status: text(), changed_at: timestamp(), changed_by: text()));
payload_strategy!(WorkOrderCompleted, (work_order_id: text(), work_order_number: text(),
    quantity_completed: number(), quantity_scrapped: number(), completed_at: timestamp()));
payload_strategy!(InspectionCompleted, (inspection_id: text(), inspection_number: text(),
    part_id: opt_text(), work_order_id: opt_text(),
    result: prop_oneof![Just(InspectionResult::Pass), Just(InspectionResult::Fail)],
    completed_at: timestamp(), inspected_by: text()));
payload_strategy!(NcrCreated, (ncr_id: text(), ncr_number: text(), part_id: opt_text(), severity: text(),
    problem_description: text()));

fn check_round_trip<T: ArbitraryPayload>(cases: u32) {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(payload in T::strategy(), e in envelope(), options in options())| {
        let event = wrap(DomainEvent::new(e.source.clone(), payload), e);
        let record = encode(&event, &options).unwrap();
        let decoded = decode(&record).unwrap();
        prop_assert_eq!(decoded.event_type(), &T::EVENT_TYPE);
        let typed = decoded.into_typed::<T>().unwrap();
        prop_assert_eq!(typed, event);
    });
}

#[test]
fn encode_then_decode_is_the_identity_for_every_payload_type() {
    let mut checked = 0;
    macro_rules! check {
        ($t:ty) => {
            check_round_trip::<$t>(64);
            checked += 1;
        };
    }
    for_each_payload_type!(check);
    assert_eq!(checked, EventType::known().count());
}

fn unknown_type() -> impl Strategy<Value = EventType> {
    "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}".prop_filter_map("declared types are covered elsewhere", |t| {
        EventType::parse(&t).ok().filter(|t| !t.is_known())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity_for_unknown_types(
        event_type in unknown_type(), data in json(), e in envelope(), options in options()
    ) {
        let event = wrap(DomainEvent::new_raw(event_type, e.source.clone(), data), e);
        let decoded = decode(&encode(&event, &options).unwrap()).unwrap();
        prop_assert_eq!(decoded, event);
    }

    #[test]
    fn decoding_arbitrary_records_never_panics(
        key in proptest::option::of(vec(any::<u8>(), 0..16)),
        headers in vec((header_name(), header_value()), 0..8),
        value in proptest::option::of(prop_oneof![
            vec(any::<u8>(), 0..64),
            json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            near_event().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ]),
    ) {
        let record = KafkaRecord { key, headers, value };
        let _ = detect_format(&record);
        if let Ok(event) = decode(&record) {
            // Whatever decodes must encode and decode to itself.
            let again = decode(&encode(&event, &EncodeOptions::default()).unwrap()).unwrap();
            prop_assert_eq!(again, event);
        }
    }

    #[test]
    fn corrupted_records_never_panic(
        payload in PartUpdated::strategy(),
        e in envelope(),
        options in options(),
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let event = wrap(DomainEvent::new(e.source.clone(), payload), e);
        let mut record = encode(&event, &options).unwrap();
        let mut value = record.value.take().unwrap();
        for (at, byte) in flips {
            let i = at.index(value.len());
            value[i] ^= byte;
        }
        value.truncate(cut.index(value.len() + 1));
        record.value = Some(value);
        let _ = decode(&record);
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("content-type".to_owned()),
        Just("Content-Type".to_owned()),
        "ce_(specversion|id|source|type|time|subject|entityid|metadata|correlationid)",
        "ce-(correlationid|causationid|id)",
        ".{0,8}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1.0".to_vec()),
        Just(b"application/cloudevents+json".to_vec()),
        Just(b"application/json".to_vec()),
        Just(b"2025-10-18T12:14:56.789Z".to_vec()),
        Just(b"{\"userId\":1}".to_vec()),
        ".{0,8}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..8),
    ]
}

/// JSON objects that look like structured events, with attributes of the
/// right and the wrong types.
fn near_event() -> impl Strategy<Value = Value> {
    let attribute = prop_oneof![json(), non_empty().prop_map(Value::String)];
    (
        prop_oneof![Just(Value::from("1.0")), json()],
        attribute.clone(),
        attribute.clone(),
        attribute.clone(),
        prop_oneof![Just(Value::from("2025-10-18T12:14:56.789Z")), json()],
        json(),
        json(),
    )
        .prop_map(|(specversion, id, source, ty, time, data, metadata)| {
            serde_json::json!({
                "specversion": specversion, "id": id, "source": source, "type": ty,
                "time": time, "data": data, "metadata": metadata,
            })
        })
}
