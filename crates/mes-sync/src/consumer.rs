//! [`EventConsumer`]: handlers in, a running group member out.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mes_cache::ReferenceDataCache;
use mes_events_types::{DomainEvent, EventPayload, EventType};
use mes_kafka::{ErrorCode, Generation, GroupMember, KafkaClient};
use mes_publisher::EventPublisher;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::ConsumerConfig;
use crate::error::{BoxError, Error};
use crate::handler::{Effects, HandlerError, Handlers};
use crate::metrics::{GroupMetrics, PartitionMetrics, seconds};
use crate::state::{GroupState, Owner, TopicPartition};
use crate::stats::{ConsumerStats, StatsRegistry};
use crate::sync::{BoundSync, CacheSync};
use crate::worker::PartitionWorker;

/// A consumer of MES domain events for one group, before it starts:
/// register handlers, then [`start`](Self::start).
///
/// The topics it reads follow from the registered event types. Partitions
/// are shared with the other live instances of the group, Rust or kafkajs,
/// by Kafka's consumer-group protocol; each partition is processed in
/// offset order, and its offset is committed only after its event was
/// handled (or dead-lettered).
///
/// Unit tests run the same handlers and cache rules on single events in
/// process with [`dispatch`](Self::dispatch), without Kafka or Redis.
///
/// ```no_run
/// use mes_events_types::{DomainEvent, PartUpdated};
/// use mes_kafka::KafkaConfig;
/// use mes_sync::{ConsumerConfig, Effects, EventConsumer};
///
/// # async fn run() -> Result<(), mes_sync::Error> {
/// let config = ConsumerConfig::new("work-order-service", KafkaConfig::from_env().unwrap(), "redis://redis:6379");
/// let consumer = EventConsumer::new(config)
///     .on(|event: DomainEvent<PartUpdated>| async move {
///         println!("part {} is now {}", event.data().part_id, event.data().part_number);
///         Effects::none()
///     })
///     .start()
///     .await?;
/// // ... until the service stops:
/// consumer.shutdown().await;
/// # Ok(()) }
/// ```
pub struct EventConsumer {
    config: ConsumerConfig,
    pub(crate) handlers: Handlers,
}

impl EventConsumer {
    /// A consumer with no handlers yet.
    pub fn new(config: ConsumerConfig) -> Self {
        Self {
            config,
            handlers: Handlers::default(),
        }
    }

