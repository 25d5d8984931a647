//! The consumer's metrics move when the real broker and Redis are used
//! (`MES_TEST_KAFKA_BROKERS`, `MES_TEST_REDIS_URL`), seen through
//! `metrics-util`'s debugging recorder. Its own test binary: the recorder is
//! process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{ConsumerConfig, Effects, EventConsumer, HandlerRetry, KafkaConfig};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_moves_the_consumer_metrics() {
    let metrics = mes_testkit::metrics::recorded().await;

    let brokers = mes_testkit::kafka_brokers();
    let domain = format!("tmetrics{}", ulid::Ulid::new().to_string().to_lowercase());
    let event_type = EventType::parse(&format!("{domain}.thing.happened")).unwrap();
    let topic = event_type.topic().unwrap();
    let group = format!("metrics-{}", ulid::Ulid::new());
    let publisher = EventPublisher::connect(PublisherConfig::new([brokers.as_str()]))
        .await
        .unwrap();
    let settings = TopicSettings {
        partitions: 1,
        replication: 1,
    };
    publisher
        .ensure_topics(&[TopicSpec::new(&topic, settings)])
        .await
        .unwrap();
    let ok = DomainEvent::new_raw(event_type.clone(), "test", json!({})).with_entity("Thing", "OK");
    let failing = DomainEvent::new_raw(event_type.clone(), "test", json!({})).with_entity("Thing", "FAIL");
    for event in [&ok, &ok, &failing] {
        publisher.publish(event).await.unwrap();
    }

    let config = ConsumerConfig::new(
        group.clone(),
        KafkaConfig::new([brokers.as_str()]),
        mes_testkit::redis_url(),
    )
    .session_timeout(Duration::from_secs(6))
    .heartbeat_interval(Duration::from_millis(200))
    .fetch_max_wait(Duration::from_millis(100))
    .handler_retry(
        HandlerRetry::default()
            .max_attempts(2)
            .initial_backoff(Duration::from_millis(10)),
    );
    let consumer = EventConsumer::new(config)
        .try_on_type(event_type.clone(), |event: DomainEvent<Value>| async move {
            if event.entity_id() == Some("FAIL") {
                return Err(std::io::Error::other("always fails").into());
            }
            Ok(Effects::none())
        })
        .start()
        .await
        .unwrap();
    consumer
        .wait_for(|s| s.lag() == 0 && s.handled() == 1 && s.dead_lettered() == 1 && s.duplicates() == 1)
        .await;
    consumer.shutdown().await;

    let snapshot = metrics.snapshot();
    let ours = [("messaging.consumer.group.name", group.as_str())];
    let consumed = |outcome: &str| {
        snapshot.counter(
            "messaging.client.consumed.messages",
            &[
                ("messaging.consumer.group.name", group.as_str()),
                ("messaging.destination.name", topic.as_str()),
                ("messaging.destination.partition.id", "0"),
                ("mes.outcome", outcome),
            ],
        )
    };
    assert_eq!(consumed("handled"), 1);
    assert_eq!(consumed("duplicate"), 1);
    assert_eq!(consumed("dead_lettered"), 1);
    assert_eq!(consumed("ignored"), 0);
    assert_eq!(snapshot.counter("mes.consumer.retries", &ours), 1);
    // Three attempts: the good event once, the failing one twice.
    assert_eq!(snapshot.samples("messaging.process.duration", &ours), 3);
    assert!(snapshot.samples("mes.consumer.commit.duration", &[ours[0], ("mes.store", "redis")]) >= 1);
    // The offsets went to Kafka at least at shutdown.
    assert!(snapshot.samples("mes.consumer.commit.duration", &[ours[0], ("mes.store", "kafka")]) >= 1);
    assert_eq!(snapshot.gauge("mes.consumer.lag", &ours), Some(0.0));
    assert_eq!(snapshot.gauge("mes.consumer.subscription_gaps", &ours), Some(0.0));
    assert_eq!(snapshot.counter("mes.consumer.rebalances", &ours), 0);
    publisher.disconnect().await;
}
