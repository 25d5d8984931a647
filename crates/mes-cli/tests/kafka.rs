//! `mes topics`, `tail`, `groups`, `lag` and `dlq` against the real broker
//! and Redis of the run (`MES_TEST_KAFKA_BROKERS`, `MES_TEST_REDIS_URL`):
//! events published with mes-publisher in every format (and a record that
//! is no event), a dead letter made by a mes-sync consumer whose handler
//! fails, then the command's JSON and exit code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Run, closed_port, finish, mes_kafka, run, unique};
use mes_events_types::{ContentMode, DomainEvent, EventType, KafkaRecord};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{ConsumerConfig, Effects, EventConsumer, HandlerRetry};
use serde_json::{Value, json};

/// The longest a test waits for a condition before failing.
const BOUND: Duration = Duration::from_secs(60);

struct Topic {
    brokers: String,
    event_type: EventType,
    name: String,
    publisher: EventPublisher,
}

impl Topic {
    async fn new(test: &str) -> Self {
        let brokers = mes_testkit::kafka_brokers();
        let event_type =
            EventType::parse(&format!("{}.thing.happened", unique(&format!("cli{test}")))).unwrap();
        let name = event_type.topic().unwrap();
        let publisher = EventPublisher::connect(PublisherConfig::new([brokers.as_str()]))
            .await
            .unwrap();
        publisher
            .ensure_topics(&[TopicSpec::new(
                &name,
                TopicSettings {
                    partitions: 1,
                    replication: 1,
                },
            )])
            .await
            .unwrap();
        Self {
            brokers,
            event_type,
            name,
            publisher,
        }
    }

    fn event(&self, entity: &str, n: i64) -> DomainEvent {
        DomainEvent::new_raw(self.event_type.clone(), "test-service", json!({"n": n}))
            .with_entity("Thing", entity)
    }

    /// Publishes, one record per request (tansu's memory engine skips
    /// records when a fetch starts inside a batch): a structured event, a
    /// binary one, a legacy one and a record that is no event.
    async fn publish_every_format(&self) -> Vec<DomainEvent> {
        let structured = self.event("E-1", 1);
        self.publisher.publish(&structured).await.unwrap();
        let binary = self.event("E-2", 2);
        let binary_publisher = EventPublisher::connect(
            PublisherConfig::new([self.brokers.as_str()]).content_mode(ContentMode::Binary),
        )
        .await
        .unwrap();
        binary_publisher.publish(&binary).await.unwrap();
        binary_publisher.disconnect().await;
        let legacy_id = unique("evt_");
        let legacy = KafkaRecord {
            key: Some(b"E-3".to_vec()),
            headers: vec![
                ("ce-specversion".to_owned(), b"1.0".to_vec()),
                ("ce-type".to_owned(), self.event_type.as_str().as_bytes().to_vec()),
                ("ce-id".to_owned(), legacy_id.as_bytes().to_vec()),
            ],
            value: Some(
                json!({
                    "specversion": "1.0",
                    "type": self.event_type.as_str(),
                    "source": "legacy-service",
                    "id": legacy_id,
                    "time": "2025-10-18T12:14:56.789Z",
                    "datacontenttype": "application/json",
                    "data": {"n": 3},
                })
                .to_string()
                .into_bytes(),
            ),
        };
        self.publisher.publish_record(&self.name, legacy).await.unwrap();
        self.publisher
            .publish_record(&self.name, not_an_event())
            .await
            .unwrap();
        vec![structured, binary]
    }

    fn mes(&self, args: &[&str]) -> Run {
        run(mes_kafka().args(args))
    }
}

