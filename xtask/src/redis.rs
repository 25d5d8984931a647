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

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mes_testkit::pki::TestCa;

use crate::{Result, run, workspace_root};

const STANDALONE_VAR: &str = "MES_TEST_REDIS_URL";
const CLUSTER_VAR: &str = "MES_TEST_REDIS_CLUSTER_URL";
const SENTINEL_VAR: &str = "MES_TEST_REDIS_SENTINEL_URL";
const TLS_VAR: &str = "MES_TEST_REDIS_TLS_URL";
const TLS_CA_VAR: &str = "MES_TEST_REDIS_TLS_CA";

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Redis servers this process started (killed on drop), and the URLs the
/// suites get.
pub(crate) struct RedisServices {
    children: Vec<Child>,
    dir: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
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
        let mut services = Self::empty()?;
        if standalone {
            let url = match given(STANDALONE_VAR) {
                Some(url) => url,
                None => {
                    let port = services.start_server(&[])?;
                    format!("redis://127.0.0.1:{port}")
                }
            };
            services.env.push((STANDALONE_VAR, url));
        }
        let cluster_url = match given(CLUSTER_VAR) {
            Some(url) => url,
            None => services.start_cluster()?,
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
        // For the suite that stops and restarts a server of its own.
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
        let mut services = Self::empty()?;
        let port = services.start_server(&[])?;
        Ok((services, port))
    }

    /// A standalone server for the benchmark (`DEBUG POPULATE` allowed).
    pub(crate) fn bench_server() -> Result<(Self, u16)> {
        let mut services = Self::empty()?;
        let port = services.start_server(&["--enable-debug-command", "yes"])?;
        Ok((services, port))
    }

    fn empty() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mes-xtask-redis-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self {
            children: Vec::new(),
            dir: Some(dir),
            env: Vec::new(),
        })
    }

    fn dir(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new("."))
    }

    /// Starts one `redis-server` on a spare port and waits for its PONG.
    fn start_server(&mut self, extra: &[&str]) -> Result<u16> {
        let port = spare_port()?;
        let node_dir = self.dir().join(port.to_string());
        std::fs::create_dir_all(&node_dir)?;
        let log = std::fs::File::create(node_dir.join("redis.log"))?;
        let server = binary("MES_REDIS_SERVER", "redis-server");
        let child = Command::new(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("cannot start {server} (install Redis 7, or set MES_REDIS_SERVER, or set {STANDALONE_VAR} and {CLUSTER_VAR}): {e}")
            })?;
        self.children.push(child);
        wait_until(port, &["PING"], "PONG")?;
        Ok(port)
    }

    /// Makes a throwaway CA and a server certificate for `localhost` and
    /// 127.0.0.1 with `openssl`, starts a TLS-only server; returns the
    /// `rediss://` URL and the CA's PEM path.
    fn start_tls(&mut self) -> Result<(String, String)> {
        let dir = self.dir().join("tls");
        let ca = TestCa::create(&dir, "mes-test-ca")?;
        let server = ca.server_cert("server", &["DNS:localhost", "IP:127.0.0.1"])?;
        let path = |file: &Path| file.display().to_string();
        let tls_port = spare_port()?.to_string();
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

    /// Starts three cluster-enabled servers, joins them as three masters
    /// (no replicas), waits for `cluster_state:ok` on each; returns the
    /// `redis-cluster://` URL.
    fn start_cluster(&mut self) -> Result<String> {
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push(self.start_server(&cluster_args)?);
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new(binary("MES_REDIS_CLI", "redis-cli"))
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )
            .into());
        }
        for port in &ports {
            wait_until(*port, &["CLUSTER", "INFO"], "cluster_state:ok")?;
        }
        let [first, rest @ ..] = nodes.as_slice() else {
            return Err("no cluster nodes".into());
        };
        let query: Vec<String> = rest.iter().map(|n| format!("node={n}")).collect();
        Ok(format!("redis-cluster://{first}?{}", query.join("&")))
    }

    /// Starts a master and one Sentinel monitoring it as `mymaster`; returns
    /// the `redis-sentinel://` URL.
    fn start_sentinel(&mut self) -> Result<String> {
        let master = self.start_server(&[])?;
        let port = spare_port()?;
        let node_dir = self.dir().join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&node_dir)?;
        let config = node_dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds mymaster 5000\n",
                node_dir.display()
            ),
        )?;
        let log = std::fs::File::create(node_dir.join("sentinel.log"))?;
        let child = Command::new(binary("MES_REDIS_SERVER", "redis-server"))
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start a Sentinel: {e}"))?;
        self.children.push(child);
        wait_until(
            port,
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            &master.to_string(),
        )?;
        Ok(format!(
            "redis-sentinel://127.0.0.1:{port}?sentinelServiceName=mymaster"
        ))
    }
}

impl Drop for RedisServices {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn spare_port() -> Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no spare port pair found".into())
}

/// Polls `redis-cli -p port <command>` until its output contains `expect`
/// (a readiness check of a process we started; 20 s at most).
fn wait_until(port: u16, command: &[&str], expect: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new(binary("MES_REDIS_CLI", "redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(command)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if String::from_utf8_lossy(&output.stdout).contains(expect) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                format!("redis on port {port} did not answer {command:?} with {expect} within 20 s").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
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
