//! Fault scenario: a Redis Cluster resharded (`redis-cli --cluster reshard`,
//! slots and their keys migrated between the masters) while a cache with
//! the near cache (L1) serves `get_many` batches and writes, and whole
//! prefixes are invalidated over and over. Promised: redirections (`MOVED`,
//! `ASK`) are followed, so no batch answers a wrong value (an entry that
//! exists answered as missing is counted: a miss, which the caller's loader
//! fills); every invalidation removes every entry that existed
//! when it was asked, wherever its slot was moving; once the moves are over
//! the near cache answers what the masters hold.
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

use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use mes_e2e::faults::{ErrorTally, Report, scaled};
use mes_testkit::redis::{RedisBinaries, RedisCluster};
use serde_json::{Value, json};

/// Keys read in one `get_many`.
const BATCH: usize = 20;

#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    /// Entries answered for another id.
    wrong: AtomicU64,
    /// Entries missing from an answer though they exist.
    missing: AtomicU64,
    /// Older than a write acknowledged before the read began (an
    /// invalidation in flight: the near cache's window).
    racing: AtomicU64,
    writes: AtomicU64,
    invalidations: AtomicU64,
    /// Entries still there after an invalidation of their prefix returned.
    left_behind: AtomicU64,
    errors: ErrorTally,
}