fn not_an_event() -> KafkaRecord {
    KafkaRecord {
        key: Some(b"X".to_vec()),
        headers: vec![],
        value: Some(b"not json at all".to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_tail_show_every_format_and_never_skip_a_record() {
    let topic = Topic::new("tail").await;
    let published = topic.publish_every_format().await;

    let topics = topic.mes(&["topics", &topic.name, "--json"]).json();
    assert_eq!(
        topics.as_array().unwrap().len(),
        1,
        "only the topics starting so: {topics}"
    );
    let ours = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic.name.as_str())
        .unwrap_or_else(|| panic!("{} not in {topics}", topic.name));
    assert_eq!(
        ours["partitions"],
        json!([{"partition": 0, "start": 0, "end": 4}])
    );
    assert_eq!(ours["records"], 4);

    let all = topic
        .mes(&["tail", &topic.name, "--from-beginning", "--json"])
        .json_lines();
    assert_eq!(all.len(), 4, "{all:?}");
    let formats: Vec<&Value> = all.iter().map(|line| &line["format"]).collect();
    assert_eq!(
        formats,
        [
            &json!("structured"),
            &json!("binary"),
            &json!("legacy"),
            &Value::Null
        ]
    );
    assert_eq!(all[0]["event"]["id"], published[0].id().as_str());
    assert_eq!(all[0]["event"]["entityid"], "E-1");
    assert_eq!(all[1]["event"]["id"], published[1].id().as_str());
    assert_eq!(all[1]["event"]["data"], json!({"n": 2}));
    assert_eq!(all[2]["event"]["entityid"], "E-3", "the legacy record's key");
    assert_eq!(all[2]["event"]["source"], "legacy-service");
    assert_eq!(all[3]["offset"], 3);
    assert_eq!(all[3]["value"], "not json at all");
    assert!(all[3]["error"].as_str().unwrap().contains("JSON"), "{}", all[3]);

    // Filters narrow the events; the record that is no event still shows.
    let by_entity = topic
        .mes(&[
            "tail",
            &topic.name,
            "--from-beginning",
            "--entity",
            "E-2",
            "--json",
        ])
        .json_lines();
    let offsets: Vec<&Value> = by_entity.iter().map(|line| &line["offset"]).collect();
    assert_eq!(offsets, [&json!(1), &json!(3)]);
    let by_type = topic
        .mes(&[
            "tail",
            &topic.name,
            "--from-beginning",
            "--type",
            "other.thing.happened",
            "--json",
        ])
        .json_lines();
    assert_eq!(by_type.len(), 1);
    assert_eq!(by_type[0]["offset"], 3);
    let by_type = topic
        .mes(&[
            "tail",
            &topic.name,
            "--from-beginning",
            "--type",
            topic.event_type.as_str(),
            "--json",
        ])
        .json_lines();
    assert_eq!(by_type.len(), 4);
    let two = topic
        .mes(&["tail", &topic.name, "--from-beginning", "--max", "2", "--json"])
        .json_lines();
    assert_eq!(two.len(), 2);

    let text = topic.mes(&["tail", &topic.name, "--from-beginning"]);
    assert_eq!(text.code, 0, "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", text.stdout);
    assert!(
        lines[0].starts_with("0/0 ") && lines[0].contains(" structured ") && lines[0].contains("entity=E-1")
    );
    assert!(lines[2].contains(" legacy "), "{}", lines[2]);
    assert!(
        lines[3].contains("UNDECODABLE") && lines[3].contains("value=not json at all"),
        "{}",
        lines[3]
    );
}

/// Lines of a running `mes tail`, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    receiver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_new_records() {
    let topic = Topic::new("follow").await;
    topic.publish_every_format().await;

    // From the beginning, then on: the four there, then a new one.
    let mut child = mes_kafka()
        .args([
            "tail",
            &topic.name,
            "--from-beginning",
            "--follow",
            "--max",
            "5",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    for offset in 0..4 {
        let line: Value = serde_json::from_str(&lines.recv_timeout(BOUND).unwrap()).unwrap();
        assert_eq!(line["offset"], offset);
    }
    let later = topic.event("E-5", 5);
    topic.publisher.publish(&later).await.unwrap();
    let line: Value = serde_json::from_str(&lines.recv_timeout(BOUND).unwrap()).unwrap();
    assert_eq!(line["event"]["id"], later.id().as_str());
    let ended = finish(child);
    assert_eq!(ended.code, 0, "--max 5 ends it: {ended:?}");

    // From the end: only what comes after it started. Whether it has read
    // the end offsets yet cannot be seen, so events are published until
    // one comes out (bounded).
    let mut child = mes_kafka()
        .args(["tail", &topic.name, "--max", "1", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let started = Instant::now();
    let first = loop {
        assert!(started.elapsed() < BOUND, "tail from the end printed nothing");
        topic.publisher.publish(&topic.event("E-6", 6)).await.unwrap();
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
    };
    assert!(
        first["offset"].as_i64().unwrap() >= 5,
        "nothing from before the end: {first}"
    );
    assert_eq!(first["event"]["entityid"], "E-6");
    assert_eq!(finish(child).code, 0);
}

/// A mes-sync consumer whose handler fails for entity `FAIL` (so its event
/// is dead-lettered after three attempts, and so is the record that is no
/// event); `mes lag`, `groups` and `dlq` on its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_lag_and_dead_letters_of_a_consumer() {
    let topic = Topic::new("dlq").await;
    let group = unique("cligroup");
    let failing = topic.event("FAIL", 1);
    topic.publisher.publish(&topic.event("E-1", 0)).await.unwrap();
    topic.publisher.publish(&failing).await.unwrap();
    topic
        .publisher
        .publish_record(&topic.name, not_an_event())
        .await
        .unwrap();
    topic.publisher.publish(&topic.event("E-2", 3)).await.unwrap();

    let config = ConsumerConfig::new(
        group.clone(),
        mes_sync::KafkaConfig::new([topic.brokers.as_str()]),
        mes_testkit::redis_url(),
    )
    .session_timeout(Duration::from_secs(10))
    .heartbeat_interval(Duration::from_millis(200))
    .fetch_max_wait(Duration::from_millis(100))
    .handler_retry(
        HandlerRetry::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(10)),
    );
    let consumer = EventConsumer::new(config)
        .try_on_type(topic.event_type.clone(), |event: DomainEvent<Value>| async move {
            if event.entity_id() == Some("FAIL") {
                return Err("the handler always fails for this one".into());
            }
            Ok(Effects::none())
        })
        .start()
        .await
        .unwrap();
    consumer
        .wait_for(|s| s.dead_lettered() == 2 && s.lag() == 0)
        .await;

    // Kafka gets the group's offsets at the next heartbeat: wait for them.
    let started = Instant::now();
    let lag = loop {
        let lag = topic.mes(&["lag", &group, "--json"]).json();
        if lag["partitions"][0]["committed"] == 4 {
            break lag;
        }
        assert!(
            started.elapsed() < BOUND,
            "the offsets never reached Kafka: {lag}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lag["group"], group.as_str());
    assert_eq!(lag["state"], "Stable");
    // tansu 0.6 answers DescribeGroups with the member ids and the state
    // only (no assignor, client ids, subscriptions or assignments): those
    // are decoded as Kafka sends them (`groups` unit tests), and here the
    // member and the partitions are what can be checked.
    let members = lag["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{lag}");
    assert!(
        members[0]["member_id"]
            .as_str()
            .unwrap()
            .starts_with("mes-service-"),
        "a mes-sync member (client id mes-service): {lag}"
    );
    let partitions = lag["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 1, "{lag}");
    assert_eq!(
        (
            &partitions[0]["topic"],
            &partitions[0]["partition"],
            &partitions[0]["end"],
            &partitions[0]["lag"]
        ),
        (&json!(topic.name), &json!(0), &json!(4), &json!(0))
    );
    assert_eq!(lag["total_lag"], 0);

    let groups = topic.mes(&["groups", "--json"]).json();
    let ours = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == group.as_str())
        .unwrap_or_else(|| panic!("{group} not in {groups}"));
    assert_eq!(ours["protocol_type"], "consumer");
    assert_eq!(ours["state"], "Stable");
    assert_eq!(ours["members"][0]["member_id"], members[0]["member_id"]);

    let listed = topic.mes(&["dlq", "list", &topic.name, "--json"]).json();
    assert_eq!(listed["dead_letter_topic"], format!("{}.dlq", topic.name));
    let letters = listed["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{listed}");
    assert_eq!(letters[0]["source_offset"], 1);
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["group"], group.as_str());
    assert_eq!(letters[0]["event_id"], failing.id().as_str());
    assert_eq!(letters[0]["entity_id"], "FAIL");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("always fails"),
        "{listed}"
    );
    assert_eq!(letters[1]["source_offset"], 2);
    assert_eq!(letters[1]["attempts"], 0);
    assert!(
        letters[1]["reason"].as_str().unwrap().starts_with("undecodable"),
        "{listed}"
    );
    assert_eq!(letters[1]["event_id"], Value::Null);
    let other = topic
        .mes(&["dlq", "list", &topic.name, "--group", "another-group", "--json"])
        .json();
    assert_eq!(other["letters"], json!([]));
    let text = topic.mes(&["dlq", "list", &topic.name]);
    assert!(
        text.stdout.contains("always fails") && text.stdout.contains("(not an event)"),
        "{}",
        text.stdout
    );

    let args = [
        "dlq",
        "replay",
        &topic.name,
        "--group",
        &group,
        "--reason",
        "always fails",
    ];
    let planned = run(mes_kafka().args(args).args(["--dry-run", "--json"])).json();
    assert_eq!(planned["dry_run"], true);
    assert_eq!(planned["examined"], 2);
    let replayed = planned["replayed"].as_array().unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["event_id"], failing.id().as_str());
    assert_eq!(replayed[0]["source_offset"], 1);
    let ends = |run: Value| {
        run.as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == topic.name.as_str())
            .unwrap()["partitions"][0]["end"]
            .clone()
    };
    assert_eq!(
        ends(topic.mes(&["topics", &topic.name, "--json"]).json()),
        4,
        "a dry run publishes nothing"
    );

    let done = run(mes_kafka().args(args).arg("--json")).json();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["replayed"], planned["replayed"]);
    assert_eq!(
        ends(topic.mes(&["topics", &topic.name, "--json"]).json()),
        5,
        "the letter is back on its topic"
    );
    // The group handles it again (and, still failing, dead-letters it again).
    consumer
        .wait_for(|s| s.dead_lettered() == 3 && s.lag() == 0)
        .await;
    consumer.shutdown().await;

    // A group without members is still a group: its offsets are there.
    let empty = topic.mes(&["lag", &group, "--json"]).json();
    assert_eq!(empty["members"], json!([]));
    assert_eq!(empty["partitions"][0]["partition"], 0);
    forget_group(&group).await;
}

