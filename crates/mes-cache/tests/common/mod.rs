//! Scenarios shared by the standalone, cluster and in-memory suites: each
//! runs against a fresh cache in its own key namespace and cleans up.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod near;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::{ClusterHash, CustomCommand, Value};
use mes_cache::{
    CacheConfig, CacheEntity, CacheKeyPrefix, Error, InMemoryStore, ManualClock, NearCache,
    ReferenceDataCache, WarmOptions, escape_glob,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::{Semaphore, mpsc};

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Standalone,
    Cluster,
    Sentinel,
    Tls,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    pub part_number: String,
    pub part_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_measure: Option<String>,
}

impl CacheEntity for Part {
    const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkCenter {
    pub work_center_code: String,
    pub work_center_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub email: String,
}

pub fn part(n: usize) -> Part {
    Part {
        part_number: format!("P-{n}"),
        part_name: format!("Part number {n}"),
        revision: Some("A".into()),
        unit_of_measure: None,
    }
}

/// A fresh cache plus raw access to what is stored.
pub struct Harness {
    pub target: Target,
    pub cache: ReferenceDataCache,
    pub clock: ManualClock,
    pub store: Option<InMemoryStore>,
    pub namespace: String,
    /// Writes this test made under its namespace that the near cache's
    /// listener reports back (see `near::Harness::wrote`).
    pub echoes: std::sync::atomic::AtomicU64,
}

fn random_suffix() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

pub fn url(target: Target) -> Option<String> {
    match target {
        Target::Standalone => Some(mes_testkit::redis_url()),
        Target::Cluster => Some(mes_testkit::required_env(
            "MES_TEST_REDIS_CLUSTER_URL",
            "Redis Cluster of three masters (redis-cluster://host:port?node=...)",
        )),
        Target::Sentinel => Some(mes_testkit::required_env(
            "MES_TEST_REDIS_SENTINEL_URL",
            "Redis master behind a Sentinel (redis-sentinel://host:port?sentinelServiceName=...)",
        )),
        Target::Tls => Some(mes_testkit::required_env(
            "MES_TEST_REDIS_TLS_URL",
            "Redis over TLS (rediss://host:port)",
        )),
        Target::Memory => None,
    }
}

pub async fn cache_with(
    target: Target,
    namespace: &str,
    clock: &ManualClock,
) -> (ReferenceDataCache, Option<InMemoryStore>) {
    cache_with_near(target, namespace, clock, None).await
}

/// The near cache of the near-cache scenarios: room for everything they
/// read, a 600 s cap.
pub fn near_settings() -> NearCache {
    NearCache::new(10_000, Duration::from_secs(600))
}

pub async fn cache_with_near(
    target: Target,
    namespace: &str,
    clock: &ManualClock,
    near: Option<NearCache>,
) -> (ReferenceDataCache, Option<InMemoryStore>) {
    let config = match url(target) {
        Some(url) => CacheConfig::from_url(&url).unwrap(),
        None => CacheConfig::default(),
    }
    .namespace(namespace)
    .clock(clock.clone())
    .batch_size(1000);
    let config = match near {
        Some(near) => config.near_cache(near),
        None => config,
    };
    let config = match target {
        Target::Tls => match std::env::var("MES_TEST_REDIS_TLS_CA") {
            Ok(path) if !path.is_empty() => config.tls_root_certificates_pem(std::fs::read(&path).unwrap()),
            _ => config,
        },
        _ => config,
    };
    match target {
        Target::Memory => {
            let store = InMemoryStore::with_clock(clock.clone());
            (
                ReferenceDataCache::with_store(config, store.clone()).unwrap(),
                Some(store),
            )
        }
        _ => (ReferenceDataCache::connect(config).await.unwrap(), None),
    }
}

impl Harness {
    pub async fn new(target: Target, test: &str) -> Self {
        Self::with_namespace(target, &format!("mes:test:{test}:{:x}", random_suffix())).await
    }

    pub async fn with_namespace(target: Target, namespace: &str) -> Self {
        Self::build(target, namespace, None).await
    }

    /// A fresh cache with a near cache.
    pub async fn near(target: Target, test: &str) -> Self {
        let namespace = format!("mes:test:{test}:{:x}", random_suffix());
        Self::build(target, &namespace, Some(near_settings())).await
    }

