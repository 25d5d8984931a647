//! The near cache through faults, on `redis-server` processes of the
//! test's own (the binary `cargo xtask test` names in
//! `MES_TEST_REDIS_SERVER_BIN`), since they flush, kill connections, stop
//! servers and fail a master over: `FLUSHALL`/`FLUSHDB` empty it, a lost
//! invalidation connection empties it and tracking comes back with the
//! connection, after a Sentinel failover no old value is served (also when
//! the old master stays up and is never demoted), after a
//! Cluster failover the listeners follow the new primary, and a listener
//! that stops answering (`CLIENT PAUSE`) is noticed by its heartbeat.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::near::{PATIENCE, envelope, wait_until};
use common::{Part, part};
use mes_cache::{CacheConfig, CacheKeyPrefix, Clock, NearCacheStats, ReconnectPolicy, ReferenceDataCache};
use mes_testkit::redis::{RedisBinaries, RedisCluster, RedisServer};

/// A `redis-server` of this test with `args`, killed on drop.
fn server(args: &[&str]) -> RedisServer {
    RedisServer::start(&RedisBinaries::for_tests(), args).unwrap()
}

async fn near_cache(url: &str) -> ReferenceDataCache {
    let config = CacheConfig::from_url(url)
        .unwrap()
        .namespace("mes:test:near-faults")
        .command_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        })
        .near_cache(common::near_settings());
    ReferenceDataCache::connect(config).await.unwrap()
}

fn stats(cache: &ReferenceDataCache) -> NearCacheStats {
    cache.near_cache_stats().unwrap()
}

