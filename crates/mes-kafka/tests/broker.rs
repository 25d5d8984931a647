//! mes-kafka against a real broker (tansu, `MES_TEST_KAFKA_BROKERS`, and a
//! tansu of this suite's own on `sqlite://` storage, `MES_TEST_TANSU_BIN`):
//! what the broker does with an idempotent producer's resent batch, and
//! records that rskafka could not carry (duplicate and non-UTF-8 header
//! names) through produce and fetch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mes_kafka::protocol::create_topics::NewTopic;
use mes_kafka::protocol::produce::ProduceRequest;
use mes_kafka::protocol::record_batch::{Compression, ProducerStamp, Record, write_record_batch};
use mes_kafka::{ErrorCode, KafkaClient, KafkaConfig, PartitionFetcher, PartitionProducer, ProducerIdentity};
use mes_testkit::tansu::TansuBroker;

fn topic_name(test: &str) -> String {
    format!("mes-kafka-{test}-{}", ulid_like())
}

/// A name part unique to this run and test.
fn ulid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

async fn client_with_topic(brokers: &str, topic: &str) -> KafkaClient {
    client_with_partitions(brokers, topic, 1).await
}

async fn client_with_partitions(brokers: &str, topic: &str, partitions: i32) -> KafkaClient {
    let client = KafkaClient::connect(KafkaConfig::new([brokers])).await.unwrap();
    let created = client
        .create_topic(NewTopic {
            name: topic.to_owned(),
            num_partitions: partitions,
            replication_factor: 1,
            configs: Vec::new(),
        })
        .await
        .unwrap();
    assert!(created, "{topic} existed before");
    client
}

fn record(key: &str, time: i64) -> Record {
    Record {
        offset: 0,
        timestamp_ms: time,
        key: Some(key.as_bytes().to_vec()),
        value: Some(format!("{{\"key\":\"{key}\"}}").into_bytes()),
        headers: vec![(b"ce_type".to_vec(), b"t".to_vec())],
    }
}

/// Every record of partition 0 of `topic`, through mes-kafka's fetch path.
async fn read_all(client: &KafkaClient, topic: &str) -> Vec<Record> {
    let mut fetcher = PartitionFetcher::new(client.clone(), topic, 0).max_wait(Duration::from_millis(50));
    let mut read = Vec::new();
    let mut offset = 0;
    // Up to the high watermark the fetches report: tansu's memory engine
    // answers ListOffsets(latest) wrongly after a multi-record batch.
    loop {
        let fetched = fetcher.fetch(offset).await.unwrap();
        read.extend(fetched.records.into_iter().map(Result::unwrap));
        if fetched.next_offset >= fetched.high_watermark {
            return read;
        }
        assert!(
            fetched.next_offset > offset,
            "no progress at {offset} of {}",
            fetched.high_watermark
        );
        offset = fetched.next_offset;
    }
}

/// Sends one stamped batch of three records twice, as a producer that lost
/// the first answer does, and says what the broker answered each time and
/// how many records the partition then holds.
async fn send_twice(brokers: &str, test: &str) -> (ErrorCode, ErrorCode, usize) {
    let topic = topic_name(test);
    let client = client_with_topic(brokers, &topic).await;
    let id = client.init_producer_id().await.unwrap();
    let stamp = ProducerStamp {
        producer_id: id.producer_id,
        producer_epoch: id.producer_epoch,
        base_sequence: 0,
    };
    let records = [record("a", 1_000), record("b", 1_001), record("c", 1_002)];
    let mut batch = Vec::new();
    write_record_batch(&mut batch, &records, Compression::None, stamp).unwrap();
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 5_000,
        topic: &topic,
        partition: 0,
        records: &batch,
    };
    let leader = client.leader(&topic, 0).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..2 {
        let answer = leader.call(&request).await.unwrap();
        codes.push(ErrorCode(answer.partition(&topic, 0).unwrap().error_code));
    }
    (codes[0], codes[1], read_all(&client, &topic).await.len())
}

/// tansu 0.6 checks producer sequences on its memory engine: the resent
/// batch is refused as a duplicate (so the idempotent producer counts it
/// as written) and the partition holds each record once.
#[tokio::test]
async fn a_resent_idempotent_batch_is_written_once_on_the_memory_engine() {
    let (first, second, on_topic) = send_twice(&mes_testkit::kafka_brokers(), "resend-memory").await;
    assert_eq!(first, ErrorCode::NONE);
    assert!(
        matches!(second, ErrorCode::NONE | ErrorCode::DUPLICATE_SEQUENCE_NUMBER),
        "second send answered {second}"
    );
    assert_eq!(
        on_topic, 3,
        "records on the topic after a resend (answers {first}, {second})"
    );
}