    /// Handles events of `T`'s type with `handler`, which receives the typed
    /// event and cannot fail: it returns the [`Effects`] to apply. An event
    /// whose data does not match `T` is dead-lettered at once. A handler
    /// that can fail is registered with [`try_on`](Self::try_on).
    #[must_use]
    pub fn on<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: EventPayload + Send + 'static,
        F: Fn(DomainEvent<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Effects> + Send + 'static,
    {
        self.handlers.typed(handler);
        self
    }

    /// Handles events of `T`'s type with a `handler` that can fail. A
    /// failure is retried with back-off, and the event dead-lettered with
    /// the error as its reason when the retries run out. The error is a
    /// [`HandlerError`], so `?` takes any error type; an event whose data
    /// does not match `T` is dead-lettered at once.
    ///
    /// ```
    /// # use mes_events_types::{DomainEvent, PartUpdated};
    /// # use mes_sync::{ConsumerConfig, Effects, EventConsumer, KafkaConfig};
    /// # let config = ConsumerConfig::new("work-order-service", KafkaConfig::new(["kafka:9092"]), "redis://redis:6379");
    /// let consumer = EventConsumer::new(config).try_on(|event: DomainEvent<PartUpdated>| async move {
    ///     let revision: u32 = event.data().revision.as_deref().unwrap_or("0").parse()?;
    ///     Ok(Effects::none().set(format!("part-revision:{}", event.data().part_id), revision.to_string()))
    /// });
    /// ```
    #[must_use]
    pub fn try_on<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: EventPayload + Send + 'static,
        F: Fn(DomainEvent<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Effects, HandlerError>> + Send + 'static,
    {
        self.handlers.typed(handler);
        self
    }

    /// Handles events of one type string, typically one no enum knows
    /// (`maintenance.tool.calibrated`), as raw events, with a handler that
    /// cannot fail; subscribes to its topic.
    #[must_use]
    pub fn on_type<F, Fut>(mut self, event_type: EventType, handler: F) -> Self
    where
        F: Fn(DomainEvent<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Effects> + Send + 'static,
    {
        self.handlers.raw(Some(event_type), handler);
        self
    }

    /// [`on_type`](Self::on_type) with a handler that can fail, retried
    /// like [`try_on`](Self::try_on)'s.
    #[must_use]
    pub fn try_on_type<F, Fut>(mut self, event_type: EventType, handler: F) -> Self
    where
        F: Fn(DomainEvent<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Effects, HandlerError>> + Send + 'static,
    {
        self.handlers.raw(Some(event_type), handler);
        self
    }

    /// Handles events of types no enum knows that arrive on the subscribed
    /// topics and have no handler of their own, with a handler that cannot
    /// fail.
    ///
    /// It sees only the topics the consumer reads: those of the registered
    /// event types and cache rules, and those added with
    /// [`subscribe`](Self::subscribe). An unknown type published to
    /// `mes.maintenance.events` never reaches it unless that topic is
    /// subscribed. The consumer logs its topics and handled types when it
    /// starts.
    #[must_use]
    pub fn on_unknown<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(DomainEvent<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Effects> + Send + 'static,
    {
        self.handlers.raw(None, handler);
        self
    }

    /// [`on_unknown`](Self::on_unknown) with a handler that can fail,
    /// retried like [`try_on`](Self::try_on)'s.
    #[must_use]
    pub fn try_on_unknown<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(DomainEvent<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Effects, HandlerError>> + Send + 'static,
    {
        self.handlers.raw(None, handler);
        self
    }

    /// Keeps `cache` in sync with `rules`: each matching event removes the
    /// entries its rules name, before the event's handler (if any) runs.
    #[must_use]
    pub fn sync(mut self, cache: ReferenceDataCache, rules: CacheSync) -> Self {
        self.handlers.sync = Some(BoundSync { cache, rules });
        self
    }

    /// Reads `topic` too, even if no registered type is published there.
    #[must_use]
    pub fn subscribe(mut self, topic: impl Into<String>) -> Self {
        self.handlers.extra_topics.push(topic.into());
        self
    }

    /// Connects to Kafka and Redis, joins the group and starts consuming.
    pub async fn start(self) -> Result<RunningConsumer, Error> {
        let topics = self.handlers.topics().map_err(|e| Error::Config {
            reason: format!("a registered event type makes no topic: {e}"),
        })?;
        if topics.is_empty() {
            return Err(Error::Config {
                reason: "no handler or cache rule registered, so no topic to read".to_owned(),
            });
        }
        info!(
            group = %self.config.group_id,
            topics = ?topics,
            handled_types = ?self.handlers.registered_types(),
            "consumer starting"
        );
        let config = Arc::new(self.config);
        let client = KafkaClient::connect(config.kafka.clone())
            .await
            .map_err(|e| Error::Kafka {
                what: "connect".to_owned(),
                source: Box::new(e) as BoxError,
            })?;
        let dead_letters = EventPublisher::connect(config.dead_letter_publisher())
            .await
            .map_err(|e| Error::Kafka {
                what: "connect the dead-letter publisher".to_owned(),
                source: Box::new(e) as BoxError,
            })?;
        let state = GroupState::connect(&config.redis_url, &config.group_id, config.dedup_window).await?;
        let member = GroupMember::new(client.clone(), config.group_options(topics));
        let (stop, stopped) = watch::channel(false);
        let stats = StatsRegistry::default();
        let coordinator = Coordinator {
            config: Arc::clone(&config),
            client,
            member,
            state: Arc::new(state),
            handlers: Arc::new(self.handlers),
            dead_letters,
            stats: stats.clone(),
            permits: Arc::new(Semaphore::new(
                config.max_concurrent_partitions.min(Semaphore::MAX_PERMITS),
            )),
            metrics: GroupMetrics::new(&config.group_id),
        };
        let span = info_span!("consumer", group = %config.group_id);
        let task = tokio::spawn(coordinator.run(stopped).instrument(span));
        Ok(RunningConsumer { stop, task, stats })
    }
}

/// A consumer that runs until [`shutdown`](Self::shutdown).
pub struct RunningConsumer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: StatsRegistry,
}

impl RunningConsumer {
    /// Figures per partition: offsets, lag, handled, retried, dead-lettered
    /// and duplicate counts.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Waits until `condition` holds for the figures (say, `lag() == 0`
    /// once this instance holds its partitions), and returns them.
    pub async fn wait_for(&self, condition: impl Fn(&ConsumerStats) -> bool) -> ConsumerStats {
        self.stats.wait_for(condition).await
    }

    /// Finishes the events in flight, commits them (in Redis and Kafka),
    /// releases this instance's partitions and leaves the group, so the
    /// others take them over at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "the consumer ended abnormally");
        }
    }
}

/// Back-off between failed joins.
const JOIN_BACKOFF: Duration = Duration::from_millis(200);
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a mirror waits for its record to reach a Redis replica (on a
/// connection of its own: the commits go on meanwhile).
const MIRROR_WAIT: Duration = Duration::from_millis(500);

/// A running partition worker.
struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The next offset it will read, once it knows it; -1 before. What the
    /// coordinator mirrors to Kafka.
    position: Arc<AtomicI64>,
}

/// How a generation ended for this member.
enum Ended {
    /// Shutdown was asked for.
    Stop,
    /// A rebalance, a lost session or new partitions: join again.
    Rejoin,
}

/// This member's share of one generation.
struct Share {
    owner: Owner,
    /// Assigned but not running yet: the group's offset in Kafka, once read
    /// (`Some(None)`: read, none committed), and whether the claim is held.
    pending: BTreeMap<TopicPartition, Option<Option<i64>>>,
    workers: BTreeMap<TopicPartition, WorkerHandle>,
    /// What this member last committed to Kafka, per partition.
    mirrored: HashMap<TopicPartition, i64>,
    /// When the last heartbeat the coordinator answered was sent (the join,
    /// first): the session runs from there.
    alive_at: Instant,
    /// Whether this member leads: it watches the partition counts.
    leader: bool,
    /// The leader's partition counts, and when they were last compared.
    dealt_topics: Vec<(String, usize)>,
    metadata_read_at: Instant,
}

struct Coordinator {
    config: Arc<ConsumerConfig>,
    client: KafkaClient,
    member: GroupMember,
    state: Arc<GroupState>,
    handlers: Arc<Handlers>,
    dead_letters: EventPublisher,
    stats: StatsRegistry,
    permits: Arc<Semaphore>,
    metrics: GroupMetrics,
}

/// Answers to a heartbeat (or a commit) that mean the member must give up
/// its partitions and join again.
fn must_rejoin(error: &mes_kafka::Error) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::REBALANCE_IN_PROGRESS | ErrorCode::ILLEGAL_GENERATION | ErrorCode::UNKNOWN_MEMBER_ID)
    )
}

