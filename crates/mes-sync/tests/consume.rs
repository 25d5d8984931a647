//! `EventConsumer` against the real broker and Redis of the run
//! (`MES_TEST_KAFKA_BROKERS`, `MES_TEST_REDIS_URL`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use mes_events_types::{DomainEvent, EventType, KafkaRecord, decode};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{ConsumerConfig, Effects, EventConsumer, HandlerRetry};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn unique(name: &str) -> String {
    format!("t{name}{}", ulid::Ulid::new().to_string().to_lowercase())
}

struct Setup {
    brokers: String,
    event_type: EventType,
    topic: String,
    publisher: EventPublisher,
    group: String,
}

async fn setup(name: &str, partitions: u16) -> Setup {
    let brokers = mes_testkit::kafka_brokers();
    let domain = unique(name);
    let event_type = EventType::parse(&format!("{domain}.thing.happened")).unwrap();
    let topic = event_type.topic().unwrap();
    let publisher = EventPublisher::connect(PublisherConfig::new([brokers.as_str()]))
        .await
        .unwrap();
    let settings = TopicSettings {
        partitions,
        replication: 1,
    };
    publisher
        .ensure_topics(&[TopicSpec::new(&topic, settings)])
        .await
        .unwrap();
    Setup {
        brokers,
        event_type,
        topic,
        publisher,
        group: unique("group"),
    }
}

impl Setup {
    fn config(&self) -> ConsumerConfig {
        ConsumerConfig::new(
            self.group.clone(),
            mes_sync::KafkaConfig::new([self.brokers.as_str()]),
            mes_testkit::redis_url(),
        )
        .lease_ttl(Duration::from_secs(2))
        .fetch_max_wait(Duration::from_millis(100))
        .handler_retry(
            HandlerRetry::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(10)),
        )
    }

    fn event(&self, entity: &str, data: Value) -> DomainEvent {
        DomainEvent::new_raw(self.event_type.clone(), "test-service", data).with_entity("Thing", entity)
    }

    /// A key under the group's hash tag, for effects.
    fn effects_key(&self) -> String {
        format!("mes:sync:{{{}}}:test:effects", self.group)
    }
}