    async fn build(target: Target, namespace: &str, near: Option<NearCache>) -> Self {
        let clock = ManualClock::starting_now();
        let (cache, store) = cache_with_near(target, namespace, &clock, near).await;
        if target == Target::Cluster {
            assert!(
                cache.fred_pool().unwrap().is_clustered(),
                "the cluster URL must reach a cluster"
            );
        }
        if target == Target::Sentinel {
            assert!(
                cache.fred_pool().unwrap().next().uses_sentinels(),
                "connected through the Sentinel"
            );
        }
        Self {
            target,
            cache,
            clock,
            store,
            namespace: namespace.to_owned(),
            echoes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn key(&self, prefix: &CacheKeyPrefix, id: &str) -> String {
        self.cache.key(prefix, id)
    }

    /// Writes raw bytes under a key (no TTL).
    pub async fn raw_set(&self, key: &str, value: impl Into<Vec<u8>>) {
        let value: Vec<u8> = value.into();
        match &self.store {
            Some(store) => store.insert_raw(key, value, None),
            None => {
                let client = self.cache.fred_pool().unwrap().next();
                let _: () = client
                    .set(key, value.as_slice(), None, None, false)
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        match &self.store {
            Some(store) => store.get_raw(key),
            None => {
                let client = self.cache.fred_pool().unwrap().next();
                let value: Value = client.get(key).await.unwrap();
                match value {
                    Value::Null => None,
                    other => Some(other.as_bytes().unwrap().to_vec()),
                }
            }
        }
    }

    pub async fn raw_json(&self, key: &str) -> Json {
        serde_json::from_slice(&self.raw_get(key).await.expect("key is present")).unwrap()
    }

    /// Redis' TTL of a key in seconds (`None` for the in-memory store).
    pub async fn raw_ttl(&self, key: &str) -> Option<i64> {
        if self.store.is_some() {
            return None;
        }
        let client = self.cache.fred_pool().unwrap().next();
        Some(client.ttl(key).await.unwrap())
    }

    /// Makes reads of `key` fail: a list in Redis (WRONGTYPE), an outage of
    /// the in-memory store.
    pub async fn break_reads(&self, key: &str) {
        match &self.store {
            Some(store) => store.set_unavailable(true),
            None => {
                let client = self.cache.fred_pool().unwrap().next();
                let lpush = CustomCommand::new_static("LPUSH", ClusterHash::FirstKey, false);
                let _: Value = client.custom(lpush, vec![key, "x"]).await.unwrap();
            }
        }
    }

    pub async fn repair_reads(&self, key: &str) {
        match &self.store {
            Some(store) => store.set_unavailable(false),
            None => {
                let client = self.cache.fred_pool().unwrap().next();
                let _: i64 = client.del(key).await.unwrap();
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some(store) = &self.store {
            store.set_unavailable(false);
        }
        self.cache.clear_all().await.unwrap();
        self.cache.close().await.unwrap();
    }
}

/// Ids whose keys spread over many hash slots.
pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("P-{i}")).collect()
}

// ---------------------------------------------------------------- scenarios

pub async fn set_get_and_envelope(target: Target) {
    let h = Harness::new(target, "set_get").await;
    let parts = h.cache.typed::<Part>();
    assert_eq!(parts.get("P-1").await.unwrap(), None);
    parts
        .set("P-1", &part(1), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(1)));

    let entry = parts.get_entry("P-1").await.unwrap().unwrap();
    assert_eq!(entry.ttl_secs, 120);
    assert_eq!(entry.cached_at_ms, {
        use mes_cache::Clock;
        h.clock.now_ms()
    });
    assert_eq!(entry.version, None);

    // Exactly the legacy envelope: field names, order and JSON types.
    let key = h.key(&CacheKeyPrefix::Part, "P-1");
    assert!(key.starts_with(&h.namespace) && key.ends_with(":part:P-1"));
    let raw = String::from_utf8(h.raw_get(&key).await.unwrap()).unwrap();
    assert!(raw.starts_with(r#"{"data":{"partNumber":"P-1""#), "{raw}");
    let json: Json = serde_json::from_str(&raw).unwrap();
    let object = json.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["cachedAt", "data", "ttl"]);
    assert!(object["cachedAt"].is_u64());
    assert_eq!(object["ttl"], 120);
    assert!(object["data"].is_object());
    if let Some(ttl) = h.raw_ttl(&key).await {
        assert!((119..=120).contains(&ttl), "SETEX ttl {ttl}");
    }

    // Per-call TTL vs default TTL (300 s); version.
    h.cache
        .set(&CacheKeyPrefix::Part, "P-2", &part(2), None)
        .await
        .unwrap();
    assert_eq!(h.raw_json(&h.key(&CacheKeyPrefix::Part, "P-2")).await["ttl"], 300);
    parts.set_versioned("P-3", &part(3), None, "v2").await.unwrap();
    let json = h.raw_json(&h.key(&CacheKeyPrefix::Part, "P-3")).await;
    assert_eq!(json["version"], "v2");
    assert_eq!(
        parts.get_entry("P-3").await.unwrap().unwrap().version.as_deref(),
        Some("v2")
    );

    // TTLs the envelope cannot carry.
    assert!(matches!(
        parts.set("P-4", &part(4), Some(Duration::from_millis(500))).await,
        Err(Error::InvalidTtl { .. })
    ));
    parts
        .set("P-4", &part(4), Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert_eq!(parts.get_entry("P-4").await.unwrap().unwrap().ttl_secs, 2);
    h.cleanup().await;
}

pub async fn set_if_newer_never_goes_back(target: Target) {
    let h = Harness::new(target, "newer").await;
    let prefix = CacheKeyPrefix::Part;
    let write = |id: &'static str, n: usize, version: &'static str| {
        let cache = h.cache.clone();
        async move {
            cache
                .set_if_newer(&prefix_part(), id, &part(n), None, version)
                .await
                .unwrap()
        }
    };
    assert!(write("P-1", 2, "0000000000002-b").await, "no entry yet");
    assert!(
        !write("P-1", 1, "0000000000001-a").await,
        "an older version is refused"
    );
    assert!(
        !write("P-1", 9, "0000000000002-b").await,
        "the same version is refused"
    );
    assert_eq!(h.cache.get::<Part>(&prefix, "P-1").await.unwrap(), Some(part(2)));
    assert!(write("P-1", 3, "0000000000003-c").await, "a newer version wins");
    assert_eq!(h.cache.get::<Part>(&prefix, "P-1").await.unwrap(), Some(part(3)));
    let entry = h.cache.typed::<Part>().get_entry("P-1").await.unwrap().unwrap();
    assert_eq!(entry.version.as_deref(), Some("0000000000003-c"));

    // Entries it cannot compare with are overwritten: a legacy version, no
    // version, a value that is not an envelope.
    h.cache
        .set_versioned(&prefix, "P-2", &part(1), None, "v2")
        .await
        .unwrap();
    assert!(write("P-2", 5, "0000000000001-a").await);
    h.cache.set(&prefix, "P-3", &part(1), None).await.unwrap();
    assert!(write("P-3", 5, "0000000000001-a").await);
    h.raw_set(&h.key(&prefix, "P-4"), "not json").await;
    assert!(write("P-4", 5, "0000000000001-a").await);
    assert_eq!(h.cache.get::<Part>(&prefix, "P-4").await.unwrap(), Some(part(5)));
    h.cleanup().await;
}

fn prefix_part() -> CacheKeyPrefix {
    CacheKeyPrefix::Part
}

pub async fn typed_views_keep_types_apart(target: Target) {
    let h = Harness::new(target, "typed").await;
    let parts = h.cache.typed::<Part>();
    let users = h.cache.prefix::<User>(CacheKeyPrefix::User);
    parts.set("42", &part(42), None).await.unwrap();
    users
        .set(
            "42",
            &User {
                email: "a@b.c".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(parts.get("42").await.unwrap(), Some(part(42)));
    assert_eq!(users.get("42").await.unwrap().unwrap().email, "a@b.c");
    assert_eq!(parts.prefix(), &CacheKeyPrefix::Part);
    h.cleanup().await;
}

pub async fn errors_are_not_misses(target: Target) {
    let h = Harness::new(target, "errors").await;
    let key = h.key(&CacheKeyPrefix::Part, "P-broken");
    h.break_reads(&key).await;
    let read = h.cache.get::<Part>(&CacheKeyPrefix::Part, "P-broken").await;
    assert!(
        matches!(read, Err(Error::Redis { operation: "get", .. })),
        "{read:?}"
    );
    assert_eq!(h.cache.counters(&CacheKeyPrefix::Part).errors, 1);

    // get_or_load falls back to the loader and counts it.
    let loaded = h
        .cache
        .get_or_load(&CacheKeyPrefix::Part, "P-broken", || async {
            Ok::<_, Error>(Some(part(7)))
        })
        .await
        .unwrap();
    assert_eq!(loaded, Some(part(7)));
    assert_eq!(h.cache.counters(&CacheKeyPrefix::Part).loader_fallbacks, 1);
    h.repair_reads(&key).await;
    h.cleanup().await;
}

pub async fn legacy_expiry_rule(target: Target) {
    let h = Harness::new(target, "expiry").await;
    let parts = h.cache.typed::<Part>();
    parts
        .set("P-1", &part(1), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    parts
        .set("P-2", &part(2), Some(Duration::from_secs(600)))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(
        parts.get("P-1").await.unwrap(),
        Some(part(1)),
        "now - cachedAt == ttl is still live"
    );
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(
        parts.get("P-1").await.unwrap(),
        None,
        "now - cachedAt > ttl is a miss"
    );
    assert_eq!(
        h.raw_get(&h.key(&CacheKeyPrefix::Part, "P-1")).await,
        None,
        "and the key is deleted"
    );
    let found = parts.get_many(["P-1", "P-2"]).await.unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["P-2"]);
    // Redis still held the key (its own TTL runs on real time); the
    // in-memory store follows the manual clock and had already dropped it.
    let expected_expired = if target == Target::Memory { 0 } else { 1 };
    assert_eq!(parts.counters().expired, expected_expired);
    h.cleanup().await;
}

pub async fn get_many_and_set_many_across_slots(target: Target) {
    let h = Harness::new(target, "many").await;
    let ids = ids(2500);
    if target == Target::Cluster {
        let slots: std::collections::BTreeSet<u16> = ids
            .iter()
            .map(|id| fred::util::redis_keyslot(h.key(&CacheKeyPrefix::Part, id).as_bytes()))
            .collect();
        assert!(slots.len() > 1000, "keys spread over {} slots", slots.len());
    }
    let parts = h.cache.typed::<Part>();
    let values: Vec<(String, Part)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), part(i)))
        .collect();
    assert_eq!(
        parts
            .set_many(values.iter().map(|(id, p)| (id, p)), None)
            .await
            .unwrap(),
        2500
    );

    let mut wanted: Vec<String> = ids.clone();
    wanted.push("P-missing".into());
    wanted.push("P-0".into()); // duplicates are fine
    let found = parts.get_many(&wanted).await.unwrap();
    assert_eq!(found.len(), 2500);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(found[id], part(i));
    }
    assert!(parts.get_many(Vec::<String>::new()).await.unwrap().is_empty());

    // A corrupt value drops only its own id.
    h.raw_set(&h.key(&CacheKeyPrefix::Part, "P-7"), "not json").await;
    let found = parts.get_many(["P-6", "P-7", "P-8"]).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(!found.contains_key("P-7"));
    assert_eq!(h.raw_get(&h.key(&CacheKeyPrefix::Part, "P-7")).await, None);
    assert_eq!(parts.counters().decode_failures, 1);

    // Many ids at once, across slots; absent ones are not counted.
    let some: Vec<&str> = ids[..500]
        .iter()
        .map(String::as_str)
        .chain(["P-missing"])
        .collect();
    let snapshot: Vec<(String, Part)> = parts.get_many(&some).await.unwrap().into_iter().collect();
    assert_eq!(parts.invalidate_many(&some).await.unwrap(), 499); // P-7 was already removed
    assert!(parts.get_many(&some).await.unwrap().is_empty());
    parts
        .set_many(snapshot.iter().map(|(id, p)| (id, p)), None)
        .await
        .unwrap();
    assert_eq!(parts.stats().await.unwrap().key_count, 2499);
    assert_eq!(parts.invalidate_all().await.unwrap(), 2499);
    assert_eq!(parts.stats().await.unwrap().key_count, 0);
    assert!(parts.get_many(&ids).await.unwrap().is_empty());
    h.cleanup().await;
}

pub async fn invalidation_escapes_ids(target: Target) {
    let h = Harness::new(target, "escape").await;
    let parts = h.cache.typed::<Part>();
    let tricky = ["P-1", "P-10", "P-1*", "P-1?", "P-[1]", r"P-1\", "P-1x"];
    let fill = || async {
        for (i, id) in tricky.iter().enumerate() {
            parts.set(id, &part(i), None).await.unwrap();
        }
    };
    let remaining = || async {
        let mut left: Vec<String> = parts.get_many(tricky).await.unwrap().into_keys().collect();
        left.sort();
        left
    };
    fill().await;
    let all: Vec<String> = {
        let mut all: Vec<String> = tricky.iter().map(|s| (*s).to_owned()).collect();
        all.sort();
        all
    };

    // `P-1*` as an id deletes only `P-1*`, by key and by escaped pattern.
    assert!(parts.invalidate("P-1*").await.unwrap());
    assert!(!parts.invalidate("P-1*").await.unwrap());
    let expected: Vec<String> = all.iter().filter(|id| *id != "P-1*").cloned().collect();
    assert_eq!(remaining().await, expected);
    fill().await;
    for id in tricky {
        let pattern = format!("part:{}", escape_glob(id));
        assert_eq!(
            h.cache.invalidate_pattern(&pattern).await.unwrap(),
            1,
            "{pattern}"
        );
        let expected: Vec<String> = all.iter().filter(|other| *other != id).cloned().collect();
        assert_eq!(remaining().await, expected, "{pattern}");
        parts.set(id, &part(0), None).await.unwrap();
    }

    // A caller's own glob is a glob.
    // `P-1?` matches P-10, P-1*, P-1?, P-1x and P-1\; then `P-1*` the P-1 left.
    assert_eq!(h.cache.invalidate_pattern("part:P-1?").await.unwrap(), 5);
    assert_eq!(h.cache.invalidate_pattern("part:P-1*").await.unwrap(), 1);
    assert_eq!(remaining().await, ["P-[1]"]);
    fill().await;

    // A free prefix with glob characters removes only itself.
    let odd = h.cache.prefix::<Part>(CacheKeyPrefix::new("pa*"));
    odd.set("X", &part(0), None).await.unwrap();
    assert_eq!(odd.invalidate_all().await.unwrap(), 1);
    assert_eq!(remaining().await, all);

    // Pattern across prefixes, e.g. every `work_order:*:P-123`.
    let orders = h.cache.prefix::<Part>(CacheKeyPrefix::new("work_order"));
    orders.set("1:P-123", &part(1), None).await.unwrap();
    orders.set("2:P-123", &part(2), None).await.unwrap();
    orders.set("2:P-124", &part(3), None).await.unwrap();
    assert_eq!(h.cache.invalidate_pattern("work_order:*:P-123").await.unwrap(), 2);
    assert_eq!(
        orders
            .get_many(["1:P-123", "2:P-123", "2:P-124"])
            .await
            .unwrap()
            .len(),
        1
    );
    h.cleanup().await;
}

pub async fn clear_all_stays_in_its_namespace(target: Target) {
    let h = Harness::new(target, "clear").await;
    let other = Harness::with_namespace(target, &format!("{}-other", h.namespace)).await;
    // The in-memory stores of two harnesses are separate; share one instead.
    let other_cache = match &h.store {
        Some(store) => ReferenceDataCache::with_store(
            CacheConfig::default().namespace(other.namespace.clone()),
            store.clone(),
        )
        .unwrap(),
        None => other.cache.clone(),
    };
    for prefix in CacheKeyPrefix::KNOWN {
        h.cache.set(&prefix, "1", &1, None).await.unwrap();
        other_cache.set(&prefix, "1", &2, None).await.unwrap();
    }
    assert_eq!(h.cache.clear_all().await.unwrap(), 10);
    assert_eq!(
        h.cache.get::<i32>(&CacheKeyPrefix::Tool, "1").await.unwrap(),
        None
    );
    for prefix in CacheKeyPrefix::KNOWN {
        assert_eq!(other_cache.get::<i32>(&prefix, "1").await.unwrap(), Some(2));
    }
    assert_eq!(other_cache.clear_all().await.unwrap(), 10);
    h.cleanup().await;
    other.cleanup().await;
}

pub async fn corrupt_values_are_counted_misses(target: Target) {
    let h = Harness::new(target, "corrupt").await;
    let parts = h.cache.typed::<Part>();
    let corrupt: Vec<(&str, Vec<u8>)> = vec![
        ("not-json", b"hello".to_vec()),
        ("empty", Vec::new()),
        ("truncated", br#"{"data":{"partNumber":"P-1""#.to_vec()),
        ("no-envelope", br#"{"partNumber":"P-1","partName":"x"}"#.to_vec()),
        (
            "wrong-shape",
            br#"{"data":[1,2,3],"cachedAt":1,"ttl":300}"#.to_vec(),
        ),
        (
            "old-schema",
            br#"{"data":{"number":"P-1"},"cachedAt":1,"ttl":300}"#.to_vec(),
        ),
        (
            "string-time",
            br#"{"data":{"partNumber":"a","partName":"b"},"cachedAt":"now","ttl":300}"#.to_vec(),
        ),
        (
            "negative-ttl",
            br#"{"data":{"partNumber":"a","partName":"b"},"cachedAt":1,"ttl":-1}"#.to_vec(),
        ),
        ("binary", vec![0xff, 0xfe, 0x00, 0x7b]),
        ("null", b"null".to_vec()),
    ];
    for (id, value) in &corrupt {
        h.raw_set(&h.key(&CacheKeyPrefix::Part, id), value.clone()).await;
    }
    parts.set("good", &part(1), None).await.unwrap();
    for (id, _) in &corrupt {
        assert_eq!(parts.get(id).await.unwrap(), None, "{id}");
        assert_eq!(
            h.raw_get(&h.key(&CacheKeyPrefix::Part, id)).await,
            None,
            "{id} is removed"
        );
    }
    for (id, value) in &corrupt {
        h.raw_set(&h.key(&CacheKeyPrefix::Part, id), value.clone()).await;
    }
    let mut ids: Vec<&str> = corrupt.iter().map(|(id, _)| *id).collect();
    ids.push("good");
    let found = parts.get_many(&ids).await.unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [("good".to_owned(), part(1))]
    );
    let counters = parts.counters();
    assert_eq!(counters.decode_failures, 2 * corrupt.len() as u64);
    assert_eq!(counters.hits, 1);
    assert_eq!(counters.errors, 0);
    h.cleanup().await;
}

pub async fn single_flight(target: Target) {
    let h = Harness::new(target, "flight").await;
    let cache = h.cache.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    const CALLERS: usize = 16;
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (cache, calls, gate) = (cache.clone(), Arc::clone(&calls), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load(&CacheKeyPrefix::Part, "P-9", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Held until every caller has joined this load.
                    let _permit = gate.acquire().await.unwrap();
                    Ok::<_, Error>(Some(part(9)))
                })
                .await
        }));
    }
    // Wait (yielding, no timing) until all callers wait on one load.
    while cache.pending_loads(&CacheKeyPrefix::Part, "P-9") < CALLERS {
        tokio::task::yield_now().await;
    }
    gate.add_permits(CALLERS);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Some(part(9)));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one loader call for {CALLERS} concurrent misses"
    );
    assert_eq!(cache.pending_loads(&CacheKeyPrefix::Part, "P-9"), 0);
    assert_eq!(cache.counters(&CacheKeyPrefix::Part).loads, 1);
    // One miss per caller; the load's own re-check of the key is not one.
    assert_eq!(cache.counters(&CacheKeyPrefix::Part).misses, CALLERS as u64);
    // The loaded value was cached.
    assert_eq!(
        cache.get::<Part>(&CacheKeyPrefix::Part, "P-9").await.unwrap(),
        Some(part(9))
    );
    let hit = cache
        .get_or_load(&CacheKeyPrefix::Part, "P-9", || async {
            Err::<Option<Part>, _>("not called")
        })
        .await
        .unwrap();
    assert_eq!(hit, Some(part(9)));