/// The same on sqlite storage, which keeps records across a broker kill
/// (the engine of the publisher's broker-kill suite).
#[tokio::test]
async fn a_resent_idempotent_batch_is_written_once_on_the_sqlite_engine() {
    let dir = std::env::temp_dir().join(format!("mes-kafka-resend-{}", ulid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = TansuBroker::start(&mes_testkit::tansu_binary(), "sqlite://tansu.db", &dir).unwrap();
    let (first, second, on_topic) = send_twice(&broker.address(), "resend-sqlite").await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(first, ErrorCode::NONE);
    assert!(
        matches!(second, ErrorCode::NONE | ErrorCode::DUPLICATE_SEQUENCE_NUMBER),
        "second send answered {second}"
    );
    assert_eq!(
        on_topic, 3,
        "records on the topic after a resend (answers {first}, {second})"
    );
}

/// Duplicate header names in order and a header name that is not UTF-8
/// survive the broker both ways, and a batch of many records read from the
/// middle starts where asked.
#[tokio::test]
async fn headers_keep_order_duplicates_and_raw_names_through_the_broker() {
    let topic = topic_name("headers");
    let brokers = mes_testkit::kafka_brokers();
    let client = client_with_topic(&brokers, &topic).await;
    let mut odd = record("k", 5_000);
    odd.headers = vec![
        (b"ce_type".to_vec(), b"first".to_vec()),
        (vec![0xff, 0xfe, b'x'], b"raw name".to_vec()),
        (b"ce_type".to_vec(), b"second".to_vec()),
        (b"empty".to_vec(), Vec::new()),
    ];
    let identity = ProducerIdentity::new(client.clone());
    let mut producer = PartitionProducer::new(client.clone(), Some(identity), &topic, 0, Compression::None);
    let first = producer.produce(&[odd.clone()]).await.unwrap();
    let batch: Vec<Record> = (0..10).map(|i| record(&format!("r{i}"), 6_000 + i)).collect();
    let base = producer.produce(&batch).await.unwrap();
    assert_eq!(base, first + 1);

    let read = read_all(&client, &topic).await;
    assert_eq!(read.len(), 11);
    assert_eq!(read[0].headers, odd.headers);
    assert_eq!(read[0].key, odd.key);
    assert_eq!(read[0].offset, first);
    let keys: Vec<_> = read[1..].iter().map(|r| r.key.clone().unwrap()).collect();
    let expected: Vec<_> = batch.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, expected);
}

/// Heartbeats `member` every 100 ms (the protocol's own pace, shortened)
/// until the coordinator says a rebalance is under way.
async fn until_rebalance(member: &mut mes_kafka::GroupMember) {
    let mut beat = tokio::time::interval(Duration::from_millis(100));
    loop {
        beat.tick().await;
        match member.heartbeat().await {
            Ok(()) => {}
            Err(e) if e.code() == Some(ErrorCode::REBALANCE_IN_PROGRESS) => return,
            Err(e) => panic!("heartbeat: {e}"),
        }
    }
}

/// Membership of `group` on `topic`, with sessions short enough for a test.
fn group_options(group: &str, topic: &str) -> mes_kafka::GroupOptions {
    mes_kafka::GroupOptions::new(group, vec![topic.to_owned()])
        .session_timeout(Duration::from_secs(10))
        .rebalance_timeout(Duration::from_secs(10))
}

fn partitions_of(generation: &mes_kafka::Generation) -> Vec<i32> {
    generation.partitions.iter().map(|(_, p)| *p).collect()
}

/// Two members of one group on a 6-partition topic, by Kafka's group
/// protocol: the first takes all six, the second's join makes the first
/// rejoin and each gets its round-robin share; commits of one generation
/// are read by the other member and by an admin; the group shows in
/// ListGroups and DescribeGroups; when one leaves, the other takes all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_a_group_commit_and_take_over() {
    use mes_kafka::GroupMember;
    let brokers = mes_testkit::kafka_brokers();
    let topic = topic_name("group");
    let client = client_with_partitions(&brokers, &topic, 6).await;
    let group = format!("{topic}-group");
    let options = group_options(&group, &topic);
    let mut first = GroupMember::new(client.clone(), options.clone());
    let alone = first.join().await.unwrap();
    assert!(alone.is_leader());
    assert_eq!(partitions_of(&alone), (0..6).collect::<Vec<_>>());
    assert!(alone.unsubscribed.is_empty() && alone.subscription_gaps.is_empty());

    let mut second = GroupMember::new(client.clone(), options);
    let second_join = tokio::spawn(async move {
        let generation = second.join().await.unwrap();
        (second, generation)
    });
    until_rebalance(&mut first).await;
    let mine = first.join().await.unwrap();
    let (mut second, theirs) = second_join.await.unwrap();
    assert_eq!(mine.generation_id, theirs.generation_id);
    assert!(mine.generation_id > alone.generation_id);
    let (low, high) = if mine.member_id < theirs.member_id {
        (&mine, &theirs)
    } else {
        (&theirs, &mine)
    };
    assert_eq!(
        partitions_of(low),
        vec![0, 2, 4],
        "sorted member ids, dealt in turn"
    );
    assert_eq!(partitions_of(high), vec![1, 3, 5]);

    let offsets: Vec<(String, i32, i64)> = mine
        .partitions
        .iter()
        .map(|(t, p)| (t.clone(), *p, 10 + i64::from(*p)))
        .collect();
    first.commit(&offsets).await.unwrap();
    let asked: Vec<(String, i32)> = (0..6).map(|p| (topic.clone(), p)).collect();
    let seen = second.committed(&asked).await.unwrap();
    for ((t, p), offset) in &seen {
        let expected = mine
            .partitions
            .contains(&(t.clone(), *p))
            .then(|| 10 + i64::from(*p));
        assert_eq!(*offset, expected, "{t}/{p}");
    }
    assert_eq!(client.group_offsets(&group, &asked).await.unwrap(), seen);
    let listed = client.list_groups().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|g| g.group_id == group && g.protocol_type == "consumer"),
        "{listed:?}"
    );
    let described = client.describe_group(&group).await.unwrap();
    assert_eq!(described.members.len(), 2, "{described:?}");
    // tansu 0.6 answers DescribeGroups with the member ids and the state
    // only (no assignor, client ids, subscriptions or assignments).
    let mut described_ids: Vec<&str> = described.members.iter().map(|m| m.member_id.as_str()).collect();
    described_ids.sort_unstable();
    let mut ours = vec![mine.member_id.as_str(), theirs.member_id.as_str()];
    ours.sort_unstable();
    assert_eq!(described_ids, ours);
    assert_eq!(described.protocol_type, "consumer");

    second.leave().await.unwrap();
    until_rebalance(&mut first).await;
    let all_again = first.join().await.unwrap();
    assert_eq!(partitions_of(&all_again), (0..6).collect::<Vec<_>>());
    first.leave().await.unwrap();
}

