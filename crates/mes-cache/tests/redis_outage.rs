//! Redis going away and coming back: reads fail with an error (never a
//! miss), `get_or_load` falls back to its loader, and the cache works again
//! once the server is back, without being rebuilt. The test runs its own
//! `redis-server` (the binary `cargo xtask test` names in
//! `MES_TEST_REDIS_SERVER_BIN`), since it has to stop and restart it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mes_cache::{CacheConfig, CacheKeyPrefix, Error, ReconnectPolicy, ReferenceDataCache};

struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16) -> Self {
        let binary = mes_testkit::required_env("MES_TEST_REDIS_SERVER_BIN", "redis-server binary");
        let server = Self {
            child: Command::new(binary)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        // Ready when it answers PING (bounded: 200 attempts).
        for _ in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_an_error_and_the_cache_recovers() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut server = Server::start(port);
    let config = CacheConfig::from_url(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .namespace("mes:test:outage")
        .command_timeout(Duration::from_millis(500))
        .reconnect(ReconnectPolicy::Constant {
            delay: Duration::from_millis(50),
            max_attempts: 0,
        });
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let part = CacheKeyPrefix::Part;
    cache.set(&part, "P-1", &"strut", None).await.unwrap();
    assert_eq!(
        cache.get::<String>(&part, "P-1").await.unwrap().as_deref(),
        Some("strut")
    );

    server.stop();
    let read = cache.get::<String>(&part, "P-1").await;
    assert!(
        matches!(read, Err(Error::Redis { .. })),
        "a read during an outage is an error: {read:?}"
    );
    assert!(cache.health_check().await.is_err());
    let loaded = cache
        .get_or_load(&part, "P-1", || async {
            Ok::<_, Error>(Some("from the database".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(loaded.as_deref(), Some("from the database"));
    let counters = cache.counters(&part);
    assert!(counters.errors >= 2, "{counters:?}");
    assert_eq!(counters.loader_fallbacks, 1);

    let _server = Server::start(port);
    // The client reconnects by itself; wait for it (bounded, each failing
    // attempt ends at the command timeout).
    let mut healthy = false;
    for _ in 0..40 {
        if cache.health_check().await.is_ok() {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "the cache did not reconnect");
    // The restarted server is empty (no persistence): a miss, then usable.
    assert_eq!(cache.get::<String>(&part, "P-1").await.unwrap(), None);
    cache.set(&part, "P-1", &"strut", None).await.unwrap();
    assert_eq!(
        cache.get::<String>(&part, "P-1").await.unwrap().as_deref(),
        Some("strut")
    );
    cache.close().await.unwrap();
}