async fn redis() -> fred::prelude::Client {
    use fred::prelude::*;
    let url = mes_testkit::redis_url();
    let client = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

/// Removes every key of the group (its state and the test's effects).
async fn forget_group(group: &str) {
    use fred::prelude::*;
    let client = redis().await;
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("mes:sync:{{{group}}}:*"),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = client.del(keys).await.unwrap();
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
}

async fn read_topic(brokers: &str, topic: &str) -> Vec<KafkaRecord> {
    mes_testkit::kafka::read_topic(brokers, topic)
        .await
        .into_iter()
        .map(|r| r.record)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_handled_in_order_per_entity_with_effects_applied_once() {
    let s = setup("order", 3).await;
    let events: Vec<DomainEvent> = (0..300)
        .map(|i| s.event(&format!("E-{}", i % 30), json!({"seq": i / 30})))
        .collect();
    for outcome in s.publisher.publish_batch(&events).await {
        outcome.unwrap();
    }
    // The same event again (a producer's retry): handled once.
    s.publisher.publish(&events[0]).await.unwrap();

    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let key = s.effects_key();
    let consumer = EventConsumer::new(s.config())
        .on_type(s.event_type.clone(), move |event: DomainEvent<Value>| {
            let (seen, key) = (seen.clone(), key.clone());
            async move {
                let entity = event.entity_id().unwrap().to_owned();
                let seq = event.data()["seq"].as_u64().unwrap();
                let effects = Effects::none().hash_increment(&key, event.id().as_str(), 1);
                seen.send((entity, seq)).unwrap();
                effects
            }
        })
        .start()
        .await
        .unwrap();

    let mut per_entity: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..300 {
        let (entity, seq) = seen_rx.recv().await.unwrap();
        per_entity.entry(entity).or_default().push(seq);
    }
    for (entity, seqs) in &per_entity {
        assert_eq!(seqs, &(0..10).collect::<Vec<_>>(), "order of {entity}");
    }
    // The duplicate is skipped and committed: wait for the commit of every record.
    let stats = consumer
        .wait_for(|s| s.duplicates() == 1 && s.handled() == 300 && s.lag() == 0 && s.owned().len() == 3)
        .await;
    assert_eq!(stats.dead_lettered(), 0);
    assert_eq!(stats.ignored(), 0, "every event has its handler");
    consumer.shutdown().await;
    assert!(seen_rx.try_recv().is_err(), "no event handled twice");

    use fred::prelude::HashesInterface;
    let effects: std::collections::HashMap<String, i64> =
        redis().await.hgetall(s.effects_key()).await.unwrap();
    assert_eq!(effects.len(), 300);
    assert!(effects.values().all(|n| *n == 1));
    forget_group(&s.group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let s = setup("poison", 1).await;
    let good_before = s.event("G-1", json!({"n": 1}));
    let failing = s.event("FAIL", json!({"n": 2}));
    let good_after = s.event("G-2", json!({"n": 3}));
    s.publisher.publish(&good_before).await.unwrap();
    s.publisher
        .publish_record(
            &s.topic,
            KafkaRecord {
                key: Some(b"X".to_vec()),
                headers: vec![],
                value: Some(b"not json at all".to_vec()),
            },
        )
        .await
        .unwrap();
    s.publisher
        .publish_record(
            &s.topic,
            KafkaRecord {
                key: Some(b"Y".to_vec()),
                headers: vec![
                    ("ce_specversion".into(), b"1.0".to_vec()),
                    ("ce_source".into(), b"s".to_vec()),
                ],
                value: Some(b"{}".to_vec()),
            },
        )
        .await
        .unwrap();
    s.publisher.publish(&failing).await.unwrap();
    s.publisher.publish(&good_after).await.unwrap();

    let (handled, mut handled_rx) = mpsc::unbounded_channel();
    let consumer = EventConsumer::new(s.config())
        .try_on_type(s.event_type.clone(), move |event: DomainEvent<Value>| {
            let handled = handled.clone();
            async move {
                if event.entity_id() == Some("FAIL") {
                    return Err("the handler always fails for this one".into());
                }
                handled.send(event.id().clone()).unwrap();
                Ok(Effects::none())
            }
        })
        .start()
        .await
        .unwrap();
    assert_eq!(handled_rx.recv().await.unwrap(), *good_before.id());
    assert_eq!(
        handled_rx.recv().await.unwrap(),
        *good_after.id(),
        "the events behind the poison are processed"
    );
    let stats = consumer
        .wait_for(|s| s.dead_lettered() == 3 && s.lag() == 0)
        .await;
    assert_eq!(
        stats.retried(),
        2,
        "the failing handler was retried up to the limit"
    );
    consumer.shutdown().await;

    let letters = read_topic(&s.brokers, &format!("{}.dlq", s.topic)).await;
    assert_eq!(letters.len(), 3);
    let header = |r: &KafkaRecord, name: &str| String::from_utf8(r.header(name).unwrap().to_vec()).unwrap();
    assert_eq!(
        letters[0].value.as_deref(),
        Some(&b"not json at all"[..]),
        "the record is kept as it was"
    );
    assert!(header(&letters[0], "mes-dlq-reason").starts_with("undecodable"));
    assert!(
        header(&letters[1], "mes-dlq-reason").contains("`id` is missing"),
        "{}",
        header(&letters[1], "mes-dlq-reason")
    );
    assert_eq!(header(&letters[2], "mes-dlq-attempts"), "3");
    assert!(header(&letters[2], "mes-dlq-reason").contains("always fails"));
    for (i, letter) in letters.iter().enumerate() {
        assert_eq!(header(letter, "mes-dlq-group"), s.group);
        assert_eq!(header(letter, "mes-dlq-source-topic"), s.topic);
        assert_eq!(header(letter, "mes-dlq-source-partition"), "0");
        assert_eq!(header(letter, "mes-dlq-source-offset"), (i + 1).to_string());
    }
    assert_eq!(decode(&letters[2]).unwrap().id(), failing.id());
    forget_group(&s.group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_goes_on_from_the_committed_offset() {
    let s = setup("restart", 2).await;
    let first: Vec<DomainEvent> = (0..20)
        .map(|i| s.event(&format!("E-{i}"), json!({"i": i})))
        .collect();
    for outcome in s.publisher.publish_batch(&first).await {
        outcome.unwrap();
    }
    let start = |tx: mpsc::UnboundedSender<String>| {
        EventConsumer::new(s.config())
            .on_type(s.event_type.clone(), move |event: DomainEvent<Value>| {
                let tx = tx.clone();
                async move {
                    tx.send(event.id().to_string()).unwrap();
                    Effects::none()
                }
            })
            .start()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = start(tx).await.unwrap();
    let mut ids = HashSet::new();
    while ids.len() < 20 {
        ids.insert(rx.recv().await.unwrap());
    }
    consumer.shutdown().await;

    let second: Vec<DomainEvent> = (0..10)
        .map(|i| s.event(&format!("E-{i}"), json!({"i": 100 + i})))
        .collect();
    for outcome in s.publisher.publish_batch(&second).await {
        outcome.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = start(tx).await.unwrap();
    let mut again = HashSet::new();
    while again.len() < 10 {
        again.insert(rx.recv().await.unwrap());
    }
    let expected: HashSet<String> = second.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(again, expected, "only the new events, none of the committed ones");
    consumer.shutdown().await;
    forget_group(&s.group).await;
}

/// `on_unknown` sees only the topics the consumer reads, so the consumer
/// says at start-up which topics those are and which event types have a
/// handler: once, when it starts, not at each rebalance.
#[tokio::test]
async fn the_start_up_log_names_the_topics_and_the_handled_types() {
    let s = setup("startlog", 1).await;
    let extra_topic = unique("extra");
    let logs = mes_testkit::logs::CapturedLogs::default();
    let _guard = logs.install();
    let consumer = EventConsumer::new(s.config())
        .on_type(s.event_type.clone(), |_: DomainEvent<Value>| async {
            Effects::none()
        })
        .on_unknown(|_: DomainEvent<Value>| async { Effects::none() })
        .subscribe(extra_topic.clone())
        .start()
        .await
        .unwrap();
    consumer.wait_for(|stats| stats.owned().len() == 1).await;
    consumer.shutdown().await;
    forget_group(&s.group).await;

    let starting: Vec<_> = logs
        .events_at(tracing::Level::INFO)
        .into_iter()
        .filter(|event| event.message == "consumer starting")
        .collect();
    assert_eq!(starting.len(), 1, "{:?}", logs.events());
    let fields = &starting[0].fields;
    assert_eq!(fields["group"], s.group);
    let mut topics = vec![extra_topic, s.topic.clone()];
    topics.sort();
    assert_eq!(fields["topics"], format!("{topics:?}"));
    assert_eq!(
        fields["handled_types"],
        format!("{:?}", ["(unknown types)".to_owned(), s.event_type.to_string()])
    );
}
