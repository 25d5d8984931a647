//! `mes cache`: get, stats, invalidate.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use mes_cache::{CacheKeyPrefix, Clock, ReferenceDataCache, SystemClock};
use serde_json::{Value, json};

use crate::cli::{CacheCommand, Global, InvalidateArgs};
use crate::connect;
use crate::error::Error;
use crate::output::{Output, human_duration, shown_bytes, table, time_text};

/// From this many keys on, `invalidate --all` draws a progress bar.
const LARGE_PREFIX: u64 = 1000;

pub(crate) async fn run(command: &CacheCommand, global: &Global, out: &Output) -> Result<(), Error> {
    let (cache, url) = connect::cache(global).await?;
    let failed = |source| Error::Cache {
        url: url.clone(),
        source,
    };
    let outcome = match command {
        CacheCommand::Get { prefix, id } => get(&cache, prefix, id, out, &failed).await,
        CacheCommand::Stats => stats(&cache, out, &failed).await,
        CacheCommand::Invalidate(args) => invalidate(&cache, &url, args, out, &failed).await,
    };
    // Closing is best effort: the command's outcome is what counts.
    let _ = cache.close().await;
    outcome
}

/// A prefix the fleet knows, or one that has keys: anything else is a typo
/// the operator should hear about rather than an empty answer.
async fn check_prefix(
    cache: &ReferenceDataCache,
    name: &str,
    failed: &impl Fn(mes_cache::Error) -> Error,
) -> Result<CacheKeyPrefix, Error> {
    let prefix = CacheKeyPrefix::new(name.to_owned());
    if CacheKeyPrefix::KNOWN.contains(&prefix) {
        return Ok(prefix);
    }
    let present = cache.key_counts().await.map_err(failed)?;
    if present.contains_key(name) {
        return Ok(prefix);
    }
    let mut names: Vec<&str> = CacheKeyPrefix::KNOWN.iter().map(CacheKeyPrefix::as_str).collect();
    let others: Vec<&str> = present
        .keys()
        .map(String::as_str)
        .filter(|p| !names.contains(p))
        .collect();
    names.extend(others);
    Err(Error::NotFound(format!(
        "unknown prefix {name:?} in namespace {}: neither one of the fleet's nor holding any key \
         (prefixes: {})",
        cache.namespace(),
        names.join(", ")
    )))
}

async fn get(
    cache: &ReferenceDataCache,
    prefix: &str,
    id: &str,
    out: &Output,
    failed: &impl Fn(mes_cache::Error) -> Error,
) -> Result<(), Error> {
    let prefix = check_prefix(cache, prefix, failed).await?;
    let Some(stored) = cache.inspect(&prefix, id).await.map_err(failed)? else {
        return Err(Error::NotFound(format!(
            "no entry {id:?} under prefix {prefix} (key {})",
            cache.key(&prefix, id)
        )));
    };
    let now = SystemClock.now_ms();
    let redis_ttl_ms = stored.redis_ttl.map(|ttl| ttl.as_millis());
    let redis_ttl_text = stored.redis_ttl.map_or_else(|| "none".to_owned(), human_duration);
    match stored.decode::<Value>() {
        Ok(entry) => {
            let age = entry.age_at(now);
            let left = entry.ttl_left_at(now);
            let expired = entry.is_expired_at(now);
            let value = json!({
                "key": stored.key,
                "prefix": prefix.as_str(),
                "id": id,
                "data": entry.data,
                "version": entry.version,
                "cached_at_ms": entry.cached_at_ms,
                "cached_at": time_text(i64::try_from(entry.cached_at_ms).unwrap_or(i64::MAX)),
                "age_ms": age.as_millis(),
                "ttl_secs": entry.ttl_secs,
                "ttl_left_ms": left.as_millis(),
                "expired": expired,
                "redis_ttl_ms": redis_ttl_ms,
            });
            out.result(&value, || {
                let state = if expired {
                    "expired by the legacy rule (a read removes it)".to_owned()
                } else {
                    format!("{} left", human_duration(left))
                };
                let data = serde_json::to_string_pretty(&entry.data).unwrap_or_default();
                vec![
                    format!("key        {}", stored.key),
                    format!("version    {}", entry.version.as_deref().unwrap_or("(none)")),
                    format!(
                        "cached at  {} ({} ago)",
                        time_text(i64::try_from(entry.cached_at_ms).unwrap_or(i64::MAX)),
                        human_duration(age)
                    ),
                    format!(
                        "ttl        {}s, {state}; Redis TTL {redis_ttl_text}",
                        entry.ttl_secs
                    ),
                    format!("data       {}", data.replace('\n', "\n           ")),
                ]
            })
        }
        Err(error) => {
            // Shown as it is: an undecodable value is a finding, not a failure
            // of the tool (and a cache read would remove it).
            let reason = format!("not the cache envelope: {error}");
            let value = json!({
                "key": stored.key,
                "prefix": prefix.as_str(),
                "id": id,
                "error": reason,
                "raw": String::from_utf8_lossy(&stored.bytes),
                "redis_ttl_ms": redis_ttl_ms,
            });
            out.result(&value, || {
                vec![
                    format!("key        {}", stored.key),
                    format!("UNDECODABLE {reason}"),
                    format!("raw        {}", shown_bytes(&stored.bytes, 2000)),
                    format!("Redis TTL  {redis_ttl_text}"),
                ]
            })
        }
    }
}

