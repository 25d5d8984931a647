//! Per-prefix counters and the [`CacheStats`] report.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::MemoryUsage;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) near_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) loader_fallbacks: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheCounters {
            hits: get(&self.hits),
            near_hits: get(&self.near_hits),
            misses: get(&self.misses),
            errors: get(&self.errors),
            decode_failures: get(&self.decode_failures),
            expired: get(&self.expired),
            loads: get(&self.loads),
            loader_fallbacks: get(&self.loader_fallbacks),
        }
    }
}

/// What this process counted for one prefix since the cache was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheCounters {
    /// Reads that found a live, decodable entry (in the near cache or in
    /// Redis).
    pub hits: u64,
    /// Of `hits`, those answered by the near cache without asking Redis
    /// (`hits - near_hits` came from Redis).
    pub near_hits: u64,
    /// Reads that found nothing usable (absent, expired or undecodable).
    pub misses: u64,
    /// Redis commands that failed.
    pub errors: u64,
    /// Values that could not be decoded (counted in `misses` too); each was
    /// logged and removed.
    pub decode_failures: u64,
    /// Entries past the legacy expiry rule on read (counted in `misses`
    /// too); each was removed.
    pub expired: u64,
    /// Loader calls made by `get_or_load`.
    pub loads: u64,
    /// `get_or_load` calls that went to the loader because Redis failed.
    pub loader_fallbacks: u64,
}

impl CacheCounters {
    /// `hits / (hits + misses)`, `None` before the first read.
    pub fn hit_rate(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        #[allow(clippy::cast_precision_loss)]
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }
}

/// [`ReferenceDataCache::stats`](crate::ReferenceDataCache::stats): this
/// process's counters for a prefix, plus what Redis holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The prefix.
    pub prefix: String,
    /// Counters of this process.
    pub counters: CacheCounters,
    /// Hit rate of this process, `None` before the first read.
    pub hit_rate: Option<f64>,
    /// Keys under the prefix (counted with `SCAN`, on every primary).
    pub key_count: u64,
    /// Memory Redis uses (the whole server, like the legacy `memoryUsage`).
    pub memory: MemoryUsage,
}
