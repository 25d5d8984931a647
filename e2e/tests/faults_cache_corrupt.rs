//! Fault scenario: corrupt cache values at load. While a service reads its
//! reference data through `get_or_load` with the near cache (L1) on,
//! another writer keeps spoiling about 1 % of the entries: bytes that are no
//! JSON, JSON that is no cache envelope, an envelope whose data has the
//! wrong shape, a truncated envelope. Promised:
//! no read answers a wrong value; a spoiled entry is a counted miss that the
//! loader fills again (the database is the truth), never a panic; once the
//! spoiling stops, one read of each key leaves every entry good. (A key of
//! another Redis type is a read error, not a miss, by design: the loader
//! answers and nothing is cached over it; `errors_are_not_misses` in the
//! mes-cache suites.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface};
use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use mes_e2e::faults::{ErrorTally, Report, scaled};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the service caches, and what its database holds for an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Part {
    id: String,
    revision: u32,
}

fn in_database(id: &str) -> Part {
    Part {
        id: id.to_owned(),
        revision: 7,
    }
}

/// The kinds of spoiled values, in turn.
const SPOILS: [&str; 4] = ["not json", "not an envelope", "wrong shape", "truncated"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_values_at_load() {
    let keys: usize = scaled(500, 2_000);
    let length = scaled(Duration::from_secs(3), Duration::from_secs(20));
    let namespace = format!("faults-{}", ulid::Ulid::new());
    let config = CacheConfig::from_url(&mes_testkit::redis_url())
        .unwrap()
        .namespace(&namespace);
    let cache = ReferenceDataCache::connect(
        config
            .clone()
            .near_cache(NearCache::new(10_000, Duration::from_secs(60))),
    )
    .await
    .unwrap();
    let prefix = CacheKeyPrefix::new("part");
    let ids: Arc<Vec<String>> = Arc::new((0..keys).map(|k| format!("P-{k}")).collect());
    for id in ids.iter() {
        cache.set(&prefix, id, &in_database(id), None).await.unwrap();
    }
    let raw = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&mes_testkit::redis_url()).unwrap(),
    )
    .build()
    .unwrap();
    raw.init().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let errors: Arc<ErrorTally> = Arc::default();
    let loads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2_usize)
        .map(|r| {
            let (cache, prefix, ids, stop, reads, wrong, errors, loads) = (
                cache.clone(),
                prefix.clone(),
                Arc::clone(&ids),
                Arc::clone(&stop),
                Arc::clone(&reads),
                Arc::clone(&wrong),
                Arc::clone(&errors),
                Arc::clone(&loads),
            );
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_micros(500));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    k = (k * 31 + 17) % ids.len();
                    let id = ids[k].as_str();
                    let loads = &loads;
                    let read = cache
                        .get_or_load(&prefix, id, || async move {
                            loads.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(Some(in_database(id)))
                        })
                        .await;
                    reads.fetch_add(1, Ordering::Relaxed);
                    match read {
                        Ok(Some(part)) if part == in_database(&ids[k]) => {}
                        Ok(_) => {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.add(&e);
                        }
                    }
                }
            })
        })
        .collect();

    // The spoiler: another writer, about one entry per 100 reads.
    let started = Instant::now();
    let mut spoiled = 0_u64;
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut k = 0;
    while started.elapsed() < length {
        pace.tick().await;
        k = (k * 17 + 11) % ids.len();
        let key = cache.key(&prefix, &ids[k]);
        let kind = SPOILS[usize::try_from(spoiled).unwrap() % SPOILS.len()];
        let _: i64 = raw.del(&key).await.unwrap();
        match kind {
            "not json" => raw
                .set::<(), _, _>(&key, &b"\xff\xfe{{{"[..], None, None, false)
                .await
                .unwrap(),
            "not an envelope" => raw
                .set::<(), _, _>(&key, r#"{"foo":1}"#, None, None, false)
                .await
                .unwrap(),
            "wrong shape" => {
                let envelope = json!({"data": "not a part", "cachedAt": 0, "ttl": 3600});
                raw.set::<(), _, _>(&key, envelope.to_string(), None, None, false)
                    .await
                    .unwrap();
            }
            _ => {
                let envelope = json!({"data": in_database(&ids[k]), "cachedAt": 0, "ttl": 3600}).to_string();
                raw.set::<(), _, _>(&key, &envelope[..envelope.len() / 2], None, None, false)
                    .await
                    .unwrap();
            }
        }
        spoiled += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for reading in readers {
        reading.await.unwrap();
    }
    let elapsed = started.elapsed();

    // One read of each key, then what Redis holds.
    let mut left_spoiled = 0_u64;
    for id in ids.iter() {
        let part = cache
            .get_or_load(&prefix, id, || async {
                Ok::<_, std::convert::Infallible>(Some(in_database(id)))
            })
            .await;
        let good = matches!(&part, Ok(Some(p)) if *p == in_database(id));
        let stored = cache.get::<Part>(&prefix, id).await;
        if !good || !matches!(&stored, Ok(Some(p)) if *p == in_database(id)) {
            left_spoiled += 1;
        }
    }
    let counters = cache.counters(&prefix);
    let mut report = Report::new(
        "cache_corrupt_values_at_load",
        format!(
            "another writer spoils an entry every 50 ms ({spoiled} in all): {}",
            SPOILS.join(", ")
        ),
        format!(
            "2 readers, get_or_load with L1 over {keys} keys, {:.0} reads/s",
            reads.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        ),
    );
    report
        .none("reads answering a wrong value", wrong.load(Ordering::Relaxed))
        .none("entries still spoiled after one read of each", left_spoiled)
        .figure("typed_errors", errors.to_json())
        .figure("decode_failures", counters.decode_failures)
        .figure("loader_fallbacks", counters.loader_fallbacks)
        .figure("loads", loads.load(Ordering::Relaxed));
    println!("{:#}", report.to_json());
    cache.clear_all().await.unwrap();
    report.finish();
}
