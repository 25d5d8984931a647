//! Following the master the Sentinels name.
//!
//! fred asks the Sentinels for the master only when a connection breaks. A
//! switchover with the old master still up (`SENTINEL FAILOVER`, or a
//! failover decided while the old master was only cut off) breaks nothing:
//! the old master answers as a master until the Sentinels reconfigure it,
//! seconds later, and what clients write there meanwhile is lost when it
//! becomes a replica; a near cache listening there hears nothing of the
//! writes to the new master. `ROLE` does not tell either: the old master
//! says `master` until it is reconfigured.
//!
//! So a watch asks the Sentinels every interval which server is the master.
//! When a pool connection is on another server, it reconnects the pool
//! (fred then asks the Sentinels again) and only then publishes the new
//! master, so that the near cache's listeners, which follow it, arm the
//! near cache again only once reads go to the new master.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fred::clients::{Client, SentinelClient};
use fred::interfaces::{ClientLike, SentinelInterface};
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, SentinelConfig, Server, ServerConfig,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// A master as the Sentinels name it: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Master {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Master {
    /// Whether `server` (a connection's) is this master.
    pub(crate) fn is(&self, server: &Server) -> bool {
        server.port == self.port && &*server.host == self.host.as_str()
    }
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Keeps `fred` clients on the master the Sentinels name.
///
/// fred asks the Sentinels for the master only when a connection breaks,
/// and a switchover with the old master still up (`SENTINEL FAILOVER`, or
/// a failover decided while the old master was only cut off from the
/// Sentinels) breaks nothing: what clients write to the old master until
/// the Sentinels demote it (seconds later, or never while they cannot
/// reach it) is lost. The watch asks the Sentinels every interval and
/// reconnects the clients that are elsewhere (fred then asks the Sentinels
/// again). A [`ReferenceDataCache`](crate::ReferenceDataCache) behind a
/// Sentinel runs one of its own
/// ([`CacheConfig::master_check_interval`](crate::CacheConfig::master_check_interval));
/// this is for the other fred clients of a service, such as mes-sync's.
/// Ties the caller to this crate's `fred` version.
///
/// Stops when dropped.
#[derive(Debug)]
pub struct SentinelWatch {
    master: watch::Receiver<Option<Master>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for SentinelWatch {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl SentinelWatch {
    /// Starts watching for `clients` (the same Sentinel configuration) when
    /// they are Sentinel-managed, asking every `every` and giving the
    /// Sentinels and the reconnection `timeout` each; `None` when they are
    /// not behind a Sentinel, or `clients` is empty. Call within a Tokio
    /// runtime.
    #[must_use]
    pub fn start(clients: &[Client], every: Duration, timeout: Duration) -> Option<Self> {
        let config = clients.first()?.client_config();
        let sentinels = sentinels(&config, timeout)?;
        let service = match &config.server {
            ServerConfig::Sentinel { service_name, .. } => service_name.clone(),
            _ => return None,
        };
        let (publish, master) = watch::channel(None);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(watch_master(
            Asker {
                sentinels,
                connected: Vec::new(),
                service,
                timeout,
            },
            clients.to_vec(),
            every,
            publish,
            stopped,
        ));
        Some(Self {
            master,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// The master the clients were last moved to or found on (`None`
    /// before the Sentinels first answered).
    pub(crate) fn master(&self) -> watch::Receiver<Option<Master>> {
        self.master.clone()
    }

    /// The master the clients were last moved to or found on, as
    /// `host:port` (`None` before the Sentinels first answered).
    pub fn current_master(&self) -> Option<String> {
        self.master.borrow().as_ref().map(ToString::to_string)
    }

    /// Stops watching and closes the connections to the Sentinels.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// One client per Sentinel of the configuration, with the pool's
/// credentials for Sentinels and its TLS settings.
fn sentinels(config: &FredConfig, timeout: Duration) -> Option<Vec<SentinelClient>> {
    let ServerConfig::Sentinel {
        hosts,
        username,
        password,
        ..
    } = &config.server
    else {
        return None;
    };
    let perf = PerformanceConfig {
        default_command_timeout: timeout,
        ..PerformanceConfig::default()
    };
    let connection = ConnectionConfig {
        connection_timeout: timeout,
        internal_command_timeout: timeout,
        ..ConnectionConfig::default()
    };
    Some(
        hosts
            .iter()
            .map(|host| {
                // TLS apart: which fields exist depends on fred's features,
                // which other crates may turn on.
                #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
                #[allow(
                    clippy::needless_update,
                    reason = "fred has more fields with its TLS or tracing features on"
                )]
                let mut sentinel = SentinelConfig {
                    host: host.host.to_string(),
                    port: host.port,
                    username: username.clone(),
                    password: password.clone(),
                    ..SentinelConfig::default()
                };
                #[cfg(feature = "tls")]
                {
                    sentinel.tls.clone_from(&config.tls);
                }
                // No reconnect policy: a Sentinel that stops answering is
                // dropped and connected again at the next look.
                SentinelClient::new(sentinel, Some(perf.clone()), Some(connection.clone()), None)
            })
            .collect(),
    )
}

struct Asker {
    sentinels: Vec<SentinelClient>,
    /// Which of `sentinels` have a connection up.
    connected: Vec<bool>,
    service: String,
    timeout: Duration,
}

impl Asker {
    /// The master the first Sentinel that answers names; `None` when none
    /// answers or none knows the service (fred's own reconnection reports
    /// that to the callers).
    async fn ask(&mut self) -> Option<Master> {
        self.connected.resize(self.sentinels.len(), false);
        for (sentinel, connected) in self.sentinels.iter().zip(self.connected.iter_mut()) {
            if !*connected {
                match tokio::time::timeout(self.timeout, sentinel.init()).await {
                    Ok(Ok(_)) => *connected = true,
                    _ => {
                        let _ = sentinel.quit().await;
                        continue;
                    }
                }
            }
            let answer = tokio::time::timeout(
                self.timeout,
                sentinel.get_master_addr_by_name::<Option<(String, u16)>, _>(self.service.as_str()),
            )
            .await;
            match answer {
                Ok(Ok(Some((host, port)))) => return Some(Master { host, port }),
                Ok(Ok(None)) => {}
                _ => {
                    *connected = false;
                    let _ = sentinel.quit().await;
                }
            }
        }
        None
    }

    async fn quit(&self) {
        for (sentinel, connected) in self.sentinels.iter().zip(&self.connected) {
            if *connected {
                let _ = sentinel.quit().await;
            }
        }
    }
}

async fn watch_master(
    mut asker: Asker,
    clients: Vec<Client>,
    every: Duration,
    publish: watch::Sender<Option<Master>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut looks = tokio::time::interval(every);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = looks.tick() => {}
        }
        let Some(master) = asker.ask().await else {
            continue;
        };
        if elsewhere(&clients, &master) {
            warn!(%master, "mes-cache: the Sentinels name another master; moving the connections there");
            let moves = clients.iter().map(ClientLike::force_reconnection);
            match tokio::time::timeout(asker.timeout, futures::future::join_all(moves)).await {
                Ok(_) => debug!(%master, "mes-cache: connections moved to the new master"),
                Err(_) => warn!("mes-cache: moving to the new master timed out"),
            }
            // Published only once every client is there (checked again at
            // the next look): listeners that follow arm the near cache
            // again.
            if elsewhere(&clients, &master) {
                continue;
            }
        }
        publish.send_if_modified(|known| {
            let changed = known.as_ref() != Some(&master);
            *known = Some(master);
            changed
        });
    }
    asker.quit().await;
}

/// Whether a connection of `clients` is on a server other than `master`.
fn elsewhere(clients: &[Client], master: &Master) -> bool {
    clients.iter().any(|client| {
        client
            .active_connections()
            .iter()
            .any(|server| !master.is(server))
    })
}