impl Coordinator {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut backoff = JOIN_BACKOFF;
        loop {
            let joined = tokio::select! {
                joined = self.member.join() => joined,
                _ = stopped.changed() => break,
            };
            let generation = match joined {
                Ok(generation) => generation,
                Err(e) => {
                    warn!(error = %e, "could not join the group; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => break,
                    }
                    backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
                    continue;
                }
            };
            backoff = JOIN_BACKOFF;
            match self.run_generation(generation, &mut stopped).await {
                Ended::Stop => break,
                Ended::Rejoin => {}
            }
        }
        if let Err(e) = self.member.leave().await {
            warn!(error = %e, "could not leave the group; the coordinator drops this member after its session timeout");
        }
        self.dead_letters.disconnect().await;
        self.state.close().await;
        info!("consumer stopped");
    }

    /// Runs this member's share of one generation: claims and starts its
    /// partitions, heartbeats, renews the claims and mirrors the offsets to
    /// Kafka, until a rebalance, a lost session or shutdown; then stops the
    /// partitions and commits.
    async fn run_generation(&mut self, generation: Generation, stopped: &mut watch::Receiver<bool>) -> Ended {
        let alive_at = Instant::now();
        self.stats.group(|group| {
            group.member_id.clone_from(&generation.member_id);
            group.generation_id = generation.generation_id;
            group.leader = generation.is_leader();
            group.joins += 1;
            group.subscription_gaps.clone_from(&generation.subscription_gaps);
            group.unsubscribed.clone_from(&generation.unsubscribed);
        });
        #[allow(clippy::cast_precision_loss, reason = "a handful of topics")]
        self.metrics
            .subscription_gaps
            .set(generation.subscription_gaps.len() as f64);
        if !generation.subscription_gaps.is_empty() {
            error!(
                topics = ?generation.subscription_gaps,
                "members of this group subscribe to topics the leader does not: nobody consumes them. \
                 Give every instance of the service the same handlers and topics"
            );
        }
        if !generation.unsubscribed.is_empty() {
            warn!(topics = ?generation.unsubscribed, "assigned topics this instance does not read are left unconsumed");
        }
        let mut share = Share {
            owner: Owner {
                generation: generation.generation_id,
                member: generation.member_id.clone(),
            },
            pending: generation
                .partitions
                .iter()
                .map(|(topic, partition)| {
                    let tp = TopicPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (tp, None)
                })
                .collect(),
            workers: BTreeMap::new(),
            mirrored: HashMap::new(),
            alive_at,
            leader: generation.is_leader(),
            dealt_topics: generation.dealt_topics,
            metadata_read_at: alive_at,
        };
        loop {
            self.start_pending(&mut share).await;
            tokio::select! {
                () = tokio::time::sleep(self.config.heartbeat_interval) => {}
                _ = stopped.changed() => {
                    self.revoke(&mut share).await;
                    return Ended::Stop;
                }
            }
            let sent = Instant::now();
            match self.member.heartbeat().await {
                Ok(()) => share.alive_at = sent,
                Err(e) if must_rejoin(&e) => {
                    info!(reason = %e, "the group is rebalancing; giving up the partitions to join again");
                    self.metrics.rebalanced("rebalance");
                    self.revoke(&mut share).await;
                    return Ended::Rejoin;
                }
                Err(e) => {
                    warn!(error = %e, "heartbeat failed");
                    if share.alive_at.elapsed() >= self.config.session_timeout {
                        warn!(
                            "no heartbeat answered for a session timeout: the coordinator has dropped this member"
                        );
                        self.metrics.rebalanced("session_lost");
                        self.revoke(&mut share).await;
                        return Ended::Rejoin;
                    }
                    continue;
                }
            }
            let held = self.renew(&mut share).await;
            self.mirror(&mut share, &held).await;
            self.reclaim_ended(&mut share).await;
            if self.partitions_changed(&mut share).await {
                info!("the subscribed topics' partitions changed; joining again so they are assigned");
                self.metrics.rebalanced("partitions_changed");
                self.revoke(&mut share).await;
                return Ended::Rejoin;
            }
        }
    }

    /// How much longer the coordinator keeps this member's session, less a
    /// margin for the Redis round trip: how long its claims may last.
    fn claim_ttl(&self, share: &Share) -> Option<Duration> {
        let session = self.config.session_timeout;
        let margin = (session / 10).min(Duration::from_secs(1));
        session
            .checked_sub(share.alive_at.elapsed())
            .and_then(|left| left.checked_sub(margin))
            .filter(|ttl| !ttl.is_zero())
    }

    /// Reads the group's Kafka offsets of the assigned partitions not
    /// running yet, claims them in Redis and starts their workers. What
    /// fails is tried again at the next heartbeat.
    async fn start_pending(&mut self, share: &mut Share) {
        let unread: Vec<(String, i32)> = share
            .pending
            .iter()
            .filter(|(_, kafka)| kafka.is_none())
            .map(|(tp, _)| (tp.topic.clone(), tp.partition))
            .collect();
        if !unread.is_empty() {
            match self.member.committed(&unread).await {
                Ok(committed) => {
                    for ((topic, partition), offset) in committed {
                        if let Some(kafka) = share.pending.get_mut(&TopicPartition { topic, partition }) {
                            *kafka = Some(offset);
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot read the group's committed offsets; retrying"),
            }
        }
        let ready: Vec<(TopicPartition, Option<i64>)> = share
            .pending
            .iter()
            .filter_map(|(tp, kafka)| kafka.map(|kafka| (tp.clone(), kafka)))
            .collect();
        for (tp, kafka_committed) in ready {
            let Some(ttl) = self.claim_ttl(share) else {
                return;
            };
            match self.state.claim(&tp, &share.owner, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(partition = %tp, "the partition's claim is still held by another member of this generation; retrying");
                    continue;
                }
                Err(e) => {
                    warn!(partition = %tp, error = %e, "cannot claim the partition; retrying");
                    continue;
                }
            }
            share.pending.remove(&tp);
            let (stop, stop_rx) = watch::channel(false);
            let position = Arc::new(AtomicI64::new(-1));
            let worker = PartitionWorker {
                tp: tp.clone(),
                owner: share.owner.clone(),
                kafka_committed,
                stored: None,
                position: Arc::clone(&position),
                client: self.client.clone(),
                state: Arc::clone(&self.state),
                handlers: Arc::clone(&self.handlers),
                dead_letters: self.dead_letters.clone(),
                config: Arc::clone(&self.config),
                counters: self.stats.partition(&tp),
                metrics: PartitionMetrics::new(&self.config.group_id, &tp),
                stats: self.stats.clone(),
                permits: Arc::clone(&self.permits),
                stop: stop_rx,
            };
            info!(partition = %tp, generation = share.owner.generation, "claimed the partition");
            let task = tokio::spawn(worker.run());
            share.workers.insert(tp, WorkerHandle { stop, task, position });
        }
    }

    /// Extends the claims to the new session end; stops the workers of
    /// claims lost. Returns the partitions whose claims are held.
    async fn renew(&mut self, share: &mut Share) -> Vec<TopicPartition> {
        let running: Vec<TopicPartition> = share.workers.keys().cloned().collect();
        let Some(ttl) = self.claim_ttl(share) else {
            return Vec::new();
        };
        match self.state.renew(&running, &share.owner, ttl).await {
            Ok(lost) => {
                for tp in &lost {
                    if let Some(worker) = share.workers.get(tp) {
                        warn!(partition = %tp, "the partition's claim is lost; stopping it");
                        let _ = worker.stop.send(true);
                    }
                }
                running.into_iter().filter(|tp| !lost.contains(tp)).collect()
            }
            Err(e) => {
                // The claims lapse by themselves; the workers' commits are
                // refused from then on.
                warn!(error = %e, "cannot renew the partition claims");
                Vec::new()
            }
        }
    }

    /// Puts the partitions whose worker ended back to be claimed again: a
    /// worker ends on its own when its claim was lost, e.g. when Redis was
    /// out of reach for longer than the claim lasts. The partition is still
    /// this member's in Kafka, so without this it would stall until the next
    /// rebalance. Claiming again succeeds only if no newer generation has
    /// claimed it (then a rebalance is on its way, and this member learns of
    /// it at its next heartbeat); the new worker starts from what Redis
    /// committed, and the ended one's uncommitted run is handled again.
    async fn reclaim_ended(&mut self, share: &mut Share) {
        let ended: Vec<TopicPartition> = share
            .workers
            .iter()
            .filter(|(_, worker)| worker.task.is_finished())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in ended {
            let Some(worker) = share.workers.remove(&tp) else {
                continue;
            };
            if let Err(e) = worker.task.await {
                warn!(partition = %tp, error = %e, "a partition worker ended abnormally");
            }
            info!(partition = %tp, "the partition's worker ended while this member owns it; claiming it again");
            share.pending.insert(tp, None);
        }
    }

    /// Commits to Kafka the positions of `held` partitions that moved since
    /// the last mirror, once Redis holds a record of them on a replica too,
    /// so that a later assignment can tell a Rust member's commits from
    /// anyone else's, even after a failover.
    async fn mirror(&mut self, share: &mut Share, held: &[TopicPartition]) {
        let moved: Vec<(TopicPartition, i64)> = held
            .iter()
            .filter_map(|tp| {
                let position = share.workers.get(tp)?.position.load(Ordering::Acquire);
                (position >= 0 && share.mirrored.get(tp) != Some(&position)).then(|| (tp.clone(), position))
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        let offsets: Vec<(String, i32, i64)> = moved
            .iter()
            .map(|(tp, offset)| (tp.topic.clone(), tp.partition, *offset))
            .collect();
        match self.state.mirroring(&moved, MIRROR_WAIT).await {
            Ok(true) => {}
            // Kafka keeps its older offsets: on a reassignment meanwhile
            // they win over Redis's (they differ from the record), which
            // is at most a redelivery the de-duplication marks absorb.
            Ok(false) => {
                warn!(
                    "the record of the offsets to mirror has reached no Redis replica yet; Kafka gets them at a later heartbeat"
                );
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot record the offsets to mirror; Kafka gets them at a later heartbeat");
                return;
            }
        }
        let started = Instant::now();
        let committed = self.member.commit(&offsets).await;
        self.metrics.kafka_commit.record(seconds(started.elapsed()));
        if let Err(e) = committed {
            warn!(error = %e, "cannot commit the offsets to Kafka; Redis keeps them, retrying at the next heartbeat");
            return;
        }
        for (tp, offset) in &moved {
            self.stats
                .partition(tp)
                .mirrored
                .store(*offset, Ordering::Relaxed);
        }
        self.stats.changed();
        share.mirrored.extend(moved);
    }

    /// The leader compares the partitions it dealt out with the cluster's,
    /// every metadata max age.
    async fn partitions_changed(&mut self, share: &mut Share) -> bool {
        if !share.leader || share.metadata_read_at.elapsed() < self.client.config().get_metadata_max_age() {
            return false;
        }
        share.metadata_read_at = Instant::now();
        match self.member.subscribed_partitions().await {
            Ok(now) => {
                let now: Vec<(String, usize)> = now.into_iter().map(|(topic, p)| (topic, p.len())).collect();
                now != share.dealt_topics
            }
            Err(e) => {
                warn!(error = %e, "cannot read the subscribed topics' partitions");
                false
            }
        }
    }

    /// Stops every partition (each finishes and commits its event in
    /// flight), commits their positions to Kafka and releases the claims.
    async fn revoke(&mut self, share: &mut Share) {
        for worker in share.workers.values() {
            let _ = worker.stop.send(true);
        }
        for (tp, worker) in &mut share.workers {
            if let Err(e) = (&mut worker.task).await {
                warn!(partition = %tp, error = %e, "a partition worker ended abnormally");
            }
        }
        // Only what this member still holds is mirrored and released: a
        // lapsed claim means another member may have moved the partition on.
        let held = self.renew(share).await;
        self.mirror(share, &held).await;
        for tp in &held {
            self.state.release(tp, &share.owner).await;
        }
        share.workers.clear();
        share.pending.clear();
    }
}
