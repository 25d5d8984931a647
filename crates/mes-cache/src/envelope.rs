//! The legacy JSON envelope and the clock its expiry rule reads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the cache stores under a key, exactly as the TypeScript services
/// write it: `{"data":…,"cachedAt":<ms>,"ttl":<s>,"version"?:…}`.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a, T: ?Sized> {
    pub(crate) data: &'a T,
    #[serde(rename = "cachedAt")]
    pub(crate) cached_at: u64,
    pub(crate) ttl: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<&'a str>,
}

#[derive(Deserialize)]
struct EnvelopeOwned<T> {
    data: T,
    #[serde(rename = "cachedAt")]
    cached_at: u64,
    ttl: u64,
    #[serde(default)]
    version: Option<String>,
}

/// A decoded cache entry with its envelope metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry<T> {
    /// The cached value.
    pub data: T,
    /// When it was written, in milliseconds since the Unix epoch.
    pub cached_at_ms: u64,
    /// Its time to live in seconds, as written.
    pub ttl_secs: u64,
    /// The optional version string.
    pub version: Option<String>,
}

impl<T> CacheEntry<T> {
    /// The legacy expiry rule: expired when `now_ms - cachedAt > ttl * 1000`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.cached_at_ms) > self.ttl_secs.saturating_mul(1000)
    }

    /// How long ago it was written (`now_ms - cachedAt`; zero for an entry
    /// stamped in the future).
    pub fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.cached_at_ms))
    }

    /// How long the legacy expiry rule keeps it live from `now_ms` on
    /// (`cachedAt + ttl * 1000 - now_ms`); zero once it is expired.
    pub fn ttl_left_at(&self, now_ms: u64) -> Duration {
        let until = self
            .cached_at_ms
            .saturating_add(self.ttl_secs.saturating_mul(1000));
        Duration::from_millis(until.saturating_sub(now_ms))
    }
}

impl<T: serde::de::DeserializeOwned> CacheEntry<T> {
    /// Decodes a value as Redis holds it: the legacy envelope with `data`
    /// read as `T` (`serde_json::Value` reads any). What the cache's reads
    /// do, for a tool that has the raw bytes
    /// ([`ReferenceDataCache::inspect`](crate::ReferenceDataCache::inspect)).
    ///
    /// ```
    /// use mes_cache::CacheEntry;
    ///
    /// let entry = CacheEntry::<serde_json::Value>::decode(br#"{"data":{"a":1},"cachedAt":1000,"ttl":2,"version":"v2"}"#)?;
    /// assert_eq!((entry.cached_at_ms, entry.ttl_secs, entry.version.as_deref()), (1000, 2, Some("v2")));
    /// assert_eq!(entry.ttl_left_at(2_500), std::time::Duration::from_millis(500));
    /// assert!(CacheEntry::<serde_json::Value>::decode(b"not json").is_err());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    /// The parser's error when the bytes are not the envelope or `data` is
    /// not a `T`.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        decode(bytes)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<CacheEntry<T>, serde_json::Error> {
    let envelope: EnvelopeOwned<T> = serde_json::from_slice(bytes)?;
    Ok(CacheEntry {
        data: envelope.data,
        cached_at_ms: envelope.cached_at,
        ttl_secs: envelope.ttl,
        version: envelope.version,
    })
}

/// Where the cache gets "now" from, for `cachedAt` and the expiry rule on
/// read. [`SystemClock`] in production; [`ManualClock`] in tests, to expire
/// entries without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_ms)))
    }

    /// A clock showing the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set_ms(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_legacy_field_names_in_order() {
        let text = serde_json::to_string(&EnvelopeRef {
            data: &serde_json::json!({"a": 1}),
            cached_at: 1_760_789_696_789,
            ttl: 300,
            version: None,
        })
        .unwrap();
        assert_eq!(text, r#"{"data":{"a":1},"cachedAt":1760789696789,"ttl":300}"#);
        let text = serde_json::to_string(&EnvelopeRef {
            data: &1,
            cached_at: 1,
            ttl: 2,
            version: Some("v2"),
        })
        .unwrap();
        assert_eq!(text, r#"{"data":1,"cachedAt":1,"ttl":2,"version":"v2"}"#);
    }

    #[test]
    fn expiry_rule_is_strictly_greater() {
        let entry = CacheEntry {
            data: (),
            cached_at_ms: 1_000,
            ttl_secs: 1,
            version: None,
        };
        assert!(!entry.is_expired_at(2_000));
        assert!(entry.is_expired_at(2_001));
        assert!(!entry.is_expired_at(0));
        assert_eq!(entry.ttl_left_at(1_400), Duration::from_millis(600));
        assert_eq!(entry.ttl_left_at(2_001), Duration::ZERO);
        assert_eq!(entry.age_at(1_250), Duration::from_millis(250));
        assert_eq!(entry.age_at(500), Duration::ZERO);
    }
}
