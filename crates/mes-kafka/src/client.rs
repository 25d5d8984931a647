//! [`KafkaClient`]: the bootstrap brokers, one connection per broker
//! (shared by every caller, many requests in flight), one cluster-metadata
//! cache, and the admin calls.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;
use tracing::debug;

use crate::config::KafkaConfig;
use crate::connection::BrokerConnection;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::create_topics::{CreateTopicsRequest, NewTopic};
use crate::protocol::fetch::IsolationLevel;
use crate::protocol::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};
use crate::protocol::list_offsets::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use crate::protocol::metadata::{MetadataRequest, MetadataResponse};

#[cfg(feature = "tls")]
pub(crate) use crate::tls::Tls;

/// Without the `tls` feature there is no TLS to wrap a stream in.
#[cfg(not(feature = "tls"))]
pub(crate) enum Tls {}

#[cfg(not(feature = "tls"))]
impl Tls {
    pub(crate) async fn wrap(
        &self,
        _address: &str,
        _stream: tokio::net::TcpStream,
        _bound: Duration,
    ) -> Result<Box<dyn crate::connection::BrokerStream>> {
        match *self {}
    }

    pub(crate) fn explain(&self, _error: Error) -> Error {
        match *self {}
    }
}

/// The TLS set-up of `config`, read once per client.
pub(crate) fn tls_for(config: &KafkaConfig) -> Result<Option<Tls>> {
    match &config.tls {
        None => Ok(None),
        #[cfg(feature = "tls")]
        Some(settings) => Tls::new(settings).map(Some),
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(Error::Config {
            reason: "TLS is configured, which needs the `tls` feature (of mes-kafka, or of the crate \
                     that depends on it)"
                .to_owned(),
        }),
    }
}

/// Where an offset is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetSpec {
    /// The first offset the partition still holds.
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this time (ms since
    /// the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Timestamp(ms) => ms,
        }
    }
}

/// A partition as the cluster metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition.
    pub partition: i32,
    /// The leader's node id, if it has one.
    pub leader: Option<i32>,
    /// 0, or why the partition is not usable now.
    pub error: ErrorCode,
}

/// A topic as the cluster metadata describes it.
#[derive(Debug, Clone)]
pub struct TopicMetadata {
    /// The topic.
    pub name: String,
    /// Its partitions, by index.
    pub partitions: Vec<PartitionMetadata>,
    fetched_at: Instant,
}

#[derive(Default)]
struct Cluster {
    brokers: HashMap<i32, String>,
    controller: Option<i32>,
    topics: HashMap<String, Arc<TopicMetadata>>,
}

type Slot = Arc<Mutex<Option<Arc<BrokerConnection>>>>;

struct Inner {
    config: KafkaConfig,
    tls: Option<Tls>,
    /// One connection per broker address, opened on demand and replaced
    /// when it broke; each slot's lock is held only while opening.
    connections: std::sync::Mutex<HashMap<String, Slot>>,
    cluster: RwLock<Cluster>,
    /// Serialises metadata refreshes: one request per stale topic, not one
    /// per waiting caller.
    refresh: Mutex<()>,
}

