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
    }
}