/// Reads `id` until the near cache keeps it (see `Harness::read_until_held`).
async fn read_until_held(cache: &ReferenceDataCache, id: &str) -> Option<Part> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = cache.get::<Part>(&CacheKeyPrefix::Part, id).await;
        if let Ok(value) = value
            && cache.near_cache_holds(&CacheKeyPrefix::Part, id)
        {
            return value;
        }
        assert!(Instant::now() < deadline, "the near cache never kept {id}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until `get` answers `expected` (errors while a server is away
/// count as not yet).
async fn read_until(cache: &ReferenceDataCache, id: &str, expected: Option<&Part>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(value) = cache.get::<Part>(&CacheKeyPrefix::Part, id).await
            && value.as_ref() == expected
        {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never read {expected:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn legacy_setex(server: &RedisServer, cache: &ReferenceDataCache, id: &str, value: &Part) {
    let key = cache.key(&CacheKeyPrefix::Part, id);
    let now = mes_cache::SystemClock.now_ms();
    server
        .cli(&["SETEX", &key, "300", &envelope(value, now, 300)])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_flushdb_empty_the_near_cache() {
    let server = server(&[]);
    let cache = near_cache(&server.url()).await;
    let parts = cache.typed::<Part>();
    for flush in ["FLUSHALL", "FLUSHDB"] {
        for i in 0..3 {
            parts.set(&format!("P-{i}"), &part(i), None).await.unwrap();
            read_until_held(&cache, &format!("P-{i}")).await;
        }
        let flushes = stats(&cache).flushes.server_flush;
        server.cli(&[flush]).unwrap();
        // fred 10.1 drops this message when it comes as a RESP3 push; the
        // listener's RESP2 subscription gets it.
        wait_until("the flush is reported", || {
            stats(&cache).flushes.server_flush > flushes
        })
        .await;
        for i in 0..3 {
            assert!(
                !cache.near_cache_holds(&CacheKeyPrefix::Part, &format!("P-{i}")),
                "{flush}"
            );
            assert_eq!(parts.get(&format!("P-{i}")).await.unwrap(), None, "{flush}");
        }
        assert_eq!(stats(&cache).entries, 0);
    }
    // Tracking survives a flush: a later write by another client still
    // drops the local copy.
    parts.set("P-9", &part(9), None).await.unwrap();
    read_until_held(&cache, "P-9").await;
    legacy_setex(&server, &cache, "P-9", &part(90));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-9")
    })
    .await;
    assert_eq!(parts.get("P-9").await.unwrap(), Some(part(90)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_connection_empties_the_near_cache_and_tracking_comes_back() {
    let server = server(&[]);
    let cache = near_cache(&server.url()).await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;
    assert!(stats(&cache).tracking);

    // The listener is the only Pub/Sub connection: kill it.
    let before = stats(&cache).flushes;
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    wait_until("the near cache is emptied", || {
        let now = stats(&cache).flushes;
        now.disconnected + now.reconnected > before.disconnected + before.reconnected
    })
    .await;
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));

    // Tracking is on again on the new connection: a write by another
    // client drops what is read after the reconnection.
    read_until_held(&cache, "P-1").await;
    legacy_setex(&server, &cache, "P-1", &part(10));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(10)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_empties_the_near_cache_and_tracking_comes_back() {
    let mut server = server(&[]);
    let cache = near_cache(&server.url()).await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;

    server.kill();
    wait_until("tracking is off", || !stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));
    assert!(
        parts.get("P-1").await.is_err(),
        "a read while Redis is away is an error"
    );

    server.restart().unwrap();
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    // The restarted server is empty; what is written and read now is kept,
    // and dropped again on another client's write.
    read_until(&cache, "P-1", None).await;
    parts.set("P-1", &part(2), None).await.unwrap();
    assert_eq!(read_until_held(&cache, "P-1").await, Some(part(2)));
    legacy_setex(&server, &cache, "P-1", &part(3));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(3)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_no_old_value_is_served() {
    let master = server(&[]);
    let replica = RedisServer::start_replica_of(&master, &[]).unwrap();
    let sentinel = RedisServer::start_sentinel(&master, "mymaster", Duration::from_secs(5), 1).unwrap();
    let sentinel_port = sentinel.port();

    let cache = near_cache(&format!(
        "redis-sentinel://127.0.0.1:{sentinel_port}?sentinelServiceName=mymaster"
    ))
    .await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;
    let before = stats(&cache).flushes;

    sentinel.switch_over("mymaster", &replica).unwrap();
    // The new master gets a new value from another client.
    legacy_setex(&replica, &cache, "P-1", &part(2));
    read_until(&cache, "P-1", Some(&part(2))).await;
    let after = stats(&cache).flushes;
    // Moved by the watch of the Sentinels (topology) or by the demotion
    // closing the connections (disconnected), whichever came first.
    let moves = |f: &mes_cache::NearCacheFlushes| f.disconnected + f.reconnected + f.topology_changed;
    assert!(
        moves(&after) > moves(&before),
        "the near cache was emptied when the connection moved: {after:?}"
    );
    // From now on only the new value, and tracking works on the new master.
    for _ in 0..50 {
        assert_eq!(parts.get("P-1").await.unwrap(), Some(part(2)));
    }
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    read_until_held(&cache, "P-1").await;
    legacy_setex(&replica, &cache, "P-1", &part(3));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(3)));
    cache.close().await.unwrap();
}

/// A switchover whose old master is never demoted (the Sentinel cannot
/// reconfigure it: its `REPLICAOF` is renamed away), so nothing breaks the
/// connections to it: the cache must still move to the master the
/// Sentinels name, reads, writes and near cache alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_switchover_that_leaves_the_old_master_up_the_cache_follows_the_new_one() {
    let master = server(&[
        "--rename-command",
        "REPLICAOF",
        "",
        "--rename-command",
        "SLAVEOF",
        "",
    ]);
    let replica = RedisServer::start_replica_of(&master, &[]).unwrap();
    let sentinel = RedisServer::start_sentinel(&master, "mymaster", Duration::from_secs(5), 1).unwrap();
    let config = CacheConfig::from_url(&format!(
        "redis-sentinel://127.0.0.1:{}?sentinelServiceName=mymaster",
        sentinel.port()
    ))
    .unwrap()
    .namespace("mes:test:near-faults")
    .command_timeout(Duration::from_secs(2))
    .master_check_interval(Duration::from_millis(100))
    .near_cache(common::near_settings());
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;
    let before = stats(&cache).flushes;

    sentinel.switch_over("mymaster", &replica).unwrap();
    // Two masters now, and the old one stays so.
    assert!(master.cli(&["ROLE"]).unwrap().starts_with("master"));

    // A write to the new master reaches the near cache.
    legacy_setex(&replica, &cache, "P-1", &part(2));
    read_until(&cache, "P-1", Some(&part(2))).await;
    assert!(
        stats(&cache).flushes.topology_changed > before.topology_changed,
        "the near cache was emptied when the pool moved: {:?}",
        stats(&cache).flushes
    );
    // The cache's own writes go to the new master, not the old one.
    parts.set("P-2", &part(7), None).await.unwrap();
    let key = cache.key(&CacheKeyPrefix::Part, "P-2");
    assert!(replica.cli(&["EXISTS", &key]).unwrap().starts_with('1'));
    assert!(master.cli(&["EXISTS", &key]).unwrap().starts_with('0'));
    // And the near cache hears the new master's writes from now on.
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    read_until_held(&cache, "P-1").await;
    legacy_setex(&replica, &cache, "P-1", &part(3));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(3)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_the_listeners_follow_the_new_primary() {
    let mut cluster = RedisCluster::start(&RedisBinaries::for_tests(), 3).unwrap();
    let url = cluster.url();
    // A replica of the first master (slots 0-5460).
    let replica = cluster.add_replica(0).unwrap();
    let replica = &cluster.nodes[replica];

    let cache = near_cache(&url).await;
    let parts = cache.typed::<Part>();
    // An id whose key lives on the first master.
    let id = (0..)
        .map(|i| format!("P-{i}"))
        .find(|id| fred::util::redis_keyslot(cache.key(&CacheKeyPrefix::Part, id).as_bytes()) <= 5460)
        .unwrap();
    let key = cache.key(&CacheKeyPrefix::Part, &id);
    parts.set(&id, &part(1), None).await.unwrap();
    wait_until("our write is reported back", || stats(&cache).invalidations >= 1).await;
    read_until_held(&cache, &id).await;

    replica.cli(&["CLUSTER", "FAILOVER"]).unwrap();
    replica.wait_for(&["ROLE"], "master").unwrap();
    let write = |value: &Part| {
        let envelope = envelope(value, mes_cache::SystemClock.now_ms(), 300);
        replica.cli(&["-c", "SETEX", &key, "300", &envelope]).unwrap();
    };
    write(&part(2));
    // The new value is read, and the listeners follow the new primary.
    read_until(&cache, &id, Some(&part(2))).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = stats(&cache);
        if now.flushes.topology_changed >= 1 && now.tracking {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topology is not followed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        assert_eq!(parts.get(&id).await.unwrap(), Some(part(2)));
    }
    read_until_held(&cache, &id).await;
    write(&part(3));
    wait_until("the new primary's write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, &id)
    })
    .await;
    assert_eq!(parts.get(&id).await.unwrap(), Some(part(3)));
    // One rebuild per change of the primaries (a pool connection that
    // learns of the change late reports it again: nothing to redo).
    let flushes = stats(&cache).flushes.topology_changed;
    assert!(flushes <= 2, "the listeners settled: {flushes} topology flushes");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswering_listener_connection_empties_the_near_cache() {
    let server = server(&[]);
    let config = CacheConfig::from_url(&server.url())
        .unwrap()
        .namespace("mes:test:near-faults")
        .command_timeout(Duration::from_millis(300))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        })
        .near_cache(common::near_settings().heartbeat(Duration::from_millis(50)));
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    wait_until("our write is reported back", || stats(&cache).invalidations >= 1).await;
    read_until_held(&cache, "P-1").await;

    // The server stops answering anyone for a while, connections open (as
    // behind a silent network cut): the heartbeat notices.
    server.cli(&["CLIENT", "PAUSE", "2000", "ALL"]).unwrap();
    wait_until("tracking is off", || !stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));
    assert!(stats(&cache).flushes.disconnected >= 1);

    // Once it answers again, tracking comes back and works.
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    read_until_held(&cache, "P-1").await;
    legacy_setex(&server, &cache, "P-1", &part(2));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(2)));
    cache.close().await.unwrap();
}
