//! Malformed records get a clear, typed error.
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mes_events_types::{Error, KafkaRecord, decode};

fn binary(headers: &[(&str, &[u8])], value: Option<&[u8]>) -> KafkaRecord {
    KafkaRecord {
        key: Some(b"K-1".to_vec()),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
        value: value.map(<[u8]>::to_vec),
    }
}

const GOOD: [(&str, &[u8]); 5] = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_source", b"s"),
    ("ce_type", b"material.part.updated"),
    ("ce_time", b"2025-10-18T12:14:56.789Z"),
];

fn without(name: &str) -> Vec<(&'static str, &'static [u8])> {
    GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
}

#[test]
fn a_complete_binary_record_decodes() {
    let event = decode(&binary(&GOOD, Some(b"{}"))).unwrap();
    assert_eq!(event.entity_id(), Some("K-1"));
}

#[test]
fn each_missing_required_attribute_is_named() {
    for (header, attribute) in [
        ("ce_specversion", "specversion"),
        ("ce_id", "id"),
        ("ce_source", "source"),
        ("ce_type", "type"),
        ("ce_time", "time"),
    ] {
        let error = decode(&binary(&without(header), Some(b"{}"))).unwrap_err();
        assert!(
            matches!(error, Error::MissingAttribute { name } if name == attribute),
            "{header}: {error}"
        );
    }
}

#[test]
fn wrong_specversion_is_refused() {
    let mut headers = without("ce_specversion");
    headers.push(("ce_specversion", b"0.3"));
    let error = decode(&binary(&headers, Some(b"{}"))).unwrap_err();
    assert!(
        matches!(error, Error::UnsupportedSpecVersion { ref found } if found == "0.3"),
        "{error}"
    );
}

#[test]
fn undecodable_json_is_refused_in_every_mode() {
    let error = decode(&binary(&GOOD, Some(b"{not json"))).unwrap_err();
    assert!(matches!(error, Error::InvalidJson { .. }), "{error}");

    let structured = binary(
        &[("content-type", b"application/cloudevents+json")],
        Some(b"\xff\xfe garbage"),
    );
    assert!(matches!(
        decode(&structured).unwrap_err(),
        Error::InvalidJson { .. }
    ));

    let neither = binary(&[], Some(b"just some bytes"));
    assert!(matches!(
        decode(&neither).unwrap_err(),
        Error::NotACloudEvent { .. }
    ));
}

#[test]
fn bad_headers_and_keys_are_refused() {
    let mut conflicting = GOOD.to_vec();
    conflicting.push(("CE_ID", b"e-2"));
    let error = decode(&binary(&conflicting, Some(b"{}"))).unwrap_err();
    assert!(matches!(error, Error::InvalidHeader { .. }), "{error}");

    let mut not_utf8 = without("ce_source");
    not_utf8.push(("ce_source", b"\xff"));
    let error = decode(&binary(&not_utf8, Some(b"{}"))).unwrap_err();
    assert!(matches!(error, Error::InvalidHeader { .. }), "{error}");

    let mut record = binary(&GOOD, Some(b"{}"));
    record.key = Some(vec![0xff, 0x00]);
    assert!(matches!(decode(&record).unwrap_err(), Error::InvalidKey));
}

#[test]
fn non_json_data_and_batches_are_unsupported_not_misread() {
    let mut text = GOOD.to_vec();
    text.push(("content-type", b"text/plain"));
    let error = decode(&binary(&text, Some(b"hello"))).unwrap_err();
    assert!(matches!(error, Error::UnsupportedContentType { .. }), "{error}");

    let batch = binary(
        &[("content-type", b"application/cloudevents-batch+json")],
        Some(b"[]"),
    );
    let error = decode(&batch).unwrap_err();
    assert!(matches!(error, Error::UnsupportedContentType { .. }), "{error}");
}

#[test]
fn attribute_of_the_wrong_json_type_is_named() {
    let value =
        br#"{"specversion":"1.0","id":7,"source":"s","type":"t.x","time":"2025-10-18T12:14:56.789Z"}"#;
    let record = binary(&[("content-type", b"application/cloudevents+json")], Some(value));
    let error = decode(&record).unwrap_err();
    assert!(
        matches!(error, Error::InvalidAttribute { name: "id", .. }),
        "{error}"
    );
}

#[test]
fn payload_mismatch_keeps_the_raw_json() {
    let event = decode(&binary(&GOOD, Some(br#"{"partId": 42}"#))).unwrap();
    let error = event
        .clone()
        .into_typed::<mes_events_types::PartUpdated>()
        .unwrap_err();
    assert!(matches!(error, Error::PayloadMismatch { .. }), "{error}");
    assert_eq!(error.into_raw_event().unwrap().data(), event.data());
}