/// A kafkajs 2 group member in a child process (`tests/node/group_member.js`).
struct KafkajsMember {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl KafkajsMember {
    fn start(brokers: &str, group: &str, topic: &str) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/group_member.js");
        let mut child = std::process::Command::new("node")
            .arg(script)
            .args([brokers, group, topic])
            .env("NODE_PATH", mes_testkit::node_path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node (kafkajs) starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next assignment kafkajs reports: its member id, the leader's, and
    /// its partitions.
    async fn next_assignment(&self) -> (String, String, Vec<i32>) {
        let line = tokio::task::block_in_place(|| self.lines.recv_timeout(Duration::from_secs(120)))
            .expect("kafkajs reports its assignment");
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("ASSIGNED ").unwrap()).unwrap();
        assert_eq!(json["protocol"], mes_kafka::ROUND_ROBIN);
        let partitions = json["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| i32::try_from(p.as_i64().unwrap()).unwrap())
            .collect();
        (
            json["memberId"].as_str().unwrap().to_owned(),
            json["leaderId"].as_str().unwrap().to_owned(),
            partitions,
        )
    }
}

impl Drop for KafkajsMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Rust member and a kafkajs member in one group: each gets the share
/// kafkajs's RoundRobinAssigner gives, whichever leads; when the Rust
/// member leaves, kafkajs takes every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_and_a_kafkajs_member_share_one_group() {
    use mes_kafka::GroupMember;
    let brokers = mes_testkit::kafka_brokers();
    let topic = topic_name("mixed");
    let client = client_with_partitions(&brokers, &topic, 6).await;
    let group = format!("{topic}-group");
    let options = group_options(&group, &topic);
    let mut rust = GroupMember::new(client.clone(), options);
    assert_eq!(
        partitions_of(&rust.join().await.unwrap()),
        (0..6).collect::<Vec<_>>()
    );

    let kafkajs = KafkajsMember::start(&brokers, &group, &topic);
    until_rebalance(&mut rust).await;
    let ours = rust.join().await.unwrap();
    let (their_id, leader_id, theirs) = kafkajs.next_assignment().await;
    assert_eq!(leader_id, ours.leader_id, "both see one leader");
    let mut all: Vec<i32> = partitions_of(&ours)
        .into_iter()
        .chain(theirs.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..6).collect::<Vec<_>>(),
        "every partition once: ours {ours:?}, kafkajs {theirs:?}"
    );
    let (low, high) = if ours.member_id < their_id {
        (partitions_of(&ours), theirs)
    } else {
        (theirs, partitions_of(&ours))
    };
    assert_eq!(
        (low, high),
        (vec![0, 2, 4], vec![1, 3, 5]),
        "kafkajs's round robin over sorted member ids"
    );

    rust.leave().await.unwrap();
    let (_, leader_id, everything) = kafkajs.next_assignment().await;
    assert_eq!(leader_id, their_id);
    assert_eq!(everything, (0..6).collect::<Vec<_>>());
}
