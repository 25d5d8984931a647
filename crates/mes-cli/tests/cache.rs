//! `mes cache` against the real Redis of the run (`MES_TEST_REDIS_URL`):
//! entries written with mes-cache (and raw ones, as another service or a
//! bug would leave them), then the command's JSON and exit code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{closed_port, mes, run, unique};
use fred::prelude::KeysInterface;
use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use serde_json::json;

/// A cache in a namespace of the test's own, removed at the end.
struct Namespace {
    name: String,
    cache: ReferenceDataCache,
}

impl Namespace {
    async fn new(test: &str) -> Self {
        let name = format!("mes:test:cli:{}", unique(test));
        let config = CacheConfig::from_url(&mes_testkit::redis_url())
            .unwrap()
            .namespace(name.clone());
        Self {
            name,
            cache: ReferenceDataCache::connect(config).await.unwrap(),
        }
    }

    /// `mes ARGS --namespace NAME`.
    fn mes(&self, args: &[&str]) -> common::Run {
        run(mes().args(args).args(["--namespace", &self.name]))
    }

    async fn raw_set(&self, key: &str, value: &str) {
        let client = self.cache.fred_pool().unwrap().next();
        let () = client.set(key, value, None, None, false).await.unwrap();
    }

    async fn cleanup(self) {
        self.cache.clear_all().await.unwrap();
        self.cache.close().await.unwrap();
    }
}

