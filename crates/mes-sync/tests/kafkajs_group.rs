//! Rust and kafkajs instances of one service in one Kafka consumer group,
//! against the run's broker, Redis and kafkajs 2 (`MES_TEST_KAFKA_BROKERS`,
//! `MES_TEST_REDIS_URL`, `MES_TEST_NODE_PATH`): the rolling-deploy cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use mes_events_types::{DomainEvent, EventType};
use mes_kafka::KafkaClient;
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{ConsumerConfig, Effects, EventConsumer, KafkaConfig, RunningConsumer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Short enough for a test, long enough for tansu (it drops a member whose
/// join it holds longer than the member's session).
const SESSION: Duration = Duration::from_secs(6);
const PARTITIONS: u16 = 6;

struct Setup {
    brokers: String,
    event_type: EventType,
    topic: String,
    group: String,
    publisher: EventPublisher,
}

async fn setup(name: &str) -> Setup {
    // The consumer's log, shown when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let brokers = mes_testkit::kafka_brokers();
    let domain = format!("t{name}{}", ulid::Ulid::new().to_string().to_lowercase());
    let event_type = EventType::parse(&format!("{domain}.thing.happened")).unwrap();
    let topic = event_type.topic().unwrap();
    // One event per request: every offset starts a batch (tansu's memory
    // engine answers a fetch from inside a multi-record batch badly).
    let config = PublisherConfig::new([brokers.as_str()]).linger(Duration::ZERO);
    let publisher = EventPublisher::connect(config).await.unwrap();
    let settings = TopicSettings {
        partitions: PARTITIONS,
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
        group: format!("mixed-{}", ulid::Ulid::new()),
        publisher,
    }
}

impl Setup {
    fn events(&self, count: usize) -> Vec<DomainEvent> {
        (0..count)
            .map(|i| {
                DomainEvent::new_raw(self.event_type.clone(), "test-service", json!({"seq": i}))
                    .with_entity("Thing", format!("E-{}", i % 24))
            })
            .collect()
    }

    async fn publish(&self, events: &[DomainEvent]) {
        for event in events {
            self.publisher.publish(event).await.unwrap();
        }
    }

    /// A Rust instance that reports each event id it handled.
    async fn rust_member(&self, handled: mpsc::UnboundedSender<String>) -> RunningConsumer {
        let config = ConsumerConfig::new(
            self.group.clone(),
            KafkaConfig::new([self.brokers.as_str()]),
            mes_testkit::redis_url(),
        )
        .session_timeout(SESSION)
        .rebalance_timeout(SESSION)
        .heartbeat_interval(Duration::from_millis(300))
        .fetch_max_wait(Duration::from_millis(100));
        EventConsumer::new(config)
            .on_type(self.event_type.clone(), move |event: DomainEvent<Value>| {
                let handled = handled.clone();
                async move {
                    let _ = handled.send(event.id().to_string());
                    Effects::none()
                }
            })
            .start()
            .await
            .unwrap()
    }

    fn kafkajs_member(&self) -> KafkajsMember {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/kafkajs_member.js");
        let mut child = Command::new("node")
            .arg(script)
            .args([&self.brokers, &self.group, &self.topic])
            .arg(SESSION.as_millis().to_string())
            .env("NODE_PATH", mes_testkit::node_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (kafkajs) starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        KafkajsMember {
            stdin: child.stdin.take(),
            child,
            lines,
            partitions: BTreeSet::new(),
            handled: Vec::new(),
        }
    }
}

struct KafkajsMember {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Its partitions after its latest join.
    partitions: BTreeSet<i32>,
    /// Every event id it handled, in order.
    handled: Vec<String>,
}

impl KafkajsMember {
    /// Reads its output until `done` holds; `false` if it exited first.
    async fn until(&mut self, done: impl Fn(&Self) -> bool) -> bool {
        while !done(self) {
            if !self.next_line().await {
                return false;
            }
        }
        true
    }

    /// Reads one line of its output; `false` if it exited.
    async fn next_line(&mut self) -> bool {
        let Some(line) = self.lines.recv().await else {
            return false;
        };
        if let Some(id) = line.strip_prefix("HANDLED ") {
            self.handled.push(id.to_owned());
        } else if let Some(assigned) = line.strip_prefix("ASSIGNED ") {
            let assigned: Value = serde_json::from_str(assigned).unwrap();
            self.partitions = assigned["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| i32::try_from(p.as_i64().unwrap()).unwrap())
                .collect();
        }
        true
    }

    /// Leaves the group (kafkajs commits what it processed), and waits for
    /// the process to end.
    async fn stop(mut self) -> Vec<String> {
        self.stdin.take();
        self.until(|_| false).await;
        assert!(
            self.child.wait().unwrap().success(),
            "kafkajs member exited cleanly"
        );
        std::mem::take(&mut self.handled)
    }
}

impl Drop for KafkajsMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Receives ids until `count` arrived.
async fn receive(handled: &mut mpsc::UnboundedReceiver<String>, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        ids.push(handled.recv().await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_and_a_kafkajs_instance_share_a_group_and_each_event_is_handled_once() {
    let s = setup("mixed").await;
    let mut kafkajs = s.kafkajs_member();
    assert!(
        kafkajs
            .until(|m| m.partitions.len() == usize::from(PARTITIONS))
            .await
    );

    let (tx, mut rust_handled) = mpsc::unbounded_channel();
    let rust = s.rust_member(tx).await;
    // The kafkajs instance gives up half on the rebalance the Rust one causes.
    let rust_stats = rust
        .wait_for(|stats| stats.owned().len() == usize::from(PARTITIONS) / 2)
        .await;
    println!("rust owns {:?}", rust_stats.owned());
    assert!(
        kafkajs
            .until(|m| m.partitions.len() == usize::from(PARTITIONS) / 2)
            .await
    );
    let rust_partitions: BTreeSet<i32> = rust_stats.owned().iter().map(|tp| tp.partition).collect();
    assert!(
        rust_partitions.is_disjoint(&kafkajs.partitions),
        "rust {rust_partitions:?}, kafkajs {:?}",
        kafkajs.partitions
    );
    // Both joined with kafkajs's assignor, whoever leads.
    assert_eq!(rust_stats.group.generation_id, rust.stats().group.generation_id);
    assert!(rust_stats.group.subscription_gaps.is_empty());

    println!("kafkajs owns {:?}", kafkajs.partitions);
    let events = s.events(120);
    s.publish(&events).await;
    println!("published");
    // Each instance handles the events of its partitions: about half each.
    let mut rust_ids = Vec::new();
    while rust_ids.len() + kafkajs.handled.len() < events.len() {
        tokio::select! {
            Some(id) = rust_handled.recv() => rust_ids.push(id),
            running = kafkajs.next_line() => assert!(running, "the kafkajs member exited"),
        }
    }
    rust.wait_for(|stats| stats.lag() == 0).await;

    // What Kafka's tooling sees while it runs: the group, both members,
    // and the offsets the Rust member mirrored there at its heartbeats.
    let client = KafkaClient::connect(KafkaConfig::new([s.brokers.as_str()]))
        .await
        .unwrap();
    let listed = client.list_groups().await.unwrap();
    assert!(
        listed.iter().any(|g| g.group_id == s.group),
        "ListGroups shows the group"
    );
    let described = client.describe_group(&s.group).await.unwrap();
    let member_ids: BTreeSet<&str> = described.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(member_ids.len(), 2, "{member_ids:?}");
    assert!(member_ids.contains(rust.stats().group.member_id.as_str()));
    let mirrored = rust
        .wait_for(|stats| {
            stats
                .partitions
                .iter()
                .filter(|p| p.owned)
                .all(|p| p.kafka_committed_offset == p.committed_offset)
        })
        .await;
    let rust_partitions_listed: Vec<(String, i32)> = mirrored
        .owned()
        .into_iter()
        .map(|tp| (tp.topic, tp.partition))
        .collect();
    let in_kafka = client
        .group_offsets(&s.group, &rust_partitions_listed)
        .await
        .unwrap();
    for ((tp, offset), stats) in in_kafka
        .iter()
        .zip(mirrored.partitions.iter().filter(|p| p.owned))
    {
        assert_eq!(
            offset.unwrap_or(0),
            stats.high_watermark,
            "{tp:?}: Kafka shows lag 0"
        );
    }

    rust.shutdown().await;
    let kafkajs_ids = kafkajs.stop().await;
    assert!(rust_handled.try_recv().is_err(), "no event handled twice by rust");
    // Both left, committing: Kafka holds the end of every partition.
    let partitions: Vec<(String, i32)> = (0..i32::from(PARTITIONS)).map(|p| (s.topic.clone(), p)).collect();
    for ((topic, partition), offset) in client.group_offsets(&s.group, &partitions).await.unwrap() {
        let end = client
            .list_offset(&topic, partition, mes_kafka::OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(
            offset.unwrap_or(0),
            end,
            "{topic}/{partition}: committed to the end"
        );
    }
    let mut all: Vec<String> = rust_ids.iter().chain(&kafkajs_ids).cloned().collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no event handled twice");
    all.sort();
    let mut published: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
    published.sort();
    assert_eq!(all, published, "every event handled");
    assert!(
        !rust_ids.is_empty() && !kafkajs_ids.is_empty(),
        "both instances worked"
    );
    println!(
        "rust handled {}, kafkajs {}; rust partitions {rust_partitions:?}",
        rust_ids.len(),
        kafkajs_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_instance_takes_over_where_kafkajs_committed() {
    let s = setup("takeover").await;
    let before = s.events(60);
    s.publish(&before).await;
    let mut kafkajs = s.kafkajs_member();
    assert!(kafkajs.until(|m| m.handled.len() == before.len()).await);
    let kafkajs_ids = kafkajs.stop().await;
    assert_eq!(kafkajs_ids.len(), before.len(), "kafkajs handled each once");

    // The service moves to Rust: no Redis state for the group, only the
    // offsets kafkajs committed in Kafka.
    let after = s.events(30);
    s.publish(&after).await;
    let (tx, mut rust_handled) = mpsc::unbounded_channel();
    let rust = s.rust_member(tx).await;
    let rust_ids = receive(&mut rust_handled, after.len()).await;
    let stats = rust
        .wait_for(|stats| stats.lag() == 0 && stats.owned().len() == usize::from(PARTITIONS))
        .await;
    assert_eq!(
        stats.handled(),
        u64::try_from(after.len()).unwrap(),
        "nothing processed again"
    );
    let mut rust_ids = rust_ids;
    rust_ids.sort();
    let mut expected: Vec<String> = after.iter().map(|e| e.id().to_string()).collect();
    expected.sort();
    assert_eq!(rust_ids, expected, "exactly the events kafkajs had not handled");
    rust.shutdown().await;
}