async fn stats(
    cache: &ReferenceDataCache,
    out: &Output,
    failed: &impl Fn(mes_cache::Error) -> Error,
) -> Result<(), Error> {
    let mut counts: BTreeMap<String, u64> = CacheKeyPrefix::KNOWN
        .iter()
        .map(|prefix| (prefix.as_str().to_owned(), 0))
        .collect();
    counts.extend(cache.key_counts().await.map_err(failed)?);
    let server = cache.server_stats().await.map_err(failed)?;
    let total: u64 = counts.values().sum();
    let value = json!({
        "namespace": cache.namespace(),
        "prefixes": counts,
        "total_keys": total,
        "memory": {"used_bytes": server.memory.used_bytes, "human": server.memory.human},
        "keyspace_hits": server.keyspace_hits,
        "keyspace_misses": server.keyspace_misses,
        "hit_rate": server.hit_rate(),
    });
    out.result(&value, || {
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|(prefix, n)| vec![prefix.clone(), n.to_string()])
            .collect();
        let mut lines = vec![format!("namespace {}", cache.namespace()), String::new()];
        lines.extend(table(&["PREFIX", "KEYS"], &rows));
        lines.push(format!("{:<13}{total}", "total"));
        lines.push(String::new());
        lines.push(format!(
            "Redis memory {} ({} bytes), the whole server",
            server.memory.human, server.memory.used_bytes
        ));
        lines.push(format!(
            "Redis hit rate {} ({} hits, {} misses since the server started, every client)",
            server
                .hit_rate()
                .map_or_else(|| "n/a".to_owned(), |rate| format!("{:.1}%", rate * 100.0)),
            server.keyspace_hits,
            server.keyspace_misses
        ));
        lines
    })
}

async fn invalidate(
    cache: &ReferenceDataCache,
    url: &str,
    args: &InvalidateArgs,
    out: &Output,
    failed: &impl Fn(mes_cache::Error) -> Error,
) -> Result<(), Error> {
    let prefix = check_prefix(cache, &args.prefix, failed).await?;
    match &args.id {
        Some(id) => {
            let key = cache.key(&prefix, id);
            confirm(args.yes, &format!("Remove {key} from {url}?"))?;
            let removed = cache.invalidate(&prefix, id).await.map_err(failed)?;
            let value = json!({"prefix": prefix.as_str(), "id": id, "removed": u64::from(removed)});
            out.result(&value, || {
                vec![if removed {
                    format!("removed {key}")
                } else {
                    format!("{key} was not there: nothing removed")
                }]
            })
        }
        None => {
            let expected = cache.stats(&prefix).await.map_err(failed)?.key_count;
            confirm(
                args.yes,
                &format!(
                    "Remove every entry of prefix {prefix} ({expected} keys) in namespace {} from {url}?",
                    cache.namespace()
                ),
            )?;
            let bar = (expected >= LARGE_PREFIX && !out.json()).then(|| {
                let bar = indicatif::ProgressBar::new(expected);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{spinner} removing {prefix} [{bar:30}] {pos}/{len} keys, {eta} left",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(prefix.to_string());
                bar
            });
            let removed = cache
                .invalidate_all_with_progress(&prefix, |page| {
                    if let Some(bar) = &bar {
                        bar.inc(page);
                    }
                })
                .await;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let removed = removed.map_err(failed)?;
            let value = json!({"prefix": prefix.as_str(), "all": true, "removed": removed});
            out.result(&value, || {
                vec![format!(
                    "removed {removed} entries of prefix {prefix} (namespace {})",
                    cache.namespace()
                )]
            })
        }
    }
}

/// Asks on the terminal unless `yes`; without a terminal to ask on, refuses.
fn confirm(yes: bool, question: &str) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(format!(
            "{question} This needs a confirmation, and there is no terminal to ask on: \
             pass --yes to go ahead"
        )));
    }
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Error::Declined)
    }
}
