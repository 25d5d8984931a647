//! The in-process backend: a test double with the semantics of the Redis
//! commands the cache uses, for services' own unit tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{MemoryUsage, Raw, ServerStats, bytes_to_human};
use crate::envelope::{Clock, SystemClock};
use crate::error::BoxError;
use crate::prefix::glob_match;

/// An in-process key-value store that stands in for Redis behind
/// [`ReferenceDataCache::with_store`](crate::ReferenceDataCache::with_store).
///
/// Clones share the same data, so a test keeps one to look at or tamper
/// with what the cache wrote. Keys expire after their TTL by the store's
/// clock, like `SETEX`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), mes_cache::Error> {
/// use mes_cache::{CacheConfig, CacheKeyPrefix, InMemoryStore, ReferenceDataCache};
///
/// let store = InMemoryStore::new();
/// let cache = ReferenceDataCache::with_store(CacheConfig::default(), store.clone())?;
/// cache.set(&CacheKeyPrefix::Part, "P-1", &"strut", None).await?;
/// assert!(store.get_raw("mes:cache:part:P-1").is_some());
///
/// store.set_unavailable(true); // every command now fails, like a Redis outage
/// assert!(cache.get::<String>(&CacheKeyPrefix::Part, "P-1").await.is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, (Vec<u8>, Option<u64>)>,
    unavailable: bool,
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("keys", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the in-memory store is set unavailable")]
struct Unavailable;

impl InMemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store whose TTLs follow `clock` (share it with the cache's
    /// [`CacheConfig::clock`](crate::CacheConfig::clock) to expire entries
    /// without sleeping).
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            state: Arc::default(),
            clock: Arc::new(clock),
        }
    }

    pub(crate) fn with_shared_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> Result<MutexGuard<'_, State>, BoxError> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(Box::new(Unavailable));
        }
        let now = self.clock.now_ms();
        state
            .entries
            .retain(|_, (_, expires)| expires.is_none_or(|at| at >= now));
        Ok(state)
    }

    /// Writes `value` under `key` as is (a raw `SET`, optionally with a
    /// TTL), e.g. an entry a legacy service wrote or a corrupt value.
    pub fn insert_raw(&self, key: impl Into<String>, value: impl Into<Vec<u8>>, ttl: Option<Duration>) {
        let expires = ttl.map(|ttl| {
            self.clock
                .now_ms()
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        self.lock().entries.insert(key.into(), (value.into(), expires));
    }

    /// The raw value under `key`, if any (expired keys are gone).
    pub fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        self.lock()
            .entries
            .get(key)
            .filter(|(_, expires)| expires.is_none_or(|at| at >= now))
            .map(|(value, _)| value.clone())
    }

    /// Every live key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let now = self.clock.now_ms();
        self.lock()
            .entries
            .iter()
            .filter(|(_, (_, expires))| expires.is_none_or(|at| at >= now))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Makes every command fail (`true`) or work again (`false`), to test
    /// how a service behaves when Redis is down.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    pub(crate) fn get(&self, key: &str) -> Result<Raw, BoxError> {
        Ok(self
            .live()?
            .entries
            .get(key)
            .map(|(value, _)| value.clone().into()))
    }

    pub(crate) fn get_with_pttl(&self, key: &str) -> Result<(Raw, i64), BoxError> {
        let now = self.clock.now_ms();
        Ok(match self.live()?.entries.get(key) {
            None => (None, -2),
            Some((value, expires)) => {
                let pttl = expires.map_or(-1, |at| i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX));
                (Some(value.clone().into()), pttl)
            }
        })
    }

    pub(crate) fn mget(&self, keys: &[String]) -> Result<Vec<Raw>, BoxError> {
        let state = self.live()?;
        Ok(keys
            .iter()
            .map(|key| state.entries.get(key).map(|(value, _)| value.clone().into()))
            .collect())
    }

    pub(crate) fn setex_many(&self, items: Vec<(String, u64, Vec<u8>)>) -> Result<(), BoxError> {
        let now = self.clock.now_ms();
        let mut state = self.live()?;
        for (key, ttl, value) in items {
            let expires = now.saturating_add(ttl.saturating_mul(1000));
            state.entries.insert(key, (value, Some(expires)));
        }
        Ok(())
    }

    pub(crate) fn setex_if_newer(
        &self,
        key: String,
        ttl: u64,
        value: Vec<u8>,
        version: &str,
    ) -> Result<bool, BoxError> {
        let now = self.clock.now_ms();
        let mut state = self.live()?;
        if let Some((current, _)) = state.entries.get(&key)
            && super::holds_version_not_older(current, version)
        {
            return Ok(false);
        }
        let expires = now.saturating_add(ttl.saturating_mul(1000));
        state.entries.insert(key, (value, Some(expires)));
        Ok(true)
    }

    pub(crate) fn unlink(&self, keys: &[String]) -> Result<u64, BoxError> {
        let mut state = self.live()?;
        Ok(keys
            .iter()
            .filter(|key| state.entries.remove(*key).is_some())
            .count() as u64)
    }

    pub(crate) fn unlink_if_unchanged(
        &self,
        stale: &[(String, fred::bytes::Bytes)],
    ) -> Result<u64, BoxError> {
        let mut state = self.live()?;
        let mut removed = 0;
        for (key, expected) in stale {
            if state
                .entries
                .get(key)
                .is_some_and(|(value, _)| value.as_slice() == expected.as_ref())
            {
                state.entries.remove(key);
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub(crate) fn scan_unlink(
        &self,
        pattern: &str,
        on_page: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, BoxError> {
        let mut state = self.live()?;
        let before = state.entries.len();
        state
            .entries
            .retain(|key, _| !glob_match(pattern.as_bytes(), key.as_bytes()));
        let removed = (before - state.entries.len()) as u64;
        on_page(removed);
        Ok(removed)
    }

    pub(crate) fn scan_keys(
        &self,
        pattern: &str,
        on_key: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), BoxError> {
        let state = self.live()?;
        for key in state.entries.keys() {
            if glob_match(pattern.as_bytes(), key.as_bytes()) {
                on_key(key.as_bytes());
            }
        }
        Ok(())
    }

    /// Memory as the sum of key and value lengths; no hit counting.
    pub(crate) fn server_stats(&self) -> Result<ServerStats, BoxError> {
        let state = self.live()?;
        let used_bytes = state
            .entries
            .iter()
            .map(|(key, (value, _))| (key.len() + value.len()) as u64)
            .sum();
        Ok(ServerStats {
            memory: MemoryUsage {
                used_bytes,
                human: bytes_to_human(used_bytes),
            },
            keyspace_hits: 0,
            keyspace_misses: 0,
        })
    }

    pub(crate) fn ping(&self) -> Result<(), BoxError> {
        self.live().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_delete_keeps_a_rewritten_value() {
        let store = InMemoryStore::new();
        store.insert_raw("a", "old", None);
        store.insert_raw("b", "old", None);
        store.insert_raw("b", "new", None); // rewritten after it was read
        let stale = vec![("a".to_owned(), "old".into()), ("b".to_owned(), "old".into())];
        assert_eq!(store.unlink_if_unchanged(&stale).unwrap(), 1);
        assert_eq!(store.keys(), ["b"]);
    }
}
