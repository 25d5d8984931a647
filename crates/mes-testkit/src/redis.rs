//! Redis servers of a test's (or of `cargo xtask`'s) own, from the
//! `redis-server` and `redis-cli` binaries: a standalone server, a master
//! with replicas watched by a Sentinel, a Cluster that can be resharded.
//! For what the shared server cannot be used for: stopping, killing,
//! flushing, failing over, moving slots.
//!
//! Each server runs on a spare port of 127.0.0.1 whose cluster bus port
//! (+10000) is free too, without persistence, in a folder of its own (its
//! log, a cluster node's `nodes.conf`) removed with it. Dropping a server
//! kills it. Failures to start are errors carrying the end of the server's
//! log.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server of ours may take to answer as asked (start-up, a
/// replica's sync, a cluster's agreement, a failover).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `redis-server` and `redis-cli` to run.
#[derive(Debug, Clone)]
pub struct RedisBinaries {
    server: String,
    cli: String,
}

impl RedisBinaries {
    /// Explicit paths (or names on `PATH`).
    pub fn new(server: impl Into<String>, cli: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            cli: cli.into(),
        }
    }

    /// The ones `cargo xtask test` names for the suites:
    /// `MES_TEST_REDIS_SERVER_BIN` (required: a suite without it fails
    /// saying how to get it) and `MES_REDIS_CLI` (default `redis-cli`).
    pub fn for_tests() -> Self {
        Self::new(
            crate::required_env("MES_TEST_REDIS_SERVER_BIN", "redis-server binary"),
            std::env::var("MES_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned()),
        )
    }

    /// Runs `redis-cli` with `args`; its standard output, or an error when
    /// it fails or answers an error.
    pub fn cli<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> io::Result<String> {
        let output = Command::new(&self.cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", self.cli)))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || text.starts_with("ERR") || text.contains("[ERR]") {
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect();
            return Err(io::Error::other(format!(
                "redis-cli {}: {text}{}",
                shown.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(text)
    }
}

/// A free port of 127.0.0.1 whose cluster bus port (+10000) is free too.
pub fn spare_port() -> io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no spare port pair found"))
}

/// One `redis-server` process (a Sentinel too), killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binaries: RedisBinaries,
    port: u16,
    dir: PathBuf,
    /// A configuration file given first (a Sentinel's).
    config: Option<PathBuf>,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a spare port with `args` added to its command line;
    /// returns once it answers `PING`.
    pub fn start(binaries: &RedisBinaries, args: &[&str]) -> io::Result<Self> {
        Self::start_on(binaries, spare_port()?, args)
    }

    /// [`start`](Self::start) on `port`.
    pub fn start_on(binaries: &RedisBinaries, port: u16, args: &[&str]) -> io::Result<Self> {
        let mut server = Self::prepare(binaries, port, None, args)?;
        server.restart()?;
        Ok(server)
    }

    /// A replica of `master` (same binaries), once its link to the master
    /// is up.
    pub fn start_replica_of(master: &Self, args: &[&str]) -> io::Result<Self> {
        let master_port = master.port.to_string();
        let mut all = vec!["--replicaof", "127.0.0.1", master_port.as_str()];
        all.extend_from_slice(args);
        let replica = Self::start(&master.binaries, &all)?;
        replica.wait_for(&["INFO", "replication"], "master_link_status:up")?;
        Ok(replica)
    }

    /// A Sentinel watching `master` as `service` (quorum 1: it alone
    /// decides), declaring it down after `down_after`; returns once it
    /// knows the master's `replicas` replicas.
    pub fn start_sentinel(
        master: &Self,
        service: &str,
        down_after: Duration,
        replicas: usize,
    ) -> io::Result<Self> {
        let port = spare_port()?;
        let dir = Self::folder(port)?;
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {service} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {service} {}\n\
                 sentinel failover-timeout {service} 10000\n",
                dir.display(),
                master.port,
                down_after.as_millis().max(1)
            ),
        )?;
        let mut sentinel = Self {
            binaries: master.binaries.clone(),
            port,
            dir,
            config: Some(config),
            args: vec!["--sentinel".to_owned()],
            child: None,
        };
        sentinel.restart()?;
        let expected = format!("num-slaves\n{replicas}\n");
        sentinel.wait_for(&["SENTINEL", "master", service], &expected)?;
        Ok(sentinel)
    }

    /// On a Sentinel: waits until it names `server` the master of
    /// `service` and `server` says it is one.
    pub fn wait_promoted(&self, service: &str, server: &Self) -> io::Result<()> {
        self.wait_for(
            &["SENTINEL", "get-master-addr-by-name", service],
            &server.port.to_string(),
        )?;
        server.wait_for(&["ROLE"], "master")
    }

    /// On a Sentinel: a switchover of `service` (`SENTINEL FAILOVER`,
    /// asked again while refused with NOGOODSLAVE, until the Sentinel has
    /// heard from the replica) to `replica`, its only replica, once
    /// promoted.
    pub fn switch_over(&self, service: &str, replica: &Self) -> io::Result<()> {
        self.wait_for(&["SENTINEL", "FAILOVER", service], "OK")?;
        self.wait_promoted(service, replica)
    }

    fn folder(port: u16) -> io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("mes-redis-{}-{port}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn prepare(
        binaries: &RedisBinaries,
        port: u16,
        config: Option<PathBuf>,
        args: &[&str],
    ) -> io::Result<Self> {
        Ok(Self {
            binaries: binaries.clone(),
            port,
            dir: Self::folder(port)?,
            config,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    /// Its folder (log, `nodes.conf`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it (again, after [`kill`](Self::kill)) with the same command
    /// line, on the same port and folder; returns once it answers `PING`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))?;
        let mut command = Command::new(&self.binaries.server);
        if let Some(config) = &self.config {
            command.arg(config);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start {} (install Redis 7): {e}", self.binaries.server),
                )
            })?;
        self.child = Some(child);
        // Until it answers, or it exited (a port taken, a bad argument).
        let deadline = Instant::now() + PATIENCE;
        loop {
            if matches!(self.cli(&["PING"]), Ok(answer) if answer.contains("PONG")) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let tail = self.log_tail();
                self.kill();
                return Err(io::Error::other(format!(
                    "redis-server on port {} did not start ({exited:?}): {tail}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL, and waits for it: no shutdown, nothing saved, its clients'
    /// connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli -h 127.0.0.1 -p PORT args...`.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str()];
        all.extend_from_slice(args);
        self.binaries.cli(&all)
    }

    /// Polls `command` until its answer contains `expected` (a process of
    /// ours starting or settling), for [`PATIENCE`] at most.
    pub fn wait_for(&self, command: &[&str], expected: &str) -> io::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = match self.cli(command) {
                Ok(answer) if answer.contains(expected) => return Ok(()),
                Ok(answer) => answer,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "port {}: {} did not answer {expected:?} within {PATIENCE:?} (last: {last}); log: {}",
                    self.port,
                    command.join(" "),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(10)..)
            .unwrap_or_default()
            .join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of servers of our own: masters created together, and
/// replicas added to them.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, masters first in the order they were created.
    pub nodes: Vec<RedisServer>,
}

/// The command line of a cluster node.
const CLUSTER_ARGS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "5000",
];

impl RedisCluster {
    /// `masters` masters sharing the 16384 slots evenly, no replicas; returns
    /// once every node says `cluster_state:ok`.
    pub fn start(binaries: &RedisBinaries, masters: usize) -> io::Result<Self> {
        let nodes = (0..masters)
            .map(|_| RedisServer::start(binaries, &CLUSTER_ARGS))
            .collect::<io::Result<Vec<_>>>()?;
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(RedisServer::address));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        binaries.cli(&create)?;
        let cluster = Self { nodes };
        cluster.wait_settled()?;
        Ok(cluster)
    }

    /// Adds a replica of `self.nodes[master]`; returns its index in
    /// `nodes`, once its link is up.
    pub fn add_replica(&mut self, master: usize) -> io::Result<usize> {
        let master_id = self.node_id(master)?;
        let binaries = self.node(0)?.binaries.clone();
        let replica = RedisServer::start(&binaries, &CLUSTER_ARGS)?;
        binaries.cli(&[
            "--cluster",
            "add-node",
            &replica.address(),
            &self.node(master)?.address(),
            "--cluster-slave",
            "--cluster-master-id",
            &master_id,
        ])?;
        replica.wait_for(&["INFO", "replication"], "master_link_status:up")?;
        self.nodes.push(replica);
        self.wait_settled()?;
        Ok(self.nodes.len() - 1)
    }

    /// `self.nodes[index]`, or an error naming the index.
    pub fn node(&self, index: usize) -> io::Result<&RedisServer> {
        self.nodes
            .get(index)
            .ok_or_else(|| io::Error::other(format!("the cluster has no node {index}")))
    }

    /// `CLUSTER MYID` of a node.
    pub fn node_id(&self, node: usize) -> io::Result<String> {
        Ok(self.node(node)?.cli(&["CLUSTER", "MYID"])?.trim().to_owned())
    }

    /// The index of the master `redis-cli --cluster create` gave `slot`
    /// (it deals the 16384 slots in even ranges, in the order of `nodes`).
    pub fn first_owner(&self, slot: u16) -> usize {
        let masters = self.nodes.len().max(1);
        let range = 16384_usize.div_ceil(masters);
        (usize::from(slot) / range).min(masters - 1)
    }

    /// Starts moving `slot` from `self.nodes[from]` to `self.nodes[to]` by
    /// hand, as `redis-cli --cluster reshard` does (`IMPORTING`, then
    /// `MIGRATING`); keys are moved with [`SlotMove::migrate`], and
    /// [`SlotMove::finish`] moves the rest and gives the slot to `to`.
    pub fn begin_move(&self, slot: u16, from: usize, to: usize) -> io::Result<SlotMove<'_>> {
        let slot_move = SlotMove {
            source: self.node(from)?,
            target: self.node(to)?,
            source_id: self.node_id(from)?,
            target_id: self.node_id(to)?,
            slot: slot.to_string(),
        };
        slot_move.target.cli(&[
            "CLUSTER",
            "SETSLOT",
            &slot_move.slot,
            "IMPORTING",
            &slot_move.source_id,
        ])?;
        slot_move.source.cli(&[
            "CLUSTER",
            "SETSLOT",
            &slot_move.slot,
            "MIGRATING",
            &slot_move.target_id,
        ])?;
        Ok(slot_move)
    }

    /// Moves `slots` slots from `self.nodes[from]` to `self.nodes[to]` with
    /// `redis-cli --cluster reshard` (MIGRATE key by key, clients see
    /// `ASK` then `MOVED`); returns once the cluster agrees again.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> io::Result<()> {
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        let first = self.node(0)?;
        first.binaries.cli(&[
            "--cluster",
            "reshard",
            &first.address(),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ])?;
        self.wait_settled()
    }

    /// Waits until every node says `cluster_state:ok` and `redis-cli
    /// --cluster check` finds every slot covered and none open.
    pub fn wait_settled(&self) -> io::Result<()> {
        for node in &self.nodes {
            node.wait_for(&["CLUSTER", "INFO"], "cluster_state:ok")?;
        }
        let first = self.node(0)?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let checked = first.binaries.cli(&["--cluster", "check", &first.address()]);
            match checked {
                Ok(report)
                    if report.contains("[OK] All 16384 slots covered") && !report.contains("[WARNING]") =>
                {
                    return Ok(());
                }
                other if Instant::now() > deadline => {
                    return Err(io::Error::other(format!("the cluster did not settle: {other:?}")));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `redis-cluster://first?node=second&node=…` of every node (the
    /// client learns the slots from any of them).
    pub fn url(&self) -> String {
        let addresses: Vec<String> = self.nodes.iter().map(RedisServer::address).collect();
        let (first, rest) = addresses
            .split_first()
            .map_or(("", &[][..]), |(first, rest)| (first.as_str(), rest));
        let query: Vec<String> = rest.iter().map(|n| format!("node={n}")).collect();
        format!("redis-cluster://{first}?{}", query.join("&"))
    }
}

/// A slot half-way between two masters (see [`RedisCluster::begin_move`]):
/// the source answers `ASK` for the keys moved, `TRYAGAIN` for a multi-key
/// command on keys split between the two.
#[derive(Debug)]
pub struct SlotMove<'a> {
    source: &'a RedisServer,
    target: &'a RedisServer,
    source_id: String,
    target_id: String,
    slot: String,
}

impl SlotMove<'_> {
    /// Moves `keys` (of the slot) to the target with `MIGRATE`.
    pub fn migrate(&self, keys: &[&str]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let port = self.target.port().to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        match self.source.cli(&args)?.trim() {
            "OK" => Ok(()),
            other => Err(io::Error::other(format!("MIGRATE answered {other}"))),
        }
    }

    /// Moves the slot's remaining keys, then gives the slot to the target
    /// (on both nodes: the migration is over).
    pub fn finish(&self) -> io::Result<()> {
        let left = self
            .source
            .cli(&["CLUSTER", "GETKEYSINSLOT", &self.slot, "1000"])?;
        let left: Vec<&str> = left.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
        self.migrate(&left)?;
        for node in [self.target, self.source] {
            node.cli(&["CLUSTER", "SETSLOT", &self.slot, "NODE", &self.target_id])?;
        }
        Ok(())
    }
}
