//! mes-kafka's metrics move when the real broker (`MES_TEST_KAFKA_BROKERS`)
//! is used, seen through `metrics-util`'s debugging recorder: connections,
//! requests by API and broker, produced batches, records and bytes, produce
//! errors by type, fetched records and bytes. Kafka error codes and a
//! connection the broker closes come from the scripted broker of the
//! simulated suite, which answers what a test tells it to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::time::Duration;

use common::scripted::{Action, Broker, PRODUCE, produce_answer, records};

use mes_kafka::protocol::create_topics::NewTopic;
use mes_kafka::protocol::record_batch::{Compression, Record};
use mes_kafka::{
    KafkaClient, KafkaConfig, PartitionFetcher, PartitionProducer, ProducerIdentity, RetryPolicy,
};

const BROKER: &str = "server.address";
const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";

fn record(n: usize) -> Record {
    Record::new(
        Some(format!("K-{n}").into_bytes()),
        Some(format!("{{\"n\":{n}}}").into_bytes()),
    )
}

#[tokio::test]
async fn producing_and_fetching_move_the_client_metrics() {
    let metrics = mes_testkit::metrics::recorded().await;
    let brokers = mes_testkit::kafka_brokers();
    let topic = format!("mes-kafka-metrics-{}", std::process::id());
    let client = KafkaClient::connect(KafkaConfig::new([brokers.as_str()]))
        .await
        .unwrap();
    client
        .create_topic(NewTopic {
            name: topic.clone(),
            num_partitions: 1,
            replication_factor: 1,
            configs: Vec::new(),
        })
        .await
        .unwrap();
    let snapshot = metrics.snapshot();
    assert!(snapshot.counter("mes.kafka.connections.opened", &[]) >= 1);
    assert_eq!(snapshot.counter("mes.kafka.connections.failed", &[]), 0);
    assert!(snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "Metadata")]) >= 1);
    assert_eq!(
        snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "CreateTopics")]),
        1
    );
    assert_eq!(
        snapshot.samples("mes.kafka.request.duration", &[("mes.kafka.api", "CreateTopics")]),
        1
    );
    let label_names = snapshot.label_names("mes.kafka.requests");
    assert_eq!(label_names, ["mes.kafka.api", BROKER]);

    let identity = ProducerIdentity::new(client.clone());
    let mut producer = PartitionProducer::new(client.clone(), Some(identity), &topic, 0, Compression::None);
    producer
        .produce(&[record(0), record(1), record(2)])
        .await
        .unwrap();
    producer
        .produce(&[record(3), record(4), record(5)])
        .await
        .unwrap();
    let ours = [(TOPIC, topic.as_str()), (PARTITION, "0")];
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.kafka.producer.batches", &ours), 2);
    assert_eq!(snapshot.counter("mes.kafka.producer.records", &ours), 6);
    assert!(snapshot.counter("mes.kafka.producer.bytes", &ours) > 6 * 10);
    assert_eq!(snapshot.counter("mes.kafka.producer.retries", &ours), 0);
    assert_eq!(
        snapshot.counter("mes.kafka.producer.errors", &[(TOPIC, topic.as_str())]),
        0
    );
    assert_eq!(
        snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "Produce")]),
        2
    );
    assert_eq!(
        snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "InitProducerId")]),
        1
    );
    assert_eq!(
        snapshot.samples("mes.kafka.request.duration", &[("mes.kafka.api", "Produce")]),
        2
    );

    let mut fetcher = PartitionFetcher::new(client.clone(), &topic, 0).max_wait(Duration::from_millis(100));
    let mut offset = 0;
    let mut fetched = 0;
    while fetched < 6 {
        let answer = fetcher.fetch(offset).await.unwrap();
        fetched += answer.records.len();
        offset = answer.next_offset;
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.kafka.fetch.records", &ours), 6);
    assert!(snapshot.counter("mes.kafka.fetch.bytes", &ours) > 6 * 10);
    assert!(snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "Fetch")]) >= 1);
    // The fetcher's connection is its own.
    assert!(snapshot.counter("mes.kafka.connections.opened", &[]) >= 1);

    // A topic that does not exist: the attempt fails and is counted by type.
    let missing = format!("{topic}-missing");
    let mut producer = PartitionProducer::new(client, None, &missing, 0, Compression::None);
    let failed = producer.produce(&[record(9)]).await.unwrap_err();
    let snapshot = metrics.snapshot();
    let errors = snapshot.counter("mes.kafka.producer.errors", &[(TOPIC, missing.as_str())]);
    assert!(errors >= 1, "{failed}");
    assert_eq!(
        snapshot.counter(
            "mes.kafka.producer.errors",
            &[(TOPIC, missing.as_str()), ("error.type", "unknown_topic")]
        ),
        errors,
        "{failed:?}"
    );
    assert_eq!(
        snapshot.counter("mes.kafka.producer.batches", &[(TOPIC, missing.as_str())]),
        0
    );
}

