//! The client against a scripted broker (`common::scripted`): the
//! connection's multiplexing and failure handling, version negotiation, the
//! idempotent producer's retries and renewals, and the fetcher's reading of
//! odd answers, without a real Kafka. Timeouts and retry budgets run on a
//! paused clock: no test waits real time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use common::scripted::{
    Action, Broker, FETCH, INIT_PRODUCER_ID, METADATA, PRODUCE, batch, fetch_answer, our_versions,
    produce_answer, records,
};
use mes_kafka::protocol::metadata::MetadataRequest;
use mes_kafka::protocol::produce::ProduceRequest;
use mes_kafka::protocol::record_batch::{Compression, Record};
use mes_kafka::{
    BrokerConnection, Delivery, Error, ErrorCode, Fetched, KafkaClient, KafkaConfig, OffsetSpec,
    PartitionFetcher, PartitionProducer, ProducerIdentity, RetryPolicy,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The broker as bootstrap, with a 1 ms first back-off (real-clock tests
/// retry without waiting long; paused-clock tests set their own policy).
fn config(broker: &Broker) -> KafkaConfig {
    KafkaConfig::new([broker.address()])
        .retry(RetryPolicy::default().initial_backoff(Duration::from_millis(1)))
}

fn metadata_of(topic: &str) -> MetadataRequest {
    MetadataRequest {
        topics: Some(vec![topic.to_owned()]),
        allow_auto_topic_creation: false,
    }
}

fn io_cause(result: mes_kafka::Result<impl std::fmt::Debug>) -> Arc<std::io::Error> {
    match result {
        Err(Error::Io { source, .. }) => source,
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

fn producer(client: &KafkaClient, idempotent: bool, topic: &str) -> PartitionProducer {
    let identity = idempotent.then(|| ProducerIdentity::new(client.clone()));
    PartitionProducer::new(client.clone(), identity, topic, 0, Compression::None)
}

/// The (producer id, epoch, base sequence, record count) of each Produce.
fn stamps(broker: &Broker) -> Vec<(i64, i16, i32, i32)> {
    broker
        .requests_of(PRODUCE)
        .iter()
        .map(|r| r.produce().stamp())
        .collect()
}

// ---------------------------------------------------------------- connection

#[tokio::test]
async fn requests_in_flight_each_get_their_own_answer_when_answered_in_reverse() {
    const N: usize = 8;
    // The broker holds the first N-1 Metadata answers and writes them all,
    // last first, after the N-th.
    let broker = Broker::start(|r| match r.api_key {
        METADATA if r.nth + 1 < N => Action::Hold,
        METADATA => Action::Release,
        _ => Action::Default,
    })
    .await;
    let connection = Arc::new(
        BrokerConnection::open(&broker.address(), &config(&broker))
            .await
            .unwrap(),
    );
    let mut calls = JoinSet::new();
    for i in 0..N {
        let connection = Arc::clone(&connection);
        calls.spawn(async move {
            let topic = format!("topic-{i}");
            let answer = connection.call(&metadata_of(&topic)).await.unwrap();
            (
                topic,
                answer.topics.into_iter().map(|t| t.name).collect::<Vec<_>>(),
            )
        });
    }
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        let (asked, got) = call.unwrap();
        assert_eq!(got, [asked]);
        answered += 1;
    }
    assert_eq!(answered, N);
    let asked = broker.requests_of(METADATA);
    assert_eq!(asked.len(), N);
    assert!(
        asked.iter().all(|r| r.conn == 0),
        "one connection carried them all"
    );
    assert!(!connection.is_broken());
}

#[tokio::test]
async fn every_request_frame_arrives_whole_with_its_size() {
    let broker = Broker::start(|_| Action::Default).await;
    let connection = Arc::new(
        BrokerConnection::open(&broker.address(), &config(&broker))
            .await
            .unwrap(),
    );
    let mut calls = JoinSet::new();
    for i in 0..8_usize {
        let connection = Arc::clone(&connection);
        calls.spawn(async move {
            // Metadata of i topics of 100 bytes' names, and a Produce of a
            // few KB: frames of many sizes, written concurrently.
            let topics = (0..i).map(|j| format!("{j:0>100}")).collect();
            let request = MetadataRequest {
                topics: Some(topics),
                allow_auto_topic_creation: false,
            };
            connection.call(&request).await.unwrap();
            let value = vec![b'x'; 500 * (i + 1)];
            let set = batch(0, &[Record::new(None, Some(value))]);
            let produce = ProduceRequest {
                acks: -1,
                timeout_ms: 1000,
                topic: "t",
                partition: 0,
                records: &set,
            };
            connection.call(&produce).await.unwrap();
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap();
    }
    let requests = broker.requests();
    assert_eq!(requests.len(), 1 + 16);
    for r in &requests {
        assert_eq!(r.size, r.framed, "{r:?}");
        assert_eq!(
            r.pieces, 1,
            "request {} came in {} reads",
            r.correlation, r.pieces
        );
        match r.api_key {
            // Each body parses to its end.
            METADATA => assert!(r.metadata_topics().is_some()),
            PRODUCE => assert_eq!(r.produce().stamp().3, 1),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_breaks_the_connection_for_every_waiter_with_one_cause() {
    let broker = Broker::start(|r| match r.api_key {
        METADATA => Action::Silence,
        _ => Action::Default,
    })
    .await;
    let config = KafkaConfig::new(["scripted:9092"]).request_timeout(Duration::from_secs(30));
    let connection = Arc::new(
        BrokerConnection::over("scripted:9092", &config, broker.duplex())
            .await
            .unwrap(),
    );
    let call = |topic: &str, bound: u64| {
        let connection = Arc::clone(&connection);
        let request = metadata_of(topic);
        tokio::spawn(async move { connection.call_within(&request, Duration::from_secs(bound)).await })
    };
    let first = call("a", 30);
    let waiting = [call("b", 60), call("c", 60)];
    broker.wait_until(|r, _| r.len() == 1 + 3).await;

    let first = first.await.unwrap();
    assert!(
        matches!(&first, Err(Error::Timeout { api: "Metadata", timeout, .. }) if *timeout == Duration::from_secs(30)),
        "{first:?}"
    );
    let mut causes = Vec::new();
    for waiter in waiting {
        causes.push(io_cause(waiter.await.unwrap()));
    }
    assert!(connection.is_broken());
    // A later call fails at once, with the same cause.
    causes.push(io_cause(connection.call(&metadata_of("d")).await));
    assert_eq!(causes[0].kind(), ErrorKind::TimedOut, "{}", causes[0]);
    assert!(causes.iter().all(|cause| Arc::ptr_eq(cause, &causes[0])));
    // ... without reaching the broker: once the connection is gone, it has
    // seen the three requests only.
    drop(connection);
    broker.wait_until(|_, (_, closed)| closed == 1).await;
    assert_eq!(broker.requests_of(METADATA).len(), 3);
}

#[tokio::test]
async fn a_connection_closed_mid_answer_fails_its_waiters_and_the_client_reconnects() {
    let broker = Broker::start(|r| match (r.api_key, r.nth) {
        (METADATA, 0) => Action::Hold,
        (METADATA, 1) => Action::Cut(10), // size, correlation id, 2 bytes of body
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let first = client.any_connection().await.unwrap();
    let calls = ["a", "b"].map(|topic| {
        let connection = Arc::clone(&first);
        tokio::spawn(async move { connection.call(&metadata_of(topic)).await })
    });
    let mut causes = Vec::new();
    for call in calls {
        causes.push(io_cause(call.await.unwrap()));
    }
    assert!(Arc::ptr_eq(&causes[0], &causes[1]));
    assert_eq!(causes[0].kind(), ErrorKind::UnexpectedEof, "{}", causes[0]);
    assert!(first.is_broken());

    let answer = client.metadata(Some(vec!["c".to_owned()])).await.unwrap();
    assert_eq!(answer.topics[0].name, "c");
    let second = client.any_connection().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(broker.connections().0, 2);
    assert_eq!(broker.requests_of(METADATA)[2].conn, 1);
}

#[tokio::test]
async fn an_oversized_or_negative_size_prefix_breaks_the_connection() {
    for (size, max_answer) in [(i32::MAX, 128 << 20), (5000, 1024), (-1, 1024)] {
        let broker = Broker::start(move |r| match r.api_key {
            // Only the size and correlation id: the rest never comes.
            METADATA => Action::Raw([size.to_be_bytes(), r.correlation.to_be_bytes()].concat()),
            _ => Action::Default,
        })
        .await;
        let config = KafkaConfig::new(["scripted:9092"]).max_answer_bytes(max_answer);
        let connection = BrokerConnection::over("scripted:9092", &config, broker.duplex())
            .await
            .unwrap();
        let cause = io_cause(connection.call(&metadata_of("a")).await);
        assert_eq!(cause.kind(), ErrorKind::InvalidData, "{cause}");
        assert!(cause.to_string().contains(&size.to_string()), "{cause}");
        assert!(connection.is_broken());
    }
}

#[tokio::test]
async fn versions_are_negotiated_and_a_missing_one_names_its_api() {
    let versions = our_versions()
        .into_iter()
        .map(|(key, min, max)| match key {
            PRODUCE => (key, 0, 2),
            METADATA => (key, 4, 12),
            _ => (key, min, max),
        })
        .collect();
    let broker = Broker::start_with(versions, |_| Action::Default).await;
    let client = KafkaClient::connect(config(&broker)).await.unwrap();
    let mut producer = producer(&client, false, "t");
    let failed = producer.produce(&records(1)).await.unwrap_err();

    let metadata = broker.requests_of(METADATA);
    assert_eq!(metadata.len(), 2, "bootstrap, then the topic");
    assert!(metadata.iter().all(|r| r.version == 8), "the highest both speak");
    assert_eq!(failed.delivery, Delivery::NotWritten);
    assert!(
        matches!(&failed.error, Error::UnsupportedVersion { api: "Produce", broker: Some(b), .. } if *b == (0..=2)),
        "{:?}",
        failed.error
    );
    assert!(failed.error.to_string().contains("Produce"), "{}", failed.error);
    assert!(broker.requests_of(PRODUCE).is_empty());
}

// ------------------------------------------------------------------ producer

#[tokio::test]
async fn a_lost_answer_is_retried_byte_for_byte_and_a_duplicate_counts_as_written() {
    let broker = Broker::start(|r| match (r.api_key, r.nth) {
        (PRODUCE, 0) => Action::Close,
        (PRODUCE, 1) => Action::Answer(produce_answer(r.version, "t", 0, 46, -1)),
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let mut producer = producer(&client, true, "t");
    assert_eq!(producer.produce(&records(3)).await.unwrap(), -1);

    let attempts = broker.requests_of(PRODUCE);
    assert_eq!(attempts.len(), 2);
    assert_ne!(
        attempts[0].conn, attempts[1].conn,
        "the retry went on a new connection"
    );
    assert_eq!(attempts[0].body, attempts[1].body);
    assert_eq!(attempts[0].produce().records, attempts[1].produce().records);
    assert_eq!(attempts[0].produce().stamp(), (1000, 0, 0, 3));

    // The duplicate was counted: the next batch goes on from sequence 3.
    producer.produce(&records(1)).await.unwrap();
    assert_eq!(stamps(&broker)[2], (1000, 0, 3, 1));
    assert_eq!(broker.requests_of(INIT_PRODUCER_ID).len(), 1);
}

#[tokio::test]
async fn batches_carry_consecutive_sequences_and_plain_producing_none() {
    let broker = Broker::start(|_| Action::Default).await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let mut idempotent = producer(&client, true, "t");
    let mut plain = producer(&client, false, "u");
    for n in [3, 2, 1] {
        idempotent.produce(&records(n)).await.unwrap();
        plain.produce(&records(n)).await.unwrap();
    }
    let (t, u): (Vec<_>, Vec<_>) = broker
        .requests_of(PRODUCE)
        .into_iter()
        .partition(|r| r.produce().topic == "t");
    let stamp = |r: &common::scripted::Request| r.produce().stamp();
    assert_eq!(
        t.iter().map(stamp).collect::<Vec<_>>(),
        [(1000, 0, 0, 3), (1000, 0, 3, 2), (1000, 0, 5, 1)]
    );
    assert_eq!(
        u.iter().map(stamp).collect::<Vec<_>>(),
        [(-1, -1, -1, 3), (-1, -1, -1, 2), (-1, -1, -1, 1)]
    );
    assert_eq!(broker.requests_of(INIT_PRODUCER_ID).len(), 1);
    assert_eq!(client.list_offset("t", 0, OffsetSpec::Latest).await.unwrap(), 6);
}

#[tokio::test]
async fn a_broker_that_lost_the_producer_gets_the_batch_again_under_a_new_id() {
    for code in [
        ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode::UNKNOWN_PRODUCER_ID,
    ] {
        let broker = Broker::start(move |r| match (r.api_key, r.nth) {
            (PRODUCE, 1) => Action::Answer(produce_answer(r.version, "t", 0, code.0, -1)),
            _ => Action::Default,
        })
        .await;
        let client = KafkaClient::new(config(&broker)).unwrap();
        let mut producer = producer(&client, true, "t");
        assert_eq!(producer.produce(&records(2)).await.unwrap(), 0);
        assert_eq!(producer.produce(&records(3)).await.unwrap(), 2, "{code}");
        assert_eq!(producer.produce(&records(1)).await.unwrap(), 5);

        assert_eq!(broker.requests_of(INIT_PRODUCER_ID).len(), 2, "{code}");
        assert_eq!(
            stamps(&broker),
            [(1000, 0, 0, 2), (1000, 0, 2, 3), (1001, 0, 0, 3), (1001, 0, 3, 1)],
            "{code}"
        );
        // The same records, under the new stamp (header and CRC differ).
        let produced = broker.requests_of(PRODUCE);
        assert_eq!(
            produced[1].produce().records[61..],
            produced[2].produce().records[61..]
        );
    }
}

#[tokio::test]
async fn a_leader_error_reads_the_metadata_again_before_retrying() {
    let broker = Broker::start(|r| match (r.api_key, r.nth) {
        (PRODUCE, 0) => Action::Answer(produce_answer(r.version, "t", 0, 6, -1)),
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    assert_eq!(
        producer(&client, false, "t").produce(&records(1)).await.unwrap(),
        0
    );
    let calls: Vec<(i16, Option<Vec<String>>)> = broker
        .requests()
        .iter()
        .filter(|r| r.api_key == METADATA || r.api_key == PRODUCE)
        .map(|r| {
            (
                r.api_key,
                (r.api_key == METADATA).then(|| r.metadata_topics().unwrap()),
            )
        })
        .collect();
    let topic = Some(vec!["t".to_owned()]);
    assert_eq!(
        calls,
        [
            (METADATA, topic.clone()),
            (PRODUCE, None),
            (METADATA, topic),
            (PRODUCE, None)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retrying_stops_within_the_retry_budget() {
    let retry = RetryPolicy::default().retries(5); // 100 + 200 + ... + 1600 ms
    // A leader error every time, the connection lost after every Produce,
    // a broker that never knows the producer.
    for case in ["leader", "lost", "producer"] {
        let broker = Broker::start(move |r| match (r.api_key, case) {
            (PRODUCE, "lost") => Action::Close,
            (PRODUCE, "leader") => Action::Answer(produce_answer(r.version, "t", 0, 6, -1)),
            (PRODUCE, _) => Action::Answer(produce_answer(r.version, "t", 0, 59, -1)),
            _ => Action::Default,
        })
        .await;
        let client = KafkaClient::new(KafkaConfig::new([broker.address()]).retry(retry)).unwrap();
        let started = Instant::now();
        let failed = producer(&client, case == "producer", "t")
            .produce(&records(1))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() <= retry.retry_budget(),
            "{case}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            broker.requests_of(PRODUCE).len(),
            6,
            "{case}: the first attempt and 5 retries"
        );
        match case {
            "leader" => {
                assert_eq!(failed.delivery, Delivery::NotWritten);
                assert_eq!(failed.error.code(), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
                // Each leader error made the client read the metadata again.
                assert_eq!(broker.requests_of(METADATA).len(), 6);
            }
            "lost" => {
                // Sent, and no answer came: the broker may have written it.
                assert_eq!(failed.delivery, Delivery::MaybeWritten);
                io_cause(Err::<(), _>(failed.error));
            }
            _ => {
                assert_eq!(failed.delivery, Delivery::NotWritten);
                assert_eq!(failed.error.code(), Some(ErrorCode::UNKNOWN_PRODUCER_ID));
                let ids: Vec<_> = stamps(&broker).iter().map(|s| (s.0, s.2)).collect();
                assert_eq!(ids, (1000..1006).map(|id| (id, 0)).collect::<Vec<_>>());
            }
        }
    }
}

// --------------------------------------------------------------------- fetch

/// Fetches `t/0` from `offset` off a broker that answers every Fetch with
/// `set` (high watermark 100).
async fn fetch_from(set: Vec<u8>, offset: i64) -> (mes_kafka::Result<Fetched>, Arc<Broker>) {
    let broker = Broker::start(move |r| match r.api_key {
        FETCH => Action::Answer(fetch_answer(r.version, "t", 0, 0, 100, &set)),
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let fetched = PartitionFetcher::new(client, "t", 0).fetch(offset).await;
    (fetched, broker)
}

/// Each record's offset, or a failure's range of offsets.
fn offsets(fetched: &Fetched) -> Vec<Result<i64, (i64, i64)>> {
    let offsets = fetched.records.iter().map(|r| match r {
        Ok(record) => Ok(record.offset),
        Err(failed) => Err((failed.first_offset, failed.last_offset)),
    });
    offsets.collect()
}

#[tokio::test]
async fn a_cut_off_last_batch_leaves_the_whole_ones_and_the_next_offset_after_them() {
    let second = batch(13, &records(2));
    let set = [batch(10, &records(3)), second[..second.len() / 2].to_vec()].concat();
    let (fetched, broker) = fetch_from(set, 10).await;
    let fetched = fetched.unwrap();
    assert_eq!(offsets(&fetched), [Ok(10), Ok(11), Ok(12)]);
    let values: Vec<_> = fetched
        .records
        .iter()
        .map(|r| r.as_ref().unwrap().value.clone())
        .collect();
    assert_eq!(
        values,
        [Some(b"v0".to_vec()), Some(b"v1".to_vec()), Some(b"v2".to_vec())]
    );
    assert_eq!((fetched.next_offset, fetched.high_watermark), (13, 100));
    assert_eq!(broker.requests_of(FETCH).len(), 1);
}

#[tokio::test]
async fn a_fetch_from_inside_a_batch_returns_the_records_from_that_offset_on() {
    let set = [batch(10, &records(3)), batch(13, &records(2))].concat();
    let (fetched, broker) = fetch_from(set, 11).await;
    let fetched = fetched.unwrap();
    assert_eq!(offsets(&fetched), [Ok(11), Ok(12), Ok(13), Ok(14)]);
    assert_eq!(fetched.next_offset, 15);
    assert_eq!(broker.requests_of(FETCH)[0].fetch(), ("t".to_owned(), 0, 11));
}

#[tokio::test]
async fn header_names_come_back_as_they_are() {
    let record = Record::new(None, Some(b"v".to_vec()))
        .header(vec![0xff, 0xfe, b'n'], "not UTF-8")
        .header("ce_type", "first")
        .header("ce_type", "second");
    let (fetched, _) = fetch_from(batch(0, std::slice::from_ref(&record)), 0).await;
    let fetched = fetched.unwrap();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fetched.records[0].as_ref().unwrap().headers, record.headers);
}

#[tokio::test]
async fn a_batch_with_a_bad_crc_fails_alone() {
    let mut bad = batch(2, &records(3));
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let set = [batch(0, &records(2)), bad, batch(5, &records(1))].concat();
    let (fetched, _) = fetch_from(set, 0).await;
    let fetched = fetched.unwrap();
    assert_eq!(offsets(&fetched), [Ok(0), Ok(1), Err((2, 4)), Ok(5)]);
    let failed = fetched.records[2].as_ref().unwrap_err();
    assert!(failed.error.to_string().contains("CRC"), "{failed}");
    assert_eq!(fetched.next_offset, 6);
}

#[tokio::test]
async fn a_batch_larger_than_max_bytes_is_fetched_again_with_more() {
    let full = batch(0, &records(20));
    assert!(full.len() > 200);
    let broker = Broker::start(move |r| match (r.api_key, r.nth) {
        // A broker returns the first batch whole; this one cuts it at max_bytes.
        (FETCH, 0) => Action::Answer(fetch_answer(r.version, "t", 0, 0, 20, &full[..100])),
        (FETCH, _) => Action::Answer(fetch_answer(r.version, "t", 0, 0, 20, &full)),
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let fetched = PartitionFetcher::new(client, "t", 0)
        .max_bytes(100)
        .fetch(0)
        .await
        .unwrap();
    assert_eq!(offsets(&fetched), (0..20).map(Ok).collect::<Vec<_>>());
    assert_eq!(fetched.next_offset, 20);
    let asked: Vec<i32> = broker
        .requests_of(FETCH)
        .iter()
        .map(|r| r.fetch_max_bytes())
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(asked[1] > asked[0], "{asked:?}");
}

#[tokio::test]
async fn offset_out_of_range_is_a_broker_error_with_its_code() {
    let broker = Broker::start(|r| match r.api_key {
        FETCH => Action::Answer(fetch_answer(r.version, "t", 0, 1, 100, &[])),
        _ => Action::Default,
    })
    .await;
    let client = KafkaClient::new(config(&broker)).unwrap();
    let failed = PartitionFetcher::new(client, "t", 0)
        .fetch(500)
        .await
        .unwrap_err();
    assert!(matches!(failed, Error::Broker { .. }), "{failed:?}");
    assert_eq!(failed.code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
}
