//! [`EventConsumer`]: handlers in, a running group member out.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use mes_cache::ReferenceDataCache;
use mes_events_types::{DomainEvent, EventPayload, EventType};
use mes_kafka::KafkaClient;
use mes_publisher::EventPublisher;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::config::ConsumerConfig;
use crate::error::{BoxError, Error};
use crate::handler::{Effects, HandlerError, Handlers};
use crate::state::{GroupState, Lease, TopicPartition};
use crate::stats::{ConsumerStats, StatsRegistry};
use crate::sync::{BoundSync, CacheSync};
use crate::worker::PartitionWorker;

/// A consumer of MES domain events for one group, before it starts:
/// register handlers, then [`start`](Self::start).
///
/// The topics it reads follow from the registered event types. Partitions
/// are shared with the other live instances of the group through leases in
/// Redis; each partition is processed in offset order, and its offset is
/// committed only after its event was handled (or dead-lettered).
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
        let state = GroupState::connect(
            &config.redis_url,
            &config.group_id,
            &config.member_id,
            config.lease_ttl,
            config.dedup_window,
        )
        .await?;
        let (stop, stopped) = watch::channel(false);
        let stats = StatsRegistry::default();
        let coordinator = Coordinator {
            config: Arc::clone(&config),
            topics,
            client,
            state: Arc::new(state),
            handlers: Arc::new(self.handlers),
            dead_letters,
            stats: stats.clone(),
            permits: Arc::new(Semaphore::new(
                config.max_concurrent_partitions.min(Semaphore::MAX_PERMITS),
            )),
            workers: HashMap::new(),
            partitions: Vec::new(),
            metadata_read_at: Instant::now(),
        };
        let span = info_span!("consumer", group = %config.group_id, member = %config.member_id);
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

    /// Finishes the events in flight, commits them, releases this
    /// instance's leases and leaves the group.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "the consumer ended abnormally");
        }
    }
}

struct WorkerHandle {
    lease: Lease,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Coordinator {
    config: Arc<ConsumerConfig>,
    topics: Vec<String>,
    client: KafkaClient,
    state: Arc<GroupState>,
    handlers: Arc<Handlers>,
    dead_letters: EventPublisher,
    stats: StatsRegistry,
    permits: Arc<Semaphore>,
    workers: HashMap<TopicPartition, WorkerHandle>,
    /// The subscribed partitions as last read from the broker.
    partitions: Vec<TopicPartition>,
    metadata_read_at: Instant,
}

impl Coordinator {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let tick = self.config.lease_ttl / 3;
        loop {
            if let Err(e) = self.rebalance().await {
                warn!(error = %e, "rebalance failed; retrying at the next tick");
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stopped.changed() => break,
            }
        }
        for worker in self.workers.values() {
            let _ = worker.stop.send(true);
        }
        for (tp, worker) in self.workers.drain() {
            if let Err(e) = worker.task.await {
                warn!(partition = %tp, error = %e, "a partition worker ended abnormally");
            }
        }
        if let Err(e) = self.state.leave().await {
            warn!(error = %e, "could not leave the group; the membership expires by itself");
        }
        self.dead_letters.disconnect().await;
        self.state.close().await;
        info!("consumer stopped");
    }

    /// The partitions of the subscribed topics, in a stable order.
    async fn partitions(&self) -> Result<Vec<TopicPartition>, Error> {
        let listed = self.client.list_topics().await.map_err(|e| Error::Kafka {
            what: "list topics".to_owned(),
            source: Box::new(e),
        })?;
        let mut all = BTreeSet::new();
        for topic in &self.topics {
            match listed.iter().find(|(name, _)| name == topic) {
                Some((_, count)) => {
                    let count = i32::try_from(*count).unwrap_or(i32::MAX);
                    all.extend((0..count).map(|partition| TopicPartition {
                        topic: topic.clone(),
                        partition,
                    }));
                }
                None => warn!(topic, "subscribed topic does not exist (yet)"),
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Heartbeat and lease renewal first (Redis only, so a slow broker never
    /// lets a lease lapse), then bring the partitions this member runs in
    /// line with its share: stop what it gives up, take what is free of it.
    async fn rebalance(&mut self) -> Result<(), Error> {
        let mut members = self.state.heartbeat().await?;
        members.sort();
        let mut finished = Vec::new();
        for (tp, worker) in &self.workers {
            if worker.task.is_finished() {
                finished.push(tp.clone());
            } else if !self.state.renew(tp, &worker.lease).await? {
                warn!(partition = %tp, "lease lost; stopping the partition");
                let _ = worker.stop.send(true);
            }
        }
        for tp in finished {
            if let Some(worker) = self.workers.remove(&tp) {
                let _ = worker.task.await;
            }
        }

        if self.partitions.is_empty() || self.metadata_read_at.elapsed() >= self.config.metadata_max_age() {
            self.partitions = self.partitions().await?;
            self.metadata_read_at = Instant::now();
        }
        let me = members
            .iter()
            .position(|m| *m == self.config.member_id)
            .unwrap_or(0);
        let share: BTreeSet<TopicPartition> = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % members.len().max(1) == me)
            .map(|(_, tp)| tp.clone())
            .collect();
        for (tp, worker) in &self.workers {
            if !share.contains(tp) {
                // Handed over: it finishes its event, commits and releases.
                let _ = worker.stop.send(true);
            }
        }
        for tp in share {
            if self.workers.contains_key(&tp) {
                continue;
            }
            let Some(lease) = self.state.acquire(&tp).await? else {
                continue; // still held by its previous owner
            };
            info!(partition = %tp, lease = %lease.0, "took the partition");
            let (stop, stop_rx) = watch::channel(false);
            let worker = PartitionWorker {
                tp: tp.clone(),
                lease: lease.clone(),
                client: self.client.clone(),
                state: Arc::clone(&self.state),
                handlers: Arc::clone(&self.handlers),
                dead_letters: self.dead_letters.clone(),
                config: Arc::clone(&self.config),
                counters: self.stats.partition(&tp),
                stats: self.stats.clone(),
                permits: Arc::clone(&self.permits),
                stop: stop_rx,
            };
            let task = tokio::spawn(worker.run());
            self.workers
                .insert(tp.clone(), WorkerHandle { lease, stop, task });
        }
        Ok(())
    }
}
