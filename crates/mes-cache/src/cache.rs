//! [`ReferenceDataCache`]: the whole legacy API, typed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OnceCell, watch};
use tracing::{Instrument, debug, info_span, warn};

use crate::backend::memory::InMemoryStore;
use crate::backend::redis::RedisBackend;
use crate::backend::tracking::Tracker;
use crate::backend::{Backend, Raw, ServerStats};
use crate::config::CacheConfig;
use crate::envelope::{CacheEntry, Clock, EnvelopeRef, decode};
use crate::error::{BoxError, Error, Result};
use crate::metrics::Operation;
use crate::near::{FlushReason, L1, NearCacheStats, Ticket};
use crate::prefix::{CacheEntity, CacheKeyPrefix, escape_glob, key};
use crate::stats::{CacheCounters, CacheStats, Counters};
use crate::typed::PrefixCache;
use fred::bytes::Bytes;

/// The reference data cache: typed reads and writes of the legacy
/// `mes:cache:{prefix}:{id}` entries in Redis (standalone, Cluster or
/// Sentinel) or in an [`InMemoryStore`].
///
/// Cheap to clone: clones share the connections, counters and warmers.
/// See the crate documentation for an example.
#[derive(Clone)]
pub struct ReferenceDataCache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: Backend,
    namespace: String,
    escaped_namespace: String,
    default_ttl_secs: u64,
    scan_page_size: u32,
    batch_size: usize,
    clock: Arc<dyn Clock>,
    description: String,
    counters: RwLock<HashMap<String, Arc<Counters>>>,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    pub(crate) warmers: Mutex<Vec<watch::Receiver<bool>>>,
    pub(crate) shutdown: watch::Sender<bool>,
    closed: AtomicBool,
    near: Option<Near>,
}

/// What Redis holds under one key, read by
/// [`ReferenceDataCache::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredValue {
    /// The Redis key.
    pub key: String,
    /// The value, byte for byte.
    pub bytes: Vec<u8>,
    /// How long Redis keeps the key (`PTTL`); `None` for a key without a TTL.
    pub redis_ttl: Option<Duration>,
}

impl StoredValue {
    /// The legacy envelope of the value, with `data` read as `T`
    /// (`serde_json::Value` for any), or why it is not one.
    ///
    /// # Errors
    /// The parser's error, as [`CacheEntry::decode`].
    pub fn decode<T: DeserializeOwned>(&self) -> std::result::Result<CacheEntry<T>, serde_json::Error> {
        CacheEntry::decode(&self.bytes)
    }
}

/// The near cache and what keeps it right.
struct Near {
    l1: Arc<L1>,
    tracker: Tracker,
}

/// A key read from Redis that the near cache may keep.
struct NearRead {
    key: String,
    ticket: Ticket,
    pttl_ms: i64,
}

/// One `get_or_load` in progress for a key: the loaded value as JSON (or
/// the loader's error message) for every caller that joined it.
#[derive(Default)]
struct Flight {
    result: OnceCell<Result<Option<Vec<u8>>, String>>,
    waiters: AtomicUsize,
}

/// Decrements a flight's waiter count when dropped.
struct Waiting<'a>(&'a Flight);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its sources, `: `-separated, for logs.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn ttl_secs(ttl: Duration) -> Result<u64> {
    if ttl < Duration::from_secs(1) {
        return Err(Error::InvalidTtl { ttl });
    }
    Ok(ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)))
}

