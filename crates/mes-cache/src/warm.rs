//! Cache warming, once or on a schedule.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span, warn};

use crate::cache::{ReferenceDataCache, chain};
use crate::error::{BoxError, Error, Result};
use crate::prefix::CacheKeyPrefix;

/// How [`ReferenceDataCache::warm_cache`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) refresh_every: Option<Duration>,
}

impl Default for WarmOptions {
    /// Like the legacy cache: re-warm every 300 s, default TTL.
    fn default() -> Self {
        Self::every(Duration::from_secs(300))
    }
}

impl WarmOptions {
    /// Warm once, no re-warming.
    pub fn once() -> Self {
        Self {
            ttl: None,
            refresh_every: None,
        }
    }

    /// Warm now and then every `period` until the cache is closed or the
    /// handle stopped.
    ///
    /// A periodic run rewrites an entry only when its data changed or it
    /// would expire within two periods (the legacy `cachedAt + ttl` rule),
    /// so re-warming unchanged data writes nothing and costs no instance's
    /// near cache its copies. Give such entries a TTL of more than two
    /// periods; with TTL and period equal (the legacy 300 s and 300 s),
    /// every run rewrites everything.
    pub fn every(period: Duration) -> Self {
        Self {
            ttl: None,
            refresh_every: Some(period),
        }
    }

    /// TTL of the entries written (the cache's default otherwise).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

#[derive(Debug, Default)]
struct WarmCounters {
    runs: AtomicU64,
    failures: AtomicU64,
}

/// A running (or finished) warmer, from [`ReferenceDataCache::warm_cache`].
/// Dropping it does not stop the warmer; [`WarmHandle::stop`] or the
/// cache's `close` does.
#[derive(Debug)]
pub struct WarmHandle {
    written: usize,
    counters: Arc<WarmCounters>,
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl WarmHandle {
    /// Entries the first, immediate run put in place (written, or found
    /// unchanged by a periodic warmer).
    pub fn initial_entries(&self) -> usize {
        self.written
    }

    /// Successful runs so far, the first included.
    pub fn runs(&self) -> u64 {
        self.counters.runs.load(Ordering::SeqCst)
    }

    /// Periodic runs whose loader or write failed (each was logged; the
    /// next tick tries again).
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::SeqCst)
    }

    /// Whether the periodic task has ended (always true for a one-off warm).
    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }

    /// Stops re-warming and waits until the task has ended (a run in
    /// progress is abandoned).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

/// Marks the warmer done however its task ends.
struct DoneGuard(watch::Sender<bool>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl ReferenceDataCache {
    /// Fills a prefix from `loader` (id and value pairs, written with one
    /// pipelined `set_many`) now, and then every
    /// [`WarmOptions::every`] period in a background task when asked to.
    ///
    /// The periodic task never overlaps itself (the next run starts a
    /// period after the previous one ended at the earliest), logs and counts
    /// a failing run and tries again on the next tick, and stops on
    /// [`close`](Self::close) or [`WarmHandle::stop`]. It does not keep the
    /// cache alive: when every clone of the cache is dropped it ends.
    ///
    /// # Errors
    /// The first run's: [`Error::Loader`], or those of `set_many`. No task is
    /// started then. [`Error::InvalidConfig`] for a zero period.
    pub async fn warm_cache<T, F, Fut, E>(
        &self,
        prefix: &CacheKeyPrefix,
        loader: F,
        options: WarmOptions,
    ) -> Result<WarmHandle>
    where
        T: Serialize + Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Vec<(String, T)>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if options.refresh_every == Some(Duration::ZERO) {
            return Err(Error::config("the warming period must be longer than zero"));
        }
        let written = warm_once(self, prefix, &loader, options.ttl, options.refresh_every).await?;
        let counters = Arc::new(WarmCounters::default());
        counters.runs.store(1, Ordering::SeqCst);
        let (stop, _) = watch::channel(false);
        let stop = Arc::new(stop);
        let (done_tx, done) = watch::channel(false);
        let Some(period) = options.refresh_every else {
            done_tx.send_replace(true);
            return Ok(WarmHandle {
                written,
                counters,
                stop,
                done,
            });
        };
        let weak = self.downgrade();
        let mut shutdown = self.inner().shutdown.subscribe();
        let mut stopped = stop.subscribe();
        let prefix = prefix.clone();
        let task_counters = Arc::clone(&counters);
        let task_stop = Arc::clone(&stop);
        let span = info_span!("mes_cache.warmer", prefix = %prefix);
        lock_push(self, done.clone());
        tokio::spawn(
            async move {
                let _done = DoneGuard(done_tx);
                let _keep_stop_open = task_stop;
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.wait_for(|closed| *closed) => break,
                        _ = stopped.wait_for(|stop| *stop) => break,
                        _ = ticks.tick() => {}
                    }
                    let Some(cache) = ReferenceDataCache::upgrade(&weak) else {
                        break;
                    };
                    let outcome = tokio::select! {
                        _ = shutdown.wait_for(|closed| *closed) => break,
                        _ = stopped.wait_for(|stop| *stop) => break,
                        outcome = warm_once(&cache, &prefix, &loader, options.ttl, Some(period)) => outcome,
                    };
                    drop(cache);
                    match outcome {
                        Ok(written) => {
                            task_counters.runs.fetch_add(1, Ordering::SeqCst);
                            debug!(written, "mes-cache: re-warmed");
                        }
                        Err(error) => {
                            task_counters.failures.fetch_add(1, Ordering::SeqCst);
                            warn!(error = %chain(&error), "mes-cache: re-warming failed; retrying on the next tick");
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(WarmHandle {
            written,
            counters,
            stop,
            done,
        })
    }
}

fn lock_push(cache: &ReferenceDataCache, done: watch::Receiver<bool>) {
    let mut warmers = cache
        .inner()
        .warmers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    warmers.retain(|w| !*w.borrow());
    warmers.push(done);
}

/// One warming run. A periodic warmer (`period` given) rewrites only what
/// changed or would expire before the run after next, so unchanged data
/// costs every instance's near cache nothing; a one-off warm writes all.
async fn warm_once<T, F, Fut, E>(
    cache: &ReferenceDataCache,
    prefix: &CacheKeyPrefix,
    loader: &F,
    ttl: Option<Duration>,
    period: Option<Duration>,
) -> Result<usize>
where
    T: Serialize,
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<Vec<(String, T)>, E>>,
    E: Into<BoxError>,
{
    let span = info_span!("mes_cache.warm", prefix = %prefix);
    async {
        let entries = loader().await.map_err(|e| Error::Loader { source: e.into() })?;
        match period {
            Some(period) => {
                cache
                    .set_many_if_changed(prefix, entries, ttl, period.saturating_mul(2))
                    .await
            }
            None => cache.set_many(prefix, entries, ttl).await,
        }
    }
    .instrument(span)
    .await
}
