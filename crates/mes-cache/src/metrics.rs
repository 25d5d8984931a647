//! The cache's metrics through the `metrics` facade (the table is in the
//! crate docs).
//!
//! Handles are registered once per prefix (when its counters are first
//! needed) and once per near cache, so a read formats no label.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use metrics::{Counter, Histogram, counter, histogram};

pub(crate) const HITS: &str = "mes.cache.hits";
pub(crate) const NEAR_HITS: &str = "mes.cache.near.hits";
pub(crate) const MISSES: &str = "mes.cache.misses";
pub(crate) const ERRORS: &str = "mes.cache.errors";
pub(crate) const DECODE_FAILURES: &str = "mes.cache.decode_failures";
pub(crate) const EXPIRED: &str = "mes.cache.expired";
pub(crate) const LOADS: &str = "mes.cache.loads";
pub(crate) const LOADER_FALLBACKS: &str = "mes.cache.loader_fallbacks";
pub(crate) const OPERATION_DURATION: &str = "mes.cache.operation.duration";
pub(crate) const NEAR_INVALIDATIONS: &str = "mes.cache.near.invalidations";
pub(crate) const NEAR_STORES_SKIPPED: &str = "mes.cache.near.stores_skipped";
pub(crate) const NEAR_FLUSHES: &str = "mes.cache.near.flushes";

const PREFIX: &str = "mes.cache.prefix";
const OPERATION: &str = "mes.operation";
const REASON: &str = "mes.reason";

/// One count kept for two readers: the process's own figures (`stats()`)
/// and the metrics recorder, bumped by one call.
#[derive(Debug)]
pub(crate) struct Tally {
    local: AtomicU64,
    metric: Counter,
}

impl Default for Tally {
    /// Counted locally only.
    fn default() -> Self {
        Self::new(Counter::noop())
    }
}

impl Tally {
    pub(crate) fn new(metric: Counter) -> Self {
        Self {
            local: AtomicU64::new(0),
            metric,
        }
    }

    pub(crate) fn add(&self, by: u64) {
        self.local.fetch_add(by, Ordering::Relaxed);
        self.metric.increment(by);
    }

    pub(crate) fn get(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }
}

/// A per-prefix counter handle.
pub(crate) fn prefix_counter(name: &'static str, prefix: &str) -> Counter {
    counter!(name, PREFIX => prefix.to_owned())
}

/// A near-cache flush counter handle.
pub(crate) fn flush_counter(reason: &'static str) -> Counter {
    counter!(NEAR_FLUSHES, REASON => reason)
}

/// A near-cache counter handle without labels.
pub(crate) fn near_counter(name: &'static str) -> Counter {
    counter!(name)
}

/// The operations timed in `mes.cache.operation.duration`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation {
    Get,
    GetMany,
    GetOrLoad,
    Set,
    SetIfNewer,
    SetMany,
    Warm,
    Invalidate,
    InvalidateMany,
    InvalidatePattern,
    InvalidateAll,
    ClearAll,
}

impl Operation {
    const ALL: [Self; 12] = [
        Self::Get,
        Self::GetMany,
        Self::GetOrLoad,
        Self::Set,
        Self::SetIfNewer,
        Self::SetMany,
        Self::Warm,
        Self::Invalidate,
        Self::InvalidateMany,
        Self::InvalidatePattern,
        Self::InvalidateAll,
        Self::ClearAll,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::GetMany => "get_many",
            Self::GetOrLoad => "get_or_load",
            Self::Set => "set",
            Self::SetIfNewer => "set_if_newer",
            Self::SetMany => "set_many",
            Self::Warm => "warm",
            Self::Invalidate => "invalidate",
            Self::InvalidateMany => "invalidate_many",
            Self::InvalidatePattern => "invalidate_pattern",
            Self::InvalidateAll => "invalidate_all",
            Self::ClearAll => "clear_all",
        }
    }
}

/// One duration histogram per operation, for one prefix.
#[derive(Debug, Default)]
pub(crate) struct Durations(Vec<Histogram>);

impl Durations {
    pub(crate) fn new(prefix: &str) -> Self {
        Self(
            Operation::ALL
                .iter()
                .map(
                    |op| histogram!(OPERATION_DURATION, OPERATION => op.label(), PREFIX => prefix.to_owned()),
                )
                .collect(),
        )
    }

    /// Runs `work` and records how long it took under `operation`, however
    /// it ended.
    pub(crate) async fn time<T>(&self, operation: Operation, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = work.await;
        if let Some(histogram) = self.0.get(operation as usize) {
            histogram.record(started.elapsed());
        }
        result
    }
}