    // A failing load is shared too, and nothing is cached.
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (cache, calls, gate) = (cache.clone(), Arc::clone(&calls), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load(&CacheKeyPrefix::Part, "P-err", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _permit = gate.acquire().await.unwrap();
                    Err::<Option<Part>, _>("database down")
                })
                .await
        }));
    }
    while cache.pending_loads(&CacheKeyPrefix::Part, "P-err") < CALLERS {
        tokio::task::yield_now().await;
    }
    gate.add_permits(CALLERS);
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::Loader { .. }), "{error:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not found is not cached either.
    let none = cache
        .get_or_load(&CacheKeyPrefix::Part, "P-none", || async {
            Ok::<Option<Part>, Error>(None)
        })
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(h.raw_get(&h.key(&CacheKeyPrefix::Part, "P-none")).await, None);
    h.cleanup().await;
}

pub async fn periodic_warming(target: Target) {
    let h = Harness::new(target, "warm").await;
    let (calls_tx, mut calls_rx) = mpsc::unbounded_channel::<usize>();
    let call = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(Semaphore::new(0));
    let loader = {
        let (call, running, overlapped, never) =
            (call.clone(), running.clone(), overlapped.clone(), never.clone());
        move || {
            let n = call.fetch_add(1, Ordering::SeqCst) + 1;
            let (calls_tx, running, overlapped, never) = (
                calls_tx.clone(),
                running.clone(),
                overlapped.clone(),
                never.clone(),
            );
            async move {
                if running.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlapped.fetch_add(1, Ordering::SeqCst);
                }
                calls_tx.send(n).unwrap();
                let result = match n {
                    2 => Err("database down".to_owned()),
                    4 => {
                        // The fourth run hangs until the warmer is stopped.
                        let _ = never.acquire().await;
                        Ok(Vec::new())
                    }
                    _ => Ok((0..3)
                        .map(|i| (format!("P-{i}"), part(n * 100 + i)))
                        .collect::<Vec<_>>()),
                };
                running.fetch_sub(1, Ordering::SeqCst);
                result
            }
        }
    };
    let handle = h
        .cache
        .warm_cache(
            &CacheKeyPrefix::Part,
            loader,
            WarmOptions::every(Duration::from_millis(10)).ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(handle.initial_entries(), 3);
    assert_eq!(calls_rx.recv().await, Some(1));
    let parts = h.cache.typed::<Part>();
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(101)));
    assert_eq!(parts.get_entry("P-1").await.unwrap().unwrap().ttl_secs, 60);
    // Run 2 fails (logged, counted), run 3 succeeds, run 4 starts: since runs
    // never overlap, run 3 has written everything by then.
    assert_eq!(calls_rx.recv().await, Some(2));
    assert_eq!(calls_rx.recv().await, Some(3));
    assert_eq!(calls_rx.recv().await, Some(4));
    assert_eq!(parts.get("P-2").await.unwrap(), Some(part(302)));
    assert_eq!(handle.failures(), 1);
    assert_eq!(handle.runs(), 2);
    assert_eq!(overlapped.load(Ordering::SeqCst), 0);
    assert!(!handle.is_finished());

    // A one-off warm starts no task.
    let once = h
        .cache
        .warm_cache(
            &CacheKeyPrefix::Tool,
            || async { Ok::<_, Error>(vec![("T-1".to_owned(), 1)]) },
            WarmOptions::once(),
        )
        .await
        .unwrap();
    assert!(once.is_finished());
    // A failing first run is an error.
    let failed = h
        .cache
        .warm_cache(
            &CacheKeyPrefix::Tool,
            || async { Err::<Vec<(String, i32)>, _>("no") },
            WarmOptions::once(),
        )
        .await;
    assert!(matches!(failed, Err(Error::Loader { .. })));

    // A zero period is refused up front.
    let zero = h
        .cache
        .warm_cache(
            &CacheKeyPrefix::Tool,
            || async { Ok::<_, Error>(vec![("T-1".to_owned(), 1)]) },
            WarmOptions::every(Duration::ZERO),
        )
        .await;
    assert!(matches!(zero, Err(Error::InvalidConfig { .. })));

    // close() stops the warmer, even in the middle of a run.
    let cache = h.cache.clone();
    cache.clear_all().await.unwrap();
    cache.close().await.unwrap();
    assert!(handle.is_finished());
    assert_eq!(call.load(Ordering::SeqCst), 4);
    assert!(matches!(
        cache.get::<Part>(&CacheKeyPrefix::Part, "P-1").await,
        Err(Error::Closed)
    ));
}