#[tokio::test]
async fn get_shows_the_decoded_envelope_its_age_ttl_and_version() {
    let ns = Namespace::new("get").await;
    let part = json!({"partNumber": "P-1", "partName": "Landing Gear Strut"});
    ns.cache
        .set_versioned(
            &CacheKeyPrefix::Part,
            "P-1",
            &part,
            Some(Duration::from_secs(600)),
            "v7",
        )
        .await
        .unwrap();

    let shown = ns.mes(&["cache", "get", "part", "P-1", "--json"]).json();
    assert_eq!(shown["key"], format!("{}:part:P-1", ns.name));
    assert_eq!(shown["data"], part);
    assert_eq!(shown["version"], "v7");
    assert_eq!(shown["ttl_secs"], 600);
    assert_eq!(shown["expired"], false);
    // Both read from one clock reading: age and time left make the TTL.
    let age = shown["age_ms"].as_u64().unwrap();
    let left = shown["ttl_left_ms"].as_u64().unwrap();
    assert_eq!(age + left, 600_000, "{shown}");
    let redis_ttl = shown["redis_ttl_ms"].as_u64().unwrap();
    assert!(redis_ttl > 0 && redis_ttl <= 600_000, "{shown}");

    let text = ns.mes(&["cache", "get", "part", "P-1"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("version    v7"), "{}", text.stdout);
    assert!(text.stdout.contains("Landing Gear Strut"), "{}", text.stdout);
    ns.cleanup().await;
}

#[tokio::test]
async fn get_shows_an_undecodable_or_expired_value_as_it_is_and_leaves_it() {
    let ns = Namespace::new("raw").await;
    let corrupt = format!("{}:part:bad", ns.name);
    ns.raw_set(&corrupt, "{not an envelope").await;
    let expired = format!("{}:part:old", ns.name);
    ns.raw_set(&expired, r#"{"data":{"a":1},"cachedAt":1000,"ttl":1}"#)
        .await;

    let shown = ns.mes(&["cache", "get", "part", "bad", "--json"]).json();
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("not the cache envelope"),
        "{shown}"
    );
    assert_eq!(shown["raw"], "{not an envelope");
    assert_eq!(shown["redis_ttl_ms"], serde_json::Value::Null);

    let old = ns.mes(&["cache", "get", "part", "old", "--json"]).json();
    assert_eq!(old["expired"], true);
    assert_eq!(old["ttl_left_ms"], 0);
    assert_eq!(old["data"], json!({"a": 1}));

    // Looking removed nothing (a cache read would have).
    let client = ns.cache.fred_pool().unwrap().next();
    let still: i64 = client.exists(vec![corrupt, expired]).await.unwrap();
    assert_eq!(still, 2);
    ns.cleanup().await;
}

#[tokio::test]
async fn missing_entries_and_unknown_prefixes_are_not_found() {
    let ns = Namespace::new("missing").await;
    ns.mes(&["cache", "get", "part", "P-404"])
        .assert_fails(3, "no entry \"P-404\" under prefix part");
    ns.mes(&["cache", "get", "prat", "P-1"])
        .assert_fails(3, "unknown prefix \"prat\"");
    ns.mes(&["cache", "invalidate", "prat", "--all", "--yes"])
        .assert_fails(3, "unknown prefix \"prat\"");
    // A prefix outside the fleet's list is fine once it holds keys.
    ns.cache
        .set(&CacheKeyPrefix::new("work_order"), "WO-1", &"x", None)
        .await
        .unwrap();
    let shown = ns.mes(&["cache", "get", "work_order", "WO-1", "--json"]).json();
    assert_eq!(shown["data"], "x");
    ns.cleanup().await;
}

#[tokio::test]
async fn stats_count_keys_per_prefix_and_read_info() {
    let ns = Namespace::new("stats").await;
    ns.cache
        .set_many(&CacheKeyPrefix::Part, (0..7).map(|i| (format!("P-{i}"), i)), None)
        .await
        .unwrap();
    ns.cache
        .set_many(
            &CacheKeyPrefix::new("work_order"),
            [("WO-1", 1), ("WO-2", 2)],
            None,
        )
        .await
        .unwrap();
    // A read that hits, so the server has counted at least one.
    assert!(
        ns.cache
            .get::<i64>(&CacheKeyPrefix::Part, "P-0")
            .await
            .unwrap()
            .is_some()
    );

    let stats = ns.mes(&["cache", "stats", "--json"]).json();
    assert_eq!(stats["namespace"], ns.name);
    assert_eq!(stats["prefixes"]["part"], 7);
    assert_eq!(stats["prefixes"]["work_order"], 2);
    assert_eq!(
        stats["prefixes"]["user"], 0,
        "the fleet's prefixes are listed, empty or not"
    );
    assert_eq!(stats["total_keys"], 9);
    assert!(stats["memory"]["used_bytes"].as_u64().unwrap() > 0);
    assert!(stats["keyspace_hits"].as_u64().unwrap() > 0);
    let rate = stats["hit_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 1.0);

    let text = ns.mes(&["cache", "stats"]);
    assert!(text.stdout.contains("work_order"), "{}", text.stdout);
    assert!(text.stdout.contains("Redis hit rate"), "{}", text.stdout);
    ns.cleanup().await;
}

#[tokio::test]
async fn invalidate_refuses_without_a_terminal_and_removes_with_yes() {
    let ns = Namespace::new("invalidate").await;
    ns.cache
        .set_many(
            &CacheKeyPrefix::Part,
            (0..1500).map(|i| (format!("P-{i}"), i)),
            None,
        )
        .await
        .unwrap();
    ns.cache
        .set(&CacheKeyPrefix::User, "U-1", &"ada", None)
        .await
        .unwrap();

    // stdin is not a terminal: no one to ask, so nothing happens.
    ns.mes(&["cache", "invalidate", "part", "--all"])
        .assert_fails(2, "pass --yes");
    ns.mes(&["cache", "invalidate", "user", "U-1"])
        .assert_fails(2, "pass --yes");
    assert_eq!(
        ns.cache.stats(&CacheKeyPrefix::Part).await.unwrap().key_count,
        1500
    );

    let one = ns
        .mes(&["cache", "invalidate", "user", "U-1", "--yes", "--json"])
        .json();
    assert_eq!(one, json!({"prefix": "user", "id": "U-1", "removed": 1}));
    let again = ns
        .mes(&["cache", "invalidate", "user", "U-1", "--yes", "--json"])
        .json();
    assert_eq!(again["removed"], 0);

    // A large prefix (a progress bar on a terminal; none here).
    let all = ns
        .mes(&["cache", "invalidate", "part", "--all", "--yes", "--json"])
        .json();
    assert_eq!(all["removed"], 1500);
    assert_eq!(ns.cache.stats(&CacheKeyPrefix::Part).await.unwrap().key_count, 0);
    // Exactly one of an id and --all.
    let neither = ns.mes(&["cache", "invalidate", "part"]);
    assert_eq!(neither.code, 2, "{neither:?}");
    ns.cleanup().await;
}

#[test]
fn a_refused_connection_fails_at_once_with_a_clear_message() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let refused = run(mes()
        .args(["cache", "stats", "--connect-timeout", "2s"])
        .env("REDIS_URL", &url));
    refused.assert_fails(1, "cannot connect to Redis");
    assert!(refused.stderr.contains(&url), "{refused:?}");
    // The flag wins over the variable.
    let flag = run(mes().args(["cache", "stats", "--redis-url", &url]));
    flag.assert_fails(1, "cannot connect to Redis");
}

#[test]
fn a_server_that_never_answers_fails_within_the_connect_timeout() {
    // Accepts the TCP connection and says nothing: only the bound ends it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let silent = run(mes().args([
        "cache",
        "get",
        "part",
        "P-1",
        "--connect-timeout",
        "1s",
        "--redis-url",
        &url,
    ]));
    silent.assert_fails(1, "cannot connect to Redis");
    drop(listener);
}

