//! Near-cache (L1) scenarios, run against every Redis deployment: hits
//! served locally, writes by a plain client (`redis-cli`, like the
//! TypeScript services' ioredis `SETEX`/`DEL`) dropping local copies, the
//! library's own invalidations at once, the expiry rules, and the read
//! race.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, ClusterInterface, KeysInterface};
use mes_cache::{CacheKeyPrefix, Clock};

use super::{Harness, Part, Target, part, url};

/// How long a scenario waits for something Redis makes happen (an
/// invalidation message, a reconnection) before failing.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Waits until `condition` holds, checking every few milliseconds; fails
/// after [`PATIENCE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `host` and `port` of a `redis…://[user@]host:port[/…][?…]` URL.
pub fn host_port(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.to_owned())
}

pub fn redis_cli() -> String {
    std::env::var("MES_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// Runs `redis-cli` with `args`; its standard output. Fails the test when
/// it fails.
pub fn cli(args: &[String]) -> String {
    let output = Command::new(redis_cli())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs (set MES_REDIS_CLI to its path)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !text.starts_with("ERR"),
        "redis-cli {args:?}: {text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// The connection arguments of `redis-cli` for a target: `-c` on a
/// cluster, the master's address behind a Sentinel, `--tls` with the CA.
pub fn cli_target(target: Target) -> Vec<String> {
    let url = url(target).expect("a Redis target");
    let (host, port) = host_port(&url);
    let mut args = vec!["-h".to_owned(), host.clone(), "-p".to_owned(), port.clone()];
    match target {
        Target::Cluster => args.push("-c".to_owned()),
        Target::Sentinel => {
            let service = url
                .split("sentinelServiceName=")
                .nth(1)
                .and_then(|rest| rest.split('&').next())
                .unwrap_or("mymaster")
                .to_owned();
            let master = cli(&[
                "-h".to_owned(),
                host,
                "-p".to_owned(),
                port,
                "SENTINEL".to_owned(),
                "get-master-addr-by-name".to_owned(),
                service,
            ]);
            let mut lines = master.lines();
            let (host, port) = (lines.next().unwrap(), lines.next().unwrap());
            args = vec!["-h".to_owned(), host.to_owned(), "-p".to_owned(), port.to_owned()];
        }
        Target::Tls => {
            args.push("--tls".to_owned());
            if let Ok(ca) = std::env::var("MES_TEST_REDIS_TLS_CA")
                && !ca.is_empty()
            {
                args.push("--cacert".to_owned());
                args.push(ca);
            }
        }
        Target::Standalone | Target::Memory => {}
    }
    args
}

/// A write the way the legacy services make it: a plain client's `SETEX`
/// of the JSON envelope, or `DEL`.
pub fn legacy_setex(target: Target, key: &str, ttl_secs: u64, envelope: &str) {
    let mut args = cli_target(target);
    args.extend([
        "SETEX".to_owned(),
        key.to_owned(),
        ttl_secs.to_string(),
        envelope.to_owned(),
    ]);
    cli(&args);
}

pub fn legacy_del(target: Target, key: &str) {
    let mut args = cli_target(target);
    args.extend(["DEL".to_owned(), key.to_owned()]);
    cli(&args);
}

/// The legacy envelope of a part.
pub fn envelope(value: &Part, cached_at_ms: u64, ttl_secs: u64) -> String {
    format!(
        r#"{{"data":{},"cachedAt":{cached_at_ms},"ttl":{ttl_secs}}}"#,
        serde_json::to_string(value).unwrap()
    )
}

impl Harness {
    /// This test wrote `writes` keys under its namespace: waits until the
    /// listener has reported all its writes so far. Our own writes come
    /// back as invalidations too, and one handled after a read would drop
    /// what the read kept; once they are through, reads stay kept.
    pub async fn wrote(&self, writes: u64) {
        let total = self.echoes.fetch_add(writes, Ordering::SeqCst) + writes;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stats = self.cache.near_cache_stats().unwrap();
            if stats.invalidations >= total {
                return;
            }
            if Instant::now() >= deadline {
                let client = self.cache.fred_pool().unwrap().next();
                let list =
                    fred::types::CustomCommand::new_static("CLIENT", fred::types::ClusterHash::Random, false);
                let clients: fred::types::Value = client.custom(list, vec!["LIST"]).await.unwrap();
                panic!(
                    "{total} writes of {} were never all reported back: {stats:?}\n{}",
                    self.namespace,
                    clients.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Reads `id` until the near cache keeps it. Our own writes come back
    /// as invalidation messages too, and one handled after a read drops
    /// what the read stored: reading again once they are through keeps it.
    pub async fn read_until_held(&self, prefix: &CacheKeyPrefix, id: &str) -> Option<Json> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.cache.get::<Json>(prefix, id).await.unwrap();
            if self.cache.near_cache_holds(prefix, id) {
                return value;
            }
            assert!(Instant::now() < deadline, "the near cache never kept {id}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Reads until `get` answers `expected`, within [`PATIENCE`].
    pub async fn read_until(&self, id: &str, expected: Option<&Part>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.cache.get::<Part>(&CacheKeyPrefix::Part, id).await.unwrap();
            if value.as_ref() == expected {
                return;
            }
            let number = |p: Option<&Part>| p.map(|p| p.part_number.clone());
            assert!(
                Instant::now() < deadline,
                "{id} still reads part number {:?}, expected {:?}",
                number(value.as_ref()),
                number(expected)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

type Json = serde_json::Value;

/// Which cluster primary serves each key (empty off a cluster).
fn primaries_of(h: &Harness, keys: &[String]) -> BTreeSet<String> {
    let pool = h.cache.fred_pool().unwrap();
    let Some(state) = pool.next().cached_cluster_state() else {
        return BTreeSet::new();
    };
    keys.iter()
        .filter_map(|key| state.get_server(fred::util::redis_keyslot(key.as_bytes())))
        .map(|server| format!("{}:{}", server.host, server.port))
        .collect()
}

pub async fn near_hits_and_legacy_writers(target: Target) {
    let h = Harness::near(target, "near_legacy").await;
    let prefix = CacheKeyPrefix::Part;
    let parts = h.cache.typed::<Part>();
    let ids: Vec<String> = (0..24).map(|i| format!("P-{i}")).collect();
    let keys: Vec<String> = ids.iter().map(|id| h.key(&prefix, id)).collect();
    if target == Target::Cluster {
        assert_eq!(primaries_of(&h, &keys).len(), 3, "keys on every master");
    }
    parts
        .set_many(ids.iter().enumerate().map(|(i, id)| (id, part(i))), None)
        .await
        .unwrap();
    h.wrote(24).await;
    for id in &ids {
        h.read_until_held(&prefix, id).await;
    }
    let before = parts.counters();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(parts.get(id).await.unwrap(), Some(part(i)));
    }
    let after = parts.counters();
    assert_eq!(after.near_hits - before.near_hits, 24, "served by the near cache");
    assert_eq!(after.hits - before.hits, 24);
    let stats = h.cache.near_cache_stats().unwrap();
    assert!(stats.tracking);
    assert!(stats.entries >= 24 && stats.bytes > 0, "{stats:?}");

    // A legacy writer replaces half and deletes the other half.
    let now = h.clock.now_ms();
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 0 {
            legacy_setex(target, key, 300, &envelope(&part(i + 1000), now, 300));
        } else {
            legacy_del(target, key);
        }
    }
    wait_until("every local copy is dropped", || {
        ids.iter().all(|id| !h.cache.near_cache_holds(&prefix, id))
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let expected = (i % 2 == 0).then(|| part(i + 1000));
        assert_eq!(parts.get(id).await.unwrap(), expected, "{id}");
    }
    assert!(h.cache.near_cache_stats().unwrap().invalidations >= 24);
    h.cleanup().await;
}

pub async fn near_serves_get_many_typed_and_get_or_load(target: Target) {
    let h = Harness::near(target, "near_reads").await;
    let parts = h.cache.typed::<Part>();
    let ids: Vec<String> = (0..100).map(|i| format!("P-{i}")).collect();
    parts
        .set_many(ids.iter().enumerate().map(|(i, id)| (id, part(i))), None)
        .await
        .unwrap();
    h.wrote(100).await;
    // Fill through get_many until every entry is kept.
    wait_until_async_all_held(&h, &ids).await;
    let before = parts.counters();
    let found = parts.get_many(&ids).await.unwrap();
    assert_eq!(found.len(), 100);
    assert_eq!(found["P-42"], part(42));
    assert_eq!(parts.counters().near_hits - before.near_hits, 100);

    // A mix: held ids from the near cache, the others from Redis.
    let mut mixed: Vec<String> = ids[..10].to_vec();
    mixed.push("P-missing".into());
    let before = parts.counters();
    assert_eq!(parts.get_many(&mixed).await.unwrap().len(), 10);
    let after = parts.counters();
    assert_eq!(
        (after.near_hits - before.near_hits, after.misses - before.misses),
        (10, 1)
    );

    // get_or_load answers from the near cache without calling the loader.
    let before = parts.counters();
    let value = parts
        .get_or_load("P-7", || async { Err::<Option<Part>, _>("not called") })
        .await
        .unwrap();
    assert_eq!(value, Some(part(7)));
    assert_eq!(parts.counters().near_hits - before.near_hits, 1);
    assert_eq!(parts.counters().loads, 0);
    h.cleanup().await;
}

async fn wait_until_async_all_held(h: &Harness, ids: &[String]) {
    let prefix = CacheKeyPrefix::Part;
    let deadline = Instant::now() + PATIENCE;
    loop {
        h.cache.get_many::<Json, _, _>(&prefix, ids).await.unwrap();
        if ids.iter().all(|id| h.cache.near_cache_holds(&prefix, id)) {
            return;
        }
        assert!(Instant::now() < deadline, "the near cache never kept them all");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn near_library_invalidation_is_immediate(target: Target) {
    let h = Harness::near(target, "near_local").await;
    let prefix = CacheKeyPrefix::Part;
    let parts = h.cache.typed::<Part>();
    let ids: Vec<String> = (0..6).map(|i| format!("P-{i}")).collect();
    parts
        .set_many(ids.iter().enumerate().map(|(i, id)| (id, part(i))), None)
        .await
        .unwrap();
    h.wrote(6).await;
    for id in &ids {
        h.read_until_held(&prefix, id).await;
    }
    // No waiting between a write or removal and the next read.
    parts.set("P-0", &part(100), None).await.unwrap();
    assert_eq!(parts.get("P-0").await.unwrap(), Some(part(100)));
    assert!(parts.invalidate("P-1").await.unwrap());
    assert!(!h.cache.near_cache_holds(&prefix, "P-1"));
    assert_eq!(parts.get("P-1").await.unwrap(), None);
    assert_eq!(parts.invalidate_many(["P-2"]).await.unwrap(), 1);
    assert_eq!(parts.get("P-2").await.unwrap(), None);
    assert_eq!(h.cache.invalidate_pattern("part:P-3").await.unwrap(), 1);
    assert_eq!(parts.get("P-3").await.unwrap(), None);
    assert!(h.cache.near_cache_holds(&prefix, "P-4"), "other keys stay");
    assert_eq!(parts.invalidate_all().await.unwrap(), 3);
    assert_eq!(parts.get("P-4").await.unwrap(), None);
    parts.set("P-5", &part(5), None).await.unwrap();
    h.read_until_held(&prefix, "P-5").await;
    assert_eq!(h.cache.clear_all().await.unwrap(), 1);
    assert_eq!(parts.get("P-5").await.unwrap(), None);
    h.cleanup().await;
}

pub async fn near_expiry_rules(target: Target) {
    let h = Harness::near(target, "near_expiry").await;
    let prefix = CacheKeyPrefix::Part;
    let parts = h.cache.typed::<Part>();
    let now = h.clock.now_ms();

    // The legacy rule: live while now - cachedAt <= ttl (no Redis TTL here).
    let key = h.key(&prefix, "P-1");
    h.raw_set(&key, envelope(&part(1), now, 60)).await;
    h.wrote(1).await;
    h.read_until_held(&prefix, "P-1").await;
    h.clock.advance(Duration::from_secs(60));
    assert!(
        h.cache.near_cache_holds(&prefix, "P-1"),
        "now - cachedAt == ttl is live"
    );
    h.clock.advance(Duration::from_millis(1));
    assert!(
        !h.cache.near_cache_holds(&prefix, "P-1"),
        "now - cachedAt > ttl is not"
    );
    assert_eq!(parts.get("P-1").await.unwrap(), None);
    assert_eq!(h.raw_get(&key).await, None, "and Redis's copy is removed");
    h.wrote(1).await; // that removal

    // The local cap (600 s here) for a long-lived entry.
    let now = h.clock.now_ms();
    h.raw_set(&h.key(&prefix, "P-2"), envelope(&part(2), now, 3600))
        .await;
    h.wrote(1).await;
    h.read_until_held(&prefix, "P-2").await;
    let read_at = h.clock.now_ms();
    h.clock.set_ms(read_at + 599_999);
    assert!(h.cache.near_cache_holds(&prefix, "P-2"));
    h.clock.set_ms(read_at + 600_000);
    assert!(!h.cache.near_cache_holds(&prefix, "P-2"), "past the local cap");
    let before = parts.counters();
    assert_eq!(parts.get("P-2").await.unwrap(), Some(part(2)));
    let after = parts.counters();
    assert_eq!(
        (after.hits - before.hits, after.near_hits - before.near_hits),
        (1, 0),
        "from Redis"
    );

    // Redis's TTL, shorter than the envelope's.
    let now = h.clock.now_ms();
    legacy_setex(target, &h.key(&prefix, "P-3"), 5, &envelope(&part(3), now, 3600));
    h.wrote(1).await;
    h.read_until_held(&prefix, "P-3").await;
    h.clock.advance(Duration::from_secs(5));
    assert!(!h.cache.near_cache_holds(&prefix, "P-3"), "past the key's PTTL");
    h.cleanup().await;
}

/// Readers race a writer; once the writer stops, every reader must soon
/// see its last value, and keep seeing it: a reply overtaken by an
/// invalidation, if it were stored, would stay in the near cache. Values
/// are large, so that decoding a reply takes long enough for the next
/// write's invalidation to arrive meanwhile (checked: with the tickets'
/// generation check disabled, 2 runs out of 3 kept a stale value with 5
/// rounds; this runs 10).
pub async fn near_race_keeps_no_stale_value(target: Target) {
    let h = Arc::new(Harness::near(target, "near_race").await);
    let prefix = CacheKeyPrefix::Part;
    let key = h.key(&prefix, "P-race");
    let writer = h.cache.fred_pool().unwrap().next().clone();
    let now = h.clock.now_ms();
    let big = |i: usize| Part {
        part_name: format!("{i}-{}", "x".repeat(200_000)),
        ..part(i)
    };
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (h, done) = (Arc::clone(&h), Arc::clone(&done));
        readers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                h.cache
                    .get::<Part>(&CacheKeyPrefix::Part, "P-race")
                    .await
                    .unwrap();
                // A near hit completes without waiting: let the writer and
                // the listener run on the test's two worker threads.
                tokio::task::yield_now().await;
            }
        }));
    }
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        let (old, new) = (big(2 * round), big(2 * round + 1));
        let invalidations = || h.cache.near_cache_stats().unwrap().invalidations;
        let seen = invalidations();
        let _: () = writer
            .set(key.as_str(), envelope(&old, now, 300), None, None, false)
            .await
            .unwrap();
        // Once the old value's invalidation is handled, readers miss and
        // ask Redis: the new value is written while their replies are on
        // the way or being decoded.
        wait_until("the old value's invalidation is handled", || {
            invalidations() > seen
        })
        .await;
        let _: () = writer
            .set(key.as_str(), envelope(&new, now, 300), None, None, false)
            .await
            .unwrap();
        h.read_until("P-race", Some(&new)).await;
        let held = h.read_until_held(&prefix, "P-race").await;
        assert_eq!(held, Some(serde_json::to_value(&new).unwrap()), "round {round}");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    const WRITES: usize = 2 * ROUNDS;
    let stats = h.cache.near_cache_stats().unwrap();
    assert!(stats.invalidations >= WRITES as u64, "{stats:?}");
    Arc::into_inner(h).unwrap().cleanup().await;
}

/// Periodic warming rewrites only what changed: every instance's near cache
/// keeps the rest.
pub async fn near_periodic_warming_keeps_unchanged_entries(target: Target) {
    use std::sync::atomic::AtomicUsize;
    let h = Harness::near(target, "near_warm").await;
    let prefix = CacheKeyPrefix::Part;
    let first = Arc::new(AtomicUsize::new(0));
    let loaded = Arc::clone(&first);
    let handle = h
        .cache
        .warm_cache(
            &prefix,
            move || {
                let n = loaded.load(Ordering::SeqCst);
                async move {
                    Ok::<_, mes_cache::Error>(vec![
                        ("P-0".to_owned(), part(n)),
                        ("P-1".to_owned(), part(1)),
                        ("P-2".to_owned(), part(2)),
                    ])
                }
            },
            mes_cache::WarmOptions::every(Duration::from_millis(10)).ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    h.wrote(3).await;
    for id in ["P-0", "P-1", "P-2"] {
        h.read_until_held(&prefix, id).await;
    }
    wait_until("three more runs", || handle.runs() >= 4).await;
    // A write of ours as a marker: once its invalidation is handled, any
    // the runs caused would have been too.
    h.cache.set(&prefix, "P-9", &part(9), None).await.unwrap();
    h.wrote(1).await;
    assert_eq!(
        h.cache.near_cache_stats().unwrap().invalidations,
        4,
        "the runs wrote nothing"
    );
    for id in ["P-0", "P-1", "P-2"] {
        assert!(h.cache.near_cache_holds(&prefix, id), "{id} kept");
    }

    // One value changes: only its key is rewritten.
    first.store(100, Ordering::SeqCst);
    let runs = handle.runs();
    wait_until("a run after the change", || handle.runs() >= runs + 2).await;
    h.wrote(1).await;
    assert_eq!(
        h.cache.get::<Part>(&prefix, "P-0").await.unwrap(),
        Some(part(100))
    );
    assert!(h.cache.near_cache_holds(&prefix, "P-1") && h.cache.near_cache_holds(&prefix, "P-2"));

    // Entries that would expire within two periods are rewritten, changed
    // or not (the legacy readers go by cachedAt + ttl).
    h.clock
        .advance(Duration::from_secs(3600) - Duration::from_millis(15));
    let runs = handle.runs();
    wait_until("a run near the expiry", || handle.runs() >= runs + 2).await;
    h.wrote(3).await;
    let entry = h.cache.typed::<Part>().get_entry("P-1").await.unwrap().unwrap();
    assert_eq!(
        entry.cached_at_ms,
        h.clock.now_ms(),
        "rewritten with a new cachedAt"
    );
    handle.stop().await;
    h.cleanup().await;
}

/// Every near-cache scenario for a target.
#[macro_export]
macro_rules! near_scenarios {
    ($target:expr) => {
        mod near_cache {
            use super::common::near;
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hits_and_legacy_writers() {
                near::near_hits_and_legacy_writers($target).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn serves_get_many_typed_and_get_or_load() {
                near::near_serves_get_many_typed_and_get_or_load($target).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn library_invalidation_is_immediate() {
                near::near_library_invalidation_is_immediate($target).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expiry_rules() {
                near::near_expiry_rules($target).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn periodic_warming_keeps_unchanged_entries() {
                near::near_periodic_warming_keeps_unchanged_entries($target).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn race_keeps_no_stale_value() {
                near::near_race_keeps_no_stale_value($target).await;
            }
        }
    };
}
