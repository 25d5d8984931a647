//! The near cache (L1): recently read entries kept in process, dropped when
//! Redis says their key changed.
//!
//! Correctness rests on three rules, each enforced here:
//!
//! - **A read stores only what no invalidation overtook.** A read takes a
//!   [`Ticket`] (its key's stripe generation) *before* asking Redis; every
//!   invalidation of a key bumps its stripe's generation under the stripe's
//!   lock, and a store checks the generation under the same lock. So a reply
//!   that reaches the process after an invalidation of its key (the
//!   invalidation travels on another connection, and is handled by another
//!   task) is not stored; one stored just before it is removed by it.
//! - **Nothing is stored while invalidations may be missed.** The L1 is
//!   *armed* only while the invalidation listener is connected with tracking
//!   on; losing it disarms and drops the whole L1, and a ticket taken while
//!   disarmed stores nothing.
//! - **An entry lives at most min(local cap, envelope expiry, Redis TTL)**,
//!   on the cache's clock, so the legacy `cachedAt + ttl` rule holds in L1.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fred::bytes::Bytes;

use crate::envelope::Clock;
use crate::error::{Error, Result};
use crate::metrics::{self, Tally};
use crate::prefix::glob_match;

/// Stripes of the generation counters: enough that unrelated keys rarely
/// share one (a shared stripe only costs a skipped store).
const STRIPES: usize = 256;

/// Settings of the near cache (L1), turned on with
/// [`CacheConfig::near_cache`](crate::CacheConfig::near_cache).
///
/// ```
/// use std::time::Duration;
/// use mes_cache::{CacheConfig, NearCache};
///
/// let config = CacheConfig::from_url("redis://localhost:6379")?
///     .near_cache(NearCache::new(50_000, Duration::from_secs(60)));
/// # Ok::<(), mes_cache::Error>(())
/// ```
///
/// With it, `get`, `get_entry`, `get_many`, `get_or_load` and the typed
/// [`PrefixCache`](crate::PrefixCache) answer from process memory when they
/// can. Redis tells the cache which keys changed (client tracking in
/// broadcast mode on the namespace, one listening connection per Redis
/// primary), so writes by any client, the TypeScript services' `SETEX` and
/// `DEL` included, drop the local copy. Needs Redis 6 or later, and a
/// Redis user allowed `CLIENT ID`, `CLIENT TRACKING`, `SUBSCRIBE` and
/// `PING` (connecting fails with [`Error::Connect`] otherwise); the
/// in-memory store has no near cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCache {
    pub(crate) max_entries: usize,
    pub(crate) max_ttl: Duration,
    pub(crate) heartbeat: Duration,
}

impl Default for NearCache {
    /// 10 000 entries, each kept at most 60 s.
    fn default() -> Self {
        Self::new(10_000, Duration::from_secs(60))
    }
}

impl NearCache {
    /// At most `max_entries` entries (the least useful are evicted first),
    /// each kept at most `max_ttl` (and never past its envelope's expiry or
    /// its key's TTL in Redis). The cap also bounds how stale an entry can
    /// get if the invalidation connection is silently cut off.
    pub fn new(max_entries: usize, max_ttl: Duration) -> Self {
        Self {
            max_entries,
            max_ttl,
            heartbeat: Duration::from_secs(5),
        }
    }

    /// The most entries kept.
    #[must_use]
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The longest an entry is kept.
    #[must_use]
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// How often each listening connection is checked with a `PING` (5 s
    /// by default). One not answered within the command timeout is taken
    /// for lost: the near cache is emptied and the connection made anew.
    /// This finds a connection cut off without a reset or an error, which
    /// would otherwise miss invalidations until `max_ttl`.
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_entries == 0 {
            return Err(Error::config("the near cache needs max_entries of at least 1"));
        }
        if self.max_ttl < Duration::from_millis(1) {
            return Err(Error::config("the near cache needs a max_ttl of at least 1 ms"));
        }
        if self.heartbeat < Duration::from_millis(1) {
            return Err(Error::config("the near cache needs a heartbeat of at least 1 ms"));
        }
        Ok(())
    }
}

/// Why the whole near cache was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushReason {
    /// Redis was flushed (`FLUSHALL` / `FLUSHDB`).
    ServerFlush,
    /// The invalidation connection was lost: invalidations may have been
    /// missed until it is back.
    Disconnected,
    /// The invalidation connection came back (tracking is turned on again).
    Reconnected,
    /// The cluster's primaries changed, or the Sentinels named another
    /// master: listeners follow the new set.
    TopologyChanged,
    /// Invalidations arrived faster than they were handled and some were
    /// dropped.
    Lagged,
    /// A pattern or prefix invalidation, or `clear_all`, through this cache.
    Local,
}

