//! Fault scenario: PostgreSQL crashes and restarts (twice) under outbox
//! load: services keep writing events in transactions (a failed one is
//! written again, as a service would), the relay keeps publishing. Promised:
//! every committed event reaches the topic, each entity's events in commit
//! order; duplicates only where at-least-once allows (counted).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Group;
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RelayConfig};
use mes_testkit::postgres::PrivateServer;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

const ENTITIES: usize = 50;
/// How long the test waits for the outbox to drain after the last restart.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether an enqueue failed because these event ids are in the outbox
/// already (a unique violation, somewhere in the error's causes).
fn already_in_the_outbox(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(sqlx::Error::Database(e)) = error.downcast_ref::<sqlx::Error>()
            && e.code().as_deref() == Some("23505")
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_through_postgres_crashes_and_restarts() {
    let phase_length = scaled(Duration::from_secs(2), Duration::from_secs(10));
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap()
            .unwrap(),
    );
    let (group, topic, _publisher) = Group::with_topic("pgrestart", Duration::from_secs(6), 4).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&server.url())
        .await
        .unwrap();
    let outbox = Outbox::new(OutboxTable::in_schema("public", "outbox").unwrap());
    outbox.migrate(&pool).await.unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&server.url())
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

    // The services: each transaction of 5 events is written again until it
    // commits (a commit cut by the crash may or may not have landed).
    let parsed = EventType::parse(&group.event_type).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failed_writes = Arc::new(AtomicU64::new(0));
    let writing = {
        let (pool, outbox, stop, failed_writes) = (
            pool.clone(),
            outbox.clone(),
            Arc::clone(&stop),
            Arc::clone(&failed_writes),
        );
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
                loop {
                    let attempt = async {
                        let mut tx = pool.begin().await?;
                        outbox.enqueue(&mut tx, &batch).await?;
                        tx.commit().await?;
                        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                    };
                    match attempt.await {
                        Ok(()) => break,
                        // The cut commit had landed and its rows are still
                        // waiting: it is written.
                        Err(e) if already_in_the_outbox(&*e) => break,
                        Err(_) => {
                            failed_writes.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                written.extend(batch);
            }
            written
        })
    };

    let started = Instant::now();
    let mut back_after = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(phase_length).await;
        let server = Arc::clone(&server);
        let down_for = phase_length / 2;
        let took = tokio::task::spawn_blocking(move || {
            server.crash().unwrap();
            std::thread::sleep(down_for);
            let restarting = Instant::now();
            server.restart().unwrap();
            restarting.elapsed()
        })
        .await
        .unwrap();
        back_after.push(took.as_millis() as u64);
    }
    tokio::time::sleep(phase_length).await;
    stop.store(true, Ordering::Relaxed);
    let events = writing.await.unwrap();
    let writing_time = started.elapsed();
    let drained_after = common::wait_drained(&outbox, &pool, PATIENCE).await;
    let stats = relay.shutdown().await;

    let topic_audit =
        common::audit_topic(&group.brokers, &topic, &events, &std::collections::HashSet::new()).await;

    let mut report = Report::new(
        "postgres_crash_restart",
        format!(
            "PostgreSQL stopped immediately (a crash) twice, down {} s each, then restarted",
            (phase_length / 2).as_secs_f64()
        ),
        format!(
            "outbox writers {:.0} events/s over {ENTITIES} entities, a failed transaction written again; relay batches of 100",
            events.len() as f64 / writing_time.as_secs_f64()
        ),
    );
    report
        .none("committed events lost", topic_audit.lost)
        .none(
            "entities whose events left out of order",
            topic_audit.out_of_order,
        )
        .figure("events", events.len() as u64)
        .figure("duplicates_on_topic", topic_audit.duplicates)
        .figure("failed_write_transactions", failed_writes.load(Ordering::Relaxed))
        .figure("relay_failed_publish_attempts", stats.failed)
        .figure("restart_ms", back_after)
        .figure(
            "drained_ms_after_writers_stopped",
            drained_after.as_millis() as u64,
        );
    println!("{:#}", report.to_json());
    report.finish();
}