/// A client of a Kafka cluster: cheap to clone, shared by the publisher's
/// partitions and the consumer's workers.
///
/// ```no_run
/// # async fn example() -> mes_kafka::Result<()> {
/// use mes_kafka::{KafkaClient, KafkaConfig, OffsetSpec};
///
/// let client = KafkaClient::connect(KafkaConfig::from_env()?).await?;
/// let partitions = client.topic("mes.material.events").await?.partitions.len();
/// let end = client.list_offset("mes.material.events", 0, OffsetSpec::Latest).await?;
/// println!("{partitions} partitions, partition 0 ends at {end}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaClient")
            .field("brokers", &self.inner.config.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaClient {
    /// Reads the TLS files, reaches a bootstrap broker and reads the
    /// cluster's brokers: an unreachable cluster, refused credentials or a
    /// rejected certificate fail here, not at the first request.
    ///
    /// Retrying stops at the connect timeout: `connect` returns within it.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        let client = Self::new(config)?;
        let deadline = Instant::now() + client.inner.config.connect_timeout;
        let request = MetadataRequest {
            topics: Some(Vec::new()),
            allow_auto_topic_creation: false,
        };
        let bootstrap = client.retrying_until("Metadata", deadline, || async {
            client.any_connection().await?.call(&request).await
        });
        match tokio::time::timeout_at(deadline, bootstrap).await {
            Ok(answer) => client.remember(&answer?),
            Err(_) => {
                return Err(Error::NoBroker {
                    brokers: client.inner.config.brokers.clone(),
                    last: Box::new(Error::Timeout {
                        address: client.inner.config.brokers.join(","),
                        api: "connect",
                        timeout: client.inner.config.connect_timeout,
                    }),
                });
            }
        }
        Ok(client)
    }

    /// A client that connects on first use.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        if config.brokers.is_empty() {
            return Err(Error::Config {
                reason: "no bootstrap broker configured".to_owned(),
            });
        }
        let tls = tls_for(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                connections: std::sync::Mutex::new(HashMap::new()),
                cluster: RwLock::new(Cluster::default()),
                refresh: Mutex::new(()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The connection to the broker at `address`, opened if there is none
    /// or the last one broke.
    pub async fn connection(&self, address: &str) -> Result<Arc<BrokerConnection>> {
        let slot = {
            let mut connections = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(connections.entry(address.to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_broken()) {
            return Ok(Arc::clone(connection));
        }
        let connection = Arc::new(
            BrokerConnection::open_with(address, &self.inner.config, self.inner.tls.as_ref()).await?,
        );
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// A connection to any broker: the known ones first, then the bootstrap
    /// list, in turn.
    pub async fn any_connection(&self) -> Result<Arc<BrokerConnection>> {
        let mut candidates: Vec<String> = self.read_cluster(|c| c.brokers.values().cloned().collect());
        candidates.sort();
        for broker in &self.inner.config.brokers {
            if !candidates.contains(broker) {
                candidates.push(broker.clone());
            }
        }
        let mut last = None;
        for address in &candidates {
            match self.connection(address).await {
                Ok(connection) => return Ok(connection),
                // A certificate or credentials problem is the same on every broker.
                Err(e @ (Error::TlsHandshake { .. } | Error::TlsSetup { .. } | Error::Sasl { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    debug!(address, error = %e, "broker unreachable");
                    last = Some(e);
                }
            }
        }
        Err(Error::NoBroker {
            brokers: candidates,
            last: Box::new(last.unwrap_or_else(|| Error::Config {
                reason: "no broker".to_owned(),
            })),
        })
    }

    /// The connection to broker `node_id`.
    pub async fn broker_connection(&self, node_id: i32) -> Result<Arc<BrokerConnection>> {
        let address = self.broker_address(node_id).await?;
        self.connection(&address).await
    }

    /// Where broker `node_id` listens, reading the metadata if it is not
    /// known yet.
    async fn broker_address(&self, node_id: i32) -> Result<String> {
        if let Some(address) = self.read_cluster(|c| c.brokers.get(&node_id).cloned()) {
            return Ok(address);
        }
        self.metadata(Some(Vec::new())).await?;
        self.read_cluster(|c| c.brokers.get(&node_id).cloned())
            .ok_or_else(|| Error::broker(format!("broker {node_id} is not in the cluster metadata"), 5))
    }

    /// A new connection to `address` for one caller alone (not shared).
    ///
    /// A broker answers the requests of one connection in order, one at a
    /// time, and holds a fetch up to its max wait: a fetch on a shared
    /// connection would hold up every request queued behind it. So each
    /// [`PartitionFetcher`](crate::PartitionFetcher) fetches on a
    /// connection of its own.
    pub async fn dedicated_connection(&self, address: &str) -> Result<BrokerConnection> {
        BrokerConnection::open_with(address, &self.inner.config, self.inner.tls.as_ref()).await
    }

    fn read_cluster<T>(&self, read: impl FnOnce(&Cluster) -> T) -> T {
        read(&self.inner.cluster.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads metadata of `topics` (`None`: every topic) from any broker and
    /// updates the cache with it.
    pub async fn metadata(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse> {
        let request = MetadataRequest {
            topics,
            allow_auto_topic_creation: false,
        };
        let answer = self
            .retrying("Metadata", || async {
                self.any_connection().await?.call(&request).await
            })
            .await?;
        self.remember(&answer);
        Ok(answer)
    }

    /// Takes the brokers and topics of a Metadata answer into the cache.
    fn remember(&self, answer: &MetadataResponse) {
        let now = Instant::now();
        let mut cluster = self.inner.cluster.write().unwrap_or_else(PoisonError::into_inner);
        cluster.brokers = answer
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        cluster.controller = Some(answer.controller_id).filter(|id| *id >= 0);
        for topic in &answer.topics {
            if topic.error_code != 0 {
                cluster.topics.remove(&topic.name);
                continue;
            }
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: Some(p.leader_id).filter(|id| *id >= 0),
                    error: ErrorCode(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            cluster.topics.insert(
                topic.name.clone(),
                Arc::new(TopicMetadata {
                    name: topic.name.clone(),
                    partitions,
                    fetched_at: now,
                }),
            );
        }
    }

    /// A topic's metadata: from the cache unless older than the metadata
    /// max age, else read now. A missing topic is [`Error::UnknownTopic`].
    pub async fn topic(&self, name: &str) -> Result<Arc<TopicMetadata>> {
        let max_age = self.inner.config.metadata_max_age;
        let cached = || {
            self.read_cluster(|c| {
                c.topics
                    .get(name)
                    .filter(|t| t.fetched_at.elapsed() < max_age)
                    .cloned()
            })
        };
        if let Some(topic) = cached() {
            return Ok(topic);
        }
        let _refreshing = self.inner.refresh.lock().await;
        if let Some(topic) = cached() {
            return Ok(topic);
        }
        let answer = self.metadata(Some(vec![name.to_owned()])).await?;
        if let Some(topic) = answer.topics.iter().find(|t| t.name == name)
            && topic.error_code != 0
            && topic.error_code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
        {
            return Err(Error::broker(
                format!("metadata of topic {name}"),
                topic.error_code,
            ));
        }
        self.read_cluster(|c| c.topics.get(name).cloned())
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    /// Forgets a topic's metadata, so the next use reads it again (after a
    /// leader error, say).
    pub fn invalidate_topic(&self, name: &str) {
        let mut cluster = self.inner.cluster.write().unwrap_or_else(PoisonError::into_inner);
        cluster.topics.remove(name);
    }

    /// The connection to the leader of `partition` of `topic`.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<BrokerConnection>> {
        let leader = self.leader_id(topic, partition).await?;
        self.broker_connection(leader).await
    }

    /// Where the leader of `partition` of `topic` listens.
    pub async fn leader_address(&self, topic: &str, partition: i32) -> Result<String> {
        let leader = self.leader_id(topic, partition).await?;
        self.broker_address(leader).await
    }

    async fn leader_id(&self, topic: &str, partition: i32) -> Result<i32> {
        let metadata = self.topic(topic).await?;
        let Some(found) = metadata.partitions.iter().find(|p| p.partition == partition) else {
            self.invalidate_topic(topic);
            return Err(Error::broker(
                format!("partition {topic}/{partition}"),
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            ));
        };
        let leader = match found.leader {
            Some(leader) if found.error == ErrorCode::NONE => leader,
            _ => {
                self.invalidate_topic(topic);
                let code = if found.error == ErrorCode::NONE {
                    ErrorCode::LEADER_NOT_AVAILABLE
                } else {
                    found.error
                };
                return Err(Error::broker(format!("leader of {topic}/{partition}"), code.0));
            }
        };
        Ok(leader)
    }

    /// Every topic and its partition count.
    pub async fn list_topics(&self) -> Result<Vec<(String, usize)>> {
        let answer = self.metadata(None).await?;
        let mut topics: Vec<(String, usize)> = answer
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .map(|t| (t.name, t.partitions.len()))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// Creates a topic; `Ok(false)` when it exists already.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<bool> {
        let name = topic.name.clone();
        let request = CreateTopicsRequest {
            topics: vec![topic],
            timeout_ms: i32::try_from(self.inner.config.request_timeout.as_millis()).unwrap_or(i32::MAX),
            validate_only: false,
        };
        let what = format!("create topic {name}");
        let answer = self
            .retrying(&what, || async {
                // The controller creates topics (a KRaft broker forwards).
                let controller = self.read_cluster(|c| c.controller);
                let connection = match controller {
                    Some(id) => match self.broker_connection(id).await {
                        Ok(connection) => connection,
                        Err(_) => self.any_connection().await?,
                    },
                    None => self.any_connection().await?,
                };
                let answer = connection.call(&request).await?;
                match answer.topics.iter().find(|t| t.name == name) {
                    Some(t) if t.error_code == 41 => {
                        // NOT_CONTROLLER: read who is, and try again.
                        self.metadata(Some(Vec::new())).await?;
                        Err(Error::broker(what.clone(), t.error_code))
                    }
                    _ => Ok(answer),
                }
            })
            .await?;
        self.invalidate_topic(&name);
        match answer
            .topics
            .iter()
            .find(|t| t.name == name)
            .map(|t| ErrorCode(t.error_code))
        {
            Some(ErrorCode::NONE) => Ok(true),
            Some(ErrorCode::TOPIC_ALREADY_EXISTS) => Ok(false),
            Some(code) => Err(Error::Broker { what, code }),
            None => Err(Error::broker(what, ErrorCode::UNKNOWN_SERVER_ERROR.0)),
        }
    }

    /// The offset at `spec` of `partition` of `topic`, from its leader.
    pub async fn list_offset(&self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<i64> {
        let request = ListOffsetsRequest {
            isolation_level: IsolationLevel::ReadUncommitted,
            topics: vec![ListOffsetsTopic {
                name: topic.to_owned(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    current_leader_epoch: -1,
                    timestamp: spec.timestamp(),
                }],
            }],
        };
        let what = format!("ListOffsets of {topic}/{partition}");
        self.retrying(&what, || async {
            let answer = self.leader(topic, partition).await?.call(&request).await?;
            let found = answer
                .topics
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| Error::broker(what.clone(), ErrorCode::UNKNOWN_SERVER_ERROR.0))?;
            if found.error_code != 0 {
                if ErrorCode(found.error_code).is_stale_metadata() {
                    self.invalidate_topic(topic);
                }
                return Err(Error::broker(what.clone(), found.error_code));
            }
            Ok(found.offset)
        })
        .await
    }

    /// A producer id and epoch for an idempotent producer.
    pub async fn init_producer_id(&self) -> Result<InitProducerIdResponse> {
        let request = InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        };
        self.retrying("InitProducerId", || async {
            let answer = self.any_connection().await?.call(&request).await?;
            if answer.error_code != 0 {
                return Err(Error::broker("InitProducerId", answer.error_code));
            }
            Ok(answer)
        })
        .await
    }

    /// Runs `call` until it succeeds, fails for good, or the retry budget
    /// is spent; the back-off doubles from the policy's first one.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.inner.config.retry.retry_budget();
        self.retrying_until(what, deadline, call).await
    }

    /// [`retrying`](Self::retrying) with a deadline of the caller's.
    async fn retrying_until<T, F, Fut>(&self, what: &str, deadline: Instant, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let retry = self.inner.config.retry;
        let mut backoff = retry.initial_backoff;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retriable() && Instant::now() + backoff <= deadline => {
                    debug!(what, error = %e, ?backoff, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(retry.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }
}