fn entry(id: &str, version: u64) -> Value {
    json!({"id": id, "v": version})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_resharded_under_get_many_writes_and_invalidations() {
    let keys: usize = scaled(3_000, 5_000);
    // (from, to, slots) moves, one after the other.
    let moves: Vec<(usize, usize, u32)> = scaled(
        vec![(0, 1, 3_000), (1, 2, 3_000)],
        vec![(0, 1, 3_000), (1, 2, 3_000), (2, 0, 3_000), (0, 2, 3_000)],
    );
    let cluster =
        tokio::task::block_in_place(|| RedisCluster::start(&RedisBinaries::for_tests(), 3).unwrap());
    let url = cluster.url();
    let namespace = format!("faults-{}", ulid::Ulid::new());
    let connect = |near: bool| {
        let config = CacheConfig::from_url(&url)
            .unwrap()
            .namespace(&namespace)
            .command_timeout(Duration::from_secs(2));
        let config = if near {
            config.near_cache(NearCache::new(20_000, Duration::from_secs(60)))
        } else {
            config
        };
        ReferenceDataCache::connect(config)
    };
    let reader = connect(true).await.unwrap();
    let writer = connect(false).await.unwrap();
    let parts = CacheKeyPrefix::new("part");
    let orders = CacheKeyPrefix::new("order");
    let ids: Arc<Vec<String>> = Arc::new((0..keys).map(|k| format!("P-{k}")).collect());
    writer
        .set_many(&parts, ids.iter().map(|id| (id, entry(id, 0))), None)
        .await
        .unwrap();

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let writing = {
        let (writer, parts, ids, acked, stop, counts, gate) = (
            writer.clone(),
            parts.clone(),
            Arc::clone(&ids),
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&counts),
            Arc::clone(&gate),
        );
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let _turn = gate.lock().await;
                let next = acked[k].load(Ordering::SeqCst) + 1;
                match writer.set(&parts, &ids[k], &entry(&ids[k], next), None).await {
                    Ok(()) => {
                        acked[k].store(next, Ordering::SeqCst);
                        counts.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.errors.add(&e);
                    }
                }
                k = (k + 13) % ids.len();
            }
        })
    };
    let readers: Vec<_> = (0..2_usize)
        .map(|r| {
            let (reader, parts, ids, acked, stop, counts) = (
                reader.clone(),
                parts.clone(),
                Arc::clone(&ids),
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&counts),
            );
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(2));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    let batch: Vec<usize> = (0..BATCH)
                        .map(|_| {
                            k = (k * 31 + 17) % ids.len();
                            k
                        })
                        .collect();
                    let floors: Vec<u64> = batch.iter().map(|&k| acked[k].load(Ordering::SeqCst)).collect();
                    let read = reader
                        .get_many::<Value, _, _>(&parts, batch.iter().map(|&k| ids[k].as_str()))
                        .await;
                    match read {
                        Ok(found) => {
                            counts.batches.fetch_add(1, Ordering::Relaxed);
                            for (&k, floor) in batch.iter().zip(floors) {
                                match found.get(&ids[k]) {
                                    Some(value) if value["id"] == ids[k].as_str() => {
                                        if value["v"].as_u64().unwrap() < floor {
                                            counts.racing.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                    Some(_) => {
                                        counts.wrong.fetch_add(1, Ordering::Relaxed);
                                    }
                                    None => {
                                        counts.missing.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            counts.errors.add(&e);
                        }
                    }
                }
            })
        })
        .collect();
    // Another prefix written and invalidated whole, over and over: after
    // each invalidation none of what was written before it may be left.
    let invalidating = {
        let (writer, orders, stop, counts) = (
            writer.clone(),
            orders.clone(),
            Arc::clone(&stop),
            Arc::clone(&counts),
        );
        tokio::spawn(async move {
            let order_ids: Vec<String> = (0..500).map(|k| format!("O-{k}")).collect();
            let mut round = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                if let Err(e) = writer
                    .set_many(&orders, order_ids.iter().map(|id| (id, entry(id, round))), None)
                    .await
                {
                    counts.errors.add(&e);
                    continue;
                }
                match writer.invalidate_all(&orders).await {
                    Ok(_) => {
                        counts.invalidations.fetch_add(1, Ordering::Relaxed);
                        // Checked by a read (3 tries: a read may fail too).
                        for _ in 0..3 {
                            match writer.get_many::<Value, _, _>(&orders, &order_ids).await {
                                Ok(left) => {
                                    counts.left_behind.fetch_add(left.len() as u64, Ordering::Relaxed);
                                    break;
                                }
                                Err(e) => {
                                    counts.errors.add(&e);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        counts.errors.add(&e);
                    }
                }
            }
        })
    };

    // The moves, one after the other, while the load runs.
    let started = Instant::now();
    let cluster = Arc::new(cluster);
    let moved = {
        let (cluster, moves) = (Arc::clone(&cluster), moves.clone());
        tokio::task::spawn_blocking(move || {
            for (from, to, slots) in moves {
                cluster.reshard(from, to, slots).unwrap();
            }
        })
    };
    moved.await.unwrap();
    let reshard_time = started.elapsed();
    let batches_during = counts.batches.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    for reading in readers {
        reading.await.unwrap();
    }
    invalidating.await.unwrap();

    // Settled: with the writer held, L1 against the masters.
    let differing = {
        let _held = gate.lock().await;
        common::fence_near_cache(&reader, &writer, &parts).await;
        let masters = writer.get_many::<Value, _, _>(&parts, ids.iter()).await.unwrap();
        let mut differing = 0_u64;
        for id in ids.iter() {
            // A read that fails is counted and made again (3 tries).
            let mut tries = 0;
            let read = loop {
                match reader.get::<Value>(&parts, id).await {
                    Ok(read) => break read,
                    Err(e) if tries < 3 => {
                        tries += 1;
                        counts.errors.add(&e);
                    }
                    Err(e) => panic!("{id} cannot be read after the moves: {e}"),
                }
            };
            if read.as_ref() != masters.get(id) {
                differing += 1;
            }
        }
        differing
    };

    let near = reader.near_cache_stats().unwrap();
    let slots_moved: u32 = moves.iter().map(|(_, _, slots)| slots).sum();
    let mut report = Report::new(
        "redis_cluster_reshard",
        format!(
            "{} reshards of a 3-master Cluster, {slots_moved} slots and their keys moved (MIGRATE) in {:.1} s",
            moves.len(),
            reshard_time.as_secs_f64()
        ),
        format!(
            "2 readers with L1, get_many of {BATCH} over {keys} keys ({:.0} batches/s), 1 writer ({:.0} writes/s), a prefix of 500 entries written and invalidated whole in a loop",
            batches_during as f64 / reshard_time.as_secs_f64(),
            counts.writes.load(Ordering::Relaxed) as f64 / reshard_time.as_secs_f64()
        ),
    );
    let invalidations = counts.invalidations.load(Ordering::Relaxed);
    report
        .none("entries answered for another id", counts.wrong.load(Ordering::Relaxed))
        .none(
            "entries left after their prefix's invalidation returned",
            counts.left_behind.load(Ordering::Relaxed),
        )
        .none("L1 reads differing from the masters once the moves were over", differing)
        .check(
            "invalidations completed during the moves",
            "> 0",
            json!(invalidations),
            invalidations > 0,
        )
        .figure("reads_racing_an_invalidation", counts.racing.load(Ordering::Relaxed))
        .figure("reader_decode_failures", reader.counters(&parts).decode_failures)
        // fred's own ASK handling answered a read with the reply meant for
        // the next command: here, about 1 in 100,000 entries read as
        // missing (the cache followed its redirections since).
        .none(
            "entries answered missing though they exist",
            counts.missing.load(Ordering::Relaxed),
        )
        .figure("typed_errors", counts.errors.to_json())
        .figure(
            "near_cache",
            json!({"hits": near.hits, "invalidations": near.invalidations, "flushes": format!("{:?}", near.flushes)}),
        );
    println!("{:#}", report.to_json());
    report.finish();
}
