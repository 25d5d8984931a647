//! The tansu broker as a child process: started on a spare port, waited
//! for until it answers a Kafka request, killed when dropped; its SCRAM
//! users ([`TansuBroker::create_user`]); and [`TlsTansu`], one reachable
//! only over TLS, through a [`TlsProxy`].
//!
//! What tansu 0.6.0 does not do, checked on these machines, so no suite
//! can show it: creating partitions of an existing topic (no
//! `CreatePartitions`); limiting record or batch size (it took 60 MB);
//! moving a partition's leader (one broker); serving TLS itself (its
//! `--cert`/`--key` conflict and its acceptor is unused, hence the proxy);
//! SASL PLAIN (only SCRAM-SHA-256/512 are built in, and only with
//! `--authentication` on `sqlite://` storage, where `tansu user create`
//! keeps users; a refused mechanism shows as a dropped connection). After a
//! failed SCRAM exchange it still treats the connection as logged in, so
//! only a client that gives up on the server's `e=` message stays out (ours
//! and rskafka's do, through rsasl). On `memory://` a fetch inside a
//! multi-record batch can skip records, and a fetch waits its whole
//! `max_wait`; `sqlite://` paths are relative to its working directory.
//!
//! Idempotent producing, checked (mes-kafka's `tests/broker.rs`): tansu
//! gives a producer id only to `InitProducerId` v3+ (the first versions
//! carrying the producer id and epoch, -1 for a new producer); v0-v2 get
//! `UNKNOWN_SERVER_ERROR` with `producer=None epoch=None` in its log. It
//! checks sequences on both `memory://` and `sqlite://`: a batch resent with
//! the same producer id, epoch and sequence is answered
//! `DUPLICATE_SEQUENCE_NUMBER` and not written again. With that, the
//! publisher's broker-kill suite on `sqlite://` finds nothing on the topic
//! twice that the library retried (3 runs: 0 duplicates; before
//! idempotence, 0-4).
//!
//! Consumer groups, checked with kafkajs 2.2 and mes-kafka members (tansu's
//! `coordinator/group/administrator.rs` at v0.6.0):
//! - A member whose session times out is evicted inside the survivors'
//!   `Heartbeat`, which answers `REBALANCE_IN_PROGRESS` but leaves the group
//!   settled in the same generation: the survivors rejoin into it, its
//!   `SyncGroup` ignores the leader's new assignment and returns the old
//!   one, so the dead member's partitions are never reassigned (kafkajs
//!   survivors too; fixed upstream in 9b50583, after 0.6.0). The e2e
//!   suites therefore remove a killed member with `LeaveGroup`
//!   (`KafkaClient::remove_group_member`), which does start a generation,
//!   as Kafka would after the session timeout.
//! - It holds a non-leader's `JoinGroup` for 3 s and counts that against
//!   the member's session (only heartbeats renew it): sessions under ~4 s
//!   make a member drop out of every rebalance.
//! - It does not wait for every member to rejoin: it answers each join at
//!   once with the members it knows.
//! - `DescribeGroups` returns member ids and the state, but empty metadata
//!   and assignments; `OffsetCommit` does not check the generation.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Issued;
use crate::tls_proxy::TlsProxy;

/// A running tansu broker. Dropping it kills the process.
#[derive(Debug)]
pub struct TansuBroker {
    child: Child,
    binary: PathBuf,
    storage: String,
    host: Ipv4Addr,
    port: u16,
    advertised: Option<String>,
    /// Appended to `tansu broker`'s arguments, at every (re)start.
    args: Vec<String>,
    log: PathBuf,
}

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long a starting broker may take to answer before start fails.
const START_BOUND: Duration = Duration::from_secs(60);

impl TansuBroker {
    /// Starts a broker with `storage` (`memory://tansu/` or `sqlite://FILE`)
    /// on a spare port, in `dir` (its working directory: tansu reads the
    /// path of `sqlite://FILE` as relative, even after `sqlite:///`), writing
    /// its log there.
    pub fn start(binary: &Path, storage: &str, dir: &Path) -> io::Result<Self> {
        Self::start_on(binary, storage, spare_port()?, dir)
    }

    /// [`start`](Self::start) with `args` appended to `tansu broker`'s
    /// command line, e.g. `["--authentication"]` for a broker that requires
    /// SASL; [`restart`](Self::restart) passes them again.
    pub fn start_with_args(binary: &Path, storage: &str, dir: &Path, args: &[&str]) -> io::Result<Self> {
        let args = args.iter().map(|&a| a.to_owned()).collect();
        Self::launch(binary, storage, LOOPBACK, spare_port()?, None, args, dir)
    }

    /// Starts a broker listening on `host` (and advertising it) rather than
    /// 127.0.0.1, e.g. a [`HostAddress`](crate::netns::HostAddress) that
    /// processes in a [`Jail`](crate::netns::Jail) reach too.
    pub fn start_on_host(binary: &Path, storage: &str, host: Ipv4Addr, dir: &Path) -> io::Result<Self> {
        Self::launch(binary, storage, host, spare_port()?, None, Vec::new(), dir)
    }

    /// Starts a broker on a given port (to restart one where it was).
    pub fn start_on(binary: &Path, storage: &str, port: u16, dir: &Path) -> io::Result<Self> {
        Self::start_advertising(binary, storage, port, None, dir)
    }