#[tokio::test]
async fn a_refused_connection_is_counted_by_broker() {
    let metrics = mes_testkit::metrics::recorded().await;
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let config = KafkaConfig::new([address.as_str()])
        .connect_timeout(Duration::from_secs(2))
        .retry(RetryPolicy::default().retries(0));
    assert!(KafkaClient::connect(config).await.is_err());
    let snapshot = metrics.snapshot();
    let failed = snapshot.counter(
        "mes.kafka.connections.failed",
        &[(BROKER, address.as_str()), ("error.type", "connect")],
    );
    assert!(failed >= 1);
    assert_eq!(
        snapshot.counter("mes.kafka.connections.failed", &[(BROKER, address.as_str())]),
        failed
    );
    assert_eq!(
        snapshot.counter("mes.kafka.connections.opened", &[(BROKER, address.as_str())]),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn produce_errors_are_counted_by_kafka_error_code_and_retried() {
    let metrics = mes_testkit::metrics::recorded().await;
    // The first Produce is refused (NOT_LEADER_OR_FOLLOWER), the second
    // connection-closing, the third written.
    let broker = Broker::start(|r| match (r.api_key, r.nth) {
        (PRODUCE, 0) => Action::Answer(produce_answer(r.version, "t", 0, 6, -1)),
        (PRODUCE, 1) => Action::Close,
        _ => Action::Default,
    })
    .await;
    let address = broker.address();
    let client = KafkaClient::new(KafkaConfig::new([address.as_str()])).unwrap();
    let mut producer = PartitionProducer::new(client, None, "t", 0, Compression::None);
    producer.produce(&records(2)).await.unwrap();
    let snapshot = metrics.snapshot();
    let topic = [(TOPIC, "t")];
    let errors = |kind| snapshot.counter("mes.kafka.producer.errors", &[topic[0], ("error.type", kind)]);
    assert_eq!(errors("NOT_LEADER_OR_FOLLOWER"), 1);
    assert_eq!(errors("io"), 1);
    assert_eq!(snapshot.counter("mes.kafka.producer.errors", &topic), 2);
    assert_eq!(snapshot.counter("mes.kafka.producer.retries", &topic), 2);
    assert_eq!(snapshot.counter("mes.kafka.producer.batches", &topic), 1);
    assert_eq!(snapshot.counter("mes.kafka.producer.records", &topic), 2);
    let broker_label = [(BROKER, address.as_str())];
    assert_eq!(snapshot.counter("mes.kafka.connections.broken", &broker_label), 1);
    assert_eq!(snapshot.counter("mes.kafka.connections.opened", &broker_label), 2);
    assert_eq!(
        snapshot.counter(
            "mes.kafka.request.errors",
            &[("mes.kafka.api", "Produce"), ("error.type", "io")]
        ),
        1
    );
    assert_eq!(
        snapshot.counter("mes.kafka.requests", &[("mes.kafka.api", "Produce")]),
        3
    );
}
