//! The broker dies (SIGKILL) in the middle of a stream of publishes, twice:
//! once it comes straight back (publishes are retried into the log), once it
//! stays down until the producers have seen errors. Afterwards every
//! acknowledged event is on the topic, every other attempt got an error that
//! says whether it may have been written, and each entity's events are in
//! order.
//!
//! The producer is idempotent: a batch the publisher retried after its
//! answer was lost is not written twice, so the only events on the topic
//! twice are ones the application published again after a `MaybeWritten`
//! error (a new batch, which idempotence cannot recognise; the consumer's
//! de-duplication by event id absorbs those).
//!
//! Uses a tansu of its own with `sqlite://` storage, which keeps every
//! acknowledged record across a kill (`MES_TEST_TANSU_BIN`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mes_events_types::decode;
use mes_publisher::{Delivery, Error, EventPublisher, PublisherConfig, RetryPolicy};
use mes_testkit::tansu::TansuBroker;
use serde_json::json;
use tokio::sync::Notify;

const ENTITIES: usize = 20;
const EVENTS_PER_ENTITY: usize = 50;
const FIRST_KILL_AFTER_ACKS: usize = 300;
const SECOND_KILL_AFTER_ACKS: usize = 600;
const ERRORS_BEFORE_RESTART: usize = 5;

#[derive(Default, Debug)]
struct Tally {
    acknowledged: AtomicUsize,
    maybe_written: AtomicUsize,
    not_written: AtomicUsize,
    earlier_batch_failed: AtomicUsize,
}