/// How many times the near cache was dropped whole, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheFlushes {
    /// `FLUSHALL` / `FLUSHDB` on a server.
    pub server_flush: u64,
    /// The invalidation connection was lost.
    pub disconnected: u64,
    /// The invalidation connection came back.
    pub reconnected: u64,
    /// The cluster's primaries changed, or the Sentinels named another
    /// master.
    pub topology_changed: u64,
    /// Invalidation messages were dropped for lack of room.
    pub lagged: u64,
}

/// The near cache's figures: [`ReferenceDataCache::near_cache_stats`](crate::ReferenceDataCache::near_cache_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Entries held now.
    pub entries: u64,
    /// Bytes of keys and values held now (not counting the map's own
    /// overhead).
    pub bytes: u64,
    /// Reads answered from the near cache (all prefixes; per prefix in
    /// [`CacheCounters::near_hits`](crate::CacheCounters::near_hits)).
    pub hits: u64,
    /// Keys named by invalidation messages from Redis.
    pub invalidations: u64,
    /// Values read from Redis that were not kept because an invalidation
    /// overtook the read, or tracking was not on.
    pub stores_skipped: u64,
    /// Whole-cache drops, by reason.
    pub flushes: NearCacheFlushes,
    /// Whether tracking is on, on every server (the near cache keeps
    /// nothing while it is not).
    pub tracking: bool,
}

/// One entry: the value as read and the time (cache clock) it stops being
/// served.
#[derive(Clone)]
struct Slot {
    bytes: Bytes,
    live_until_ms: u64,
}

/// What a read noted before asking Redis; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    generation: u64,
    armed: bool,
}

/// The near cache's counts, each kept for [`NearCacheStats`] and the
/// metrics recorder at once (hits go to the recorder per prefix, as
/// `mes.cache.near.hits`, from the cache).
struct Counters {
    hits: Tally,
    invalidations: Tally,
    stores_skipped: Tally,
    server_flush: Tally,
    disconnected: Tally,
    reconnected: Tally,
    topology_changed: Tally,
    lagged: Tally,
}

impl Counters {
    fn new() -> Self {
        let flushes = |reason| Tally::new(metrics::flush_counter(reason));
        Self {
            hits: Tally::default(),
            invalidations: Tally::new(metrics::near_counter(metrics::NEAR_INVALIDATIONS)),
            stores_skipped: Tally::new(metrics::near_counter(metrics::NEAR_STORES_SKIPPED)),
            server_flush: flushes("server_flush"),
            disconnected: flushes("disconnected"),
            reconnected: flushes("reconnected"),
            topology_changed: flushes("topology_changed"),
            lagged: flushes("lagged"),
        }
    }
}

