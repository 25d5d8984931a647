//! A TCP proxy that injects network faults between a client and a server:
//! latency, a cut (every connection reset, new ones refused) or a blackhole
//! (connections stay open and nothing gets through, the way a partition
//! looks to TCP until it heals).
//!
//! It works for any one-address protocol (Redis standalone, PostgreSQL) and
//! for a Kafka broker that advertises the proxy's address
//! ([`TansuBroker::start_advertising`](crate::tansu::TansuBroker::start_advertising)).
//! Like [`TlsProxy`](crate::tls_proxy::TlsProxy) it runs on a runtime and a
//! thread of its own, so synchronous and asynchronous callers can both use it.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// What the proxy does to the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass as they come.
    None,
    /// Every chunk of bytes, each way, is passed on this long after it
    /// arrived (latency of a long or congested link, or a slow server);
    /// chunks in flight overlap, so throughput is not capped.
    Delay(Duration),
    /// Every open connection is reset and new ones are reset as soon as they
    /// are accepted (the server is gone, or a firewall rejects).
    Cut,
    /// Connections stay open but nothing passes either way, and new
    /// connections are accepted but not connected upstream (a partition:
    /// packets are dropped, nobody is told). What was held passes when the
    /// fault ends, as TCP retransmission would deliver it.
    Blackhole,
}

/// Counts of what the proxy saw, for a scenario's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Connections accepted from clients.
    pub accepted: u64,
    /// Connections reset by a [`Fault::Cut`].
    pub reset: u64,
    /// Chunks of bytes, either way, held by a [`Fault::Delay`] before
    /// they were passed on.
    pub delayed: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    reset: AtomicU64,
    delayed: AtomicU64,
}

/// A running proxy on `127.0.0.1:port`. Dropping it stops it and closes
/// every connection.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("fault", &*self.fault.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on a spare port of 127.0.0.1 and forwards each connection to
    /// `upstream`, which need not be listening yet.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::start_on(StdListener::bind("127.0.0.1:0")?, upstream)
    }

    /// [`start`](Self::start) on a listener the caller bound, e.g. to know
    /// the port before the server behind it starts (a broker that must
    /// advertise it).
    pub fn start_on(listener: StdListener, upstream: SocketAddr) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (fault, faults) = watch::channel(Fault::None);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(serve(listener, upstream, faults, serving));
                            // Until the proxy is dropped; the runtime's end
                            // then ends every connection.
                            let _ = stopped.await;
                        }
                        Err(e) => eprintln!("fault proxy on port {port} cannot listen: {e}"),
                    }
                });
            })?;
        Ok(Self {
            port,
            fault,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A proxy in front of the server of `url` (`scheme://[user@]host:port/...`,
    /// a Redis or PostgreSQL URL) and the same URL leading through it.
    pub fn in_front_of(url: &str) -> io::Result<(Self, String)> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("no host:port in {url}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let (user, rest) = rest
            .rsplit_once('@')
            .map_or(("", rest), |(user, rest)| (user, rest));
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let upstream = authority.to_socket_addrs()?.next().ok_or_else(invalid)?;
        let proxy = Self::start(upstream)?;
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let through = format!("{scheme}://{at}{}{path}", proxy.address());
        Ok((proxy, through))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Applies `fault` from now on, to open connections and new ones alike.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Back to passing bytes as they come.
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// What it has seen so far.
    pub fn counts(&self) -> ProxyCounts {
        ProxyCounts {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            reset: self.counters.reset.load(Ordering::Relaxed),
            delayed: self.counters.delayed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors or similar: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            client,
            upstream,
            faults.clone(),
            Arc::clone(&counters),
        ));
    }
}

/// One client's connection, from accept to close.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    // A blackhole holds a new connection before it reaches the server; a
    // cut resets it.
    loop {
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Blackhole => {
                if faults.changed().await.is_err() {
                    return;
                }
            }
            Fault::Cut => {
                reset(&client, &counters);
                return;
            }
            Fault::None | Fault::Delay(_) => break,
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The server is down: the client sees the connection reset, as it
        // would with no proxy.
        reset(&client, &counters);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, faults.clone(), &counters);
    let down = pump(server_read, client_write, faults, &counters);
    let cut = tokio::select! {
        cut = up => cut,
        cut = down => cut,
    };
    if cut {
        counters.reset.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies one direction until either side closes (false) or a cut resets
/// both (true).
///
/// A delay is latency, not a bandwidth limit: each chunk is due `delay`
/// after it arrived, and chunks in flight overlap, as on a long link. A
/// blackhole stops both reading and writing, so the sender's TCP window
/// fills as it would behind a partition.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Fault>,
    counters: &Counters,
) -> bool {
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut reading = true;
    loop {
        let fault = *faults.borrow_and_update();
        if fault == Fault::Cut {
            return cut(from, to);
        }
        if !reading && in_flight.is_empty() {
            let _ = to.shutdown().await;
            return false;
        }
        let flowing = fault != Fault::Blackhole;
        let due = in_flight.front().map(|(due, _)| *due);
        tokio::select! {
            read = from.read(&mut buffer), if reading && flowing => match read {
                Ok(0) | Err(_) => reading = false,
                Ok(n) => {
                    // The fault in force now, not the one read before the
                    // select: a chunk that arrives after `set` returned
                    // must see it, even when the read won the race against
                    // the change notice.
                    let delay = match *faults.borrow() {
                        Fault::Delay(delay) => {
                            counters.delayed.fetch_add(1, Ordering::Relaxed);
                            delay
                        }
                        _ => Duration::ZERO,
                    };
                    let Some(chunk) = buffer.get(..n) else {
                        return false;
                    };
                    in_flight.push_back((Instant::now() + delay, chunk.to_vec()));
                }
            },
            // Checked again when due, for the same race: nothing passes
            // once a blackhole or cut is set.
            () = sleep_until_due(due), if flowing && due.is_some() => {
                if matches!(*faults.borrow(), Fault::Blackhole | Fault::Cut) {
                    continue;
                }
                if let Some((_, chunk)) = in_flight.pop_front()
                    && to.write_all(&chunk).await.is_err()
                {
                    return false;
                }
            },
            changed = faults.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn sleep_until_due(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Resets both streams: linger 0 makes their close a RST, and the write
/// half is dropped without the FIN it would otherwise send first. The other
/// direction's halves are dropped with its task.
fn cut(from: OwnedReadHalf, to: OwnedWriteHalf) -> bool {
    let _ = from.as_ref().set_zero_linger();
    drop(from);
    let _ = to.as_ref().set_zero_linger();
    to.forget();
    true
}

/// Closes with a RST rather than a FIN, so the peer sees "connection reset".
fn reset(stream: &TcpStream, counters: &Counters) {
    counters.reset.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_zero_linger();
}