pub async fn warm_handle_stop(target: Target) {
    let h = Harness::new(target, "warm_stop").await;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let handle = h
        .cache
        .warm_cache(
            &CacheKeyPrefix::Site,
            move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(());
                    Ok::<_, Error>(vec![("S-1".to_owned(), "site")])
                }
            },
            WarmOptions::every(Duration::from_millis(5)),
        )
        .await
        .unwrap();
    rx.recv().await.unwrap();
    rx.recv().await.unwrap(); // a periodic run happened
    handle.stop().await;
    assert!(handle.is_finished());
    while rx.try_recv().is_ok() {}
    // After stop() returned, no loader call can come: the task has ended.
    assert!(rx.try_recv().is_err());
    h.cleanup().await;
}

pub async fn stats_and_health(target: Target) {
    let h = Harness::new(target, "stats").await;
    let parts = h.cache.typed::<Part>();
    let empty = parts.stats().await.unwrap();
    assert_eq!(empty.hit_rate, None);
    assert_eq!(empty.key_count, 0);
    parts
        .set_many((0..10).map(|i| (format!("P-{i}"), part(i))), None)
        .await
        .unwrap();
    for i in 0..10 {
        parts.get(&format!("P-{i}")).await.unwrap();
    }
    for i in 10..20 {
        parts.get(&format!("P-{i}")).await.unwrap();
    }
    h.raw_set(&h.key(&CacheKeyPrefix::Part, "bad"), "{").await;
    parts.get("bad").await.unwrap();
    let stats = parts.stats().await.unwrap();
    assert_eq!(stats.prefix, "part");
    assert_eq!(stats.counters.hits, 10);
    assert_eq!(stats.counters.misses, 11);
    assert_eq!(stats.counters.decode_failures, 1);
    assert_eq!(stats.key_count, 10);
    let rate = stats.hit_rate.unwrap();
    assert!((rate - 10.0 / 21.0).abs() < 1e-9);
    assert!(stats.memory.used_bytes > 0);
    assert!(!stats.memory.human.is_empty());
    // Other prefixes have their own counters.
    assert_eq!(h.cache.counters(&CacheKeyPrefix::User).hits, 0);
    h.cache.health_check().await.unwrap();
    h.cleanup().await;
}

