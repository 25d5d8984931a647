//! Where entries live: Redis through fred, or the in-process store.

pub(crate) mod memory;
pub(crate) mod redirect;
pub(crate) mod redis;
pub(crate) mod sentinel;
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

/// What the Redis server reports about itself (`INFO`), summed over every
/// primary in Cluster mode: the whole server, not one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Memory in use.
    pub memory: MemoryUsage,
    /// `keyspace_hits`: lookups of an existing key since the server started
    /// (or `CONFIG RESETSTAT`), every client counted.
    pub keyspace_hits: u64,
    /// `keyspace_misses`: lookups of a missing key.
    pub keyspace_misses: u64,
}

impl ServerStats {
    /// `keyspace_hits / (keyspace_hits + keyspace_misses)`; `None` before
    /// the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.keyspace_hits.saturating_add(self.keyspace_misses);
        #[allow(clippy::cast_precision_loss)]
        (lookups > 0).then(|| self.keyspace_hits as f64 / lookups as f64)
    }
}

/// Reads [`ServerStats`] from the text of `INFO` answers (one per primary).
pub(crate) fn server_stats_from_info(infos: &[String]) -> ServerStats {
    let field = |info: &str, name: &str| -> Option<String> {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    };
    let sum = |name: &str| -> u64 {
        infos
            .iter()
            .filter_map(|info| field(info, name)?.parse::<u64>().ok())
            .sum()
    };
    let used_bytes = sum("used_memory");
    let human = match infos {
        [one] => field(one, "used_memory_human").unwrap_or_else(|| bytes_to_human(used_bytes)),
        _ => bytes_to_human(used_bytes),
    };
    ServerStats {
        memory: MemoryUsage { used_bytes, human },
        keyspace_hits: sum("keyspace_hits"),
        keyspace_misses: sum("keyspace_misses"),
    }
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

    /// The value and its `PTTL` (-1: no TTL, -2: no key), in one round trip.
    pub(crate) async fn get_with_pttl(&self, key: String) -> Result<(Raw, i64), BoxError> {
        match self {
            Self::Redis(r) => r.get_with_pttl(key).await,
            Self::Memory(m) => m.get_with_pttl(&key),
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

    /// Streams `SCAN MATCH pattern` pages into `UNLINK`s on every primary,
    /// telling `on_page` how many keys each page removed.
    pub(crate) async fn scan_unlink(
        &self,
        pattern: &str,
        page: u32,
        on_page: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, BoxError> {
        match self {
            Self::Redis(r) => r.scan_unlink(pattern, page, on_page).await,
            Self::Memory(m) => m.scan_unlink(pattern, on_page),
        }
    }

    /// Hands every key matching `pattern` to `on_key`, a `SCAN` page at a
    /// time (on every primary): nothing is collected.
    pub(crate) async fn scan_keys(
        &self,
        pattern: &str,
        page: u32,
        on_key: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), BoxError> {
        match self {
            Self::Redis(r) => r.scan_keys(pattern, page, on_key).await,
            Self::Memory(m) => m.scan_keys(pattern, on_key),
        }
    }

    pub(crate) async fn scan_count(&self, pattern: &str, page: u32) -> Result<u64, BoxError> {
        let mut count = 0u64;
        self.scan_keys(pattern, page, &mut |_| count += 1).await?;
        Ok(count)
    }

    pub(crate) async fn server_stats(&self) -> Result<ServerStats, BoxError> {
        match self {
            Self::Redis(r) => r.server_stats().await,
            Self::Memory(m) => m.server_stats(),
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
    fn server_stats_are_read_and_summed_from_info() {
        let one = "# Memory\r\nused_memory:2048\r\nused_memory_human:2.00K\r\n# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n";
        let stats = super::server_stats_from_info(&[one.to_owned()]);
        assert_eq!(stats.memory.used_bytes, 2048);
        assert_eq!(stats.memory.human, "2.00K");
        assert_eq!((stats.keyspace_hits, stats.keyspace_misses), (3, 1));
        assert_eq!(stats.hit_rate(), Some(0.75));
        let two = super::server_stats_from_info(&[one.to_owned(), one.to_owned()]);
        assert_eq!((two.memory.used_bytes, two.keyspace_hits), (4096, 6));
        assert_eq!(two.memory.human, "4.00K");
        assert_eq!(super::server_stats_from_info(&[String::new()]).hit_rate(), None);
    }

    #[test]
    fn human_sizes_look_like_redis() {
        assert_eq!(super::bytes_to_human(512), "512B");
        assert_eq!(super::bytes_to_human(1_069_547), "1.02M");
        assert_eq!(super::bytes_to_human(2048), "2.00K");
    }
}