#[test]
fn a_bad_url_is_a_usage_error() {
    run(mes().args(["cache", "stats", "--redis-url", "redis://host:notaport"]))
        .assert_fails(2, "cannot parse the Redis URL");
    run(mes().args(["cache", "stats"]).env("REDIS_URL", "not a url"))
        .assert_fails(2, "cannot parse the Redis URL");
}

#[test]
fn help_lists_the_exit_codes_and_completions_are_generated() {
    let help = run(mes().arg("--help"));
    assert_eq!(help.code, 0);
    for text in ["Exit codes:", "3  not found", "mes cache get part P-12345"] {
        assert!(help.stdout.contains(text), "{text:?} in {}", help.stdout);
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = run(mes().args(["completions", shell]));
        assert_eq!(script.code, 0, "{script:?}");
        assert!(script.stdout.contains("invalidate"), "{shell}");
    }
    let unknown = run(mes().args(["completions", "tcsh"]));
    assert_eq!(unknown.code, 2, "{unknown:?}");
}

/// `mes` on a terminal (`script`, from util-linux: Debian's essential
/// bsdutils), answering `answer` to its question. stdout and stderr both
/// come back in `stdout`, as the terminal showed them.
fn on_a_terminal(ns: &Namespace, args: &str, answer: &str) -> common::Run {
    use std::io::Write;
    let line = format!("{} {args} --namespace {}", env!("CARGO_BIN_EXE_mes"), ns.name);
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("REDIS_URL", mes_testkit::redis_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    common::finish(child)
}

#[tokio::test]
async fn on_a_terminal_it_asks_and_shows_progress() {
    let ns = Namespace::new("terminal").await;
    ns.cache
        .set_many(
            &CacheKeyPrefix::Part,
            (0..1500).map(|i| (format!("P-{i}"), i)),
            None,
        )
        .await
        .unwrap();
    ns.cache
        .set(&CacheKeyPrefix::User, "U-1", &"ada", None)
        .await
        .unwrap();

    let declined = on_a_terminal(&ns, "cache invalidate user U-1", "n\n");
    assert_eq!(declined.code, 4, "{declined:?}");
    assert!(declined.stdout.contains("U-1 from redis://"), "{declined:?}");
    assert!(declined.stdout.contains("[y/N]") && declined.stdout.contains("nothing was changed"));
    assert!(
        ns.cache
            .get::<String>(&CacheKeyPrefix::User, "U-1")
            .await
            .unwrap()
            .is_some()
    );

    let confirmed = on_a_terminal(&ns, "cache invalidate part --all", "y\n");
    assert_eq!(confirmed.code, 0, "{confirmed:?}");
    assert!(confirmed.stdout.contains("(1500 keys)"), "{confirmed:?}");
    assert!(
        confirmed.stdout.contains("removing part ["),
        "a progress bar: {confirmed:?}"
    );
    assert!(
        confirmed.stdout.contains("removed 1500 entries of prefix part"),
        "{confirmed:?}"
    );
    assert_eq!(ns.cache.stats(&CacheKeyPrefix::Part).await.unwrap().key_count, 0);
    ns.cleanup().await;
}