/// What an operator tool reads: one key as it is (`inspect`), the key
/// counts of every prefix, the server's figures, and a prefix invalidated
/// page by page with progress.
pub async fn operator_reads(target: Target) {
    let h = Harness::new(target, "operator").await;
    let ten_minutes = Some(Duration::from_secs(600));
    h.cache
        .set_versioned(&CacheKeyPrefix::Part, "P-1", &part(1), ten_minutes, "v7")
        .await
        .unwrap();
    h.cache
        .set_many(
            &CacheKeyPrefix::Part,
            (2..30).map(|i| (format!("P-{i}"), part(i))),
            None,
        )
        .await
        .unwrap();
    h.cache
        .set(&CacheKeyPrefix::User, "U-1", &"ada", None)
        .await
        .unwrap();
    let bad = h.key(&CacheKeyPrefix::Part, "bad");
    h.raw_set(&bad, "{not an envelope").await;
    let before = h.cache.counters(&CacheKeyPrefix::Part);

    let stored = h
        .cache
        .inspect(&CacheKeyPrefix::Part, "P-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.key, h.key(&CacheKeyPrefix::Part, "P-1"));
    let entry = stored.decode::<Json>().unwrap();
    assert_eq!(entry.version.as_deref(), Some("v7"));
    assert_eq!(entry.ttl_secs, 600);
    assert_eq!(entry.data, serde_json::to_value(part(1)).unwrap());
    let redis_ttl = stored.redis_ttl.expect("written with SETEX");
    assert!(
        redis_ttl > Duration::ZERO && redis_ttl <= Duration::from_secs(600),
        "{redis_ttl:?}"
    );
    // A corrupt value is shown as it is, and stays: nothing counted or removed.
    let corrupt = h
        .cache
        .inspect(&CacheKeyPrefix::Part, "bad")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(corrupt.bytes, b"{not an envelope");
    assert_eq!(corrupt.redis_ttl, None);
    assert!(corrupt.decode::<Json>().is_err());
    assert!(
        h.cache
            .inspect(&CacheKeyPrefix::Part, "P-404")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(h.cache.counters(&CacheKeyPrefix::Part), before);
    assert!(h.raw_get(&bad).await.is_some());

    let counts = h.cache.key_counts().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("part".to_owned(), 30), ("user".to_owned(), 1)]
    );

    assert_eq!(
        h.cache
            .get::<String>(&CacheKeyPrefix::User, "U-1")
            .await
            .unwrap()
            .as_deref(),
        Some("ada")
    );
    let server = h.cache.server_stats().await.unwrap();
    assert!(server.memory.used_bytes > 0);
    if target == Target::Memory {
        assert_eq!(server.hit_rate(), None, "the in-memory store counts no hits");
    } else {
        assert!(server.keyspace_hits > 0, "the read above hit: {server:?}");
        assert!(server.hit_rate().is_some_and(|rate| rate > 0.0 && rate <= 1.0));
    }

    let mut pages = Vec::new();
    let removed = h
        .cache
        .invalidate_all_with_progress(&CacheKeyPrefix::Part, |n| pages.push(n))
        .await
        .unwrap();
    assert_eq!(removed, 30);
    assert_eq!(pages.iter().sum::<u64>(), 30, "every removal reported: {pages:?}");
    let counts = h.cache.key_counts().await.unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("user".to_owned(), 1)]);
    h.cleanup().await;
}

