//! The outbox end to end against a real PostgreSQL and a real broker, with
//! direct publishing through `EventPublisher` in the same run as the
//! baseline. Run by `cargo xtask bench`.
//!
//! Environment: `MES_BENCH_KAFKA_BROKERS`, `MES_BENCH_POSTGRES_URL`,
//! `MES_BENCH_RUN` (a run id), `MES_BENCH_EVENTS`. Works in a schema of its
//! own, `mes_bench_{run}`, dropped at the end. Prints `RESULT <name>
//! <events/s>` and `LATENCY <name> <p50 µs> <p99 µs>` lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use common::{events, report};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mes_events_types::EventType;
use mes_publisher::{
    EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RelayConfig, TopicSettings, TopicSpec,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Notify, mpsc};

/// Events per enqueueing transaction in the throughput runs.
const PER_TRANSACTION: usize = 10;
const WRITERS: usize = 4;

struct Bench {
    pool: PgPool,
    outbox: Outbox,
    config: PublisherConfig,
}

#[tokio::main]
async fn main() {
    let brokers =
        std::env::var("MES_BENCH_KAFKA_BROKERS").expect("MES_BENCH_KAFKA_BROKERS (cargo xtask bench)");
    let postgres =
        std::env::var("MES_BENCH_POSTGRES_URL").expect("MES_BENCH_POSTGRES_URL (cargo xtask bench)");
    let run = std::env::var("MES_BENCH_RUN").expect("MES_BENCH_RUN (cargo xtask bench)");
    let count: usize = std::env::var("MES_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let schema = format!("mes_bench_{run}");
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .connect(&postgres)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let outbox = Outbox::new(OutboxTable::in_schema(&schema, "outbox").unwrap());
    outbox.migrate(&pool).await.unwrap();
    let bench = Bench {
        pool,
        outbox,
        config: PublisherConfig::new([brokers.as_str()]),
    };
    let kinds = [
        "direct",
        "outbox1",
        "outbox3",
        "drain1",
        "drain3",
        "latencynotify",
        "latencypoll",
    ];
    let types: HashMap<&str, EventType> = kinds
        .iter()
        .map(|k| {
            (
                *k,
                EventType::parse(&format!("bench{run}ob{k}.thing.happened")).unwrap(),
            )
        })
        .collect();
    let admin = EventPublisher::connect(bench.config.clone()).await.unwrap();
    let settings = TopicSettings {
        partitions: 6,
        replication: 1,
    };
    let specs: Vec<TopicSpec> = types
        .values()
        .map(|t| TopicSpec::new(t.topic().unwrap(), settings))
        .collect();
    admin.ensure_topics(&specs).await.unwrap();

    // Baseline: the same events published directly, no database.
    let direct = events(&types["direct"], count);
    let started = Instant::now();
    for outcome in admin.publish_batch(&direct).await {
        outcome.unwrap();
    }
    report("outbox_baseline_direct_publish", count, started.elapsed());
    admin.disconnect().await;

    bench
        .throughput("outbox_end_to_end_1_relay", &types["outbox1"], count, 1)
        .await;
    bench
        .throughput("outbox_end_to_end_3_relays", &types["outbox3"], count, 3)
        .await;
    bench
        .drain("outbox_relay_drain_1_relay", &types["drain1"], count, 1)
        .await;
    bench
        .drain("outbox_relay_drain_3_relays", &types["drain3"], count, 3)
        .await;

    let notify = RelayConfig::default();
    bench
        .latency(
            "outbox_commit_to_ack_notify",
            &types["latencynotify"],
            300,
            notify,
        )
        .await;
    let polling = RelayConfig::default()
        .listen(false)
        .poll_interval(Duration::from_millis(100));
    bench
        .latency(
            "outbox_commit_to_ack_poll_100ms",
            &types["latencypoll"],
            150,
            polling,
        )
        .await;

    bench.pool.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Acknowledgements counted across relays, and a wake-up once `count`.
type Acked = Arc<(AtomicUsize, Notify)>;

/// A relay configuration that counts into `acked`.
fn counting(acked: &Acked, count: usize) -> RelayConfig {
    let acked = Arc::clone(acked);
    RelayConfig::default().on_acknowledged(move |batch| {
        if acked.0.fetch_add(batch.len(), Ordering::SeqCst) + batch.len() >= count {
            acked.1.notify_one();
        }
    })
}

impl Bench {
    /// From the first enqueue to the broker's acknowledgement of the last
    /// event: `WRITERS` tasks commit transactions of `PER_TRANSACTION`
    /// events while `relays` relays publish them.
    async fn throughput(&self, name: &str, event_type: &EventType, count: usize, relays: usize) {
        let acked: Acked = Arc::default();
        let mut running = Vec::new();
        for _ in 0..relays {
            let config = counting(&acked, count);
            let publisher = EventPublisher::connect(self.config.clone()).await.unwrap();
            running.push(OutboxRelay::new(self.outbox.clone(), self.pool.clone(), publisher, config).start());
        }
        let all = Arc::new(events(event_type, count));
        let done = acked.1.notified();
        let started = Instant::now();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (all, pool, outbox) = (Arc::clone(&all), self.pool.clone(), self.outbox.clone());
            writers.push(tokio::spawn(async move {
                for chunk in all.chunks(PER_TRANSACTION).skip(w).step_by(WRITERS) {
                    let mut tx = pool.begin().await.unwrap();
                    outbox.enqueue(&mut tx, chunk).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let enqueued = started.elapsed();
        done.await;
        report(name, count, started.elapsed());
        report(&format!("{name}_enqueue_only"), count, enqueued);
        for relay in running {
            relay.shutdown().await;
        }
    }

    /// The relays alone: the outbox is filled first, then `relays` relays
    /// start and the clock runs until the last acknowledgement.
    async fn drain(&self, name: &str, event_type: &EventType, count: usize, relays: usize) {
        for chunk in events(event_type, count).chunks(500) {
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox.enqueue(&mut tx, chunk).await.unwrap();
            tx.commit().await.unwrap();
        }
        let acked: Acked = Arc::default();
        let mut publishers = Vec::new();
        for _ in 0..relays {
            publishers.push(EventPublisher::connect(self.config.clone()).await.unwrap());
        }
        let done = acked.1.notified();
        let started = Instant::now();
        let mut running = Vec::new();
        for publisher in publishers {
            let config = counting(&acked, count);
            running.push(OutboxRelay::new(self.outbox.clone(), self.pool.clone(), publisher, config).start());
        }
        done.await;
        report(name, count, started.elapsed());
        for relay in running {
            relay.shutdown().await;
        }
    }

    /// One event per transaction, the next once the previous was
    /// acknowledged: the time from `COMMIT` returning to the broker's
    /// acknowledgement reaching the relay.
    async fn latency(&self, name: &str, event_type: &EventType, samples: usize, config: RelayConfig) {
        let (acks, mut acked) = mpsc::unbounded_channel();
        let config = config.on_acknowledged(move |batch| {
            let now = Instant::now();
            for ack in batch {
                let _ = acks.send((ack.event_id.clone(), now));
            }
        });
        let publisher = EventPublisher::connect(self.config.clone()).await.unwrap();
        let relay = OutboxRelay::new(self.outbox.clone(), self.pool.clone(), publisher, config).start();
        let mut latencies = Vec::with_capacity(samples);
        for event in events(event_type, samples) {
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox
                .enqueue(&mut tx, std::slice::from_ref(&event))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let committed = Instant::now();
            let (id, at) = acked.recv().await.unwrap();
            assert_eq!(&id, event.id());
            latencies.push(at.saturating_duration_since(committed));
        }
        relay.shutdown().await;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_micros();
        println!("LATENCY {name} {} {}", at(0.50), at(0.99));
    }
}
