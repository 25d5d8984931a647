//! The consumer's metrics move when the real broker and Redis are used
//! (`MES_TEST_KAFKA_BROKERS`, `MES_TEST_REDIS_URL`), seen through
//! `metrics-util`'s debugging recorder. Its own test binary: the recorder is
//! process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{ConsumerConfig, Effects, EventConsumer, HandlerRetry, KafkaConfig};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{Value, json};

/// One snapshot: taking one resets the recorder's counters and histograms.
type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of each metric named `name` whose labels include `labels`.
fn values<'a>(snapshot: &'a Snapshot, name: &str, labels: &[(&str, &str)]) -> Vec<&'a DebugValue> {
    snapshot
        .iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| value)
        .collect()
}

fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    values(snapshot, name, labels)
        .into_iter()
        .map(|v| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn samples(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> usize {
    values(snapshot, name, labels)
        .into_iter()
        .map(|v| match v {
            DebugValue::Histogram(samples) => samples.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_moves_the_consumer_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

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

    let snapshot: Snapshot = snapshotter.snapshot().into_vec();
    let ours = [("messaging.consumer.group.name", group.as_str())];
    let consumed = |outcome: &str| {
        counter(
            &snapshot,
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
    assert_eq!(counter(&snapshot, "mes.consumer.retries", &ours), 1);
    // Three attempts: the good event once, the failing one twice.
    assert_eq!(samples(&snapshot, "messaging.process.duration", &ours), 3);
    assert!(
        samples(
            &snapshot,
            "mes.consumer.commit.duration",
            &[ours[0], ("mes.store", "redis")]
        ) >= 1
    );
    // The offsets went to Kafka at least at shutdown.
    assert!(
        samples(
            &snapshot,
            "mes.consumer.commit.duration",
            &[ours[0], ("mes.store", "kafka")]
        ) >= 1
    );
    assert_eq!(
        values(&snapshot, "mes.consumer.lag", &ours),
        [&DebugValue::Gauge(0.0.into())]
    );
    assert_eq!(
        values(&snapshot, "mes.consumer.subscription_gaps", &ours),
        [&DebugValue::Gauge(0.0.into())]
    );
    assert_eq!(counter(&snapshot, "mes.consumer.rebalances", &ours), 0);
    publisher.disconnect().await;
}