impl fmt::Debug for ReferenceDataCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceDataCache")
            .field("backend", &self.inner.description)
            .field("namespace", &self.inner.namespace)
            .field("default_ttl_secs", &self.inner.default_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl ReferenceDataCache {
    fn build(config: CacheConfig, backend: Backend, description: String, near: Option<Near>) -> Result<Self> {
        config.validate()?;
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                escaped_namespace: escape_glob(&config.namespace),
                namespace: config.namespace,
                default_ttl_secs: ttl_secs(config.default_ttl)?,
                scan_page_size: config.scan_page_size,
                batch_size: config.batch_size,
                clock: config.clock,
                description,
                counters: RwLock::default(),
                flights: Mutex::default(),
                warmers: Mutex::default(),
                shutdown,
                closed: AtomicBool::new(false),
                near,
            }),
        })
    }

    /// Connects to the Redis of `config` (standalone, Cluster or Sentinel,
    /// by the URL's scheme).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], or [`Error::Connect`] when the first
    /// connection fails within the connect timeout.
    pub async fn connect(config: CacheConfig) -> Result<Self> {
        config.validate()?;
        let backend = RedisBackend::connect(&config).await?;
        let description = config.redacted_url();
        Self::with_redis(config, backend, description).await
    }

    /// Starts the near cache's listeners when asked to, then builds.
    async fn with_redis(config: CacheConfig, backend: RedisBackend, description: String) -> Result<Self> {
        // Before any listener starts: `build` must not fail after that.
        if let Err(error) = config.validate() {
            let _ = backend.quit().await;
            return Err(error);
        }
        let near = match config.near_cache {
            None => None,
            Some(settings) => {
                settings.validate()?;
                let l1 = Arc::new(L1::new(settings, Arc::clone(&config.clock)));
                let prefix = format!("{}:", config.namespace);
                match Tracker::start(
                    &config,
                    settings.heartbeat,
                    backend.pool(),
                    backend.sentinel_master(),
                    Arc::clone(&l1),
                    prefix,
                )
                .await
                {
                    Ok(tracker) => Some(Near { l1, tracker }),
                    Err(error) => {
                        let _ = backend.quit().await;
                        return Err(error);
                    }
                }
            }
        };
        Self::build(config, Backend::Redis(backend), description, near)
    }

    /// Connects to `REDIS_URL` (default `redis://localhost:6379`) with every
    /// other setting at its default.
    ///
    /// # Errors
    /// As [`ReferenceDataCache::connect`].
    pub async fn from_env() -> Result<Self> {
        Self::connect(CacheConfig::from_env()?).await
    }

    /// Escape hatch: a cache over a `fred` pool the service built itself
    /// (connected or not). The URL of `config` is ignored; its other
    /// settings apply. Ties the caller to this crate's `fred` version.
    ///
    /// On a Cluster, build the pool with `ConnectionConfig::max_redirections`
    /// set to 0, as [`connect`](Self::connect) does: the cache then follows
    /// redirections itself ([`follow_redirections`](crate::follow_redirections)
    /// says why). With fred following them, a read during a slot migration
    /// can get the reply meant for another command.
    ///
    /// # Errors
    /// [`Error::Connect`] when the pool cannot connect.
    pub async fn from_fred_pool(pool: fred::clients::Pool, config: CacheConfig) -> Result<Self> {
        let backend = RedisBackend::from_pool(pool, &config).await?;
        Self::with_redis(config, backend, "fred pool".to_owned()).await
    }

    /// Escape hatch: the underlying `fred` pool, `None` for an in-memory
    /// cache.
    pub fn fred_pool(&self) -> Option<&fred::clients::Pool> {
        match &self.inner.backend {
            Backend::Redis(redis) => Some(redis.pool()),
            Backend::Memory(_) => None,
        }
    }

    /// A cache over an in-process [`InMemoryStore`] instead of Redis: the
    /// test double for services' unit tests. The store keeps its own clock;
    /// `config`'s URL is ignored, and so is its near cache (the store is
    /// in process already).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid configuration.
    pub fn with_store(config: CacheConfig, store: InMemoryStore) -> Result<Self> {
        Self::build(config, Backend::Memory(store), "in-memory store".to_owned(), None)
    }

    /// A cache over a fresh [`InMemoryStore`] that follows `config`'s clock.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid configuration.
    pub fn in_memory(config: CacheConfig) -> Result<Self> {
        let store = InMemoryStore::with_shared_clock(Arc::clone(&config.clock));
        Self::with_store(config, store)
    }

    /// A typed view of one prefix: `cache.prefix::<Part>(CacheKeyPrefix::Part)`.
    pub fn prefix<T>(&self, prefix: CacheKeyPrefix) -> PrefixCache<T> {
        PrefixCache::new(self.clone(), prefix)
    }

    /// The typed view of a [`CacheEntity`], bound to its prefix, so a type
    /// can only ever be read from its own prefix.
    pub fn typed<T: CacheEntity>(&self) -> PrefixCache<T> {
        PrefixCache::new(self.clone(), T::PREFIX)
    }

    /// The Redis key of an entry: `{namespace}:{prefix}:{id}`.
    pub fn key(&self, prefix: &CacheKeyPrefix, id: &str) -> String {
        key(&self.inner.namespace, prefix, id)
    }

    /// The key namespace, `mes:cache` by default.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn counters_for(&self, prefix: &CacheKeyPrefix) -> Arc<Counters> {
        let counters = self.inner.counters.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = counters.get(prefix.as_str()) {
            return Arc::clone(found);
        }
        drop(counters);
        let mut counters = self
            .inner
            .counters
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            counters
                .entry(prefix.as_str().to_owned())
                .or_insert_with(|| Arc::new(Counters::new(prefix.as_str()))),
        )
    }

    fn failed(&self, counters: &Counters, operation: &'static str, source: BoxError) -> Error {
        counters.errors.add(1);
        let error = Error::redis(operation, source);
        warn!(error = %chain(&error), "mes-cache: Redis command failed");
        error
    }

    /// Decides what a read value is. Returns the entry, if usable, and the
    /// value read when the key must be removed (expired or undecodable).
    fn classify<T: DeserializeOwned>(
        &self,
        id: &str,
        raw: Raw,
        counters: &Counters,
    ) -> (Option<CacheEntry<T>>, Option<Bytes>) {
        let Some(bytes) = raw else {
            counters.misses.add(1);
            return (None, None);
        };
        match decode::<T>(&bytes) {
            Ok(entry) if entry.is_expired_at(self.inner.clock.now_ms()) => {
                counters.misses.add(1);
                counters.expired.add(1);
                debug!(id, "mes-cache: entry past its TTL, removing");
                (None, Some(bytes))
            }
            Ok(entry) => {
                counters.hits.add(1);
                (Some(entry), None)
            }
            Err(error) => {
                counters.misses.add(1);
                counters.decode_failures.add(1);
                warn!(id, error = %error, "mes-cache: undecodable value counted as a miss and removed");
                (None, Some(bytes))
            }
        }
    }

    /// Removes expired or corrupt keys, each only if it still holds the
    /// value that was read (a fresh entry another service wrote meanwhile
    /// stays). A failure is logged and counted, never returned (the read
    /// itself succeeded).
    async fn remove_quietly(&self, stale: Vec<(String, Bytes)>, counters: &Counters) {
        if stale.is_empty() {
            return;
        }
        if let Err(source) = self.inner.backend.unlink_if_unchanged(stale).await {
            self.failed(counters, "unlink", source);
        }
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: u64,
        version: Option<&str>,
    ) -> Result<Vec<u8>> {
        serde_json::to_vec(&EnvelopeRef {
            data: value,
            cached_at: self.inner.clock.now_ms(),
            ttl,
            version,
        })
        .map_err(|source| Error::Encode {
            key: key.to_owned(),
            source,
        })
    }

    fn ttl_or_default(&self, ttl: Option<Duration>) -> Result<u64> {
        ttl.map_or(Ok(self.inner.default_ttl_secs), ttl_secs)
    }

    /// Offers a decoded entry read from Redis to the near cache, which keeps
    /// it unless an invalidation overtook the read.
    fn keep_near<T>(&self, read: NearRead, bytes: Bytes, entry: &CacheEntry<T>) {
        if let Some(near) = &self.inner.near
            && let Some(until) = near
                .l1
                .live_until(entry.cached_at_ms, entry.ttl_secs, read.pttl_ms)
        {
            near.l1.store(read.key, bytes, until, read.ticket);
        }
    }

    /// Drops keys this process just wrote or removed from the near cache at
    /// once (Redis's message about them follows, but later).
    fn forget_near<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        if let Some(near) = &self.inner.near {
            for key in keys {
                near.l1.invalidate(key);
            }
        }
    }

    /// The near cache's figures; `None` when it is off.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.inner.near.as_ref().map(|near| near.l1.stats())
    }

    /// Whether the near cache holds a live entry for the id (diagnostics
    /// and tests; counts nothing). `false` when it is off.
    pub fn near_cache_holds(&self, prefix: &CacheKeyPrefix, id: &str) -> bool {
        self.inner
            .near
            .as_ref()
            .is_some_and(|near| near.l1.holds(&self.key(prefix, id)))
    }

    /// Reads one entry with its envelope metadata.
    ///
    /// `Ok(None)` when the key is absent, past the legacy expiry rule
    /// (`now - cachedAt > ttl`, then the key is removed) or undecodable as
    /// `T` (counted, logged, key removed).
    ///
    /// # Errors
    /// [`Error::Redis`] when Redis fails; [`Error::Closed`] after `close`.
    pub async fn get_entry<T: DeserializeOwned>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
    ) -> Result<Option<CacheEntry<T>>> {
        let span = info_span!("mes_cache.get", prefix = %prefix, id);
        let counters = self.counters_for(prefix);
        let read = self.read_entry(prefix, id, &counters);
        counters
            .durations
            .time(Operation::Get, read)
            .instrument(span)
            .await
    }

    /// [`get_entry`](Self::get_entry), counting into `counters`.
    async fn read_entry<T: DeserializeOwned>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        counters: &Counters,
    ) -> Result<Option<CacheEntry<T>>> {
        self.check_open()?;
        let key = self.key(prefix, id);
        let (raw, near) = match (&self.inner.near, &self.inner.backend) {
            (Some(near), Backend::Redis(redis)) => {
                if let Some(bytes) = near.l1.get(&key)
                    && let Ok(entry) = decode::<T>(&bytes)
                {
                    // Checked against the expiry rule when it was stored, and
                    // L1 keeps it no longer than that rule allows.
                    counters.hits.add(1);
                    counters.near_hits.add(1);
                    return Ok(Some(entry));
                }
                let ticket = near.l1.ticket(&key);
                let (raw, pttl_ms) = redis
                    .get_with_pttl(key.clone())
                    .await
                    .map_err(|e| self.failed(counters, "get", e))?;
                (
                    raw,
                    Some(NearRead {
                        key: key.clone(),
                        ticket,
                        pttl_ms,
                    }),
                )
            }
            _ => {
                let raw = self
                    .inner
                    .backend
                    .get(key.clone())
                    .await
                    .map_err(|e| self.failed(counters, "get", e))?;
                (raw, None)
            }
        };
        let bytes = raw.clone();
        let (entry, stale) = self.classify::<T>(id, raw, counters);
        if let Some(stale) = stale {
            self.remove_quietly(vec![(key, stale)], counters).await;
        }
        if let (Some(entry), Some(read), Some(bytes)) = (&entry, near, bytes) {
            self.keep_near(read, bytes, entry);
        }
        Ok(entry)
    }

    /// Reads one value. See [`ReferenceDataCache::get_entry`].
    ///
    /// # Errors
    /// [`Error::Redis`] when Redis fails; [`Error::Closed`] after `close`.
    pub async fn get<T: DeserializeOwned>(&self, prefix: &CacheKeyPrefix, id: &str) -> Result<Option<T>> {
        Ok(self.get_entry(prefix, id).await?.map(|entry| entry.data))
    }

    /// Reads many values at once, keyed by id; ids without a usable entry
    /// are absent. One `MGET` per round trip (per hash slot in Cluster mode,
    /// sent concurrently in one pipeline); a corrupt value only drops its
    /// own id.
    ///
    /// # Errors
    /// [`Error::Redis`] when Redis fails; [`Error::Closed`] after `close`.
    pub async fn get_many<T, I, S>(&self, prefix: &CacheKeyPrefix, ids: I) -> Result<HashMap<String, T>>
    where
        T: DeserializeOwned,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut ids: Vec<S> = ids.into_iter().collect();
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<bool> = ids.iter().map(|id| seen.insert(id.as_ref())).collect();
        drop(seen);
        if unique.contains(&false) {
            let mut unique = unique.into_iter();
            ids.retain(|_| unique.next().unwrap_or(false));
        }
        let span = info_span!("mes_cache.get_many", prefix = %prefix, count = ids.len());
        let counters = self.counters_for(prefix);
        let read = async {
            self.check_open()?;
            if ids.is_empty() {
                return Ok(HashMap::new());
            }
            let mut found = HashMap::with_capacity(ids.len());
            let mut remove = Vec::new();
            if let (Some(near), Backend::Redis(redis)) = (&self.inner.near, &self.inner.backend) {
                // Near hits first; one pipeline of MGETs and PTTLs for the rest.
                let mut wanted: Vec<(&str, String, Ticket)> = Vec::new();
                for id in &ids {
                    let id = id.as_ref();
                    let key = self.key(prefix, id);
                    if let Some(bytes) = near.l1.get(&key)
                        && let Ok(entry) = decode::<T>(&bytes)
                    {
                        counters.hits.add(1);
                        counters.near_hits.add(1);
                        found.insert(id.to_owned(), entry.data);
                        continue;
                    }
                    let ticket = near.l1.ticket(&key);
                    wanted.push((id, key, ticket));
                }
                if !wanted.is_empty() {
                    let keys = wanted.iter().map(|(_, key, _)| key.clone()).collect();
                    let replies = redis
                        .mget_with_pttl(keys, self.inner.batch_size)
                        .await
                        .map_err(|e| self.failed(&counters, "get_many", e))?;
                    for ((id, key, ticket), (raw, pttl_ms)) in wanted.into_iter().zip(replies) {
                        let bytes = raw.clone();
                        match self.classify::<T>(id, raw, &counters) {
                            (Some(entry), _) => {
                                if let Some(bytes) = bytes {
                                    self.keep_near(NearRead { key, ticket, pttl_ms }, bytes, &entry);
                                }
                                found.insert(id.to_owned(), entry.data);
                            }
                            (None, Some(stale)) => remove.push((key, stale)),
                            (None, None) => {}
                        }
                    }
                }
                self.remove_quietly(remove, &counters).await;
                return Ok(found);
            }
            let keys: Vec<String> = ids.iter().map(|id| self.key(prefix, id.as_ref())).collect();
            let raws = self
                .inner
                .backend
                .mget(keys, self.inner.batch_size)
                .await
                .map_err(|e| self.failed(&counters, "get_many", e))?;
            for (id, raw) in ids.into_iter().zip(raws) {
                let id = id.as_ref();
                match self.classify::<T>(id, raw, &counters) {
                    (Some(entry), _) => {
                        found.insert(id.to_owned(), entry.data);
                    }
                    (None, Some(stale)) => remove.push((self.key(prefix, id), stale)),
                    (None, None) => {}
                }
            }
            self.remove_quietly(remove, &counters).await;
            Ok(found)
        };
        counters
            .durations
            .time(Operation::GetMany, read)
            .instrument(span)
            .await
    }

    /// Writes one value (`SETEX`) with `ttl`, or the default TTL when
    /// `None`.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] under one second, [`Error::Encode`],
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.write_one(prefix, id, value, ttl, None).await
    }

    /// Writes one value with the envelope's optional `version` string.
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set`].
    pub async fn set_versioned<T: Serialize + ?Sized>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        value: &T,
        ttl: Option<Duration>,
        version: &str,
    ) -> Result<()> {
        self.write_one(prefix, id, value, ttl, Some(version)).await
    }

    /// Writes one value with `version` unless the entry already holds a
    /// version that is not older, in one atomic step (a Lua script in
    /// Redis): a refresh from an older event never overwrites the data of a
    /// newer one. Versions are compared byte-wise, so write ones that sort,
    /// such as zero-padded timestamps; an entry whose version does not start
    /// with a digit (none, or a legacy `v2`) is overwritten. Returns whether
    /// it wrote.
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set`].
    pub async fn set_if_newer<T: Serialize + ?Sized>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        value: &T,
        ttl: Option<Duration>,
        version: &str,
    ) -> Result<bool> {
        let span = info_span!("mes_cache.set_if_newer", prefix = %prefix, id, version);
        let counters = self.counters_for(prefix);
        let write = async {
            self.check_open()?;
            let ttl = self.ttl_or_default(ttl)?;
            let key = self.key(prefix, id);
            let bytes = self.encode(&key, value, ttl, Some(version))?;
            let written = self
                .inner
                .backend
                .setex_if_newer(key.clone(), ttl, bytes, version)
                .await;
            // Whatever the outcome (a timed-out write may have landed).
            self.forget_near([key.as_str()]);
            written.map_err(|e| self.failed(&counters, "set_if_newer", e))
        };
        counters
            .durations
            .time(Operation::SetIfNewer, write)
            .instrument(span)
            .await
    }

    async fn write_one<T: Serialize + ?Sized>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        value: &T,
        ttl: Option<Duration>,
        version: Option<&str>,
    ) -> Result<()> {
        let span = info_span!("mes_cache.set", prefix = %prefix, id);
        let counters = self.counters_for(prefix);
        let write = async {
            self.check_open()?;
            let ttl = self.ttl_or_default(ttl)?;
            let key = self.key(prefix, id);
            let bytes = self.encode(&key, value, ttl, version)?;
            let written = self
                .inner
                .backend
                .setex_many(vec![(key.clone(), ttl, bytes)], 1)
                .await;
            self.forget_near([key.as_str()]);
            written.map_err(|e| self.failed(&counters, "set", e))
        };
        counters
            .durations
            .time(Operation::Set, write)
            .instrument(span)
            .await
    }

    /// Writes many values with `SETEX`, in batches of `batch_size`: on a
    /// standalone or Sentinel-managed server one script (`EVAL`) per batch
    /// runs its `SETEX`es (a fraction of the client work of a pipeline of
    /// single commands); on a Cluster, whose scripts cannot span hash
    /// slots, one pipeline per batch. Up to four batches are in flight.
    /// Returns how many were written. Nothing is written when one value
    /// cannot be encoded; a batch failing midway keeps its earlier writes.
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set`].
    pub async fn set_many<I, K, V>(
        &self,
        prefix: &CacheKeyPrefix,
        entries: I,
        ttl: Option<Duration>,
    ) -> Result<usize>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        let span = info_span!("mes_cache.set_many", prefix = %prefix, count = tracing::field::Empty);
        let counters = self.counters_for(prefix);
        let write = async {
            self.check_open()?;
            let ttl = self.ttl_or_default(ttl)?;
            let items = entries
                .into_iter()
                .map(|(id, value)| {
                    let key = self.key(prefix, id.as_ref());
                    let bytes = self.encode(&key, &value, ttl, None)?;
                    Ok((key, ttl, bytes))
                })
                .collect::<Result<Vec<_>>>()?;
            let count = items.len();
            tracing::Span::current().record("count", count);
            if count == 0 {
                return Ok(0);
            }
            let keys: Vec<String> = match &self.inner.near {
                Some(_) => items.iter().map(|(key, _, _)| key.clone()).collect(),
                None => Vec::new(),
            };
            let written = self.inner.backend.setex_many(items, self.inner.batch_size).await;
            self.forget_near(keys.iter().map(String::as_str));
            written.map_err(|e| self.failed(&counters, "set_many", e))?;
            Ok(count)
        };
        counters
            .durations
            .time(Operation::SetMany, write)
            .instrument(span)
            .await
    }

    /// [`set_many`](Self::set_many) for periodic warming: an entry whose
    /// stored `data` already equals the new one (same TTL, no version) and
    /// that stays live for at least `keep_for` more is not rewritten, so
    /// re-warming unchanged data writes nothing and no instance's near
    /// cache drops it. Returns how many entries are in place (written or
    /// kept).
    pub(crate) async fn set_many_if_changed<V: Serialize>(
        &self,
        prefix: &CacheKeyPrefix,
        entries: Vec<(String, V)>,
        ttl: Option<Duration>,
        keep_for: Duration,
    ) -> Result<usize> {
        let span = info_span!("mes_cache.set_many_if_changed", prefix = %prefix, count = entries.len(), written = tracing::field::Empty);
        let counters = self.counters_for(prefix);
        let write = async {
            self.check_open()?;
            let ttl = self.ttl_or_default(ttl)?;
            let count = entries.len();
            if count == 0 {
                return Ok(0);
            }
            let keys: Vec<String> = entries.iter().map(|(id, _)| self.key(prefix, id)).collect();
            let current = self
                .inner
                .backend
                .mget(keys.clone(), self.inner.batch_size)
                .await
                .map_err(|e| self.failed(&counters, "set_many", e))?;
            let live_until = self
                .inner
                .clock
                .now_ms()
                .saturating_add(u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX));
            let mut items = Vec::new();
            for ((key, (_, value)), raw) in keys.into_iter().zip(entries).zip(current) {
                let data = serde_json::to_value(&value).map_err(|source| Error::Encode {
                    key: key.clone(),
                    source,
                })?;
                let unchanged = raw
                    .and_then(|bytes| decode::<serde_json::Value>(&bytes).ok())
                    .is_some_and(|stored| {
                        stored.data == data
                            && stored.version.is_none()
                            && stored.ttl_secs == ttl
                            && !stored.is_expired_at(live_until)
                    });
                if !unchanged {
                    // Encoded from the value itself: the legacy bytes, fields in order.
                    let bytes = self.encode(&key, &value, ttl, None)?;
                    items.push((key, ttl, bytes));
                }
            }
            tracing::Span::current().record("written", items.len());
            if items.is_empty() {
                return Ok(count);
            }
            let written_keys: Vec<String> = match &self.inner.near {
                Some(_) => items.iter().map(|(key, _, _)| key.clone()).collect(),
                None => Vec::new(),
            };
            let written = self.inner.backend.setex_many(items, self.inner.batch_size).await;
            self.forget_near(written_keys.iter().map(String::as_str));
            written.map_err(|e| self.failed(&counters, "set_many", e))?;
            Ok(count)
        };
        counters
            .durations
            .time(Operation::Warm, write)
            .instrument(span)
            .await
    }

    /// Removes one entry (`UNLINK` of its exact key: no pattern involved).
    /// Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn invalidate(&self, prefix: &CacheKeyPrefix, id: &str) -> Result<bool> {
        let span = info_span!("mes_cache.invalidate", prefix = %prefix, id);
        let counters = self.counters_for(prefix);
        let remove = async {
            self.check_open()?;
            let key = self.key(prefix, id);
            let removed = self.inner.backend.unlink(vec![key.clone()]).await;
            self.forget_near([key.as_str()]);
            let removed = removed.map_err(|e| self.failed(&counters, "invalidate", e))?;
            Ok(removed > 0)
        };
        counters
            .durations
            .time(Operation::Invalidate, remove)
            .instrument(span)
            .await
    }

    /// Removes the entries of many ids (`UNLINK`, one per hash slot in
    /// Cluster mode, pipelined). Returns how many existed.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn invalidate_many<I, S>(&self, prefix: &CacheKeyPrefix, ids: I) -> Result<u64>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys: Vec<String> = ids.into_iter().map(|id| self.key(prefix, id.as_ref())).collect();
        let span = info_span!("mes_cache.invalidate_many", prefix = %prefix, count = keys.len());
        let counters = self.counters_for(prefix);
        let remove = async {
            self.check_open()?;
            if keys.is_empty() {
                return Ok(0);
            }
            let removed = self.inner.backend.unlink(keys.clone()).await;
            self.forget_near(keys.iter().map(String::as_str));
            removed.map_err(|e| self.failed(&counters, "invalidate_many", e))
        };
        counters
            .durations
            .time(Operation::InvalidateMany, remove)
            .instrument(span)
            .await
    }

    /// Removes every entry whose key, after the namespace and its `:`,
    /// matches the Redis glob `pattern`: `*` any run of characters
    /// (including `:`), `?` one character, `[abc]` / `[^a]` / `[a-z]` a
    /// class, `\x` a literal `x`. E.g. `work_order:*:P-123` removes
    /// `mes:cache:work_order:{anything}:P-123`.
    ///
    /// The pattern is the caller's: put ids into it only through
    /// [`escape_glob`](crate::escape_glob), or an id like `P-1*` widens the
    /// deletion. The namespace is escaped here. Streams `SCAN` pages into
    /// `UNLINK`s on every primary; returns how many keys were removed.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<u64> {
        let full = format!("{}:{pattern}", self.inner.escaped_namespace);
        let counters = self.counters_for(&CacheKeyPrefix::new(
            pattern.split(':').next().unwrap_or("").to_owned(),
        ));
        self.scan_unlink(full, Operation::InvalidatePattern, &counters, &mut |_| {})
            .await
    }

    /// Removes every entry of a prefix (the prefix is escaped, so a free
    /// prefix with glob characters removes only itself).
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn invalidate_all(&self, prefix: &CacheKeyPrefix) -> Result<u64> {
        self.invalidate_all_with_progress(prefix, |_| {}).await
    }

    /// [`invalidate_all`](Self::invalidate_all), calling `on_page` with the
    /// number of keys each `SCAN` page removed as it goes: a prefix of
    /// millions of keys takes a while, and an operator wants to see it move
    /// (the `mes` command line draws a progress bar with it; the total to
    /// expect is [`stats`](Self::stats)' `key_count`).
    ///
    /// On a Cluster whose slots move meanwhile (a reshard), the scan is
    /// made again until one pass saw no slot move, so no entry that existed
    /// when it was called is left; it then lasts until the moves pause.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`]; the pages removed before a
    /// failure stay removed (and were reported). [`Error::Redis`] with a
    /// [`SlotsKeptMoving`](crate::SlotsKeptMoving) source when slots kept moving through about half
    /// a minute of scans.
    pub async fn invalidate_all_with_progress(
        &self,
        prefix: &CacheKeyPrefix,
        mut on_page: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        let pattern = format!(
            "{}:{}:*",
            self.inner.escaped_namespace,
            escape_glob(prefix.as_str())
        );
        let counters = self.counters_for(prefix);
        self.scan_unlink(pattern, Operation::InvalidateAll, &counters, &mut on_page)
            .await
    }

    /// Removes every entry of the namespace.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn clear_all(&self) -> Result<u64> {
        let pattern = format!("{}:*", self.inner.escaped_namespace);
        let counters = self.counters_for(&CacheKeyPrefix::new("*"));
        self.scan_unlink(pattern, Operation::ClearAll, &counters, &mut |_| {})
            .await
    }

    async fn scan_unlink(
        &self,
        pattern: String,
        operation: Operation,
        counters: &Counters,
        on_page: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        let name = operation.label();
        let span = info_span!("mes_cache.scan_unlink", operation = name, pattern = %pattern, removed = tracing::field::Empty);
        let remove = async {
            self.check_open()?;
            let removed = self
                .inner
                .backend
                .scan_unlink(&pattern, self.inner.scan_page_size, on_page)
                .await;
            if let Some(near) = &self.inner.near {
                near.l1.invalidate_matching(&pattern);
            }
            let removed = removed.map_err(|e| self.failed(counters, name, e))?;
            tracing::Span::current().record("removed", removed);
            Ok(removed)
        };
        counters.durations.time(operation, remove).instrument(span).await
    }

    /// This process's counters for a prefix (no Redis round trip).
    pub fn counters(&self, prefix: &CacheKeyPrefix) -> CacheCounters {
        self.counters_for(prefix).snapshot()
    }

    /// Counters, hit rate, key count (a `SCAN` of the prefix) and Redis
    /// memory.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn stats(&self, prefix: &CacheKeyPrefix) -> Result<CacheStats> {
        let span = info_span!("mes_cache.stats", prefix = %prefix);
        async {
            self.check_open()?;
            let counters = self.counters_for(prefix);
            let pattern = format!(
                "{}:{}:*",
                self.inner.escaped_namespace,
                escape_glob(prefix.as_str())
            );
            let key_count = self
                .inner
                .backend
                .scan_count(&pattern, self.inner.scan_page_size)
                .await
                .map_err(|e| self.failed(&counters, "stats", e))?;
            let memory = self
                .inner
                .backend
                .server_stats()
                .await
                .map_err(|e| self.failed(&counters, "stats", e))?
                .memory;
            let snapshot = counters.snapshot();
            Ok(CacheStats {
                prefix: prefix.as_str().to_owned(),
                hit_rate: snapshot.hit_rate(),
                counters: snapshot,
                key_count,
                memory,
            })
        }
        .instrument(span)
        .await
    }

    /// How many keys each prefix holds in the namespace, in one `SCAN` of
    /// it (on every primary): the prefixes present, whatever their names,
    /// not only the [known](CacheKeyPrefix::KNOWN) ones. A key is counted
    /// under the text between the namespace's `:` and the next `:`.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn key_counts(&self) -> Result<BTreeMap<String, u64>> {
        let span = info_span!("mes_cache.key_counts");
        async {
            self.check_open()?;
            let start = self.inner.namespace.len() + 1;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut count = |key: &[u8]| {
                let rest = key.get(start..).unwrap_or_default();
                let prefix = rest.split(|b| *b == b':').next().unwrap_or_default();
                let prefix = String::from_utf8_lossy(prefix);
                match counts.get_mut(prefix.as_ref()) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(prefix.into_owned(), 1);
                    }
                }
            };
            self.inner
                .backend
                .scan_keys(
                    &format!("{}:*", self.inner.escaped_namespace),
                    self.inner.scan_page_size,
                    &mut count,
                )
                .await
                .map_err(|e| Error::redis("key_counts", e))?;
            Ok(counts)
        }
        .instrument(span)
        .await
    }

    /// What the Redis server says of itself (`INFO`, every primary in
    /// Cluster mode): memory, and the keyspace hits and misses of every
    /// client since it started, the server-wide hit rate (where
    /// [`stats`](Self::stats) has this process's). The in-memory store
    /// counts no hits.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn server_stats(&self) -> Result<ServerStats> {
        let span = info_span!("mes_cache.server_stats");
        async {
            self.check_open()?;
            self.inner
                .backend
                .server_stats()
                .await
                .map_err(|e| Error::redis("server_stats", e))
        }
        .instrument(span)
        .await
    }

    /// What Redis holds under a key, as it is: the bytes and the key's
    /// TTL in Redis, for a tool or a person looking at one entry
    /// ([`StoredValue::decode`] reads the envelope, or says why it cannot).
    /// Unlike [`get_entry`](Self::get_entry) it counts nothing, skips the
    /// near cache, and removes nothing: an expired or corrupt value stays
    /// there to be looked at. `Ok(None)`: no such key.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Closed`].
    pub async fn inspect(&self, prefix: &CacheKeyPrefix, id: &str) -> Result<Option<StoredValue>> {
        let span = info_span!("mes_cache.inspect", prefix = %prefix, id);
        async {
            self.check_open()?;
            let key = self.key(prefix, id);
            let (raw, pttl_ms) = self
                .inner
                .backend
                .get_with_pttl(key.clone())
                .await
                .map_err(|e| Error::redis("inspect", e))?;
            Ok(raw.map(|bytes| StoredValue {
                key,
                bytes: bytes.to_vec(),
                redis_ttl: u64::try_from(pttl_ms).ok().map(Duration::from_millis),
            }))
        }
        .instrument(span)
        .await
    }

    /// `PING` (every primary in Cluster mode); returns the round-trip time.
    ///
    /// # Errors
    /// [`Error::Redis`] when a node does not answer `PONG`, [`Error::Closed`].
    pub async fn health_check(&self) -> Result<Duration> {
        let span = info_span!("mes_cache.health_check");
        async {
            self.check_open()?;
            let started = Instant::now();
            self.inner
                .backend
                .ping()
                .await
                .map_err(|e| Error::redis("health_check", e))?;
            Ok(started.elapsed())
        }
        .instrument(span)
        .await
    }

    /// Returns the cached value, or calls `loader` on a miss and caches what
    /// it returns (default TTL). Concurrent misses of the same key in this
    /// process call the loader once (single-flight); the others get its
    /// result. When Redis fails, the loader is called anyway and
    /// `loader_fallbacks` is counted.
    ///
    /// `Ok(None)` when the loader finds nothing (nothing is cached then).
    ///
    /// # Errors
    /// [`Error::Loader`] when the loader fails (every caller sharing the
    /// load gets it), [`Error::Closed`].
    pub async fn get_or_load<T, F, Fut, E>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        loader: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<BoxError>,
    {
        let counters = self.counters_for(prefix);
        let load = self.load_through(prefix, id, loader, &counters);
        counters.durations.time(Operation::GetOrLoad, load).await
    }

    /// [`get_or_load`](Self::get_or_load), counting into `counters`.
    async fn load_through<T, F, Fut, E>(
        &self,
        prefix: &CacheKeyPrefix,
        id: &str,
        loader: F,
        counters: &Counters,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<BoxError>,
    {
        let redis_ok = match self.get::<T>(prefix, id).await {
            Ok(Some(value)) => return Ok(Some(value)),
            Ok(None) => true,
            Err(Error::Closed) => return Err(Error::Closed),
            Err(_) => {
                counters.loader_fallbacks.add(1);
                false
            }
        };
        let key = self.key(prefix, id);
        let flight = Arc::clone(lock(&self.inner.flights).entry(key.clone()).or_default());
        flight.waiters.fetch_add(1, Ordering::SeqCst);
        // Counted out however this call ends, cancellation included.
        let waiting = Waiting(&flight);
        let mut mine: Option<T> = None;
        let mut own_error: Option<Error> = None;
        let (mine_ref, error_ref) = (&mut mine, &mut own_error);
        let shared = flight
            .result
            .get_or_init(|| async move {
                // Another caller may have filled the key since this one
                // missed. The caller's miss is counted already: this
                // re-check counts nothing.
                let uncounted = Counters::default();
                let recheck = self.read_entry::<T>(prefix, id, &uncounted);
                if redis_ok && let Ok(Some(CacheEntry { data: value, .. })) = recheck.await {
                    let json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                    *mine_ref = Some(value);
                    return Ok(Some(json));
                }
                counters.loads.add(1);
                match loader().instrument(info_span!("mes_cache.load", prefix = %prefix, id)).await {
                    Err(error) => {
                        let error: BoxError = error.into();
                        let message = chain(error.as_ref());
                        warn!(prefix = %prefix, id, error = %message, "mes-cache: loader failed");
                        *error_ref = Some(Error::Loader { source: error });
                        Err(message)
                    }
                    Ok(None) => Ok(None),
                    Ok(Some(value)) => {
                        if redis_ok && let Err(error) = self.set(prefix, id, &value, None).await {
                            warn!(prefix = %prefix, id, error = %chain(&error), "mes-cache: cannot cache the loaded value");
                        }
                        let json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                        *mine_ref = Some(value);
                        Ok(Some(json))
                    }
                }
            })
            .await
            .clone();
        drop(waiting);
        {
            let mut flights = lock(&self.inner.flights);
            if flights
                .get(&key)
                .is_some_and(|current| Arc::ptr_eq(current, &flight))
            {
                flights.remove(&key);
            }
        }
        if let Some(error) = own_error {
            return Err(error);
        }
        if mine.is_some() {
            return Ok(mine);
        }
        match shared {
            Ok(None) => Ok(None),
            Ok(Some(json)) => serde_json::from_slice(&json)
                .map(Some)
                .map_err(|e| Error::Loader { source: Box::new(e) }),
            Err(message) => Err(Error::Loader {
                source: message.into(),
            }),
        }
    }

    /// How many callers are waiting on a `get_or_load` of this key right now
    /// (diagnostics, and tests of the single-flight).
    pub fn pending_loads(&self, prefix: &CacheKeyPrefix, id: &str) -> usize {
        lock(&self.inner.flights)
            .get(&self.key(prefix, id))
            .map_or(0, |flight| flight.waiters.load(Ordering::SeqCst))
    }

    /// Stops every periodic warmer (waiting for them to end) and closes the
    /// connections. Every later call fails with [`Error::Closed`].
    ///
    /// # Errors
    /// [`Error::Redis`] when the connections cannot be closed cleanly.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.shutdown.send_replace(true);
        let warmers: Vec<_> = std::mem::take(&mut *lock(&self.inner.warmers));
        for mut done in warmers {
            let _ = done.wait_for(|done| *done).await;
        }
        if let Some(near) = &self.inner.near {
            near.tracker.stop().await;
            near.l1.flush(FlushReason::Local);
        }
        self.inner
            .backend
            .quit()
            .await
            .map_err(|e| Error::redis("close", e))
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}
