//! `cargo xtask bench`: the cache against raw fred and the legacy
//! algorithms, in one run on the same (private) Redis.
//!
//! Needs `MES_BENCH_REDIS_URL` (a server this run may fill and empty, with
//! `DEBUG POPULATE` enabled), `MES_BENCH_REDIS_PORT` and
//! `MES_BENCH_REDIS_BENCHMARK` (the `redis-benchmark` binary); `cargo xtask
//! bench` starts such a server and sets them. Arguments: `--quick` for
//! fewer rounds and no 1,000,000-key run.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::scan::Scanner;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures::StreamExt;
use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    part_number: String,
    part_name: String,
    revision: String,
    unit_of_measure: String,
}

#[derive(Deserialize)]
struct RawEnvelope {
    data: Part,
    #[serde(rename = "cachedAt")]
    cached_at: u64,
    ttl: u64,
}

fn part(i: usize) -> Part {
    Part {
        part_number: format!("P-{i}"),
        part_name: format!("Landing Gear Strut {i}"),
        revision: "C".into(),
        unit_of_measure: "EA".into(),
    }
}

const POOL: usize = 2;
const KEYS: usize = 1000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `cargo xtask bench`"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Bench {
    cache: ReferenceDataCache,
    raw: fred::clients::Pool,
    port: u16,
    rounds: usize,
}

/// CPU time this process has used so far, in nanoseconds (the sum over
/// its threads of `/proc/self/task/*/schedstat`).
fn cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
                .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// Operations per second of `total` calls of `op` spread over `tasks`
/// concurrent tasks, and the client CPU time per operation in µs (which a
/// busy shared machine disturbs much less than the wall clock).
async fn throughput<F, Fut>(tasks: usize, total: usize, op: F) -> (f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let per_task = total / tasks;
    let cpu_before = cpu_ns();
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = Arc::clone(&op);
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                op(t * 7919 + i * 31).await;
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let ops = (per_task * tasks) as f64;
    let elapsed = started.elapsed().as_secs_f64();
    (ops / elapsed, (cpu_ns() - cpu_before) as f64 / 1e3 / ops)
}

/// Medians of both sides and the median of the per-round ratios (rounds
/// are paired, so load drifting on a shared machine hits both sides alike).
fn report(name: &str, ours: &[(f64, f64)], baseline_name: &str, baseline: &[(f64, f64)], unit: &str) {
    let rates = |v: &[(f64, f64)]| v.iter().map(|s| s.0).collect::<Vec<_>>();
    report_rates(name, &rates(ours), baseline_name, &rates(baseline), unit);
    let cpu = |v: &[(f64, f64)]| v.iter().map(|s| s.1).collect::<Vec<_>>();
    let ratios: Vec<f64> = ours.iter().zip(baseline).map(|(o, b)| o.1 / b.1).collect();
    println!(
        "{:<44} {:>12.2} µs CPU/op {:<34} {:>9.2} µs CPU/op ratio {:.3} (overhead {:+.1}%)",
        "",
        median(cpu(ours)),
        "",
        median(cpu(baseline)),
        median(ratios.clone()),
        (median(ratios) - 1.0) * 100.0
    );
}

fn report_rates(name: &str, ours: &[f64], baseline_name: &str, baseline: &[f64], unit: &str) {
    let ratios: Vec<f64> = ours.iter().zip(baseline).map(|(o, b)| o / b).collect();
    let ratio = median(ratios);
    println!(
        "{name:<44} {:>12.0} {unit}   {baseline_name:<34} {:>12.0} {unit}   ratio {ratio:.3} (overhead {:+.1}%)",
        median(ours.to_vec()),
        median(baseline.to_vec()),
        (1.0 / ratio - 1.0) * 100.0
    );
}