/// The L1 map and the bookkeeping that keeps it right.
pub(crate) struct L1 {
    map: quick_cache::sync::Cache<String, Slot>,
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
    armed: AtomicBool,
    max_ttl_ms: u64,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

impl fmt::Debug for L1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.map.len())
            .field("armed", &self.armed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock(mutex: &Mutex<u64>) -> MutexGuard<'_, u64> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl L1 {
    pub(crate) fn new(settings: NearCache, clock: Arc<dyn Clock>) -> Self {
        Self {
            map: quick_cache::sync::Cache::new(settings.max_entries),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
            armed: AtomicBool::new(false),
            max_ttl_ms: u64::try_from(settings.max_ttl.as_millis()).unwrap_or(u64::MAX),
            clock,
            counters: Counters::new(),
        }
    }

    fn stripe_index(&self, key: &str) -> usize {
        usize::try_from(self.hasher.hash_one(key) % STRIPES as u64).unwrap_or(0)
    }

    /// The generation of a stripe, locked. `None` never happens (indices
    /// come from `stripe_index`), but costs nothing to handle.
    fn generation(&self, stripe: usize) -> Option<MutexGuard<'_, u64>> {
        self.stripes.get(stripe).map(lock)
    }

    /// The live value of `key`, if held.
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        // Disarmed means emptied, or about to be: serve nothing meanwhile.
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let slot = self.map.get(key)?;
        if self.clock.now_ms() < slot.live_until_ms {
            self.counters.hits.add(1);
            Some(slot.bytes)
        } else {
            // Past its time: gone, unless a fresher value replaced it.
            self.map
                .remove_if(key, |held| held.live_until_ms == slot.live_until_ms);
            None
        }
    }

    /// Notes the key's stripe generation and whether tracking is on; taken
    /// before the read is sent. The generation is read before `armed`, and
    /// disarming clears `armed` before bumping generations, so a ticket
    /// either sees the disarm or carries a generation the disarm bumped.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe_index(key);
        let generation = self.generation(stripe).map_or(u64::MAX, |g| *g);
        let armed = self.armed.load(Ordering::SeqCst);
        Ticket {
            stripe,
            generation,
            armed,
        }
    }

    /// When an entry read now with this envelope and Redis TTL stops being
    /// served: min(local cap, the legacy `cachedAt + ttl` rule, `PTTL`).
    /// `None` when it must not be kept at all (the key vanished).
    pub(crate) fn live_until(&self, cached_at_ms: u64, ttl_secs: u64, pttl_ms: i64) -> Option<u64> {
        let now = self.clock.now_ms();
        // Legacy rule: live while now - cachedAt <= ttl * 1000.
        let envelope = cached_at_ms
            .saturating_add(ttl_secs.saturating_mul(1000))
            .saturating_add(1);
        let redis = match pttl_ms {
            -1 => u64::MAX, // no TTL in Redis
            ms if ms >= 0 => now.saturating_add(ms.unsigned_abs()),
            _ => return None, // -2: the key is gone already
        };
        Some(now.saturating_add(self.max_ttl_ms).min(envelope).min(redis))
    }

    /// Keeps `bytes` under `key` unless the ticket is stale; whether it did.
    pub(crate) fn store(&self, key: String, bytes: Bytes, live_until_ms: u64, ticket: Ticket) -> bool {
        if ticket.armed
            && self.clock.now_ms() < live_until_ms
            && let Some(generation) = self.generation(ticket.stripe)
            && *generation == ticket.generation
        {
            // Still under the stripe lock: no invalidation can slip in
            // between the check and the insert.
            self.map.insert(key, Slot { bytes, live_until_ms });
            drop(generation);
            return true;
        }
        self.counters.stores_skipped.add(1);
        false
    }

    /// Drops `key`, and makes every read of it already in flight skip its
    /// store.
    pub(crate) fn invalidate(&self, key: &str) {
        let generation = self.generation(self.stripe_index(key));
        if let Some(mut generation) = generation {
            *generation = generation.wrapping_add(1);
            self.map.remove(key);
        }
    }

    /// A server's invalidation message: these keys changed.
    pub(crate) fn invalidated_by_server(&self, keys: impl IntoIterator<Item = impl AsRef<[u8]>>) {
        for key in keys {
            self.counters.invalidations.add(1);
            // Keys are the cache's own (`{namespace}:…`, UTF-8); a key that
            // is not UTF-8 cannot be held.
            if let Ok(key) = std::str::from_utf8(key.as_ref()) {
                self.invalidate(key);
            }
        }
    }

    /// Drops every entry whose key matches the Redis glob `pattern`, and
    /// makes every read in flight skip its store.
    pub(crate) fn invalidate_matching(&self, pattern: &str) {
        self.bump_all();
        self.map
            .retain(|key, _| !glob_match(pattern.as_bytes(), key.as_bytes()));
    }

    fn bump_all(&self) {
        for stripe in &*self.stripes {
            let mut generation = lock(stripe);
            *generation = generation.wrapping_add(1);
        }
    }

    /// Drops everything, counted under `reason`.
    pub(crate) fn flush(&self, reason: FlushReason) {
        self.bump_all();
        self.map.clear();
        let counter = match reason {
            FlushReason::ServerFlush => Some(&self.counters.server_flush),
            FlushReason::Disconnected => Some(&self.counters.disconnected),
            FlushReason::Reconnected => Some(&self.counters.reconnected),
            FlushReason::TopologyChanged => Some(&self.counters.topology_changed),
            FlushReason::Lagged => Some(&self.counters.lagged),
            FlushReason::Local => None,
        };
        if let Some(counter) = counter {
            counter.add(1);
        }
    }

    /// Stops storing and drops everything: invalidations may be missed.
    pub(crate) fn disarm(&self, reason: FlushReason) {
        self.armed.store(false, Ordering::SeqCst);
        self.flush(reason);
    }

    /// Tracking is on again: reads may store.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// Whether `key` is held and live (diagnostics; counts no hit).
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.armed.load(Ordering::Acquire)
            && self
                .map
                .peek(key)
                .is_some_and(|slot| self.clock.now_ms() < slot.live_until_ms)
    }

    pub(crate) fn stats(&self) -> NearCacheStats {
        let get = Tally::get;
        let c = &self.counters;
        let bytes = self
            .map
            .iter()
            .map(|(key, slot)| (key.len() + slot.bytes.len()) as u64)
            .sum();
        NearCacheStats {
            entries: self.map.len() as u64,
            bytes,
            hits: get(&c.hits),
            invalidations: get(&c.invalidations),
            stores_skipped: get(&c.stores_skipped),
            flushes: NearCacheFlushes {
                server_flush: get(&c.server_flush),
                disconnected: get(&c.disconnected),
                reconnected: get(&c.reconnected),
                topology_changed: get(&c.topology_changed),
                lagged: get(&c.lagged),
            },
            tracking: self.is_armed(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::envelope::ManualClock;

    fn l1() -> (L1, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let l1 = L1::new(
            NearCache::new(100, Duration::from_secs(60)),
            Arc::new(clock.clone()),
        );
        l1.arm();
        (l1, clock)
    }

    fn value() -> Bytes {
        Bytes::from_static(b"v")
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_stored() {
        let (l1, _) = l1();
        let ticket = l1.ticket("k");
        l1.invalidated_by_server(["k"]); // the write's message arrives before the GET's reply
        assert!(!l1.store("k".into(), value(), u64::MAX, ticket));
        assert!(l1.get("k").is_none());
        // A read that starts after the invalidation is stored.
        let ticket = l1.ticket("k");
        assert!(l1.store("k".into(), value(), u64::MAX, ticket));
        assert_eq!(l1.get("k"), Some(value()));
        assert_eq!(l1.stats().stores_skipped, 1);
    }

    #[test]
    fn a_read_overtaken_by_a_flush_or_a_disarm_is_not_stored() {
        let (l1, _) = l1();
        let ticket = l1.ticket("k");
        l1.flush(FlushReason::ServerFlush);
        assert!(!l1.store("k".into(), value(), u64::MAX, ticket));

        let ticket = l1.ticket("k");
        l1.disarm(FlushReason::Disconnected);
        l1.arm();
        assert!(
            !l1.store("k".into(), value(), u64::MAX, ticket),
            "tracking was off meanwhile"
        );

        l1.disarm(FlushReason::Disconnected);
        let ticket = l1.ticket("k");
        l1.arm();
        assert!(
            !l1.store("k".into(), value(), u64::MAX, ticket),
            "taken while disarmed"
        );
        let stats = l1.stats();
        assert_eq!((stats.flushes.server_flush, stats.flushes.disconnected), (1, 2));
    }

    #[test]
    fn entries_live_until_the_earliest_of_cap_envelope_and_pttl() {
        let (l1, clock) = l1();
        let now = 1_000_000;
        // Envelope: cachedAt = now - 50 s, ttl 55 s -> live while now <= cachedAt + 55 s.
        let envelope_end = now - 50_000 + 55_000;
        assert_eq!(l1.live_until(now - 50_000, 55, -1), Some(envelope_end + 1));
        assert_eq!(l1.live_until(now, 300, 2_000), Some(now + 2_000), "PTTL");
        assert_eq!(l1.live_until(now, 300, -1), Some(now + 60_000), "local cap");
        assert_eq!(l1.live_until(now, 300, -2), None, "key gone");

        let until = l1.live_until(now - 50_000, 55, -1).unwrap();
        assert!(l1.store("k".into(), value(), until, l1.ticket("k")));
        clock.set_ms(envelope_end);
        assert!(l1.get("k").is_some(), "now - cachedAt == ttl is still live");
        clock.set_ms(envelope_end + 1);
        assert!(l1.get("k").is_none(), "now - cachedAt > ttl is not");
        assert_eq!(l1.stats().entries, 0);
    }

    #[test]
    fn matching_invalidation_drops_only_matching_keys() {
        let (l1, _) = l1();
        for key in ["ns:part:1", "ns:part:2", "ns:user:1"] {
            assert!(l1.store(key.into(), value(), u64::MAX, l1.ticket(key)));
        }
        let in_flight = l1.ticket("ns:user:2");
        l1.invalidate_matching("ns:part:*");
        assert!(l1.get("ns:part:1").is_none() && l1.get("ns:part:2").is_none());
        assert!(l1.get("ns:user:1").is_some());
        assert!(!l1.store("ns:user:2".into(), value(), u64::MAX, in_flight));
        assert_eq!(l1.stats().bytes, ("ns:user:1".len() + 1) as u64);
    }
}