    /// Starts a broker on `port` whose cluster metadata sends clients to
    /// `advertised` (`host:port`; default: where it listens), e.g. a proxy
    /// in front of it.
    pub fn start_advertising(
        binary: &Path,
        storage: &str,
        port: u16,
        advertised: Option<&str>,
        dir: &Path,
    ) -> io::Result<Self> {
        Self::launch(binary, storage, LOOPBACK, port, advertised, Vec::new(), dir)
    }

    fn launch(
        binary: &Path,
        storage: &str,
        host: Ipv4Addr,
        port: u16,
        advertised: Option<&str>,
        args: Vec<String>,
        dir: &Path,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("tansu-{port}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let url = format!("tcp://{host}:{port}");
        let advertised_url = match advertised {
            Some(address) => format!("tcp://{address}"),
            None => url.clone(),
        };
        let child = Command::new(binary)
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", storage])
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut broker = Self {
            child,
            binary: binary.to_owned(),
            storage: storage.to_owned(),
            host,
            port,
            advertised: advertised.map(str::to_owned),
            args,
            log,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// `host:port` (`127.0.0.1:port` unless started on another host), as a
    /// bootstrap broker list.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, e.g. for reading the CPU time it spent.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills it with SIGKILL (no chance to flush anything) and waits.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Starts it again on the same port with the same storage, killing it
    /// first if it still runs (else the old process would hold the port
    /// and answer the new one's readiness check).
    pub fn restart(&mut self) -> io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.kill()?;
        }
        let log_dir = self.log.parent().map(Path::to_path_buf).unwrap_or_default();
        let fresh = Self::launch(
            &self.binary,
            &self.storage,
            self.host,
            self.port,
            self.advertised.as_deref(),
            self.args.clone(),
            &log_dir,
        )?;
        let old = std::mem::replace(self, fresh);
        drop(old);
        Ok(())
    }

    /// Creates the SCRAM user `name` in the broker's storage by running
    /// `tansu user create` against it; on failure the error carries the
    /// command's stderr.
    ///
    /// The storage must keep users (`sqlite://`; `memory://` cannot), and
    /// the broker must run *without* `--authentication`, which makes tansu
    /// reject the command: create the users, then restart the broker on
    /// the same storage with the flag ([`start_with_args`](Self::start_with_args)).
    pub fn create_user(&self, mechanism: Scram, name: &str, password: &str) -> io::Result<()> {
        let output = Command::new(&self.binary)
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://{}", self.address()))
            .args(["--mechanism", mechanism.tansu_name(), name, password])
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "tansu user create {name} ({}) failed ({}): {}",
            mechanism.tansu_name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "tansu exited at start ({status}); see {}",
                    self.log.display()
                )));
            }
            if answers_api_versions(SocketAddr::from((self.host, self.port))) {
                return Ok(());
            }
            if started.elapsed() > START_BOUND {
                return Err(io::Error::other(format!(
                    "tansu did not answer on port {} within {START_BOUND:?}; see {}",
                    self.port,
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The SCRAM mechanism of a user [`TansuBroker::create_user`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Scram {
    /// The name `tansu user create --mechanism` takes.
    fn tansu_name(self) -> &'static str {
        match self {
            Scram::Sha256 => "scram256",
            Scram::Sha512 => "scram512",
        }
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker reachable only over TLS: the broker listens in plain text
/// on a port of 127.0.0.1 that no client is told about, a [`TlsProxy`] sits
/// in front of it, and the broker advertises the proxy as `localhost:port`,
/// so clients that follow the cluster metadata stay on TLS. Dropping it
/// stops both.
#[derive(Debug)]
pub struct TlsTansu {
    // Declared first: the proxy stops before the broker.
    proxy: TlsProxy,
    broker: TansuBroker,
}

impl TlsTansu {
    /// Starts a broker with `storage` in `dir` behind a proxy presenting
    /// `server` (a certificate for `localhost`); with `client_ca`, the proxy
    /// requires client certificates signed by that CA.
    pub fn start(
        binary: &Path,
        storage: &str,
        dir: &Path,
        server: &Issued,
        client_ca: Option<&Path>,
    ) -> io::Result<Self> {
        let port = spare_port()?;
        let proxy = TlsProxy::start(server, client_ca, SocketAddr::from(([127, 0, 0, 1], port)))?;
        let advertised = format!("localhost:{}", proxy.port());
        let broker = TansuBroker::start_advertising(binary, storage, port, Some(&advertised), dir)?;
        Ok(Self { proxy, broker })
    }

    /// `localhost:port` of the TLS side, as a bootstrap broker list.
    pub fn address(&self) -> String {
        format!("localhost:{}", self.proxy.port())
    }

    /// The broker's own log.
    pub fn log(&self) -> &Path {
        self.broker.log()
    }
}

/// A TCP port nobody listens on right now.
pub fn spare_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a Kafka broker on `port` answers an ApiVersions (v0) request.
fn answers_api_versions(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let client_id = b"mes-testkit";
    let mut request = Vec::new();
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // version 0
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).is_ok() && header[4..8] == 7i32.to_be_bytes()
}
