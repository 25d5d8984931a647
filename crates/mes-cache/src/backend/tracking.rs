//! Invalidation messages for the near cache, from Redis's client tracking.
//!
//! One listening connection per Redis primary (one in all for a standalone
//! server or a Sentinel-managed master) runs
//! `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <namespace>:` and
//! then `SUBSCRIBE __redis__:invalidate`, in RESP2. Why this shape:
//!
//! - **Broadcast mode on a connection of its own**: the server reports every
//!   write under the namespace, whoever made it and whichever connection
//!   read the key, so reads stay on the pool.
//! - **RESP2 and the Pub/Sub channel**, not RESP3 push messages: Redis
//!   reports `FLUSHALL`/`FLUSHDB` as an invalidation with a null payload;
//!   fred 10.1 drops that null when it comes as a RESP3 push (it only
//!   forwards arrays), but delivers it from the `__redis__:invalidate`
//!   channel as an invalidation without keys. (A RESP3 connection redirected
//!   to gets RESP3 pushes as well, so RESP2 it is.)
//! - **One connection per primary, opened by us**: fred 10.1 sends
//!   broadcast tracking to one cluster node only, and each node reports only
//!   its own keys.
//! - **Re-done after every reconnect**: a new connection has no tracking and
//!   no subscription (fred does not re-issue `CLIENT TRACKING`); between the
//!   loss and the set-up the near cache is disarmed and emptied.
//! - **On the master the pool is on**: behind a Sentinel, when the pool
//!   moves to a new master (`super::sentinel`), the listener is disarmed
//!   and reconnected too, even though its connection to the old master
//!   still works: that server no longer hears the writes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::interfaces::{
    ClientInterface, ClientLike, ClusterInterface, EventInterface, PubsubInterface, TrackingInterface,
};
use fred::types::config::{Config as FredConfig, ServerConfig};
use fred::types::{ClusterStateChange, RespVersion, Value};
use tokio::sync::broadcast::Receiver as BroadcastReceiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::cache::chain;
use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::near::{FlushReason, L1};

use super::sentinel::Master;

const INVALIDATION_CHANNEL: &str = "__redis__:invalidate";

/// Room for invalidation messages not yet handled; past it, messages are
/// dropped and the near cache is flushed (`FlushReason::Lagged`).
const INVALIDATION_BACKLOG: usize = 16 * 1024;

/// The listeners of one topology and whether each has tracking on; the L1
/// is armed only while all have.
struct Group {
    l1: Arc<L1>,
    ready: Mutex<Vec<bool>>,
}

impl Group {
    fn set(&self, index: usize, ready: bool, reason: FlushReason) {
        // Under the lock, so that arming and disarming follow the order in
        // which listeners changed state.
        let mut all = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = all.get_mut(index) {
            *slot = ready;
        }
        if !ready {
            self.l1.disarm(reason);
        } else if all.iter().all(|r| *r) {
            self.l1.arm();
        }
    }
}

/// One listening connection and the task handling its messages.
struct Listener {
    client: Client,
    task: JoinHandle<()>,
}

