//! The PostgreSQL outbox against the real PostgreSQL (a schema of this
//! suite's own in the shared database) and the real broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mes_events_types::{DomainEvent, EventType, decode, partition_for_key};
use mes_publisher::{
    Error, EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RelayConfig, Requeue,
    RetryPolicy, TransactionWork,
};
use mes_testkit::postgres::TestSchema;
use mes_testkit::tansu::TansuBroker;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;

struct Setup {
    schema: TestSchema,
    pool: PgPool,
    outbox: Outbox,
    event_type: EventType,
    topic: String,
}

async fn setup(test: &str, publisher: &EventPublisher, partitions: u16) -> Setup {
    let schema = TestSchema::create(test).await;
    let pool = schema.pool(8).await;
    let outbox = Outbox::new(OutboxTable::in_schema(schema.name(), "outbox").unwrap());
    outbox.migrate(&pool).await.unwrap();
    // Twice: the migration is idempotent.
    outbox.migrate(&pool).await.unwrap();
    let event_type = unique_event_type(test);
    let topic = event_type.topic().unwrap();
    create_topic(publisher, &topic, partitions).await;
    Setup {
        schema,
        pool,
        outbox,
        event_type,
        topic,
    }
}

/// Counts acknowledged events and wakes a waiter at each batch.
#[derive(Default)]
struct Acks {
    count: AtomicUsize,
    changed: Notify,
}

impl Acks {
    fn config(self: &Arc<Self>, config: RelayConfig) -> RelayConfig {
        let acks = Arc::clone(self);
        config.on_acknowledged(move |batch| {
            acks.count.fetch_add(batch.len(), Ordering::SeqCst);
            acks.changed.notify_waiters();
        })
    }

    async fn wait_for(&self, at_least: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                if self.count.load(Ordering::SeqCst) >= at_least {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {at_least} events acknowledged in {PATIENCE:?}",
                self.count.load(Ordering::SeqCst)
            )
        });
    }
}

