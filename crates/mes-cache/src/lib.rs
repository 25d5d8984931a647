//! The Redis reference data cache of the MES fleet, on `fred`.
//!
//! A service reads another service's reference data (parts, work centers,
//! users, ...) from Redis instead of that service's database; the owning
//! service fills it. Entries are byte-compatible with the TypeScript
//! services of the fleet: key `mes:cache:{prefix}:{id}`, value the JSON
//! envelope `{"data":…,"cachedAt":<ms>,"ttl":<s>,"version"?:…}` written with
//! `SETEX`, and the same expiry rule on read (`now - cachedAt > ttl` is a
//! miss, and the key is removed).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mes_cache::{CacheConfig, CacheEntity, CacheKeyPrefix, ReferenceDataCache, WarmOptions};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Part { part_number: String, part_name: String }
//!
//! impl CacheEntity for Part {
//!     const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mes_cache::Error> {
//! // In a service: ReferenceDataCache::connect(CacheConfig::from_env()?).await?
//! // Here, the in-process test double with the same API:
//! let cache = ReferenceDataCache::in_memory(CacheConfig::default())?;
//! let parts = cache.typed::<Part>(); // bound to the `part` prefix
//!
//! let strut = Part { part_number: "P-12345".into(), part_name: "Landing Gear Strut".into() };
//! parts.set("P-12345", &strut, Some(Duration::from_secs(600))).await?;
//! assert_eq!(parts.get("P-12345").await?, Some(strut));
//! assert_eq!(parts.get("P-404").await?, None); // a miss is not an error
//!
//! // Fill on a miss; concurrent misses of one key call the loader once.
//! let wheel = parts
//!     .get_or_load("P-2", || async {
//!         Ok::<_, std::io::Error>(Some(Part { part_number: "P-2".into(), part_name: "Wheel".into() }))
//!     })
//!     .await?;
//! assert!(wheel.is_some());
//!
//! let found = parts.get_many(["P-12345", "P-2", "P-404"]).await?;
//! assert_eq!(found.len(), 2);
//!
//! // Warm once (WarmOptions::every(period) re-warms until close()).
//! cache
//!     .warm_cache(&CacheKeyPrefix::Part, || async {
//!         Ok::<_, std::io::Error>(vec![("P-3".to_owned(), Part { part_number: "P-3".into(), part_name: "Bolt".into() })])
//!     }, WarmOptions::once())
//!     .await?;
//!
//! assert_eq!(parts.invalidate_all().await?, 3);
//! let stats = parts.stats().await?;
//! assert_eq!((stats.counters.hits, stats.key_count), (3, 0)); // get, then get_many's two
//! cache.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Deployments
//!
//! [`CacheConfig`] takes the URL forms of `fred`: `redis://` (standalone),
//! `rediss://` (TLS, feature `tls`), `redis-cluster://` and
//! `redis-sentinel://`; the API is the same for all three. In Cluster mode
//! `get_many` sends one `MGET` per hash slot (concurrently, in one
//! pipeline), and invalidation scans every primary. During a reshard the
//! cache follows `MOVED` and `ASK` itself ([`follow_redirections`]): a
//! command on a key whose slot is migrating waits for the migration to end,
//! up to [`CacheConfig::command_timeout`]. Behind a Sentinel the
//! cache asks the Sentinels every [`CacheConfig::master_check_interval`]
//! which server is the master and moves there when it is elsewhere: a
//! switchover with the old master still up closes no connection, and what
//! is written to the old master until it is demoted is lost.
//!
//! # Beyond the legacy cache
//!
//! - Reads return `Result<Option<T>>`: a Redis failure is an [`Error`], not
//!   a miss.
//! - A value that does not decode (not JSON, wrong shape, a schema this
//!   service no longer matches) is a miss, counted in
//!   [`CacheCounters::decode_failures`], logged, and its key removed; in
//!   `get_many` it only drops its own id.
//! - [`invalidate_all`](ReferenceDataCache::invalidate_all),
//!   [`invalidate_pattern`](ReferenceDataCache::invalidate_pattern) and
//!   [`clear_all`](ReferenceDataCache::clear_all) stream `SCAN` pages into
//!   `UNLINK`s (bounded client memory, no giant `DEL` blocking Redis); the
//!   namespace and prefix are glob-escaped ([`escape_glob`] for ids in your
//!   own patterns).
//! - An opt-in near cache in process memory, kept right by Redis's
//!   invalidation messages ([below](#near-cache-l1)).
//! - Hits, misses, hit rate, errors, decode failures per prefix
//!   ([`ReferenceDataCache::stats`]); a `tracing` span per operation
//!   (`mes_cache.*`).
//! - [`get_or_load`](ReferenceDataCache::get_or_load) with single-flight.
//! - For tools (the `mes` command line): [`inspect`](ReferenceDataCache::inspect)
//!   (a key's bytes and TTL as they are, nothing counted or removed),
//!   [`key_counts`](ReferenceDataCache::key_counts) per prefix,
//!   [`server_stats`](ReferenceDataCache::server_stats) (`INFO`: memory,
//!   server-wide hit rate) and
//!   [`invalidate_all_with_progress`](ReferenceDataCache::invalidate_all_with_progress).
//! - Keys live under a configurable namespace (`mes:cache` by default, the
//!   legacy one).
//!
//! # Near cache (L1)
//!
//! Opt-in with [`CacheConfig::near_cache`]: `get`, `get_entry`,
//! `get_many`, `get_or_load` and the typed [`PrefixCache`] answer from
//! process memory when they can (well under a microsecond, against a round
//! trip to Redis), and Redis says when a key changes, whoever wrote it
//! (client tracking, broadcast mode on the namespace), so the TypeScript
//! services' `SETEX`/`DEL` drop local copies too.
//!
//! ```no_run
//! use std::time::Duration;
//! use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
//!
//! # async fn run() -> Result<(), mes_cache::Error> {
//! let cache = ReferenceDataCache::connect(
//!     CacheConfig::from_env()?.near_cache(NearCache::new(50_000, Duration::from_secs(60))),
//! )
//! .await?;
//! let first: Option<String> = cache.get(&CacheKeyPrefix::Part, "P-1").await?; // Redis
//! let again: Option<String> = cache.get(&CacheKeyPrefix::Part, "P-1").await?; // process memory
//! assert_eq!(first, again);
//! let near = cache.near_cache_stats().expect("the near cache is on");
//! println!("{} entries, {} hits, {} invalidations", near.entries, near.hits, near.invalidations);
//! # Ok(()) }
//! ```
//!
//! What keeps it right:
//!
//! - A value read from Redis is kept only if no invalidation of its key
//!   arrived while it was being read (the invalidation travels on another
//!   connection and may overtake the reply).
//! - Nothing is kept while invalidations could be missed: when the
//!   listening connection is lost, the whole near cache is dropped, and
//!   tracking is turned on again when it is back; `FLUSHALL`/`FLUSHDB`,
//!   a Sentinel failover or switchover (the listeners follow the pool to
//!   the new master) and a change of a Cluster's primaries drop it too
//!   ([`NearCacheStats::flushes`] counts why).
//! - An entry is served at most until the earliest of the local cap
//!   ([`NearCache::max_ttl`]), the legacy `cachedAt + ttl` rule and the
//!   key's TTL in Redis (`PTTL`, read with the value).
//! - This cache's own writes and `invalidate*` calls drop local copies at
//!   once.
//!
//! A listening connection that stops answering its heartbeat `PING`
//! ([`NearCache::heartbeat`], 5 s) is taken for lost the same way, and the
//! local cap bounds what is left: a connection cut off silently between
//! two heartbeats. Each instance
//! gets every write under the namespace as a message; reads are unchanged
//! otherwise. The in-memory store has no near cache.
//!
//! # Testing a service without Redis
//!
//! [`ReferenceDataCache::in_memory`] / [`ReferenceDataCache::with_store`]
//! give the same API over an [`InMemoryStore`] (TTLs, glob patterns, an
//! outage switch), and [`ManualClock`] expires entries without sleeping.
//!
//! # Metrics
//!
//! Through the [`metrics`](::metrics) facade: without a recorder installed
//! they cost next to nothing (handles are registered once per prefix), and
//! the crate never picks an exporter. The per-prefix counters are the ones
//! [`CacheCounters`] reports, counted once for both; no id is ever a label.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `mes.cache.hits` | counter | prefix | reads that found a live, decodable entry (near cache or Redis) |
//! | `mes.cache.near.hits` | counter | prefix | of those, reads answered by the near cache |
//! | `mes.cache.misses` | counter | prefix | reads that found nothing usable (absent, expired, undecodable) |
//! | `mes.cache.errors` | counter | prefix | Redis commands that failed |
//! | `mes.cache.decode_failures` | counter | prefix | values that did not decode (counted as misses too; logged and removed) |
//! | `mes.cache.expired` | counter | prefix | entries past the legacy expiry rule on read (misses too; removed) |
//! | `mes.cache.loads` | counter | prefix | loader calls of `get_or_load` |
//! | `mes.cache.loader_fallbacks` | counter | prefix | `get_or_load` calls that went to the loader because Redis failed |
//! | `mes.cache.operation.duration` | histogram (s) | prefix, `mes.operation` | one call: `get`, `get_many`, `get_or_load` (its `get` included), `set`, `set_if_newer`, `set_many`, `warm`, `invalidate`, `invalidate_many`, `invalidate_pattern`, `invalidate_all`, `clear_all` |
//! | `mes.cache.near.invalidations` | counter | | keys named by Redis's invalidation messages |
//! | `mes.cache.near.stores_skipped` | counter | | values read from Redis not kept, since an invalidation overtook the read or tracking was off |
//! | `mes.cache.near.flushes` | counter | `mes.reason` | the near cache dropped whole: `server_flush` (`FLUSHALL`/`FLUSHDB`), `disconnected`, `reconnected`, `topology_changed` (a Cluster's primaries or the Sentinels' master changed), `lagged` |
//!
//! The prefix label is `mes.cache.prefix` (`*` for `clear_all`, the
//! pattern's first segment for `invalidate_pattern`).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | no | `rediss://` URLs: TLS through rustls (ring provider) |

mod backend;
mod cache;
mod config;
mod envelope;
mod error;
mod metrics;
mod near;
mod prefix;
mod stats;
mod typed;
mod warm;

pub use backend::memory::InMemoryStore;
pub use backend::redirect::{follow_redirections, is_redirection};
pub use backend::sentinel::SentinelWatch;
pub use backend::{MemoryUsage, ServerStats};
pub use cache::{ReferenceDataCache, StoredValue};
pub use config::{CacheConfig, DEFAULT_NAMESPACE, DEFAULT_REDIS_URL, DEFAULT_TTL, ReconnectPolicy};
pub use envelope::{CacheEntry, Clock, ManualClock, SystemClock};
pub use error::{BoxError, Error, Result, ShortReply, SlotsKeptMoving};
pub use near::{FlushReason, NearCache, NearCacheFlushes, NearCacheStats};
pub use prefix::{CacheEntity, CacheKeyPrefix, escape_glob};
pub use stats::{CacheCounters, CacheStats};
pub use typed::PrefixCache;
pub use warm::{WarmHandle, WarmOptions};

// The README's example is compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
