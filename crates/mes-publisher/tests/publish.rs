//! `EventPublisher` against the real broker of the run
//! (`MES_TEST_KAFKA_BROKERS`, a tansu that `cargo xtask test` starts).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;

use common::*;
use mes_events_types::{
    ContentMode, DomainEvent, EncodeOptions, PartFields, PartUpdated, decode, encode, partition_for_key,
};
use mes_publisher::{Delivery, Error, EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use serde_json::json;

#[tokio::test]
async fn single_publish_lands_where_it_says_with_the_wire_contract() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let event_type = unique_event_type("single");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 3).await;

    let event = raw_event(&event_type, "WO-1001", json!({"n": 1})).with_correlation_id("req-1");
    let landed = publisher.publish(&event).await.unwrap();
    assert_eq!(landed.topic, topic);
    assert_eq!(landed.partition, 2, "partitioner.json: WO-1001 over 3 partitions");

    let read = read_topic(&brokers, &topic).await;
    assert_eq!(read.len(), 1);
    assert_eq!(
        (read[0].partition, read[0].offset),
        (landed.partition, landed.offset)
    );
    // Byte for byte what the codec writes, legacy headers included.
    assert_eq!(
        read[0].record,
        sorted(encode(&event, &EncodeOptions::default()).unwrap())
    );
    assert_eq!(decode(&read[0].record).unwrap(), event);
    publisher.disconnect().await;
}

/// rskafka keeps headers in a map ordered by name; the broker returns them so.
fn sorted(mut record: mes_events_types::KafkaRecord) -> mes_events_types::KafkaRecord {
    record.headers.sort();
    record
}

#[tokio::test]
async fn typed_events_go_to_their_domain_topic_in_binary_mode_on_request() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = EventPublisher::connect(
        PublisherConfig::new([brokers.as_str()])
            .content_mode(ContentMode::Binary)
            .legacy_headers(false),
    )
    .await
    .unwrap();
    // The fleet's own topic is shared with other tests: find our event by id.
    publisher
        .ensure_topics(&[TopicSpec::new("mes.material.events", TopicSettings::default())])
        .await
        .unwrap();
    let event = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: "P-99999".into(),
            part_name: "Landing Gear Strut".into(),
            revision: None,
            changes: PartFields::default(),
            previous_values: None,
        },
    )
    .with_entity("Part", "P-12345");
    let landed = publisher.publish(&event).await.unwrap();
    assert_eq!(landed.topic, "mes.material.events");
    let read = read_topic(&brokers, "mes.material.events").await;
    let ours = read
        .iter()
        .find(|r| (r.partition, r.offset) == (landed.partition, landed.offset))
        .unwrap();
    assert_eq!(ours.record.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(ours.record.header("ce_id"), Some(event.id().as_str().as_bytes()));
    assert_eq!(ours.record.header("ce-id"), None);
    assert_eq!(
        decode(&ours.record).unwrap().into_typed::<PartUpdated>().unwrap(),
        event
    );
}

#[tokio::test]
async fn ten_thousand_events_over_500_entities_arrive_once_in_order_on_the_predicted_partition() {
    let brokers = mes_testkit::kafka_brokers();
    ten_thousand_events_arrive_once_in_order(&brokers, connect(&brokers).await, "tenk").await;
}

/// Every codec: rskafka, an independent decoder, reads each batch back.
#[cfg(all(
    feature = "compression-gzip",
    feature = "compression-lz4",
    feature = "compression-snappy",
    feature = "compression-zstd"
))]
#[tokio::test]
async fn compressed_batches_arrive_once_in_order_on_the_predicted_partition() {
    use mes_publisher::Compression;
    let brokers = mes_testkit::kafka_brokers();
    for (name, codec) in [
        ("gzip", Compression::Gzip),
        ("lzfour", Compression::Lz4),
        ("snappy", Compression::Snappy),
        ("zstd", Compression::Zstd),
    ] {
        let config = PublisherConfig::new(brokers.split(','))
            .client_id("mes-publisher-tests")
            .compression(codec);
        let publisher = EventPublisher::connect(config).await.unwrap();
        ten_thousand_events_arrive_once_in_order(&brokers, publisher, name).await;
    }
}

