//! Redis going away and coming back: reads fail with an error (never a
//! miss), `get_or_load` falls back to its loader, and the cache works again
//! once the server is back, without being rebuilt. The test runs its own
//! `redis-server` (the binary `cargo xtask test` names in
//! `MES_TEST_REDIS_SERVER_BIN`), since it has to stop and restart it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

mod common;

use mes_cache::{CacheConfig, CacheKeyPrefix, Error, ReconnectPolicy, ReferenceDataCache};
use mes_testkit::redis::{RedisBinaries, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_an_error_and_the_cache_recovers() {
    let mut server = RedisServer::start(&RedisBinaries::for_tests(), &[]).unwrap();
    let config = CacheConfig::from_url(&server.url())
        .unwrap()
        .namespace("mes:test:outage")
        .command_timeout(Duration::from_millis(500))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        });
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let part = CacheKeyPrefix::Part;
    cache.set(&part, "P-1", &"strut", None).await.unwrap();
    assert_eq!(
        cache.get::<String>(&part, "P-1").await.unwrap().as_deref(),
        Some("strut")
    );

    server.kill();
    let read = cache.get::<String>(&part, "P-1").await;
    assert!(
        matches!(read, Err(Error::Redis { .. })),
        "a read during an outage is an error: {read:?}"
    );
    assert!(cache.health_check().await.is_err());
    let loaded = cache
        .get_or_load(&part, "P-1", || async {
            Ok::<_, Error>(Some("from the database".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(loaded.as_deref(), Some("from the database"));
    let counters = cache.counters(&part);
    assert!(counters.errors >= 2, "{counters:?}");
    assert_eq!(counters.loader_fallbacks, 1);

    server.restart().unwrap();
    // The client reconnects by itself; wait for it (bounded, each failing
    // attempt ends at the command timeout).
    let mut healthy = false;
    for _ in 0..40 {
        if cache.health_check().await.is_ok() {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "the cache did not reconnect");
    // The restarted server is empty (no persistence): a miss, then usable.
    assert_eq!(cache.get::<String>(&part, "P-1").await.unwrap(), None);
    cache.set(&part, "P-1", &"strut", None).await.unwrap();
    assert_eq!(
        cache.get::<String>(&part, "P-1").await.unwrap().as_deref(),
        Some("strut")
    );
    cache.close().await.unwrap();
}