pub async fn close_ends_everything(target: Target) {
    let h = Harness::new(target, "close").await;
    h.cache.close().await.unwrap();
    h.cache.close().await.unwrap(); // idempotent
    assert!(matches!(
        h.cache.get::<Part>(&CacheKeyPrefix::Part, "x").await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        h.cache.set(&CacheKeyPrefix::Part, "x", &1, None).await,
        Err(Error::Closed)
    ));
    assert!(matches!(h.cache.health_check().await, Err(Error::Closed)));
    assert!(matches!(
        h.cache.invalidate_all(&CacheKeyPrefix::Part).await,
        Err(Error::Closed)
    ));
}

/// The fixtures' entries written raw are read; the key is byte-identical.
pub async fn legacy_fixtures_are_read(target: Target) {
    // The default namespace (the legacy one); ids get a random suffix so a
    // shared server's real entries are never touched.
    let h = Harness::with_namespace(target, mes_cache::DEFAULT_NAMESPACE).await;
    let suffix = format!("{:x}", random_suffix());
    let fixture = |name: &str| -> (String, String) {
        let text = std::fs::read_to_string(mes_testkit::wire_dir().join(name)).unwrap();
        let json: Json = serde_json::from_str(&text).unwrap();
        (
            json["key"].as_str().unwrap().to_owned(),
            json["value"].as_str().unwrap().to_owned(),
        )
    };

    let (key, value) = fixture("cache-entry-part.json");
    assert_eq!(h.cache.key(&CacheKeyPrefix::Part, "P-12345"), key);
    let id = format!("P-12345-{suffix}");
    h.raw_set(&h.key(&CacheKeyPrefix::Part, &id), value.clone()).await;
    let legacy: Json = serde_json::from_str(&value).unwrap();
    let cached_at = legacy["cachedAt"].as_u64().unwrap();
    h.clock.set_ms(cached_at + 1_000);
    let parts = h.cache.typed::<Part>();
    let entry = parts.get_entry(&id).await.unwrap().unwrap();
    assert_eq!(
        entry.data,
        Part {
            part_number: "P-12345".into(),
            part_name: "Landing Gear Strut".into(),
            revision: Some("C".into()),
            unit_of_measure: Some("EA".into()),
        }
    );
    assert_eq!(
        (entry.cached_at_ms, entry.ttl_secs, entry.version),
        (cached_at, 300, None)
    );

    // What Rust writes for the same data is the same envelope, same bytes
    // apart from the time.
    parts.set(&id, &entry.data, None).await.unwrap();
    let written = String::from_utf8(h.raw_get(&h.key(&CacheKeyPrefix::Part, &id)).await.unwrap()).unwrap();
    assert_eq!(
        written,
        value.replace(&cached_at.to_string(), &(cached_at + 1_000).to_string())
    );

    // The legacy entry past the legacy expiry rule is a miss, and deleted.
    h.raw_set(&h.key(&CacheKeyPrefix::Part, &id), value.clone()).await;
    h.clock.set_ms(cached_at + 300_000);
    assert!(parts.get(&id).await.unwrap().is_some());
    h.clock.set_ms(cached_at + 300_001);
    assert_eq!(parts.get(&id).await.unwrap(), None);
    assert_eq!(h.raw_get(&h.key(&CacheKeyPrefix::Part, &id)).await, None);

    let (key, value) = fixture("cache-entry-work-center-versioned.json");
    assert_eq!(h.cache.key(&CacheKeyPrefix::WorkCenter, "WC-01"), key);
    let id = format!("WC-01-{suffix}");
    h.raw_set(&h.key(&CacheKeyPrefix::WorkCenter, &id), value.clone())
        .await;
    let legacy: Json = serde_json::from_str(&value).unwrap();
    h.clock.set_ms(legacy["cachedAt"].as_u64().unwrap() + 599_000);
    let centers = h.cache.prefix::<WorkCenter>(CacheKeyPrefix::WorkCenter);
    let entry = centers.get_entry(&id).await.unwrap().unwrap();
    assert_eq!(entry.data.work_center_name, "Final Assembly");
    assert_eq!((entry.ttl_secs, entry.version.as_deref()), (600, Some("v2")));
    centers
        .set_versioned(&id, &entry.data, Some(Duration::from_secs(600)), "v2")
        .await
        .unwrap();
    let written = h.raw_json(&h.key(&CacheKeyPrefix::WorkCenter, &id)).await;
    assert_same_shape(&written, &legacy);
    let ours = String::from_utf8(h.raw_get(&h.key(&CacheKeyPrefix::WorkCenter, &id)).await.unwrap()).unwrap();
    assert_eq!(
        ours,
        value.replace(
            &legacy["cachedAt"].as_u64().unwrap().to_string(),
            &(legacy["cachedAt"].as_u64().unwrap() + 599_000).to_string()
        )
    );

    // Clean up only what this test wrote.
    h.cache
        .invalidate(&CacheKeyPrefix::WorkCenter, &id)
        .await
        .unwrap();
    h.cache
        .invalidate(&CacheKeyPrefix::Part, &format!("P-12345-{suffix}"))
        .await
        .unwrap();
    h.cache.close().await.unwrap();
}