/// Publishes 10,000 events over 500 entities (among them the keys of
/// `partitioner.json`) and reads them back: each once, each entity's in
/// order, each on its predicted partition.
async fn ten_thousand_events_arrive_once_in_order(brokers: &str, publisher: EventPublisher, name: &str) {
    let event_type = unique_event_type(name);
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 6).await;

    // 500 entities, among them the keys of partitioner.json.
    let predicted: HashMap<String, u32> = mes_testkit::partitioner_rows()
        .into_iter()
        .filter(|(_, partitions, _)| *partitions == 6)
        .map(|(key, _, partition)| (key, partition))
        .collect();
    let mut entities: Vec<String> = predicted.keys().cloned().collect();
    entities.sort();
    entities.extend((entities.len()..500).map(|i| format!("E-{i}")));
    let events: Vec<_> = (0..10_000)
        .map(|i| raw_event(&event_type, &entities[i % 500], json!({"seq": i / 500})))
        .collect();

    // Ten batches of 1,000, each awaited as a whole: many in flight at once.
    for chunk in events.chunks(1000) {
        for outcome in publisher.publish_batch(chunk).await {
            outcome.unwrap();
        }
    }

    let read = read_topic(brokers, &topic).await;
    assert_eq!(read.len(), 10_000, "every event once");
    let six = NonZeroU32::new(6).unwrap();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &read {
        let event = decode(&r.record).unwrap();
        assert!(ids.insert(event.id().clone()), "duplicate {}", event.id());
        let entity = event.entity_id().unwrap().to_owned();
        assert_eq!(
            r.partition as u32,
            partition_for_key(entity.as_bytes(), six),
            "{entity}"
        );
        if let Some(expected) = predicted.get(&entity) {
            assert_eq!(r.partition as u32, *expected, "partitioner.json row for {entity}");
        }
        seen.entry(entity)
            .or_default()
            .push(event.data()["seq"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 500);
    for (entity, seqs) in seen {
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "order of {entity}");
    }
    publisher.disconnect().await;
}

#[tokio::test]
async fn publishing_to_a_missing_topic_is_a_clear_error_unless_auto_creation_is_on() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let event_type = unique_event_type("missing");
    let event = raw_event(&event_type, "X-1", json!({}));
    let error = publisher.publish(&event).await.unwrap_err();
    assert!(
        matches!(error, Error::TopicNotFound { ref topic } if *topic == event_type.topic().unwrap()),
        "{error}"
    );
    assert_eq!(error.delivery(), Delivery::NotWritten);

    let auto = EventPublisher::connect(PublisherConfig::new([brokers.as_str()]).auto_create_topics(
        TopicSettings {
            partitions: 2,
            replication: 1,
        },
    ))
    .await
    .unwrap();
    let landed = auto.publish(&event).await.unwrap();
    assert_eq!(landed.topic, event_type.topic().unwrap());
    assert_eq!(read_topic(&brokers, &landed.topic).await.len(), 1);
}

#[tokio::test]
async fn oversized_events_fail_before_sending_and_nothing_lands() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher =
        EventPublisher::connect(PublisherConfig::new([brokers.as_str()]).max_record_bytes(10_000))
            .await
            .unwrap();
    let event_type = unique_event_type("large");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 1).await;
    let big = raw_event(&event_type, "X-1", json!({"blob": "x".repeat(20_000)}));
    let small = raw_event(&event_type, "X-1", json!({"blob": "small"}));
    let outcomes = publisher.publish_batch(&[big, small.clone()]).await;
    assert!(
        matches!(outcomes[0], Err(Error::RecordTooLarge { limit: 10_000, .. })),
        "{:?}",
        outcomes[0]
    );
    let landed = outcomes[1].as_ref().unwrap();
    let read = read_topic(&brokers, &topic).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].offset, landed.offset);
    assert_eq!(decode(&read[0].record).unwrap(), small);
}

