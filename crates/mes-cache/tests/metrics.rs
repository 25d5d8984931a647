//! The cache's metrics move when the real Redis is used
//! (`MES_TEST_REDIS_URL`; the flush scenario on a `redis-server` of its own,
//! `MES_TEST_REDIS_SERVER_BIN`), seen through `metrics-util`'s debugging
//! recorder, and agree with the cache's own counters.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::near::wait_until;
use common::{Harness, Target, part};
use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use mes_testkit::redis::{RedisBinaries, RedisServer};
use serde_json::Value;

const PREFIX: &str = "mes.cache.prefix";

fn operation<'a>(prefix: &'a str, operation: &'a str) -> [(&'a str, &'a str); 2] {
    [(PREFIX, prefix), ("mes.operation", operation)]
}

#[tokio::test]
async fn reads_writes_and_failures_are_counted_per_prefix() {
    let metrics = mes_testkit::metrics::recorded().await;
    let h = Harness::new(Target::Standalone, "metrics").await;
    let prefix = CacheKeyPrefix::new("metrics_part");
    let other = CacheKeyPrefix::new("metrics_other");
    let ours = [(PREFIX, prefix.as_str())];

    for _ in 0..3 {
        assert_eq!(h.cache.get::<Value>(&prefix, "P-404").await.unwrap(), None);
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.cache.misses", &ours), 3);
    assert_eq!(snapshot.counter("mes.cache.hits", &ours), 0);
    assert_eq!(
        snapshot.samples("mes.cache.operation.duration", &operation(prefix.as_str(), "get")),
        3
    );
    assert_eq!(snapshot.label_names("mes.cache.misses"), [PREFIX]);

    h.cache.set(&prefix, "P-1", &part(1), None).await.unwrap();
    h.cache.set(&other, "P-1", &part(1), None).await.unwrap();
    assert!(h.cache.get::<Value>(&prefix, "P-1").await.unwrap().is_some());
    let found = h
        .cache
        .get_many::<Value, _, _>(&prefix, ["P-1", "P-2"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.cache.hits", &ours), 2);
    assert_eq!(snapshot.counter("mes.cache.misses", &ours), 1);
    assert_eq!(
        snapshot.samples("mes.cache.operation.duration", &operation(prefix.as_str(), "set")),
        1
    );
    assert_eq!(
        snapshot.samples("mes.cache.operation.duration", &operation(other.as_str(), "set")),
        1
    );
    assert_eq!(
        snapshot.samples(
            "mes.cache.operation.duration",
            &operation(prefix.as_str(), "get_many")
        ),
        1
    );
    // No near cache: nothing answered from process memory.
    assert_eq!(snapshot.counter("mes.cache.near.hits", &ours), 0);

    // A value that is not an envelope, written raw: a decode failure and a miss.
    h.raw_set(&h.key(&prefix, "P-corrupt"), "{not json").await;
    assert_eq!(h.cache.get::<Value>(&prefix, "P-corrupt").await.unwrap(), None);
    // A key Redis cannot GET (a list): an error, not a miss.
    h.break_reads(&h.key(&prefix, "P-broken")).await;
    assert!(h.cache.get::<Value>(&prefix, "P-broken").await.is_err());
    h.repair_reads(&h.key(&prefix, "P-broken")).await;
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.cache.decode_failures", &ours), 1);
    assert_eq!(snapshot.counter("mes.cache.misses", &ours), 1);
    assert_eq!(snapshot.counter("mes.cache.errors", &ours), 1);
    assert_eq!(snapshot.counter("mes.cache.hits", &ours), 0);

    let loaded = h
        .cache
        .get_or_load(&prefix, "P-9", || async {
            Ok::<_, std::io::Error>(Some(part(9)))
        })
        .await
        .unwrap();
    assert_eq!(loaded, Some(part(9)));
    assert!(h.cache.invalidate(&prefix, "P-9").await.unwrap());
    assert_eq!(h.cache.invalidate_all(&prefix).await.unwrap(), 1);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.cache.loads", &ours), 1);
    assert_eq!(snapshot.counter("mes.cache.misses", &ours), 1);
    for op in ["get_or_load", "invalidate", "invalidate_all"] {
        assert_eq!(
            snapshot.samples("mes.cache.operation.duration", &operation(prefix.as_str(), op)),
            1,
            "{op}"
        );
    }

    // The metrics and the cache's own counters are one count.
    let counters = h.cache.counters(&prefix);
    assert_eq!(
        (
            counters.hits,
            counters.misses,
            counters.decode_failures,
            counters.errors,
            counters.loads
        ),
        (2, 6, 1, 1, 1)
    );
    h.cleanup().await;
}

#[tokio::test]
async fn near_cache_hits_and_invalidations_are_counted() {
    let metrics = mes_testkit::metrics::recorded().await;
    let h = Harness::near(Target::Standalone, "metrics_near").await;
    let prefix = CacheKeyPrefix::new("metrics_near_part");
    let ours = [(PREFIX, prefix.as_str())];

    h.cache.set(&prefix, "P-1", &part(1), None).await.unwrap();
    h.wrote(1).await;
    assert!(h.read_until_held(&prefix, "P-1").await.is_some());
    drop(metrics.snapshot());
    // Held: the second read is answered from process memory.
    assert!(h.cache.get::<Value>(&prefix, "P-1").await.unwrap().is_some());
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.counter("mes.cache.hits", &ours), 1);
    assert_eq!(snapshot.counter("mes.cache.near.hits", &ours), 1);

    // Another client's write: Redis tells the cache, which drops its copy.
    let before = h.cache.near_cache_stats().unwrap().invalidations;
    h.raw_set(&h.key(&prefix, "P-1"), "{}").await;
    h.wrote(1).await;
    wait_until("the raw write is reported", || {
        !h.cache.near_cache_holds(&prefix, "P-1")
    })
    .await;
    let after = h.cache.near_cache_stats().unwrap().invalidations;
    let snapshot = metrics.snapshot();
    assert!(after > before);
    assert_eq!(
        snapshot.counter("mes.cache.near.invalidations", &[]),
        after - before
    );
    h.cleanup().await;
}

#[tokio::test]
async fn near_cache_flushes_are_counted_by_reason() {
    let metrics = mes_testkit::metrics::recorded().await;
    let server = RedisServer::start(&RedisBinaries::for_tests(), &[]).unwrap();
    let config = CacheConfig::from_url(&server.url())
        .unwrap()
        .near_cache(NearCache::new(100, Duration::from_secs(600)));
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let prefix = CacheKeyPrefix::new("metrics_flush");
    drop(metrics.snapshot());

    server.cli(&["FLUSHALL"]).unwrap();
    wait_until("the flush is reported", || {
        cache.near_cache_stats().unwrap().flushes.server_flush == 1
    })
    .await;
    let snapshot = metrics.snapshot();
    let flushes = |reason| snapshot.counter("mes.cache.near.flushes", &[("mes.reason", reason)]);
    assert_eq!(flushes("server_flush"), 1);
    assert_eq!(flushes("disconnected"), 0);

    // The listening connection is cut: dropped whole, then again once back.
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    wait_until("tracking is back", || {
        let stats = cache.near_cache_stats().unwrap();
        stats.flushes.reconnected >= 1 && stats.tracking
    })
    .await;
    let stats = cache.near_cache_stats().unwrap();
    let snapshot = metrics.snapshot();
    let flushes = |reason| snapshot.counter("mes.cache.near.flushes", &[("mes.reason", reason)]);
    assert_eq!(flushes("disconnected"), stats.flushes.disconnected);
    assert_eq!(flushes("reconnected"), stats.flushes.reconnected);
    assert!(flushes("disconnected") >= 1);
    assert_eq!(flushes("server_flush"), 0);
    let _: Option<Value> = cache.get(&prefix, "P-1").await.unwrap();
    cache.close().await.unwrap();
}
