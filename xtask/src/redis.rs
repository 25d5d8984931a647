//! Private Redis servers for the suites and the benchmark: a standalone
//! server and a three-master Redis Cluster, started from `redis-server` on
//! spare ports in a temporary folder (`--save "" --appendonly no`) and
//! stopped when the returned value is dropped.
//!
//! A master watched by one Sentinel and a TLS-only server (with a throwaway
//! CA made by `openssl`) are started too. `MES_TEST_REDIS_URL`,
//! `MES_TEST_REDIS_CLUSTER_URL` and `MES_TEST_REDIS_SENTINEL_URL`, when
//! already set, are used as they are and only what is missing is started. `MES_REDIS_SERVER`,
//! `MES_REDIS_CLI` and `MES_REDIS_BENCHMARK` name the binaries (default: the
//! ones on `PATH`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mes_testkit::pki::TestCa;
use mes_testkit::redis::{RedisBinaries, RedisCluster, RedisServer};

use crate::{Result, run, workspace_root};

const STANDALONE_VAR: &str = "MES_TEST_REDIS_URL";
const CLUSTER_VAR: &str = "MES_TEST_REDIS_CLUSTER_URL";
const SENTINEL_VAR: &str = "MES_TEST_REDIS_SENTINEL_URL";
const TLS_VAR: &str = "MES_TEST_REDIS_TLS_URL";
const TLS_CA_VAR: &str = "MES_TEST_REDIS_TLS_CA";

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn binaries() -> RedisBinaries {
    RedisBinaries::new(
        binary("MES_REDIS_SERVER", "redis-server"),
        binary("MES_REDIS_CLI", "redis-cli"),
    )
}

/// Redis servers this process started (killed on drop), and the URLs the
/// suites get.
pub(crate) struct RedisServices {
    servers: Vec<RedisServer>,
    clusters: Vec<RedisCluster>,
    /// The TLS server's certificates, removed on drop.
    tls_dir: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
}

impl Drop for RedisServices {
    fn drop(&mut self) {
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl RedisServices {
    /// The variables to give `cargo test`.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    /// Uses `MES_TEST_REDIS_URL`, `MES_TEST_REDIS_CLUSTER_URL` and
    /// `MES_TEST_REDIS_SENTINEL_URL` when set; starts what is missing: a
    /// standalone server (unless `standalone` is false: the suites then
    /// start a container), a 3-master cluster, a master with a Sentinel.
    pub(crate) fn provide(standalone: bool) -> Result<Self> {
        let given = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let mut services = Self::empty();
        if standalone {
            let url = match given(STANDALONE_VAR) {
                Some(url) => url,
                None => format!("redis://127.0.0.1:{}", services.start_server(&[])?),
            };
            services.env.push((STANDALONE_VAR, url));
        }
        let cluster_url = match given(CLUSTER_VAR) {
            Some(url) => url,
            None => {
                let cluster = RedisCluster::start(&binaries(), 3)
                    .map_err(|e| format!("cannot start a Redis Cluster: {e}"))?;
                let url = cluster.url();
                services.clusters.push(cluster);
                url
            }
        };
        services.env.push((CLUSTER_VAR, cluster_url));
        let sentinel_url = match given(SENTINEL_VAR) {
            Some(url) => url,
            None => services.start_sentinel()?,
        };
        services.env.push((SENTINEL_VAR, sentinel_url));
        match given(TLS_VAR) {
            Some(url) => {
                services.env.push((TLS_VAR, url));
                services
                    .env
                    .push((TLS_CA_VAR, given(TLS_CA_VAR).unwrap_or_default()));
            }
            None => {
                let (url, ca) = services.start_tls()?;
                services.env.push((TLS_VAR, url));
                services.env.push((TLS_CA_VAR, ca));
            }
        }
        // For the suites that start, stop and fail over servers of their own.
        services.env.push((
            "MES_TEST_REDIS_SERVER_BIN",
            binary("MES_REDIS_SERVER", "redis-server"),
        ));
        for (name, value) in &services.env {
            eprintln!("xtask: {name}={value}");
        }
        Ok(services)
    }

    /// A plain standalone server (for the demo) and its port.
    pub(crate) fn standalone_server() -> Result<(Self, u16)> {
        let mut services = Self::empty();
        let port = services.start_server(&[])?;
        Ok((services, port))
    }

    /// A standalone server for the benchmark (`DEBUG POPULATE` allowed).
    pub(crate) fn bench_server() -> Result<(Self, u16)> {
        let mut services = Self::empty();
        let port = services.start_server(&["--enable-debug-command", "yes"])?;
        Ok((services, port))
    }

    fn empty() -> Self {
        Self {
            servers: Vec::new(),
            clusters: Vec::new(),
            tls_dir: None,
            env: Vec::new(),
        }
    }

    /// Starts one `redis-server` on a spare port, kept until drop; its
    /// port, once it answers.
    fn start_server(&mut self, extra: &[&str]) -> Result<u16> {
        let server = RedisServer::start(&binaries(), extra).map_err(|e| {
            format!(
                "{e} (install Redis 7, or set MES_REDIS_SERVER, or set {STANDALONE_VAR} and {CLUSTER_VAR})"
            )
        })?;
        let port = server.port();
        self.servers.push(server);
        Ok(port)
    }

    /// Makes a throwaway CA and a server certificate for `localhost` and
    /// 127.0.0.1 with `openssl`, starts a TLS-only server; returns the
    /// `rediss://` URL and the CA's PEM path.
    fn start_tls(&mut self) -> Result<(String, String)> {
        let dir = std::env::temp_dir().join(format!("mes-xtask-redis-tls-{}", std::process::id()));
        let ca = TestCa::create(&dir, "mes-test-ca")?;
        self.tls_dir = Some(dir);
        let server = ca.server_cert("server", &["DNS:localhost", "IP:127.0.0.1"])?;
        let path = |file: &std::path::Path| file.display().to_string();
        let tls_port = mes_testkit::redis::spare_port()?.to_string();
        let (cert, key, ca) = (path(&server.cert), path(&server.key), path(ca.cert()));
        // The server also listens in plain text on its own port (for the
        // readiness check); the suite uses only the TLS port.
        self.start_server(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ])?;
        Ok((format!("rediss://localhost:{tls_port}"), ca))
    }

    /// Starts a master and one Sentinel monitoring it as `mymaster`; returns
    /// the `redis-sentinel://` URL.
    fn start_sentinel(&mut self) -> Result<String> {
        let master = RedisServer::start(&binaries(), &[])?;
        let sentinel = RedisServer::start_sentinel(&master, "mymaster", Duration::from_secs(5), 0)
            .map_err(|e| format!("cannot start a Sentinel: {e}"))?;
        self.servers.push(master);
        let url = format!(
            "redis-sentinel://{}?sentinelServiceName=mymaster",
            sentinel.address()
        );
        self.servers.push(sentinel);
        Ok(url)
    }
}

/// `cargo xtask bench`: the cache benchmark against a private server.
pub(crate) fn bench(extra: &[String]) -> Result<()> {
    let (services, port) = RedisServices::bench_server()?;
    let result = run(Command::new(crate::tools::cargo())
        .current_dir(workspace_root())
        .args(["bench", "--locked", "-p", "mes-cache", "--bench", "cache", "--"])
        .args(extra)
        .env("MES_BENCH_REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .env("MES_BENCH_REDIS_PORT", port.to_string())
        .env(
            "MES_BENCH_REDIS_BENCHMARK",
            binary("MES_REDIS_BENCHMARK", "redis-benchmark"),
        ));
    drop(services);
    result
}
