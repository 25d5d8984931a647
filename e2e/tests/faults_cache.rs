//! Fault scenario: a cache client with the near cache (L1) whose link to
//! Redis is slowed, cut and blackholed while readers and a writer (another
//! service, on its own link) keep going. Promised: a slow link fails nothing;
//! a cut or a blackhole fails reads with typed errors, never a panic; once the
//! link heals no L1 entry older than the last write is served.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use mes_e2e::faults::{ErrorTally, Report, scaled};
use mes_testkit::fault_proxy::{Fault, FaultProxy};
use serde_json::{Value, json};

/// The phases, in order: what the link does during each.
const PHASES: [(&str, Option<Fault>); 7] = [
    ("steady", None),
    ("slowed", Some(Fault::Delay(Duration::from_millis(20)))),
    ("steady after slow", None),
    ("cut", Some(Fault::Cut)),
    ("after cut", None),
    ("blackholed", Some(Fault::Blackhole)),
    ("after blackhole", None),
];

/// How long a test waits for a condition that must come true.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct PhaseCounts {
    reads: AtomicU64,
    stale: AtomicU64,
    errors: ErrorTally,
}

fn version(value: &Value) -> u64 {
    value["v"].as_u64().unwrap()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "{what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_with_near_cache_through_a_slowed_cut_and_blackholed_link() {
    let keys: usize = scaled(100, 1_000);
    let phase_length = scaled(Duration::from_millis(1_500), Duration::from_secs(10));
    let heartbeat = Duration::from_millis(500);

    let redis_url = mes_testkit::redis_url();
    let (proxy, through_proxy) = FaultProxy::in_front_of(&redis_url).unwrap();
    let namespace = format!("faults-{}", ulid::Ulid::new());
    let reader = ReferenceDataCache::connect(
        CacheConfig::from_url(&through_proxy)
            .unwrap()
            .namespace(&namespace)
            .command_timeout(Duration::from_secs(1))
            .near_cache(NearCache::new(10_000, Duration::from_secs(60)).heartbeat(heartbeat)),
    )
    .await
    .unwrap();
    let writer =
        ReferenceDataCache::connect(CacheConfig::from_url(&redis_url).unwrap().namespace(&namespace))
            .await
            .unwrap();
    let prefix = CacheKeyPrefix::new("part");
    let ids: Arc<Vec<String>> = Arc::new((0..keys).map(|k| format!("P-{k}")).collect());
    for id in ids.iter() {
        writer.set(&prefix, id, &json!({"v": 0}), None).await.unwrap();
    }

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let phases: Arc<Vec<PhaseCounts>> = Arc::new(PHASES.iter().map(|_| PhaseCounts::default()).collect());
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));

    // The writer: another service updating the entries, on a healthy link,
    // paced so the readers get the CPU.
    let writing = {
        let (writer, prefix, ids, acked, stop, writes) = (
            writer.clone(),
            prefix.clone(),
            Arc::clone(&ids),
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&writes),
        );
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let next = acked[k].load(Ordering::Relaxed) + 1;
                writer
                    .set(&prefix, &ids[k], &json!({"v": next}), None)
                    .await
                    .unwrap();
                acked[k].store(next, Ordering::Relaxed);
                writes.fetch_add(1, Ordering::Relaxed);
                k = (k + 7) % ids.len();
            }
        })
    };
    let readers: Vec<_> = (0..2_usize)
        .map(|r| {
            let (reader, prefix, ids, acked, stop, phases, phase) = (
                reader.clone(),
                prefix.clone(),
                Arc::clone(&ids),
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&phases),
                Arc::clone(&phase),
            );
            tokio::spawn(async move {
                // Paced like a service's request handlers, not a spin on L1.
                let mut pace = tokio::time::interval(Duration::from_micros(500));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    k = (k * 31 + 17) % ids.len();
                    let floor = acked[k].load(Ordering::Relaxed);
                    let read = reader.get::<Value>(&prefix, &ids[k]).await;
                    // Counted in the phase the answer came in.
                    let counts = &phases[phase.load(Ordering::Relaxed)];
                    match read {
                        Ok(Some(value)) => {
                            counts.reads.fetch_add(1, Ordering::Relaxed);
                            if version(&value) < floor {
                                counts.stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => panic!("{} vanished", ids[k]),
                        Err(e) => {
                            counts.errors.add(&e);
                        }
                    }
                }
            })
        })
        .collect();

    let mut recovery = serde_json::Map::new();
    for (index, (name, fault)) in PHASES.iter().enumerate() {
        phase.store(index, Ordering::Relaxed);
        match fault {
            Some(fault) => proxy.set(*fault),
            None => {
                let healed_from = proxy.fault();
                proxy.heal();
                if healed_from != Fault::None {
                    // Time until the link serves Redis round trips again, and
                    // until the near cache tracks (and may keep entries) again.
                    let reader = reader.clone();
                    let answering = wait_until("Redis answers through the healed link", || {
                        let reader = reader.clone();
                        async move { reader.health_check().await.is_ok() }
                    })
                    .await;
                    let tracking = wait_until("tracking back on", || {
                        let on = reader.near_cache_stats().unwrap().tracking;
                        async move { on }
                    })
                    .await;
                    recovery.insert(
                        (*name).to_owned(),
                        json!({"redis_ms": answering.as_millis(), "tracking_ms": tracking.as_millis()}),
                    );
                }
            }
        }
        tokio::time::sleep(phase_length).await;
    }
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    for reading in readers {
        reading.await.unwrap();
    }

    common::fence_near_cache(&reader, &writer, &prefix).await;
    let mut stale_after_heal = 0;
    for (k, id) in ids.iter().enumerate() {
        let read = reader.get::<Value>(&prefix, id).await.unwrap().unwrap();
        if version(&read) != acked[k].load(Ordering::Relaxed) {
            stale_after_heal += 1;
        }
    }

    let near = reader.near_cache_stats().unwrap();
    let mut per_phase = serde_json::Map::new();
    for ((name, _), counts) in PHASES.iter().zip(phases.iter()) {
        let reads = counts.reads.load(Ordering::Relaxed);
        per_phase.insert(
            (*name).to_owned(),
            json!({
                "reads_per_s": (reads as f64 / phase_length.as_secs_f64()).round(),
                "stale_reads": counts.stale.load(Ordering::Relaxed),
                "typed_errors": counts.errors.to_json(),
            }),
        );
    }
    let slowed_errors = phases[1].errors.total();
    let cut_errors = phases[3].errors.total();
    let mut report = Report::new(
        "cache_link_slowed_cut_blackholed",
        format!(
            "cache client <-> Redis: +20 ms per chunk each way, then cut (RST), then blackholed, {} s each",
            phase_length.as_secs_f64()
        ),
        format!(
            "2 readers with L1 over {keys} keys, 1 writer on its own link ({:.0} writes/s)",
            writes.load(Ordering::Relaxed) as f64 / (phase_length.as_secs_f64() * PHASES.len() as f64)
        ),
    );
    report
        .none("stale L1 reads after the link healed", stale_after_heal)
        .none("failed reads while only slowed", slowed_errors)
        .check(
            "reads failed with a typed error while cut",
            "> 0",
            json!(cut_errors),
            cut_errors > 0,
        )
        .figure("phases", Value::Object(per_phase))
        .figure("recovery", Value::Object(recovery))
        .figure(
            "near_cache",
            json!({"hits": near.hits, "invalidations": near.invalidations, "flushes": format!("{:?}", near.flushes)}),
        );
    println!("{:#}", report.to_json());
    writer.invalidate_all(&prefix).await.unwrap();
    report.finish();
}
