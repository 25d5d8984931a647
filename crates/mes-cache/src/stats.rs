//! Per-prefix counters and the [`CacheStats`] report.

use crate::backend::MemoryUsage;
use crate::metrics::{self, Durations, Tally, prefix_counter};

/// One prefix's counts, each kept for [`CacheCounters`] and the metrics
/// recorder at once, and its operation durations.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: Tally,
    pub(crate) near_hits: Tally,
    pub(crate) misses: Tally,
    pub(crate) errors: Tally,
    pub(crate) decode_failures: Tally,
    pub(crate) expired: Tally,
    pub(crate) loads: Tally,
    pub(crate) loader_fallbacks: Tally,
    pub(crate) durations: Durations,
}

impl Counters {
    /// The counters of `prefix`, registered with the metrics recorder
    /// (`Counters::default()` counts for `stats()` only).
    pub(crate) fn new(prefix: &str) -> Self {
        let tally = |name| Tally::new(prefix_counter(name, prefix));
        Self {
            hits: tally(metrics::HITS),
            near_hits: tally(metrics::NEAR_HITS),
            misses: tally(metrics::MISSES),
            errors: tally(metrics::ERRORS),
            decode_failures: tally(metrics::DECODE_FAILURES),
            expired: tally(metrics::EXPIRED),
            loads: tally(metrics::LOADS),
            loader_fallbacks: tally(metrics::LOADER_FALLBACKS),
            durations: Durations::new(prefix),
        }
    }

    pub(crate) fn snapshot(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.get(),
            near_hits: self.near_hits.get(),
            misses: self.misses.get(),
            errors: self.errors.get(),
            decode_failures: self.decode_failures.get(),
            expired: self.expired.get(),
            loads: self.loads.get(),
            loader_fallbacks: self.loader_fallbacks.get(),
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
