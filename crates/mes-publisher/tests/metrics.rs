//! The publisher's and the outbox relay's metrics move when the real broker
//! (`MES_TEST_KAFKA_BROKERS`) and PostgreSQL (`MES_TEST_DATABASE_URL`, a
//! schema of this suite's own) are used, seen through `metrics-util`'s
//! debugging recorder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mes_publisher::{EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RelayConfig};
use mes_testkit::postgres::TestSchema;
use serde_json::json;

const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";
const TABLE: &str = "mes.outbox.table";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_moves_the_publisher_metrics() {
    let metrics = mes_testkit::metrics::recorded().await;
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let event_type = unique_event_type("metrics_publish");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 1).await;

    let events: Vec<_> = (0..5)
        .map(|n| raw_event(&event_type, "E-1", json!({ "n": n })))
        .collect();
    for outcome in publisher.publish_batch(&events).await {
        outcome.unwrap();
    }
    publisher.publish(&events[0]).await.unwrap();
    let ours = [(TOPIC, topic.as_str()), (PARTITION, "0")];
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("messaging.client.sent.messages", &ours), 6);
    let sends = [("messaging.operation.name", "send"), ours[0]];
    assert_eq!(snapshot.samples("messaging.client.operation.duration", &sends), 6);
    // One batch at least for the five, one for the last.
    let batches = snapshot.samples("mes.publisher.batch.size", &ours);
    assert!((2..=6).contains(&batches), "{batches}");
    assert_eq!(snapshot.gauge("mes.publisher.queued", &ours), Some(0.0));
    assert_eq!(snapshot.counter("mes.publisher.errors", &[]), 0);
    // The Kafka layer below counted the same records.
    assert_eq!(snapshot.counter("mes.kafka.producer.records", &ours), 6);
    assert_eq!(
        snapshot.counter("mes.kafka.producer.batches", &ours),
        batches as u64
    );

    // Refused before it is queued: counted by kind, nothing sent.
    let small = EventPublisher::connect(PublisherConfig::new(brokers.split(',')).max_record_bytes(10))
        .await
        .unwrap();
    assert!(small.publish(&events[1]).await.is_err());
    let snapshot = metrics.snapshot();
    assert_eq!(
        snapshot.counter("mes.publisher.errors", &[("error.type", "record_too_large")]),
        1
    );
    assert_eq!(snapshot.counter("mes.publisher.errors", &[]), 1);
    assert_eq!(snapshot.counter("messaging.client.sent.messages", &ours), 0);
    small.disconnect().await;
    publisher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_moves_the_outbox_metrics() {
    let metrics = mes_testkit::metrics::recorded().await;
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let schema = TestSchema::create("outbox_metrics").await;
    let pool = schema.pool(4).await;
    let table = OutboxTable::in_schema(schema.name(), "outbox").unwrap();
    let name = table.qualified_name();
    let ours = [(TABLE, name.as_str())];
    let outbox = Outbox::new(table);
    outbox.migrate(&pool).await.unwrap();
    let event_type = unique_event_type("metrics_outbox");
    create_topic(&publisher, &event_type.topic().unwrap(), 2).await;
    let enqueue = |entities: &'static [&'static str]| {
        let (outbox, pool, event_type) = (outbox.clone(), pool.clone(), event_type.clone());
        async move {
            let events: Vec<_> = entities
                .iter()
                .map(|entity| raw_event(&event_type, entity, json!({})))
                .collect();
            let mut tx = pool.begin().await.unwrap();
            outbox.enqueue(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    };

    enqueue(&["E-1", "E-2", "E-1", "E-3"]).await;
    assert_eq!(outbox.stats(&pool).await.unwrap().pending, 4);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.gauge("mes.outbox.pending", &ours), Some(4.0));
    assert_eq!(snapshot.gauge("mes.outbox.parked", &ours), Some(0.0));
    let age = snapshot.gauge("mes.outbox.oldest_pending_age", &ours).unwrap();
    assert!(age >= 0.0, "{age}");

    let relay = OutboxRelay::new(
        outbox.clone(),
        pool.clone(),
        publisher.clone(),
        RelayConfig::default(),
    );
    let drained = relay.drain().await.unwrap();
    assert_eq!(drained.published, 4);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.outbox.relay.published", &ours), 4);
    assert_eq!(snapshot.counter("mes.outbox.relay.parked", &ours), 0);
    assert!(snapshot.counter("mes.outbox.relay.batches", &ours) >= 1);
    assert_eq!(snapshot.gauge("mes.outbox.pending", &ours), Some(0.0));
    assert_eq!(snapshot.gauge("mes.outbox.oldest_pending_age", &ours), Some(0.0));
    assert_eq!(relay.stats().published, 4, "one count for both");

    // An event its publisher refuses for good is parked.
    let small = EventPublisher::connect(PublisherConfig::new(brokers.split(',')).max_record_bytes(10))
        .await
        .unwrap();
    enqueue(&["E-4"]).await;
    let refusing = OutboxRelay::new(
        outbox.clone(),
        pool.clone(),
        small.clone(),
        RelayConfig::default(),
    );
    assert_eq!(refusing.drain().await.unwrap().parked, 1);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.outbox.relay.parked", &ours), 1);
    assert_eq!(snapshot.counter("mes.outbox.relay.failed", &ours), 1);
    assert_eq!(snapshot.gauge("mes.outbox.parked", &ours), Some(1.0));
    assert_eq!(snapshot.gauge("mes.outbox.pending", &ours), Some(0.0));
    small.disconnect().await;

    // A running relay sets the gauges as it polls.
    enqueue(&["E-5", "E-6"]).await;
    outbox.stats(&pool).await.unwrap();
    assert_eq!(metrics.snapshot().gauge("mes.outbox.pending", &ours), Some(2.0));
    let running = relay.clone().start();
    let deadline = Instant::now() + PATIENCE;
    let mut published = 0;
    loop {
        let snapshot = metrics.snapshot();
        published += snapshot.counter("mes.outbox.relay.published", &ours);
        if published == 2 && snapshot.gauge("mes.outbox.pending", &ours) == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "published {published}, pending {:?}",
            snapshot.gauge("mes.outbox.pending", &ours)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running.shutdown().await.published, 6);
    publisher.disconnect().await;
}
