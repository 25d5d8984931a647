//! The near cache through faults, on `redis-server` processes of the
//! test's own (the binary `cargo xtask test` names in
//! `MES_TEST_REDIS_SERVER_BIN`), since they flush, kill connections, stop
//! servers and fail a master over: `FLUSHALL`/`FLUSHDB` empty it, a lost
//! invalidation connection empties it and tracking comes back with the
//! connection, after a Sentinel failover no old value is served, after a
//! Cluster failover the listeners follow the new primary, and a listener
//! that stops answering (`CLIENT PAUSE`) is noticed by its heartbeat.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::near::{PATIENCE, cli, envelope, wait_until};
use common::{Part, part};
use mes_cache::{CacheConfig, CacheKeyPrefix, Clock, NearCacheStats, ReconnectPolicy, ReferenceDataCache};

/// A `redis-server` of this test, killed on drop.
struct Server {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// A free port whose cluster bus port (+10000) is free too.
fn spare_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut server = Self {
            port: spare_port(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let binary = mes_testkit::required_env("MES_TEST_REDIS_SERVER_BIN", "redis-server binary");
        // A folder of its own: a cluster node keeps its nodes.conf there.
        let dir = std::env::temp_dir().join(format!("mes-near-faults-{}", self.port));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_for("PING", "PONG");
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut all = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        cli(&all)
    }

    /// Polls until `command` answers something containing `expected`
    /// (a process of ours starting, bounded).
    fn wait_for(&self, command: &str, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        let args: Vec<&str> = command.split(' ').collect();
        loop {
            let output = Command::new(common::near::redis_cli())
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(&args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .unwrap();
            if String::from_utf8_lossy(&output.stdout).contains(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "port {}: {command} never answered {expected}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("mes-near-faults-{}", self.port)));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn near_cache(url: &str) -> ReferenceDataCache {
    let config = CacheConfig::from_url(url)
        .unwrap()
        .namespace("mes:test:near-faults")
        .command_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        })
        .near_cache(common::near_settings());
    ReferenceDataCache::connect(config).await.unwrap()
}

fn stats(cache: &ReferenceDataCache) -> NearCacheStats {
    cache.near_cache_stats().unwrap()
}

/// Reads `id` until the near cache keeps it (see `Harness::read_until_held`).
async fn read_until_held(cache: &ReferenceDataCache, id: &str) -> Option<Part> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = cache.get::<Part>(&CacheKeyPrefix::Part, id).await;
        if let Ok(value) = value
            && cache.near_cache_holds(&CacheKeyPrefix::Part, id)
        {
            return value;
        }
        assert!(Instant::now() < deadline, "the near cache never kept {id}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until `get` answers `expected` (errors while a server is away
/// count as not yet).
async fn read_until(cache: &ReferenceDataCache, id: &str, expected: Option<&Part>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(value) = cache.get::<Part>(&CacheKeyPrefix::Part, id).await
            && value.as_ref() == expected
        {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never read {expected:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn legacy_setex(server: &Server, cache: &ReferenceDataCache, id: &str, value: &Part) {
    let key = cache.key(&CacheKeyPrefix::Part, id);
    let now = mes_cache::SystemClock.now_ms();
    server.cli(&["SETEX", &key, "300", &envelope(value, now, 300)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_flushdb_empty_the_near_cache() {
    let server = Server::start(&[]);
    let cache = near_cache(&format!("redis://127.0.0.1:{}", server.port)).await;
    let parts = cache.typed::<Part>();
    for flush in ["FLUSHALL", "FLUSHDB"] {
        for i in 0..3 {
            parts.set(&format!("P-{i}"), &part(i), None).await.unwrap();
            read_until_held(&cache, &format!("P-{i}")).await;
        }
        let flushes = stats(&cache).flushes.server_flush;
        server.cli(&[flush]);
        // fred 10.1 drops this message when it comes as a RESP3 push; the
        // listener's RESP2 subscription gets it.
        wait_until("the flush is reported", || {
            stats(&cache).flushes.server_flush > flushes
        })
        .await;
        for i in 0..3 {
            assert!(
                !cache.near_cache_holds(&CacheKeyPrefix::Part, &format!("P-{i}")),
                "{flush}"
            );
            assert_eq!(parts.get(&format!("P-{i}")).await.unwrap(), None, "{flush}");
        }
        assert_eq!(stats(&cache).entries, 0);
    }
    // Tracking survives a flush: a later write by another client still
    // drops the local copy.
    parts.set("P-9", &part(9), None).await.unwrap();
    read_until_held(&cache, "P-9").await;
    legacy_setex(&server, &cache, "P-9", &part(90));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-9")
    })
    .await;
    assert_eq!(parts.get("P-9").await.unwrap(), Some(part(90)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_connection_empties_the_near_cache_and_tracking_comes_back() {
    let server = Server::start(&[]);
    let cache = near_cache(&format!("redis://127.0.0.1:{}", server.port)).await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;
    assert!(stats(&cache).tracking);

    // The listener is the only Pub/Sub connection: kill it.
    let before = stats(&cache).flushes;
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    wait_until("the near cache is emptied", || {
        let now = stats(&cache).flushes;
        now.disconnected + now.reconnected > before.disconnected + before.reconnected
    })
    .await;
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));

    // Tracking is on again on the new connection: a write by another
    // client drops what is read after the reconnection.
    read_until_held(&cache, "P-1").await;
    legacy_setex(&server, &cache, "P-1", &part(10));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(10)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_empties_the_near_cache_and_tracking_comes_back() {
    let mut server = Server::start(&[]);
    let cache = near_cache(&format!("redis://127.0.0.1:{}", server.port)).await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;

    server.stop();
    wait_until("tracking is off", || !stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));
    assert!(
        parts.get("P-1").await.is_err(),
        "a read while Redis is away is an error"
    );

    server.restart();
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    // The restarted server is empty; what is written and read now is kept,
    // and dropped again on another client's write.
    read_until(&cache, "P-1", None).await;
    parts.set("P-1", &part(2), None).await.unwrap();
    assert_eq!(read_until_held(&cache, "P-1").await, Some(part(2)));
    legacy_setex(&server, &cache, "P-1", &part(3));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(3)));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_no_old_value_is_served() {
    let master = Server::start(&[]);
    let replica = Server::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    replica.wait_for("INFO replication", "master_link_status:up");
    let sentinel_dir = std::env::temp_dir().join(format!("mes-near-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&sentinel_dir).unwrap();
    let sentinel_port = spare_port();
    let config = sentinel_dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 5000\n\
             sentinel failover-timeout mymaster 10000\n",
            sentinel_dir.display(),
            master.port
        ),
    )
    .unwrap();
    let binary = mes_testkit::required_env("MES_TEST_REDIS_SERVER_BIN", "redis-server binary");
    let mut sentinel = Server {
        port: sentinel_port,
        args: Vec::new(),
        child: Some(
            Command::new(binary)
                .arg(&config)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ),
    };
    sentinel.wait_for("SENTINEL replicas mymaster", &replica.port.to_string());

    let cache = near_cache(&format!(
        "redis-sentinel://127.0.0.1:{sentinel_port}?sentinelServiceName=mymaster"
    ))
    .await;
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    read_until_held(&cache, "P-1").await;
    let before = stats(&cache).flushes;

    // Refused (NOGOODSLAVE) until the Sentinel has heard from the replica.
    sentinel.wait_for("SENTINEL FAILOVER mymaster", "OK");
    sentinel.wait_for(
        "SENTINEL get-master-addr-by-name mymaster",
        &replica.port.to_string(),
    );
    replica.wait_for("ROLE", "master");
    // The new master gets a new value from another client.
    legacy_setex(&replica, &cache, "P-1", &part(2));
    read_until(&cache, "P-1", Some(&part(2))).await;
    let after = stats(&cache).flushes;
    assert!(
        after.disconnected + after.reconnected > before.disconnected + before.reconnected,
        "the near cache was emptied when the connection moved: {after:?}"
    );
    // From now on only the new value, and tracking works on the new master.
    for _ in 0..50 {
        assert_eq!(parts.get("P-1").await.unwrap(), Some(part(2)));
    }
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    read_until_held(&cache, "P-1").await;
    legacy_setex(&replica, &cache, "P-1", &part(3));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(3)));
    cache.close().await.unwrap();
    sentinel.stop();
    let _ = std::fs::remove_dir_all(&sentinel_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_the_listeners_follow_the_new_primary() {
    let cluster_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
    let masters: Vec<Server> = (0..3).map(|_| Server::start(&cluster_args)).collect();
    let address = |server: &Server| format!("127.0.0.1:{}", server.port);
    let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
    create.extend(masters.iter().map(address));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
    cli(&create);
    for master in &masters {
        master.wait_for("CLUSTER INFO", "cluster_state:ok");
    }
    // A replica of the first master (slots 0-5460).
    let first = &masters[0];
    let first_id = first.cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let replica = Server::start(&cluster_args);
    cli(&[
        "--cluster".to_owned(),
        "add-node".to_owned(),
        address(&replica),
        address(first),
        "--cluster-slave".to_owned(),
        "--cluster-master-id".to_owned(),
        first_id,
    ]);
    replica.wait_for("INFO replication", "master_link_status:up");
    for master in &masters {
        master.wait_for("CLUSTER INFO", "cluster_state:ok");
    }

    let url = format!(
        "redis-cluster://{}?node={}&node={}",
        address(&masters[0]),
        address(&masters[1]),
        address(&masters[2])
    );
    let cache = near_cache(&url).await;
    let parts = cache.typed::<Part>();
    // An id whose key lives on the first master.
    let id = (0..)
        .map(|i| format!("P-{i}"))
        .find(|id| fred::util::redis_keyslot(cache.key(&CacheKeyPrefix::Part, id).as_bytes()) <= 5460)
        .unwrap();
    let key = cache.key(&CacheKeyPrefix::Part, &id);
    parts.set(&id, &part(1), None).await.unwrap();
    wait_until("our write is reported back", || stats(&cache).invalidations >= 1).await;
    read_until_held(&cache, &id).await;

    replica.cli(&["CLUSTER", "FAILOVER"]);
    replica.wait_for("ROLE", "master");
    let write = |value: &Part| {
        let envelope = envelope(value, mes_cache::SystemClock.now_ms(), 300);
        replica.cli(&["-c", "SETEX", &key, "300", &envelope]);
    };
    write(&part(2));
    // The new value is read, and the listeners follow the new primary.
    read_until(&cache, &id, Some(&part(2))).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = stats(&cache);
        if now.flushes.topology_changed >= 1 && now.tracking {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topology is not followed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        assert_eq!(parts.get(&id).await.unwrap(), Some(part(2)));
    }
    read_until_held(&cache, &id).await;
    write(&part(3));
    wait_until("the new primary's write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, &id)
    })
    .await;
    assert_eq!(parts.get(&id).await.unwrap(), Some(part(3)));
    // One rebuild per change of the primaries (a pool connection that
    // learns of the change late reports it again: nothing to redo).
    let flushes = stats(&cache).flushes.topology_changed;
    assert!(flushes <= 2, "the listeners settled: {flushes} topology flushes");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswering_listener_connection_empties_the_near_cache() {
    let server = Server::start(&[]);
    let config = CacheConfig::from_url(&format!("redis://127.0.0.1:{}", server.port))
        .unwrap()
        .namespace("mes:test:near-faults")
        .command_timeout(Duration::from_millis(300))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        })
        .near_cache(common::near_settings().heartbeat(Duration::from_millis(50)));
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let parts = cache.typed::<Part>();
    parts.set("P-1", &part(1), None).await.unwrap();
    wait_until("our write is reported back", || stats(&cache).invalidations >= 1).await;
    read_until_held(&cache, "P-1").await;

    // The server stops answering anyone for a while, connections open (as
    // behind a silent network cut): the heartbeat notices.
    server.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    wait_until("tracking is off", || !stats(&cache).tracking).await;
    assert!(!cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1"));
    assert!(stats(&cache).flushes.disconnected >= 1);

    // Once it answers again, tracking comes back and works.
    wait_until("tracking is on again", || stats(&cache).tracking).await;
    read_until_held(&cache, "P-1").await;
    legacy_setex(&server, &cache, "P-1", &part(2));
    wait_until("the write is reported", || {
        !cache.near_cache_holds(&CacheKeyPrefix::Part, "P-1")
    })
    .await;
    assert_eq!(parts.get("P-1").await.unwrap(), Some(part(2)));
    cache.close().await.unwrap();
}