impl Bench {
    async fn gets(&self) {
        let ids: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("P-{i}")).collect());
        // Raw fred builds the same keys per call, like a service would.
        let keys = Arc::clone(&ids);
        let (tasks, total) = (32, 40_000);
        let (mut cache_rates, mut raw_rates, mut bytes_rates) = (Vec::new(), Vec::new(), Vec::new());
        // Paired rounds; the order alternates so drift hits every side alike.
        for round in 0..self.rounds {
            for step in 0..3 {
                match if round % 2 == 0 { step } else { 2 - step } {
                    0 => {
                        let (cache, ids2) = (self.cache.clone(), Arc::clone(&ids));
                        cache_rates.push(
                            throughput(tasks, total, move |i| {
                                let (cache, ids) = (cache.clone(), Arc::clone(&ids2));
                                async move {
                                    let found: Option<Part> =
                                        cache.get(&CacheKeyPrefix::Part, &ids[i % KEYS]).await.unwrap();
                                    assert!(found.is_some());
                                }
                            })
                            .await,
                        );
                    }
                    1 => {
                        let (raw, keys2) = (self.raw.clone(), Arc::clone(&keys));
                        raw_rates.push(
                            throughput(tasks, total, move |i| {
                                let (raw, keys) = (raw.clone(), Arc::clone(&keys2));
                                async move {
                                    let value: Value = raw
                                        .next()
                                        .get(format!("mes:bench:part:{}", keys[i % KEYS]))
                                        .await
                                        .unwrap();
                                    let envelope: RawEnvelope = serde_json::from_slice(
                                        value.as_bytes().unwrap_or_else(|| panic!("{value:?}")),
                                    )
                                    .unwrap();
                                    assert!(
                                        now_ms().saturating_sub(envelope.cached_at) <= envelope.ttl * 1000
                                    );
                                    std::hint::black_box(envelope.data);
                                }
                            })
                            .await,
                        );
                    }
                    _ => {
                        let (raw, keys2) = (self.raw.clone(), Arc::clone(&keys));
                        bytes_rates.push(
                            throughput(tasks, total, move |i| {
                                let (raw, keys) = (raw.clone(), Arc::clone(&keys2));
                                async move {
                                    let value: Value = raw
                                        .next()
                                        .get(format!("mes:bench:part:{}", keys[i % KEYS]))
                                        .await
                                        .unwrap();
                                    std::hint::black_box(value);
                                }
                            })
                            .await,
                        );
                    }
                }
            }
        }
        report(
            "get (32 tasks)",
            &cache_rates,
            "raw fred GET + same JSON decode",
            &raw_rates,
            "op/s",
        );
        report(
            "get (32 tasks)",
            &cache_rates,
            "raw fred GET, no decode",
            &bytes_rates,
            "op/s",
        );
    }

    async fn get_many_100(&self) {
        let ids: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("P-{i}")).collect());
        // Raw fred builds the same keys per call, like a service would.
        let keys = Arc::clone(&ids);
        let (tasks, total) = (8, 2_000);
        let (mut cache_rates, mut raw_rates, mut bytes_rates) = (Vec::new(), Vec::new(), Vec::new());
        // Paired rounds; the order alternates so drift hits every side alike.
        for round in 0..self.rounds {
            for step in 0..3 {
                match if round % 2 == 0 { step } else { 2 - step } {
                    0 => {
                        let (cache, ids2) = (self.cache.clone(), Arc::clone(&ids));
                        cache_rates.push(
                            throughput(tasks, total, move |i| {
                                let (cache, ids) = (cache.clone(), Arc::clone(&ids2));
                                async move {
                                    let start = (i * 100) % (KEYS - 100);
                                    let found = cache
                                        .get_many::<Part, _, _>(
                                            &CacheKeyPrefix::Part,
                                            &ids[start..start + 100],
                                        )
                                        .await
                                        .unwrap();
                                    assert_eq!(found.len(), 100);
                                }
                            })
                            .await,
                        );
                    }
                    1 => {
                        let (raw, keys2) = (self.raw.clone(), Arc::clone(&keys));
                        raw_rates.push(
                            throughput(tasks, total, move |i| {
                                let (raw, keys) = (raw.clone(), Arc::clone(&keys2));
                                async move {
                                    let start = (i * 100) % (KEYS - 100);
                                    let values: Vec<Value> = raw
                                        .next()
                                        .mget(
                                            keys[start..start + 100]
                                                .iter()
                                                .map(|id| format!("mes:bench:part:{id}"))
                                                .collect::<Vec<_>>(),
                                        )
                                        .await
                                        .unwrap();
                                    let mut found = std::collections::HashMap::with_capacity(100);
                                    for (n, value) in values.into_iter().enumerate() {
                                        let envelope: RawEnvelope = serde_json::from_slice(
                                            value.as_bytes().unwrap_or_else(|| panic!("{value:?}")),
                                        )
                                        .unwrap();
                                        assert!(
                                            now_ms().saturating_sub(envelope.cached_at)
                                                <= envelope.ttl * 1000
                                        );
                                        found.insert(format!("P-{}", start + n), envelope.data);
                                    }
                                    assert_eq!(found.len(), 100);
                                }
                            })
                            .await,
                        );
                    }
                    _ => {
                        let (raw, keys2) = (self.raw.clone(), Arc::clone(&keys));
                        bytes_rates.push(
                            throughput(tasks, total, move |i| {
                                let (raw, keys) = (raw.clone(), Arc::clone(&keys2));
                                async move {
                                    let start = (i * 100) % (KEYS - 100);
                                    let values: Vec<Value> = raw
                                        .next()
                                        .mget(
                                            keys[start..start + 100]
                                                .iter()
                                                .map(|id| format!("mes:bench:part:{id}"))
                                                .collect::<Vec<_>>(),
                                        )
                                        .await
                                        .unwrap();
                                    std::hint::black_box(values);
                                }
                            })
                            .await,
                        );
                    }
                }
            }
        }
        report(
            "get_many(100) (8 tasks)",
            &cache_rates,
            "raw fred MGET + same JSON decode",
            &raw_rates,
            "call/s",
        );
        report(
            "get_many(100) (8 tasks)",
            &cache_rates,
            "raw fred MGET, no decode",
            &bytes_rates,
            "call/s",
        );
    }

    async fn get_many_1000_vs_gets(&self) {
        let ids: Vec<String> = (0..KEYS).map(|i| format!("P-{i}")).collect();
        let (mut many, mut sequential) = (Vec::new(), Vec::new());
        for _ in 0..self.rounds {
            let started = Instant::now();
            for _ in 0..10 {
                let found = self
                    .cache
                    .get_many::<Part, _, _>(&CacheKeyPrefix::Part, &ids)
                    .await
                    .unwrap();
                assert_eq!(found.len(), KEYS);
            }
            many.push(started.elapsed().as_secs_f64() / 10.0);
            let started = Instant::now();
            for id in &ids {
                let found: Option<Part> = self.cache.get(&CacheKeyPrefix::Part, id).await.unwrap();
                assert!(found.is_some());
            }
            sequential.push(started.elapsed().as_secs_f64());
        }
        let (many, sequential) = (median(many), median(sequential));
        println!(
            "{:<44} {:>10.2} ms          1000 sequential get               {:>10.2} ms     get_many is {:.1}x faster",
            "get_many(1000)",
            many * 1e3,
            sequential * 1e3,
            sequential / many
        );
    }

    async fn set_many_vs_redis_benchmark(&self) {
        let entries: Vec<(String, Part)> = (0..10_000).map(|i| (format!("S-{i}"), part(i))).collect();
        let value_size =
            serde_json::to_vec(&serde_json::json!({"data": part(5000), "cachedAt": now_ms(), "ttl": 300}))
                .unwrap()
                .len();
        let mut rates = Vec::new();
        for _ in 0..self.rounds {
            let started = Instant::now();
            let written = self
                .cache
                .set_many(&CacheKeyPrefix::Tool, entries.iter().map(|(id, p)| (id, p)), None)
                .await
                .unwrap();
            assert_eq!(written, 10_000);
            rates.push(10_000.0 / started.elapsed().as_secs_f64());
        }
        // Raw fred, the same SETEX commands of pre-encoded values, pipelines
        // of 1000 sent one after the other.
        let encoded: Vec<(String, String)> = entries
            .iter()
            .map(|(id, p)| {
                let value = serde_json::json!({"data": p, "cachedAt": now_ms(), "ttl": 300}).to_string();
                (format!("mes:bench:tool:{id}"), value)
            })
            .collect();
        let mut raw_rates = Vec::new();
        for _ in 0..self.rounds {
            let started = Instant::now();
            for chunk in encoded.chunks(1000) {
                let pipeline = self.raw.next().pipeline();
                for (key, value) in chunk {
                    let setex = CustomCommand::new_static("SETEX", ClusterHash::FirstKey, false);
                    let args: Vec<Value> =
                        vec![key.as_str().into(), Value::Integer(300), value.as_str().into()];
                    let () = pipeline.custom(setex, args).await.unwrap();
                }
                let _: Vec<Value> = pipeline.all().await.unwrap();
            }
            raw_rates.push(10_000.0 / started.elapsed().as_secs_f64());
        }
        for pipeline in ["1000", "32"] {
            let mut baseline = Vec::new();
            for _ in 0..self.rounds {
                let output = Command::new(env("MES_BENCH_REDIS_BENCHMARK"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .args(["-t", "set", "-n", "10000", "-P", pipeline, "-c", "1", "--csv"])
                    .args(["-d", &value_size.to_string()])
                    .output()
                    .expect("redis-benchmark runs");
                let text = String::from_utf8_lossy(&output.stdout);
                let line = text
                    .lines()
                    .find(|l| l.starts_with("\"SET\""))
                    .unwrap_or_else(|| panic!("{text}"));
                let rps: f64 = line.split(',').nth(1).unwrap().trim_matches('"').parse().unwrap();
                baseline.push(rps);
            }
            report_rates(
                &format!("set_many(10_000), {value_size} B values"),
                &rates,
                &format!("redis-benchmark SET -P {pipeline} -c 1"),
                &baseline,
                "key/s",
            );
        }
        report_rates(
            &format!("set_many(10_000), {value_size} B values"),
            &rates,
            "raw fred pipelined SETEX, pre-encoded",
            &raw_rates,
            "key/s",
        );
        self.cache.invalidate_all(&CacheKeyPrefix::Tool).await.unwrap();
    }

    /// The near cache (L1) against Redis (L2), one run, one server: hit
    /// latency, `get_many(100)`, how long another client's write takes to
    /// drop a local copy, memory per entry.
    async fn near_cache(&self, url: &str) {
        let near = ReferenceDataCache::connect(
            CacheConfig::from_url(url)
                .unwrap()
                .namespace("mes:bench")
                .pool_size(POOL)
                .command_timeout(Duration::from_secs(60))
                .near_cache(NearCache::new(200_000, Duration::from_secs(600))),
        )
        .await
        .unwrap();
        let ids: Vec<String> = (0..KEYS).map(|i| format!("P-{i}")).collect();
        let fill = |cache: ReferenceDataCache, ids: Vec<String>| async move {
            // Our own writes come back as invalidations: read until all kept.
            while !ids
                .iter()
                .all(|id| cache.near_cache_holds(&CacheKeyPrefix::Part, id))
            {
                cache
                    .get_many::<Part, _, _>(&CacheKeyPrefix::Part, &ids)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        };
        fill(near.clone(), ids.clone()).await;

        // Latency of one get, one task, each call timed.
        let time_gets = |cache: ReferenceDataCache, calls: usize| {
            let ids = ids.clone();
            async move {
                let mut nanos = Vec::with_capacity(calls);
                for i in 0..calls {
                    let started = Instant::now();
                    let found: Option<Part> = cache.get(&CacheKeyPrefix::Part, &ids[i % KEYS]).await.unwrap();
                    nanos.push(started.elapsed().as_nanos() as f64);
                    assert!(found.is_some());
                }
                nanos.sort_by(f64::total_cmp);
                (nanos[nanos.len() / 2], nanos[nanos.len() * 99 / 100])
            }
        };
        let (mut l1, mut l2) = (Vec::new(), Vec::new());
        let near_hits = || near.counters(&CacheKeyPrefix::Part).near_hits;
        for _ in 0..self.rounds {
            let before = near_hits();
            l1.push(time_gets(near.clone(), 100_000).await);
            assert_eq!(near_hits() - before, 100_000, "every timed get was a near hit");
            l2.push(time_gets(self.cache.clone(), 5_000).await);
        }
        let p = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
        let ratios: Vec<f64> = l1.iter().zip(&l2).map(|(a, b)| b.0 / a.0).collect();
        println!(
            "{:<44} p50 {:>8.3} µs p99 {:>8.3} µs   L2 get (Redis, loopback)  p50 {:>8.3} µs p99 {:>8.3} µs   L1 is {:.0}x faster (p50)",
            "near cache hit (get, 1 task)",
            p(&l1, |s| s.0) / 1e3,
            p(&l1, |s| s.1) / 1e3,
            p(&l2, |s| s.0) / 1e3,
            p(&l2, |s| s.1) / 1e3,
            median(ratios)
        );
        // get_many(100), 8 tasks: all from L1 against all from Redis.
        let many = |cache: ReferenceDataCache| {
            let ids = Arc::new(ids.clone());
            throughput(8, 20_000, move |i| {
                let (cache, ids) = (cache.clone(), Arc::clone(&ids));
                async move {
                    let start = (i * 100) % (KEYS - 100);
                    let found = cache
                        .get_many::<Part, _, _>(&CacheKeyPrefix::Part, &ids[start..start + 100])
                        .await
                        .unwrap();
                    assert_eq!(found.len(), 100);
                    tokio::task::yield_now().await;
                }
            })
        };
        let (mut near_rates, mut redis_rates) = (Vec::new(), Vec::new());
        for _ in 0..self.rounds {
            near_rates.push(many(near.clone()).await);
            redis_rates.push(many(self.cache.clone()).await);
        }
        report(
            "get_many(100) from the near cache (8 tasks)",
            &near_rates,
            "get_many(100) from Redis",
            &redis_rates,
            "call/s",
        );

        // Another client's write until the local copy is gone.
        let writer = self.raw.next().clone();
        let mut lags = Vec::new();
        for i in 0..500 {
            let id = &ids[i % KEYS];
            let key = format!("mes:bench:part:{id}");
            while !near.near_cache_holds(&CacheKeyPrefix::Part, id) {
                let _: Option<Part> = near.get(&CacheKeyPrefix::Part, id).await.unwrap();
                tokio::task::yield_now().await;
            }
            let value =
                serde_json::json!({"data": part(i % KEYS), "cachedAt": now_ms(), "ttl": 3600}).to_string();
            let started = Instant::now();
            let _: () = writer.set(key, value, None, None, false).await.unwrap();
            while near.near_cache_holds(&CacheKeyPrefix::Part, id) {
                tokio::task::yield_now().await;
            }
            lags.push(started.elapsed().as_secs_f64() * 1e6);
        }
        lags.sort_by(f64::total_cmp);
        println!(
            "{:<44} p50 {:>8.1} µs p99 {:>8.1} µs   (SET by another connection, acknowledged or not, until the L1 entry is gone)",
            "near cache invalidation lag",
            lags[lags.len() / 2],
            lags[lags.len() * 99 / 100]
        );

        // Memory per entry: 100,000 more entries kept.
        let count = 100_000;
        let entries: Vec<(String, Part)> = (0..count).map(|i| (format!("M-{i}"), part(i))).collect();
        self.cache
            .set_many(
                &CacheKeyPrefix::Tool,
                entries.iter().map(|(id, p)| (id, p)),
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        let tool_ids: Vec<String> = entries.into_iter().map(|(id, _)| id).collect();
        let before = (rss_kib(), near.near_cache_stats().unwrap());
        for chunk in tool_ids.chunks(1000) {
            let chunk = chunk.to_vec();
            while !chunk
                .iter()
                .all(|id| near.near_cache_holds(&CacheKeyPrefix::Tool, id))
            {
                near.get_many::<Part, _, _>(&CacheKeyPrefix::Tool, &chunk)
                    .await
                    .unwrap();
            }
        }
        let after = (rss_kib(), near.near_cache_stats().unwrap());
        let added = after.1.entries - before.1.entries;
        println!(
            "{:<44} {:>8.0} B RSS per entry ({} entries; key + value {:.0} B of it)",
            "near cache memory",
            (after.0.saturating_sub(before.0) * 1024) as f64 / added as f64,
            added,
            (after.1.bytes - before.1.bytes) as f64 / added as f64
        );
        self.cache.invalidate_all(&CacheKeyPrefix::Tool).await.unwrap();
        near.close().await.unwrap();
    }

    async fn populate(&self, prefix: &str, count: usize) {
        let debug = CustomCommand::new_static("DEBUG", ClusterHash::Random, false);
        let client = self.raw.next();
        let _: Value = client
            .custom(
                debug,
                vec![
                    Value::from("POPULATE"),
                    Value::from(count as i64),
                    Value::from(format!("mes:bench:{prefix}")),
                    Value::from(150i64),
                ],
            )
            .await
            .unwrap();
    }

    /// The TypeScript algorithm: SCAN COUNT 100 to the end, then one DEL.
    async fn legacy_invalidate(&self, prefix: &str) -> u64 {
        let client = self.raw.next().clone();
        let mut keys = Vec::new();
        let mut pages = client.scan(format!("mes:bench:{prefix}:*"), Some(100), None);
        while let Some(page) = pages.next().await {
            let mut page = page.unwrap();
            keys.extend(page.take_results().unwrap_or_default());
            page.next();
        }
        if keys.is_empty() {
            return 0;
        }
        client.del(keys).await.unwrap()
    }

    async fn invalidate(&self, count: usize) {
        let prefix = format!("inv{count}");
        let cache_prefix = CacheKeyPrefix::new(prefix.clone());
        let mut results = Vec::new();
        for legacy in [false, true] {
            self.populate(&prefix, count).await;
            let rss_before = rss_kib();
            let probe = Probe::start(self.port);
            let started = Instant::now();
            let removed = if legacy {
                self.legacy_invalidate(&prefix).await
            } else {
                self.cache.invalidate_all(&cache_prefix).await.unwrap()
            };
            let elapsed = started.elapsed();
            let (max_ping, pings, peak_rss) = probe.stop();
            assert_eq!(removed, count as u64);
            results.push((elapsed, max_ping, pings, rss_before, peak_rss));
        }
        for (name, (elapsed, max_ping, pings, before, peak)) in [
            "invalidate_all (SCAN 1000 -> UNLINK)",
            "legacy (SCAN 100, one DEL)",
        ]
        .iter()
        .zip(&results)
        {
            println!(
                "{:<44} {:>10.0} ms   longest concurrent PING {:>8.2} ms ({pings} pings)   client RSS {} -> peak {} KiB (+{} KiB)",
                format!("{name}, {count} keys"),
                elapsed.as_secs_f64() * 1e3,
                max_ping.as_secs_f64() * 1e3,
                before,
                peak,
                peak.saturating_sub(*before)
            );
        }
        println!(
            "{:<44} invalidate_all takes {:.2}x the legacy time; longest PING {:.1}x shorter",
            "",
            results[0].0.as_secs_f64() / results[1].0.as_secs_f64(),
            results[1].1.as_secs_f64() / results[0].1.as_secs_f64().max(1e-9)
        );
    }
}

/// A PING loop on its own connection and thread (so the client's own work
/// does not delay it) plus an RSS sampler of this process.
struct Probe {
    stop: Arc<AtomicBool>,
    ping: std::thread::JoinHandle<(Duration, u64)>,
    rss: std::thread::JoinHandle<u64>,
}

impl Probe {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ping_stop = Arc::clone(&stop);
        let ping = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut longest, mut count) = (Duration::ZERO, 0u64);
            let mut buffer = [0u8; 7];
            while !ping_stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                stream.write_all(b"PING\r\n").unwrap();
                stream.read_exact(&mut buffer).unwrap();
                assert_eq!(&buffer, b"+PONG\r\n");
                longest = longest.max(started.elapsed());
                count += 1;
            }
            (longest, count)
        });
        let rss_stop = Arc::clone(&stop);
        let rss = std::thread::spawn(move || {
            let mut peak = 0;
            while !rss_stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak.max(rss_kib())
        });
        Self { stop, ping, rss }
    }

    fn stop(self) -> (Duration, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (longest, count) = self.ping.join().unwrap();
        (longest, count, self.rss.join().unwrap())
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = env("MES_BENCH_REDIS_URL");
        let port: u16 = env("MES_BENCH_REDIS_PORT").parse().unwrap();
        let cache = ReferenceDataCache::connect(
            CacheConfig::from_url(&url)
                .unwrap()
                .namespace("mes:bench")
                .pool_size(POOL)
                .command_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        let raw = fred::types::Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
            .build_pool(POOL)
            .unwrap();
        raw.init().await.unwrap();
        let bench = Bench {
            cache,
            raw,
            port,
            rounds: if quick { 3 } else { 7 },
        };
        let entries: Vec<(String, Part)> = (0..KEYS).map(|i| (format!("P-{i}"), part(i))).collect();
        bench
            .cache
            .set_many(
                &CacheKeyPrefix::Part,
                entries.iter().map(|(id, p)| (id, p)),
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        println!(
            "mes-cache bench: {url}, pool of {POOL} connections per side, medians of {} rounds",
            bench.rounds
        );
        bench.gets().await;
        bench.get_many_100().await;
        bench.get_many_1000_vs_gets().await;
        bench.near_cache(&url).await;
        bench.set_many_vs_redis_benchmark().await;
        bench.invalidate(100_000).await;
        if !quick {
            bench.invalidate(1_000_000).await;
        }
        bench.cache.clear_all().await.unwrap();
        bench.cache.close().await.unwrap();
    });
}