/// The running listeners; stopped by [`Tracker::stop`].
pub(crate) struct Tracker {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Tracker {
    /// Starts listening for invalidations of keys under `prefix` and arms
    /// the L1 once every listener has tracking on.
    ///
    /// # Errors
    /// [`Error::Connect`] when a listener cannot connect or turn tracking on
    /// (e.g. a server older than Redis 6, or an ACL without `CLIENT`).
    pub(crate) async fn start(
        config: &CacheConfig,
        heartbeat: Duration,
        pool: &Pool,
        master: Option<watch::Receiver<Option<Master>>>,
        l1: Arc<L1>,
        prefix: String,
    ) -> Result<Self> {
        let settings = Settings {
            config: config.clone(),
            prefix,
            heartbeat,
            master,
        };
        let listeners = settings.listen(pool.next(), &l1).await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(settings, pool.clone(), l1, listeners, stopped));
        Ok(Self {
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops the listeners and closes their connections.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Settings {
    config: CacheConfig,
    prefix: String,
    heartbeat: Duration,
    /// The master a Sentinel-managed pool is on.
    master: Option<watch::Receiver<Option<Master>>>,
}

impl Settings {
    /// The servers to listen to: each primary of a cluster as `client`
    /// knows them, else the configured server (fred follows a Sentinel's
    /// master by itself).
    fn servers(client: &Client) -> Result<Vec<FredConfig>> {
        // The pool's own settings (server, credentials, TLS), also for a
        // pool the service built itself.
        let mut base = client.client_config();
        base.version = RespVersion::RESP2;
        if !client.is_clustered() {
            return Ok(vec![base]);
        }
        let primaries = primaries(client);
        if primaries.is_empty() {
            return Err(Error::Connect {
                source: "the near cache found no cluster primary to listen to".into(),
            });
        }
        Ok(primaries
            .into_iter()
            .map(|server| {
                let mut config = base.clone();
                config.server = ServerConfig::Centralized { server };
                config
            })
            .collect())
    }

    async fn listen(&self, client: &Client, l1: &Arc<L1>) -> Result<Vec<Listener>> {
        let servers = Self::servers(client)?;
        let group = Arc::new(Group {
            l1: Arc::clone(l1),
            ready: Mutex::new(vec![false; servers.len()]),
        });
        let mut listeners = Vec::with_capacity(servers.len());
        for (index, server) in servers.into_iter().enumerate() {
            match self.listener(server, index, &group).await {
                Ok(listener) => listeners.push(listener),
                Err(error) => {
                    stop_all(listeners).await;
                    return Err(error);
                }
            }
        }
        Ok(listeners)
    }

    async fn listener(&self, server: FredConfig, index: usize, group: &Arc<Group>) -> Result<Listener> {
        let client = super::redis::builder(&self.config, server)
            .with_performance_config(|p| p.broadcast_channel_capacity = INVALIDATION_BACKLOG)
            .build()
            .map_err(|e| Error::Connect { source: Box::new(e) })?;
        // Subscribed before connecting, so no event is missed.
        let mut invalidations = client.invalidation_rx();
        let mut reconnects = client.reconnect_rx();
        let mut errors = client.error_rx();
        let connected = async {
            client.init().await?;
            set_up(&client, &self.prefix).await
        };
        match tokio::time::timeout(self.config.connect_timeout, connected).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let _ = client.quit().await;
                return Err(Error::Connect {
                    source: Box::new(error),
                });
            }
            Err(elapsed) => {
                let _ = client.quit().await;
                return Err(Error::Connect {
                    source: Box::new(elapsed),
                });
            }
        }
        // The first connection is announced as a reconnection too.
        while reconnects.try_recv().is_ok() {}
        group.set(index, true, FlushReason::Reconnected);
        let group = Arc::clone(group);
        let task_client = client.clone();
        let prefix = self.prefix.clone();
        let (every, timeout) = (self.heartbeat, self.config.command_timeout);
        let mut master = self.master.clone();
        let task = tokio::spawn(async move {
            let l1 = &group.l1;
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tracking = true;
            loop {
                tokio::select! {
                    moved = next_master(&mut master) => {
                        if tracking && !on_master(&task_client, moved.as_ref()) {
                            debug!("mes-cache: the pool moved to another master; the near cache listener follows");
                            tracking = false;
                            disarm_and_reconnect(&group, index, FlushReason::TopologyChanged, &task_client);
                        }
                    }
                    _ = heartbeat.tick(), if tracking => {
                        // PING is allowed in Pub/Sub mode; no answer in time
                        // means invalidations may be lost too.
                        let answered = tokio::time::timeout(timeout, task_client.ping::<Value>(None)).await;
                        let here = master.as_ref().and_then(|m| m.borrow().clone());
                        if !on_master(&task_client, here.as_ref()) {
                            // Reconnected by itself to a master the pool has left.
                            tracking = false;
                            disarm_and_reconnect(&group, index, FlushReason::TopologyChanged, &task_client);
                        } else if !matches!(answered, Ok(Ok(_))) {
                            warn!("mes-cache: near cache listener does not answer; emptying the near cache and reconnecting");
                            tracking = false;
                            disarm_and_reconnect(&group, index, FlushReason::Disconnected, &task_client);
                        }
                    }
                    message = invalidations.recv() => match message {
                        // FLUSHALL / FLUSHDB: a message without keys.
                        Ok(invalidation) if invalidation.keys.is_empty() => l1.flush(FlushReason::ServerFlush),
                        Ok(invalidation) => l1.invalidated_by_server(invalidation.keys.iter().map(|k| k.as_bytes())),
                        Err(RecvError::Lagged(missed)) => {
                            warn!(missed, "mes-cache: near cache invalidations dropped; flushing it");
                            l1.flush(FlushReason::Lagged);
                        }
                        Err(RecvError::Closed) => break,
                    },
                    error = errors.recv() => {
                        if let Ok((error, _)) = &error {
                            debug!(error = %error, "mes-cache: near cache listener lost its connection");
                        }
                        if matches!(error, Err(RecvError::Closed)) {
                            break;
                        }
                        tracking = false;
                        group.set(index, false, FlushReason::Disconnected);
                    }
                    reconnected = reconnects.recv() => {
                        if matches!(reconnected, Err(RecvError::Closed)) {
                            break;
                        }
                        tracking = false;
                        group.set(index, false, FlushReason::Reconnected);
                        match set_up(&task_client, &prefix).await {
                            Ok(()) => {
                                tracking = true;
                                group.set(index, true, FlushReason::Reconnected);
                            }
                            Err(error) => warn!(
                                error = %chain(&error),
                                "mes-cache: cannot turn tracking on again; the near cache stays off until the next reconnection"
                            ),
                        }
                    }
                }
            }
        });
        Ok(Listener { client, task })
    }
}

/// Turns tracking on for the listener's own connection and subscribes it to
/// the invalidation channel (in that order: a RESP2 connection in Pub/Sub
/// mode accepts no other command), and returns once the server has done
/// both.
async fn set_up(client: &Client, prefix: &str) -> Result<(), fred::error::Error> {
    let id: i64 = client.client_id().await?;
    let _: Value = client
        .client_tracking("ON", Some(id), prefix, true, false, false, false)
        .await?;
    client.subscribe(INVALIDATION_CHANNEL).await?;
    // fred resolves SUBSCRIBE without waiting for the server's answer (it
    // drops subscription replies), and until the server has run it, it
    // silently drops the invalidations redirected to this connection. A
    // PING (allowed in Pub/Sub mode) is answered after it: once answered,
    // the subscription holds.
    let _: Value = client.ping(None).await?;
    Ok(())
}

/// Disarms (and empties) the L1 for `reason` and has the listener's
/// connection opened anew in the background; the reconnection event sets
/// tracking up again.
fn disarm_and_reconnect(group: &Group, index: usize, reason: FlushReason, client: &Client) {
    group.set(index, false, reason);
    let client = client.clone();
    tokio::spawn(async move { client.force_reconnection().await });
}

/// The next master a Sentinel-managed pool moves to; never returns off a
/// Sentinel or once the watch is gone.
async fn next_master(master: &mut Option<watch::Receiver<Option<Master>>>) -> Option<Master> {
    let Some(receiver) = master else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        *master = None;
        return std::future::pending().await;
    }
    receiver.borrow_and_update().clone()
}

/// Whether `client`'s connection is on `master` (always, when no master is
/// known).
fn on_master(client: &Client, master: Option<&Master>) -> bool {
    master.is_none_or(|master| client.active_connections().iter().all(|server| master.is(server)))
}

async fn stop_all(listeners: Vec<Listener>) {
    for listener in listeners {
        // The task first, so the closing connection is not taken for a lost one.
        listener.task.abort();
        let _ = listener.task.await;
        let _ = listener.client.quit().await;
    }
}

/// The primaries `client` knows of (none off a cluster).
fn primaries(client: &Client) -> Vec<fred::types::config::Server> {
    client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default()
}

fn names(servers: &[fred::types::config::Server]) -> BTreeSet<String> {
    servers.iter().map(|s| format!("{}:{}", s.host, s.port)).collect()
}

/// Waits until a pool connection reports a change of the cluster's
/// topology (or missed some reports); the position of that connection in
/// the pool. Never returns when there is no cluster.
async fn topology_change(changes: &mut Vec<(usize, BroadcastReceiver<Vec<ClusterStateChange>>)>) -> usize {
    loop {
        if changes.is_empty() {
            return std::future::pending().await;
        }
        let next = changes.iter_mut().map(|(_, rx)| Box::pin(rx.recv()));
        let (result, position, _) = futures::future::select_all(next).await;
        match result {
            Ok(_) | Err(RecvError::Lagged(_)) => {
                return changes.get(position).map_or(0, |(client, _)| *client);
            }
            // That pool connection is closed: no more reports from it.
            Err(RecvError::Closed) => {
                changes.swap_remove(position);
            }
        }
    }
}

/// Follows the cluster's primaries: when a pool connection learns of a new
/// topology, the L1 is dropped and the listeners are opened anew.
async fn supervise(
    settings: Settings,
    pool: Pool,
    l1: Arc<L1>,
    mut listeners: Vec<Listener>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut changes: Vec<_> = pool
        .clients()
        .iter()
        .enumerate()
        .map(|(index, c)| (index, c.cluster_change_rx()))
        .collect();
    let mut listening = names(&primaries(pool.next()));
    loop {
        let changed = topology_change(&mut changes);
        let reporter = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            reporter = changed => reporter,
        };
        // The connection that reported the change knows the new topology.
        // Slots moving between the same primaries need nothing: each
        // listener hears about every key of its primary.
        let Some(client) = pool.clients().get(reporter) else {
            continue;
        };
        let now = names(&primaries(client));
        if now.is_empty() || now == listening {
            continue;
        }
        debug!(
            ?listening,
            ?now,
            "mes-cache: cluster primaries changed; near cache listeners follow"
        );
        l1.disarm(FlushReason::TopologyChanged);
        stop_all(std::mem::take(&mut listeners)).await;
        // Until the new set is up the L1 stays disarmed; retry while the
        // cluster settles.
        loop {
            match settings.listen(client, &l1).await {
                Ok(fresh) => {
                    listeners = fresh;
                    listening = now;
                    break;
                }
                Err(error) => {
                    warn!(error = %chain(&error), "mes-cache: near cache listeners cannot follow the new topology yet");
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => {
                            l1.disarm(FlushReason::TopologyChanged);
                            return;
                        }
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
    l1.disarm(FlushReason::Local);
    stop_all(listeners).await;
}