/// Removes the group's state in Redis (its keys share the hash tag).
async fn forget_group(group: &str) {
    use fred::prelude::*;
    let client = Builder::from_config(Config::from_url(&mes_testkit::redis_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let _: i64 = client
        .eval(
            "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', k) end return n",
            vec![format!("mes:sync:{{{group}}}:any")],
            vec![format!("mes:sync:{{{group}}}:*")],
        )
        .await
        .unwrap();
    client.quit().await.unwrap();
}

#[test]
fn unknown_topics_and_groups_are_not_found() {
    let missing = unique("mes.nosuch");
    run(mes_kafka().args(["tail", &missing])).assert_fails(3, "no topic");
    run(mes_kafka().args(["dlq", "list", &missing])).assert_fails(3, "no topic");
    run(mes_kafka().args(["dlq", "replay", &missing, "--group", "g", "--dry-run"]))
        .assert_fails(3, "no topic");
    run(mes_kafka().args(["lag", &unique("nosuchgroup")])).assert_fails(3, "no consumer group");
}

#[test]
fn a_refused_or_malformed_broker_address_fails_with_a_clear_message() {
    let closed = format!("127.0.0.1:{}", closed_port());
    run(mes_kafka().args(["topics", "--connect-timeout", "2s", "--brokers", &closed]))
        .assert_fails(1, "no Kafka broker");
    run(mes_kafka()
        .args(["groups", "--connect-timeout", "2s"])
        .env("KAFKA_BROKERS", &closed))
    .assert_fails(1, "no Kafka broker");
    run(mes_kafka().args(["topics", "--brokers", "nonsense"])).assert_fails(2, "is not host:port");
}

/// A kafkajs 2 member (mes-kafka's `tests/node/group_member.js`): its group
/// is listed and its lag read like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafkajs_group_is_listed_with_its_member_and_lag() {
    let topic = Topic::new("kafkajs").await;
    topic.publisher.publish(&topic.event("E-1", 1)).await.unwrap();
    topic.publisher.publish(&topic.event("E-2", 2)).await.unwrap();
    let group = unique("clikafkajs");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mes-kafka/tests/node/group_member.js"
    );
    let mut node = std::process::Command::new("node")
        .arg(script)
        .args([topic.brokers.as_str(), group.as_str(), topic.name.as_str()])
        .env("NODE_PATH", mes_testkit::node_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (kafkajs) starts");
    let lines = lines_of(&mut node);
    let assigned = lines.recv_timeout(BOUND).expect("kafkajs joins");
    assert!(assigned.starts_with("ASSIGNED "), "{assigned}");

    // kafkajs commits after each batch it handled: wait for both records.
    let started = Instant::now();
    let lag = loop {
        let lag = topic.mes(&["lag", &group, "--json"]).json();
        if lag["partitions"][0]["committed"] == 2 {
            break lag;
        }
        assert!(started.elapsed() < BOUND, "kafkajs never committed: {lag}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The member kafkajs says it is (tansu describes members by id only).
    let member_id =
        serde_json::from_str::<Value>(assigned.strip_prefix("ASSIGNED ").unwrap()).unwrap()["memberId"]
            .clone();
    assert_eq!(lag["members"].as_array().unwrap().len(), 1, "{lag}");
    assert_eq!(lag["members"][0]["member_id"], member_id);
    assert_eq!(lag["partitions"][0]["lag"], 0);
    assert_eq!(lag["partitions"][0]["end"], 2);
    let groups = topic.mes(&["groups", "--json"]).json();
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == group.as_str() && g["members"][0]["member_id"] == member_id),
        "{groups}"
    );
    drop(node.stdin.take()); // kafkajs leaves the group and exits
    assert_eq!(finish(node).code, 0);
}