/// Same field names and JSON types, recursively.
pub fn assert_same_shape(ours: &Json, legacy: &Json) {
    match (ours, legacy) {
        (Json::Object(a), Json::Object(b)) => {
            let keys = |m: &serde_json::Map<String, Json>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b));
            for (k, v) in a {
                assert_same_shape(v, &b[k]);
            }
        }
        (Json::Number(a), Json::Number(b)) => {
            assert_eq!(
                (a.is_u64(), a.is_i64(), a.is_f64()),
                (b.is_u64(), b.is_i64(), b.is_f64())
            );
        }
        (Json::String(_), Json::String(_)) | (Json::Bool(_), Json::Bool(_)) | (Json::Null, Json::Null) => {}
        (Json::Array(a), Json::Array(b)) => {
            for (x, y) in a.iter().zip(b) {
                assert_same_shape(x, y);
            }
        }
        _ => panic!("{ours} and {legacy} differ in type"),
    }
}

/// Generates one `#[tokio::test]` per scenario for a target.
#[macro_export]
macro_rules! scenarios {
    ($target:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                common::$name($target).await;
            }
        )*
    };
}

/// Every scenario for a target: the one list all targets share, so a new
/// scenario runs everywhere.
#[macro_export]
macro_rules! every_scenario {
    ($target:expr) => {
        scenarios!($target;
            set_get_and_envelope,
            typed_views_keep_types_apart,
            errors_are_not_misses,
            legacy_expiry_rule,
            get_many_and_set_many_across_slots,
            invalidation_escapes_ids,
            clear_all_stays_in_its_namespace,
            corrupt_values_are_counted_misses,
            single_flight,
            periodic_warming,
            warm_handle_stop,
            stats_and_health,
            close_ends_everything,
            legacy_fixtures_are_read,
            set_if_newer_never_goes_back,
            operator_reads,
        );
    };
}