impl Tally {
    fn errors(&self) -> usize {
        self.maybe_written.load(Ordering::SeqCst)
            + self.not_written.load(Ordering::SeqCst)
            + self.earlier_batch_failed.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_broker_kill_and_order_holds() {
    let binary = mes_testkit::tansu_binary();
    let scratch = Scratch::new("broker-kill");
    let dir = &scratch.0;
    let storage = "sqlite://tansu.db";
    let mut broker = TansuBroker::start(&binary, storage, dir).unwrap();
    let brokers = broker.address();

    let config = PublisherConfig::new([brokers.as_str()])
        .retry(RetryPolicy::default().retries(5))
        .request_timeout(Duration::from_secs(5));
    let publisher = EventPublisher::connect(config).await.unwrap();
    let event_type = unique_event_type("kill");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 4).await;

    let tally = Arc::new(Tally::default());
    let kill_now = Arc::new(Notify::new());
    let errors_seen = Arc::new(Notify::new());
    // Event id -> (entity, sequence) of everything the broker acknowledged.
    let mut producers = Vec::new();
    for e in 0..ENTITIES {
        let (publisher, tally, kill_now, errors_seen, event_type) = (
            publisher.clone(),
            Arc::clone(&tally),
            Arc::clone(&kill_now),
            Arc::clone(&errors_seen),
            event_type.clone(),
        );
        producers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut published_again = Vec::new();
            for seq in 0..EVENTS_PER_ENTITY {
                let event = raw_event(&event_type, &format!("E-{e}"), json!({"seq": seq}));
                // An at-least-once producer: publish again until acknowledged.
                loop {
                    match publisher.publish(&event).await {
                        Ok(landed) => {
                            acknowledged.push((event.id().clone(), landed));
                            let acks = tally.acknowledged.fetch_add(1, Ordering::SeqCst) + 1;
                            if acks == FIRST_KILL_AFTER_ACKS || acks == SECOND_KILL_AFTER_ACKS {
                                kill_now.notify_one();
                            }
                            break;
                        }
                        Err(error) => {
                            if error.delivery() == Delivery::MaybeWritten {
                                published_again.push(event.id().clone());
                            }
                            let counter = match (&error, error.delivery()) {
                                (Error::EarlierBatchFailed { .. }, _) => &tally.earlier_batch_failed,
                                (_, Delivery::MaybeWritten) => &tally.maybe_written,
                                (_, Delivery::NotWritten) => &tally.not_written,
                            };
                            counter.fetch_add(1, Ordering::SeqCst);
                            if tally.errors() == ERRORS_BEFORE_RESTART {
                                errors_seen.notify_one();
                            }
                        }
                    }
                }
            }
            (acknowledged, published_again)
        }));
    }

    // First kill: straight back up.
    kill_now.notified().await;
    let mut broker = tokio::task::spawn_blocking(move || {
        broker.kill().unwrap();
        broker.restart().unwrap();
        broker
    })
    .await
    .unwrap();
    // Second kill: down until the producers have seen errors.
    kill_now.notified().await;
    broker.kill().unwrap();
    errors_seen.notified().await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart().unwrap();
        broker
    })
    .await
    .unwrap();

    let mut acknowledged = HashMap::new();
    let mut published_again = HashSet::new();
    for producer in producers {
        let (landed, again) = producer.await.unwrap();
        acknowledged.extend(landed);
        published_again.extend(again);
    }
    publisher.disconnect().await;

    let read = read_topic(&brokers, &topic).await;
    let mut on_topic = HashSet::new();
    let mut duplicates = 0;
    let mut duplicated_by_the_library = Vec::new();
    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sorted = read.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in &sorted {
        let event = decode(&r.record).unwrap();
        if !on_topic.insert(event.id().clone()) {
            duplicates += 1;
            if !published_again.contains(event.id()) {
                duplicated_by_the_library.push(event.id().clone());
            }
            continue;
        }
        first_seen
            .entry(event.entity_id().unwrap().to_owned())
            .or_default()
            .push(event.data()["seq"].as_u64().unwrap());
    }
    println!(
        "broker kill: acknowledged={} maybe_written_errors={} not_written_errors={} earlier_batch_failed={} \
         records_on_topic={} duplicates_on_topic={duplicates} published_again_by_the_test={}",
        acknowledged.len(),
        tally.maybe_written.load(Ordering::SeqCst),
        tally.not_written.load(Ordering::SeqCst),
        tally.earlier_batch_failed.load(Ordering::SeqCst),
        read.len(),
        published_again.len(),
    );
    assert!(
        duplicated_by_the_library.is_empty(),
        "written twice though published once (the idempotent producer's retries): {duplicated_by_the_library:?}"
    );
    assert_eq!(acknowledged.len(), ENTITIES * EVENTS_PER_ENTITY);
    assert!(tally.errors() >= ERRORS_BEFORE_RESTART, "the outage was seen");
    for id in acknowledged.keys() {
        assert!(
            on_topic.contains(id),
            "acknowledged event {id} is missing after the restart"
        );
    }
    for (entity, seqs) in first_seen {
        let expected: Vec<u64> = (0..EVENTS_PER_ENTITY as u64).collect();
        assert_eq!(seqs, expected, "order of {entity}");
    }
    drop(broker);
}

/// A broker that restarted has closed the publisher's connection; the next
/// batch goes out on a new one at once, without spending a retry: with no
/// retries at all, publishing after the restart still succeeds.
#[tokio::test]
async fn a_connection_the_broker_closed_is_replaced_without_spending_a_retry() {
    let binary = mes_testkit::tansu_binary();
    let scratch = Scratch::new("broker-closed");
    let dir = &scratch.0;
    let mut broker = TansuBroker::start(&binary, "sqlite://tansu.db", dir).unwrap();
    let brokers = broker.address();
    let config = PublisherConfig::new([brokers.as_str()]).retry(RetryPolicy::default().retries(0));
    let publisher = EventPublisher::connect(config).await.unwrap();
    let event_type = unique_event_type("closed");
    create_topic(&publisher, &event_type.topic().unwrap(), 1).await;

    let first = publisher
        .publish(&raw_event(&event_type, "E-1", json!({"seq": 0})))
        .await
        .unwrap();
    broker.restart().unwrap();
    let second = publisher
        .publish(&raw_event(&event_type, "E-1", json!({"seq": 1})))
        .await
        .unwrap();

    assert_eq!((first.partition, second.partition), (0, 0));
    assert_eq!(
        second.offset,
        first.offset + 1,
        "the second event follows the first"
    );
    publisher.disconnect().await;
    drop(broker);
}
