//! Fault scenario: the outbox relay's link to PostgreSQL cut, then
//! blackholed, while services keep writing events into the outbox on their
//! own links. Promised: no event lost, each entity's events on the topic in
//! the order they were committed; duplicates only as at-least-once allows
//! (counted).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Group;
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RelayConfig};
use mes_testkit::fault_proxy::{Fault, FaultProxy};
use mes_testkit::postgres::TestSchema;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

const ENTITIES: usize = 50;
/// How long the test waits for the outbox to drain after the last fault.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relay_through_a_cut_and_blackholed_link_to_postgres() {
    let phase_length = scaled(Duration::from_secs(2), Duration::from_secs(15));
    let (group, topic, _publisher) = Group::with_topic("outboxcut", Duration::from_secs(6), 4).await;
    let schema = TestSchema::create("faults_outbox").await;
    let pool = schema.pool(2).await;
    let table = OutboxTable::in_schema(schema.name(), "outbox").unwrap();
    let outbox = Outbox::new(table);
    outbox.migrate(&pool).await.unwrap();

    let (proxy, through_proxy) = FaultProxy::in_front_of(&mes_testkit::postgres_url()).unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&through_proxy)
        .await
        .unwrap();
    let publisher = EventPublisher::connect(PublisherConfig::new([group.brokers.as_str()]))
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        outbox.clone(),
        relay_pool,
        publisher,
        RelayConfig::default()
            .batch_size(100)
            .poll_interval(Duration::from_millis(50))
            .backoff(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .start();

    // The services: transactions of 5 events, paced, on their own links.
    let parsed = EventType::parse(&group.event_type).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let (pool, outbox, stop) = (pool.clone(), outbox.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut written: Vec<DomainEvent> = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let batch: Vec<DomainEvent> = (written.len()..written.len() + 5)
                    .map(|i| {
                        DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                            .with_entity("Thing", format!("E-{}", i % ENTITIES))
                    })
                    .collect();
                let mut tx = pool.begin().await.unwrap();
                outbox.enqueue(&mut tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
                written.extend(batch);
            }
            written
        })
    };

    let started = Instant::now();
    for fault in [None, Some(Fault::Cut), None, Some(Fault::Blackhole), None] {
        match fault {
            Some(fault) => proxy.set(fault),
            None => proxy.heal(),
        }
        tokio::time::sleep(phase_length).await;
    }
    stop.store(true, Ordering::Relaxed);
    let events = writing.await.unwrap();
    let writing_time = started.elapsed();
    let drained_after = common::wait_drained(&outbox, &pool, PATIENCE).await;
    let stats = relay.shutdown().await;

    let topic_audit =
        common::audit_topic(&group.brokers, &topic, &events, &std::collections::HashSet::new()).await;

    let mut report = Report::new(
        "outbox_relay_postgres_cut",
        format!(
            "relay <-> PostgreSQL cut (RST) then blackholed, {} s each",
            phase_length.as_secs_f64()
        ),
        format!(
            "outbox writers {:.0} events/s over {ENTITIES} entities, relay batches of 100",
            events.len() as f64 / writing_time.as_secs_f64()
        ),
    );
    report
        .none("events lost", topic_audit.lost)
        .none(
            "entities whose events left out of order",
            topic_audit.out_of_order,
        )
        .figure("events", events.len() as u64)
        .figure("duplicates_on_topic", topic_audit.duplicates)
        .figure("relay_failed_publish_attempts", stats.failed)
        .figure("relay_parked", stats.parked)
        .figure("drained_ms_after_last_heal", drained_after.as_millis() as u64)
        .figure("proxy", format!("{:?}", proxy.counts()));
    println!("{:#}", report.to_json());
    report.finish();
}