#[tokio::test]
async fn health_check_answers_and_disconnect_flushes_then_refuses() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    publisher.health_check().await.unwrap();
    let event_type = unique_event_type("flush");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 2).await;

    // Start publishes from other tasks, then disconnect while they are in flight.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let publisher = publisher.clone();
        let event = raw_event(&event_type, &format!("E-{}", i % 7), json!({"i": i}));
        tasks.push(tokio::spawn(async move { publisher.publish(&event).await }));
    }
    let mut acknowledged = 0;
    for task in tasks {
        // Each either landed or was refused because the publisher closed first;
        // nothing is reported as published that is not on the topic.
        match task.await.unwrap() {
            Ok(_) => acknowledged += 1,
            Err(Error::Disconnected) => {}
            Err(other) => panic!("unexpected {other}"),
        }
        if acknowledged == 1 {
            publisher.disconnect().await;
        }
    }
    assert_eq!(read_topic(&brokers, &topic).await.len(), acknowledged);
    let late = raw_event(&event_type, "E-1", json!({}));
    assert!(matches!(publisher.publish(&late).await, Err(Error::Disconnected)));
}

#[tokio::test(start_paused = true)]
async fn connecting_to_a_dead_address_fails_within_the_bound() {
    // The clock is paused: the back-off sleeps pass instantly, so the
    // bound is checked exactly, with no real waiting.
    let dead = format!("127.0.0.1:{}", mes_testkit::tansu::spare_port().unwrap());
    let bound = std::time::Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let error = EventPublisher::connect(PublisherConfig::new([dead.as_str()]).connect_timeout(bound))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert!(
        started.elapsed() <= bound,
        "gave up after {:?}",
        started.elapsed()
    );
}

/// An event whose entity id is empty goes out keyed by its event id (the
/// legacy producers' key for an event without an entity), never with an
/// empty key: on the broker, and in the in-memory double alike.
#[tokio::test]
async fn an_empty_entity_id_is_published_keyed_by_the_event_id() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let event_type = unique_event_type("emptyentity");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 3).await;
    let event = raw_event(&event_type, "", json!({})).with_entity_id("");
    publisher.publish(&event).await.unwrap();
    publisher.disconnect().await;
    let read = read_topic(&brokers, &topic).await;
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].record.key.as_deref(),
        Some(event.id().as_str().as_bytes())
    );

    let (double, recorded) = EventPublisher::in_memory();
    double.publish(&event).await.unwrap();
    assert_eq!(recorded.records()[0].record.key, read[0].record.key);
}

/// Binary mode writes records no TypeScript consumer can read, so a
/// publisher in it says so once, as a warning, when it connects: not per
/// event, not per clone. A structured publisher says nothing of the kind.
#[tokio::test]
async fn a_binary_mode_publisher_warns_once_at_start_up() {
    let brokers = mes_testkit::kafka_brokers();
    let logs = mes_testkit::logs::CapturedLogs::default();
    let _guard = logs.install();
    let binary_mode_warnings = || -> Vec<mes_testkit::logs::LogEvent> {
        logs.events_at(tracing::Level::WARN)
            .into_iter()
            .filter(|event| event.message.contains("binary mode"))
            .collect()
    };

    let structured = connect(&brokers).await;
    structured.disconnect().await;
    assert_eq!(binary_mode_warnings(), [], "a structured publisher");

    let config = PublisherConfig::new([brokers.as_str()]).content_mode(ContentMode::Binary);
    let publisher = EventPublisher::connect(config).await.unwrap();
    let event_type = unique_event_type("binary-warning");
    create_topic(&publisher, &event_type.topic().unwrap(), 1).await;
    let clone = publisher.clone();
    for n in 0..3 {
        clone
            .publish(&raw_event(&event_type, "WO-1", json!({ "n": n })))
            .await
            .unwrap();
    }
    publisher.disconnect().await;
    let warnings = binary_mode_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .message
            .contains("no TypeScript consumer of the fleet can read"),
        "{warnings:?}"
    );
}