/// The events on the topic as (partition, offset order) with their data.
async fn events_on(brokers: &str, topic: &str) -> Vec<(i32, DomainEvent<Value>)> {
    read_topic(brokers, topic)
        .await
        .into_iter()
        .map(|r| (r.partition, decode(&r.record).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_write_and_its_events_commit_together_or_not_at_all() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let s = setup("outbox_atomic", &publisher, 2).await;
    let parts = format!("{}.parts", s.schema.name());
    sqlx::query(&format!(
        "CREATE TABLE {parts} (id text PRIMARY KEY, name text NOT NULL)"
    ))
    .execute(&s.pool)
    .await
    .unwrap();
    let event = |entity: &str| raw_event(&s.event_type, entity, json!({"partId": entity}));

    // Committed: the part and both events.
    let committed = [event("P-1"), event("P-1")];
    s.outbox
        .publish_transactional(&s.pool, &committed, insert_part(&parts, "P-1"))
        .await
        .unwrap();

    // The business work fails: nothing of it, and no event.
    let work = insert_part(&parts, "P-2");
    let failed: Result<(), Error> = s
        .outbox
        .publish_transactional(&s.pool, &[event("P-2")], move |tx| {
            Box::pin(async move {
                work(tx).await?;
                Err(Error::Config {
                    reason: "the business rule said no".into(),
                })
            })
        })
        .await;
    assert!(matches!(failed, Err(Error::Config { .. })), "{failed:?}");

    // The enqueue fails (an id already in the outbox): the business write
    // rolls back with it.
    let again = s
        .outbox
        .publish_transactional(&s.pool, &committed[..1], insert_part(&parts, "P-3"))
        .await;
    assert!(
        matches!(&again, Err(Error::Outbox { what, .. }) if what.contains("already in the outbox")),
        "{again:?}"
    );

    // The caller's own transaction, rolled back after the enqueue.
    let mut tx = s.pool.begin().await.unwrap();
    insert_part(&parts, "P-4")(&mut tx).await.unwrap();
    s.outbox.enqueue(&mut tx, &[event("P-4")]).await.unwrap();
    tx.rollback().await.unwrap();

    let stored: Vec<String> = sqlx::query_scalar(&format!("SELECT id FROM {parts} ORDER BY id"))
        .fetch_all(&s.pool)
        .await
        .unwrap();
    assert_eq!(stored, ["P-1"]);
    assert_eq!(s.outbox.stats(&s.pool).await.unwrap().pending, 2);

    let relay = OutboxRelay::new(
        s.outbox.clone(),
        s.pool.clone(),
        publisher.clone(),
        RelayConfig::default(),
    );
    let drained = relay.drain().await.unwrap();
    assert_eq!((drained.published, drained.failed), (2, 0));
    let stats = s.outbox.stats(&s.pool).await.unwrap();
    assert_eq!(
        (stats.pending, stats.parked, stats.oldest_pending_age),
        (0, 0, None)
    );

    let on_topic: Vec<String> = events_on(&brokers, &s.topic)
        .await
        .into_iter()
        .map(|(_, e)| e.id().to_string())
        .collect();
    let expected: Vec<String> = committed.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(on_topic, expected, "exactly the committed events, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_publish_every_event_once_in_commit_order_per_entity() {
    const EVENTS: usize = 10_000;
    const ENTITIES: usize = 100;
    const WRITERS: usize = 4;
    const PARTITIONS: u16 = 6;
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let s = setup("outbox_three_relays", &publisher, PARTITIONS).await;
    // The business table: each transaction bumps its entity's counter, so
    // the counter values are the entity's commit order.
    let counters = format!("{}.counters", s.schema.name());
    sqlx::query(&format!(
        "CREATE TABLE {counters} (entity text PRIMARY KEY, n int NOT NULL)"
    ))
    .execute(&s.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {counters} SELECT 'E-' || i, 0 FROM generate_series(0, {}) i",
        ENTITIES - 1
    ))
    .execute(&s.pool)
    .await
    .unwrap();

    let acks = Arc::new(Acks::default());
    let mut relays = Vec::new();
    for _ in 0..3 {
        // A pool each, as separate processes would have.
        let pool = s.schema.pool(2).await;
        let config = acks.config(RelayConfig::default().batch_size(300));
        relays.push(OutboxRelay::new(s.outbox.clone(), pool, connect(&brokers).await, config).start());
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, outbox, event_type, counters) = (
            s.pool.clone(),
            s.outbox.clone(),
            s.event_type.clone(),
            counters.clone(),
        );
        writers.push(tokio::spawn(async move {
            let bump = format!("UPDATE {counters} SET n = n + 1 WHERE entity = $1 RETURNING n");
            for i in (w..EVENTS).step_by(WRITERS) {
                // Entities interleave across writers, so transactions of one
                // entity race each other.
                let entity = format!("E-{}", (i * 7) % ENTITIES);
                let mut tx = pool.begin().await.unwrap();
                let n: i32 = sqlx::query_scalar(&bump)
                    .bind(&entity)
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                let event = raw_event(&event_type, &entity, json!({"n": n}));
                outbox.enqueue(&mut tx, &[event]).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    acks.wait_for(EVENTS).await;
    let mut published_by = Vec::new();
    for relay in relays {
        published_by.push(relay.shutdown().await.published);
    }
    assert_eq!(s.outbox.stats(&s.pool).await.unwrap().pending, 0);
    // Each row was deleted by exactly one relay.
    assert_eq!(
        published_by.iter().sum::<u64>(),
        EVENTS as u64,
        "{published_by:?}"
    );
    println!("events published per relay: {published_by:?}");

    let on_topic = events_on(&brokers, &s.topic).await;
    let ids: HashSet<String> = on_topic.iter().map(|(_, e)| e.id().to_string()).collect();
    assert_eq!(ids.len(), EVENTS, "every event present");
    assert_eq!(on_topic.len(), EVENTS, "and present once");
    let mut per_entity: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for (partition, event) in &on_topic {
        let n = event.data()["n"].as_i64().unwrap();
        per_entity
            .entry(event.entity_id().unwrap().to_owned())
            .or_default()
            .push((*partition, n));
    }
    assert_eq!(per_entity.len(), ENTITIES);
    let partitions = NonZeroU32::new(u32::from(PARTITIONS)).unwrap();
    for (entity, seen) in per_entity {
        let expected_partition = i32::try_from(partition_for_key(entity.as_bytes(), partitions)).unwrap();
        assert!(
            seen.iter().all(|(p, _)| *p == expected_partition),
            "{entity} strayed"
        );
        let order: Vec<i64> = seen.iter().map(|(_, n)| *n).collect();
        let commit_order: Vec<i64> = (1..=i64::try_from(order.len()).unwrap()).collect();
        assert_eq!(order, commit_order, "{entity}'s events out of commit order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_broker_is_down() {
    let scratch = Scratch::new("outbox-down");
    let dir = &scratch.0;
    let mut broker = TansuBroker::start(&mes_testkit::tansu_binary(), "sqlite://tansu.db", dir).unwrap();
    let brokers = broker.address();
    let config = PublisherConfig::new([brokers.as_str()])
        .retry(
            RetryPolicy::default()
                .retries(2)
                .max_total(Duration::from_secs(2)),
        )
        .request_timeout(Duration::from_secs(2));
    let publisher = EventPublisher::connect(config).await.unwrap();
    let s = setup("outbox_broker_down", &publisher, 3).await;

    let acks = Arc::new(Acks::default());
    let config = RelayConfig::default().backoff(Duration::from_millis(50), Duration::from_millis(500));
    let relay = OutboxRelay::new(s.outbox.clone(), s.pool.clone(), publisher, acks.config(config));
    let running = relay.clone().start();
    let enqueue = |from: usize, to: usize| {
        let (outbox, pool, event_type) = (s.outbox.clone(), s.pool.clone(), s.event_type.clone());
        async move {
            let events: Vec<_> = (from..to)
                .map(|i| raw_event(&event_type, &format!("E-{}", i % 10), json!({"i": i})))
                .collect();
            let mut tx = pool.begin().await.unwrap();
            outbox.enqueue(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    enqueue(0, 100).await;
    acks.wait_for(100).await;

    let mut broker = tokio::task::spawn_blocking(move || {
        broker.kill().unwrap();
        broker
    })
    .await
    .unwrap();
    enqueue(100, 300).await;
    // The relay keeps trying and failing; nothing is parked for an outage.
    wait_until(|| async { running.stats().failed >= 3 }).await;
    let stats = s.outbox.stats(&s.pool).await.unwrap();
    assert_eq!((stats.pending, stats.parked), (200, 0));
    assert!(stats.oldest_pending_age.is_some());

    let broker = tokio::task::spawn_blocking(move || {
        broker.restart().unwrap();
        broker
    })
    .await
    .unwrap();
    acks.wait_for(300).await;
    running.shutdown().await;
    assert_eq!(s.outbox.stats(&s.pool).await.unwrap().pending, 0);

    // Everything is there, each entity in order.
    let on_topic = events_on(&brokers, &s.topic).await;
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut per_entity: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (position, (_, event)) in on_topic.iter().enumerate() {
        if first_seen.insert(event.id().to_string(), position).is_none() {
            per_entity
                .entry(event.entity_id().unwrap().to_owned())
                .or_default()
                .push(event.data()["i"].as_i64().unwrap());
        }
    }
    assert_eq!(first_seen.len(), 300, "no event lost");
    for (entity, order) in per_entity {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{entity} out of order");
    }
    println!(
        "broker outage: {} records on the topic for 300 events, {} failed attempts",
        on_topic.len(),
        relay.stats().failed
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_fails_by_itself_is_parked_holds_its_entity_back_and_can_be_requeued() {
    let brokers = mes_testkit::kafka_brokers();
    let publisher = connect(&brokers).await;
    let s = setup("outbox_parked", &publisher, 1).await;
    // A topic nobody created (and auto-creation is off): the event fails by
    // itself, the broker is fine.
    let missing = unique_event_type("outbox_missing");
    let events = [
        raw_event(&missing, "E-1", json!({"i": 0})),
        raw_event(&s.event_type, "E-1", json!({"i": 1})),
        raw_event(&s.event_type, "E-2", json!({"i": 2})),
    ];
    let mut tx = s.pool.begin().await.unwrap();
    s.outbox.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    // One row per round, so E-1's second event is not sent alongside its
    // first (it is on another topic, where nothing would stop it).
    let config = RelayConfig::default()
        .batch_size(1)
        .max_attempts(2)
        .backoff(Duration::ZERO, Duration::ZERO);
    let relay = OutboxRelay::new(s.outbox.clone(), s.pool.clone(), publisher.clone(), config);
    let first = relay.relay_once().await.unwrap();
    assert_eq!(
        (first.published, first.failed, first.parked),
        (0, 1, 0),
        "{first:?}"
    );
    let second = relay.relay_once().await.unwrap();
    assert_eq!(
        (second.published, second.failed, second.parked),
        (0, 1, 1),
        "{second:?}"
    );
    // E-2 goes; E-1's second event waits behind the parked first.
    let third = relay.relay_once().await.unwrap();
    assert_eq!((third.claimed, third.published), (1, 1), "{third:?}");
    assert_eq!(
        relay.drain().await.unwrap().claimed,
        0,
        "a parked head holds its entity back"
    );

    let stats = s.outbox.stats(&s.pool).await.unwrap();
    assert_eq!((stats.pending, stats.parked), (1, 1));
    let parked = s.outbox.parked(&s.pool, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, events[0].id().as_str());
    assert_eq!(parked[0].attempts, 2);
    assert!(
        parked[0].last_error.contains("does not exist"),
        "{}",
        parked[0].last_error
    );
    assert!(parked[0].parked_at.is_some());

    // The operator creates the topic and puts the event back in line.
    create_topic(&publisher, &missing.topic().unwrap(), 1).await;
    assert_eq!(s.outbox.requeue(&s.pool, Requeue::All).await.unwrap(), 1);
    let drained = relay.drain().await.unwrap();
    assert_eq!(drained.published, 2);
    let stats = s.outbox.stats(&s.pool).await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 0));
    let order: Vec<String> = events_on(&brokers, &s.topic)
        .await
        .into_iter()
        .map(|(_, e)| e.id().to_string())
        .collect();
    assert_eq!(order, [events[2].id().to_string(), events[1].id().to_string()]);
    let requeued: Vec<String> = events_on(&brokers, &missing.topic().unwrap())
        .await
        .into_iter()
        .map(|(_, e)| e.id().to_string())
        .collect();
    assert_eq!(requeued, [events[0].id().to_string()]);
}

#[tokio::test]
async fn events_that_cannot_be_encoded_or_are_too_large_are_refused_before_anything_is_written() {
    let s = TestSchema::create("outbox_refused").await;
    let pool = s.pool(1).await;
    let outbox = Outbox::new(OutboxTable::in_schema(s.name(), "outbox").unwrap());
    outbox.migrate(&pool).await.unwrap();
    // A domain with a space makes no topic name.
    let typeless = DomainEvent::new_raw(EventType::parse("bad domain.x").unwrap(), "svc", json!({}));
    let mut tx = pool.begin().await.unwrap();
    let refused = outbox.enqueue(&mut tx, &[typeless]).await;
    assert!(matches!(refused, Err(Error::Encode(_))), "{refused:?}");
    // Larger than the limit: refused in the business transaction, not
    // parked later.
    let small = outbox.clone().max_event_bytes(2_000);
    let big = DomainEvent::new_raw(
        EventType::parse("material.part.updated").unwrap(),
        "svc",
        json!({"pad": "x".repeat(2_000)}),
    );
    let refused = small.enqueue(&mut tx, &[big]).await;
    assert!(
        matches!(refused, Err(Error::RecordTooLarge { limit: 2_000, .. })),
        "{refused:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(outbox.stats(&pool).await.unwrap().pending, 0);
}

/// The business write of the atomicity test.
fn insert_part(
    parts: &str,
    id: &'static str,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> TransactionWork<'c, (), Error> + use<> {
    let sql = format!("INSERT INTO {parts} (id, name) VALUES ($1, 'Strut')");
    move |tx| {
        Box::pin(async move {
            sqlx::query(&sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::Outbox {
                    what: "insert a part".into(),
                    source: e.into(),
                })?;
            Ok(())
        })
    }
}

/// Waits for a condition the code under test reaches by itself (a relay
/// failing against a dead broker), checking after each short pause.
async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(PATIENCE, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}
