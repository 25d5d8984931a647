//! Where entries live: Redis through fred, or the in-process store.

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod tracking;

use crate::error::BoxError;

/// Memory use as Redis reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUsage {
    /// `used_memory`, summed over every primary in Cluster mode.
    pub used_bytes: u64,
    /// The same in the legacy `used_memory_human` form, e.g. `1.02M`.
    pub human: String,
}

pub(crate) enum Backend {
    Redis(redis::RedisBackend),
    Memory(memory::InMemoryStore),
}

/// One value as read: `None` for a missing key.
pub(crate) type Raw = Option<fred::bytes::Bytes>;

impl Backend {
    pub(crate) async fn get(&self, key: String) -> Result<Raw, BoxError> {
        match self {
            Self::Redis(r) => r.get(key).await,
            Self::Memory(m) => m.get(&key),
        }
    }

    pub(crate) async fn mget(&self, keys: Vec<String>, batch: usize) -> Result<Vec<Raw>, BoxError> {
        match self {
            Self::Redis(r) => r.mget(keys, batch).await,
            Self::Memory(m) => m.mget(&keys),
        }
    }

    /// `SETEX key ttl value` for each item, pipelined in chunks of `batch`.
    pub(crate) async fn setex_many(
        &self,
        items: Vec<(String, u64, Vec<u8>)>,
        batch: usize,
    ) -> Result<(), BoxError> {
        match self {
            Self::Redis(r) => r.setex_many(items, batch).await,
            Self::Memory(m) => m.setex_many(items),
        }
    }

    /// `SETEX` unless the entry already holds a comparable version that is
    /// not older, atomically; whether it wrote. Comparable: a version that
    /// starts with a digit, compared byte-wise (write zero-padded
    /// timestamps); any other (none, or a legacy `v2`) is overwritten.
    pub(crate) async fn setex_if_newer(
        &self,
        key: String,
        ttl: u64,
        value: Vec<u8>,
        version: &str,
    ) -> Result<bool, BoxError> {
        match self {
            Self::Redis(r) => r.setex_if_newer(key, ttl, value, version).await,
            Self::Memory(m) => m.setex_if_newer(key, ttl, value, version),
        }
    }

    /// `UNLINK` of the keys; the number removed.
    pub(crate) async fn unlink(&self, keys: Vec<String>) -> Result<u64, BoxError> {
        match self {
            Self::Redis(r) => r.unlink(keys).await,
            Self::Memory(m) => m.unlink(&keys),
        }
    }

    /// `UNLINK` of each key that still holds the given value (a Lua
    /// compare-and-delete); the number removed.
    pub(crate) async fn unlink_if_unchanged(
        &self,
        stale: Vec<(String, fred::bytes::Bytes)>,
    ) -> Result<u64, BoxError> {
        match self {
            Self::Redis(r) => r.unlink_if_unchanged(stale).await,
            Self::Memory(m) => m.unlink_if_unchanged(&stale),
        }
    }

    /// Streams `SCAN MATCH pattern` pages into `UNLINK`s on every primary.
    pub(crate) async fn scan_unlink(&self, pattern: &str, page: u32) -> Result<u64, BoxError> {
        match self {
            Self::Redis(r) => r.scan_unlink(pattern, page).await,
            Self::Memory(m) => m.scan_unlink(pattern),
        }
    }

    pub(crate) async fn scan_count(&self, pattern: &str, page: u32) -> Result<u64, BoxError> {
        match self {
            Self::Redis(r) => r.scan_count(pattern, page).await,
            Self::Memory(m) => m.scan_count(pattern),
        }
    }

    pub(crate) async fn memory(&self) -> Result<MemoryUsage, BoxError> {
        match self {
            Self::Redis(r) => r.memory().await,
            Self::Memory(m) => m.memory(),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), BoxError> {
        match self {
            Self::Redis(r) => r.ping().await,
            Self::Memory(m) => m.ping(),
        }
    }

    pub(crate) async fn quit(&self) -> Result<(), BoxError> {
        match self {
            Self::Redis(r) => r.quit().await,
            Self::Memory(_) => Ok(()),
        }
    }
}

/// Redis' `bytesToHuman`: `512B`, `1.02K`, `3.40M`, ...
/// What the Redis script of `setex_if_newer` checks, for the in-memory
/// store: `current` is an envelope whose version is comparable and not
/// older than `version`.
pub(crate) fn holds_version_not_older(current: &[u8], version: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<String>,
    }
    serde_json::from_slice::<Versioned>(current)
        .ok()
        .and_then(|v| v.version)
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()) && v.as_str() >= version)
}

pub(crate) fn bytes_to_human(bytes: u64) -> String {
    const UNITS: [(f64, &str); 5] = [
        (1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "P"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "T"),
        (1024.0 * 1024.0 * 1024.0, "G"),
        (1024.0 * 1024.0, "M"),
        (1024.0, "K"),
    ];
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64;
    for (size, unit) in UNITS {
        if value >= size {
            return format!("{:.2}{unit}", value / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes_look_like_redis() {
        assert_eq!(super::bytes_to_human(512), "512B");
        assert_eq!(super::bytes_to_human(1_069_547), "1.02M");
        assert_eq!(super::bytes_to_human(2048), "2.00K");
    }
}
