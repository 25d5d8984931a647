//! One partition: fetch in offset order, de-duplicate, handle with retries,
//! dead-letter what cannot be handled, commit, while this member's claim on
//! the partition holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mes_events_types::{DomainEvent, KafkaRecord, decode};
use mes_kafka::protocol::record_batch::{Record, RecordError};
use mes_kafka::{ErrorCode, Fetched, KafkaClient, OffsetSpec, PartitionFetcher};
use mes_publisher::EventPublisher;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{ConsumerConfig, StartPosition};
use crate::handler::{AttemptError, Effects, Handlers, Plan};
use crate::metrics::{PartitionMetrics, seconds};
use crate::state::{Committed, GroupState, Handled, Owner, TopicPartition};
use crate::stats::{PartitionCounters, StatsRegistry};

/// Back-off of retried infrastructure calls (Redis, Kafka, dead letters).
const INFRA_BACKOFF: Duration = Duration::from_millis(200);
const INFRA_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle partition checks that Redis still holds the offset it
/// committed last.
const STORED_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct PartitionWorker {
    pub(crate) tp: TopicPartition,
    pub(crate) owner: Owner,
    /// The group's committed offset in Kafka when the partition was
    /// assigned (`None`: none).
    pub(crate) kafka_committed: Option<i64>,
    /// The offset Redis holds for the partition as far as this worker
    /// knows (read at the start, then each commit's): the next commit
    /// continues from it, or is refused.
    pub(crate) stored: Option<i64>,
    /// The next offset to read, published for the coordinator to mirror
    /// to Kafka (-1 until the start is known).
    pub(crate) position: Arc<AtomicI64>,
    /// The cluster client; the worker fetches on its own, so a slow broker
    /// never holds up the coordinator's heartbeats.
    pub(crate) client: KafkaClient,
    pub(crate) state: Arc<GroupState>,
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) dead_letters: EventPublisher,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) counters: Arc<PartitionCounters>,
    pub(crate) metrics: PartitionMetrics,
    pub(crate) stats: StatsRegistry,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// The prefix of the headers a dead letter gets (`mes-dlq-reason`, ...).
pub(crate) const DLQ_HEADER_PREFIX: &str = "mes-dlq-";

/// Most events one commit script takes: a longer script holds Redis up
/// longer (100 measured faster than 500).
const MAX_COMMIT_BATCH: usize = 100;

/// Handled events not committed yet, and the offset their commit moves to.
#[derive(Default)]
struct Run {
    next: Option<i64>,
    handled: Vec<(String, Effects)>,
}

/// What is known of a fetched event before it is handled.
enum Prepared {
    /// Handled before (its id is marked): skipped.
    Seen,
    /// What to do with it; `Err`: why it cannot be handled.
    Planned(Result<Option<Plan>, String>),
}

/// A fetched record, read as far as it goes.
enum Item {
    Event {
        at: i64,
        record: KafkaRecord,
        event: Box<DomainEvent<Value>>,
    },
    Undecodable {
        at: i64,
        record: KafkaRecord,
        reason: String,
    },
    Unreadable(RecordError),
}

impl Item {
    fn read(fetched: Result<Record, RecordError>) -> Self {
        let record = match fetched {
            Ok(record) => record,
            Err(unreadable) => return Self::Unreadable(unreadable),
        };
        let at = record.offset;
        let (record, bad_header) = kafka_record(record);
        if let Some(bad_header) = bad_header {
            let reason = format!("header name {bad_header:?} is not UTF-8");
            return Self::Undecodable { at, record, reason };
        }
        match decode(&record) {
            Ok(event) => Self::Event {
                at,
                record,
                event: Box::new(event),
            },
            Err(e) => Self::Undecodable {
                at,
                record,
                reason: e.to_string(),
            },
        }
    }

    fn event_id(&self) -> Option<&str> {
        match self {
            Self::Event { event, .. } => Some(event.id().as_str()),
            _ => None,
        }
    }
}

/// The next fetch, running while the previous answer is handled. Dropping
/// it cancels the fetch.
struct Prefetch {
    from: i64,
    task: JoinHandle<(PartitionFetcher, mes_kafka::Result<Fetched>)>,
}

impl Prefetch {
    fn start(mut fetcher: PartitionFetcher, from: i64) -> Self {
        let task = tokio::spawn(async move {
            let fetched = fetcher.fetch(from).await;
            (fetcher, fetched)
        });
        Self { from, task }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a record's processing ended early.
/// Why a worker (re)starts consuming.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// The partition was just assigned.
    Assigned,
    /// A commit diverged from what Redis holds: from Redis's offset.
    FromRedis,
}

enum Interrupted {
    /// Shutdown or a rebalance asked for it; the record stays uncommitted.
    Stopped,
    /// A commit was refused: this member's claim lapsed or a newer
    /// generation claimed the partition.
    ClaimLost,
    /// A commit was refused: Redis no longer holds the offset this worker
    /// reached (a failover lost acknowledged writes, or someone moved it).
    Diverged,
}

impl PartitionWorker {
    pub(crate) async fn run(mut self) {
        let span = info_span!("partition", topic = %self.tp.topic, partition = self.tp.partition);
        async {
            let mut resume = Resume::Assigned;
            loop {
                match self.consume(resume).await {
                    Interrupted::Stopped => info!("stopped the partition"),
                    Interrupted::ClaimLost => {
                        warn!("claim lost (lapsed or taken by a newer generation); stopped");
                    }
                    Interrupted::Diverged => {
                        // Redis's state is a prefix of what was written (a
                        // replica gets each commit's offset, marks and
                        // effects as one transaction), so going back to its
                        // offset handles again exactly the events whose
                        // effects it lost.
                        warn!(
                            reached = ?self.stored,
                            "Redis no longer holds the offset this partition reached (a failover lost acknowledged writes?); handling again from what it holds"
                        );
                        self.metrics.diverged.increment(1);
                        resume = Resume::FromRedis;
                        continue;
                    }
                }
                break;
            }
            self.counters.owned.store(false, Ordering::Relaxed);
            self.stats.changed();
        }
        .instrument(span)
        .await;
    }

    /// Publishes the next offset to read, as committed in Redis.
    fn committed(&self, offset: i64) {
        self.counters.committed.store(offset, Ordering::Relaxed);
        self.position.store(offset, Ordering::Release);
        self.update_lag();
        self.stats.changed();
    }

    fn update_lag(&self) {
        let high_watermark = self.counters.high_watermark.load(Ordering::Relaxed);
        let committed = self.counters.committed.load(Ordering::Relaxed);
        #[allow(
            clippy::cast_precision_loss,
            reason = "a lag beyond 2^53 records is not a concern"
        )]
        self.metrics.lag.set((high_watermark - committed).max(0) as f64);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn fetcher(&self) -> PartitionFetcher {
        PartitionFetcher::new(self.client.clone(), &self.tp.topic, self.tp.partition)
            .max_wait(self.config.fetch_max_wait)
            .max_bytes(usize::try_from(self.config.fetch_max_bytes).unwrap_or(1024 * 1024))
    }

    async fn consume(&mut self, resume: Resume) -> Interrupted {
        let Some(mut offset) = self.start_offset(resume).await else {
            return Interrupted::Stopped;
        };
        self.committed(offset);
        // Owned from here: the claim is held and the position is known, so
        // anything published from now on will be read.
        self.counters.owned.store(true, Ordering::Relaxed);
        self.stats.changed();
        let mut backoff = INFRA_BACKOFF;
        let mut prefetch = Prefetch::start(self.fetcher(), offset);
        let mut checked_at = Instant::now();
        while !self.stopping() {
            let joined = tokio::select! {
                joined = &mut prefetch.task => joined,
                _ = self.stop.changed() => return Interrupted::Stopped,
            };
            let Ok((fetcher, fetched)) = joined else {
                warn!("a fetch task ended abnormally; fetching again");
                prefetch = Prefetch::start(self.fetcher(), offset);
                continue;
            };
            if prefetch.from != offset {
                prefetch = Prefetch::start(fetcher, offset);
                continue;
            }
            let fetched = match fetched {
                Ok(fetched) => {
                    backoff = INFRA_BACKOFF;
                    self.counters
                        .high_watermark
                        .store(fetched.high_watermark, Ordering::Relaxed);
                    self.update_lag();
                    self.stats.changed();
                    // The next answer is on its way while this one is handled.
                    prefetch = Prefetch::start(fetcher, offset.max(fetched.next_offset));
                    fetched
                }
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    // Retention removed what the group had not read yet.
                    let Some(earliest) = self.offset_at(OffsetSpec::Earliest).await else {
                        return Interrupted::Stopped;
                    };
                    warn!(
                        offset,
                        earliest, "committed offset is out of range; going on from the earliest"
                    );
                    offset = earliest;
                    prefetch = Prefetch::start(fetcher, offset);
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    if !self.pause(&mut backoff).await {
                        return Interrupted::Stopped;
                    }
                    prefetch = Prefetch::start(fetcher, offset);
                    continue;
                }
            };
            // Idle: a failover may have lost the last commits, which no
            // next commit will find diverged. Redis is asked now and then.
            if fetched.records.is_empty() && checked_at.elapsed() >= STORED_CHECK_EVERY {
                checked_at = Instant::now();
                if let Ok(held) = self.state.position(&self.tp).await
                    && held.committed != self.stored
                {
                    return Interrupted::Diverged;
                }
            }
            if let Some(first) = fetched.records.first().map(starting_offset)
                && first > offset
            {
                // Kafka leaves gaps only for compaction and transaction
                // markers; anything else means records the broker skipped.
                warn!(requested = offset, first, "fetch skipped offsets");
            }
            let permits = Arc::clone(&self.permits);
            let Ok(_permit) = permits.acquire().await else {
                return Interrupted::Stopped;
            };
            let mut records = fetched.records.into_iter().peekable();
            while records.peek().is_some() {
                if self.stopping() {
                    return Interrupted::Stopped;
                }
                let chunk: Vec<_> = records.by_ref().take(MAX_COMMIT_BATCH).collect();
                if let Err(interrupted) = self.process(chunk, &mut offset).await {
                    return interrupted;
                }
            }
            // Past control batches and compacted-away offsets too.
            offset = offset.max(fetched.next_offset);
        }
        Interrupted::Stopped
    }

    /// Where to start: the committed offset (when assigned: Kafka's if
    /// someone else moved it, else Redis's), else the configured position.
    async fn start_offset(&mut self, resume: Resume) -> Option<i64> {
        let mut backoff = INFRA_BACKOFF;
        loop {
            match self.state.position(&self.tp).await {
                Ok(stored) => {
                    self.stored = stored.committed;
                    let start = match resume {
                        Resume::Assigned => stored.start(self.kafka_committed),
                        // Kafka's offset was mirrored from the state Redis
                        // lost: at most where this worker was, never behind
                        // what Redis holds now unless Redis holds nothing.
                        Resume::FromRedis => stored.committed.or(self.kafka_committed),
                    };
                    if let Some(start) = start {
                        if Some(start) != stored.committed {
                            info!(
                                start,
                                redis = ?stored.committed,
                                "starting at the group's offset in Kafka: a kafkajs member or an operator moved it"
                            );
                        }
                        return Some(start);
                    }
                    let at = match self.config.start {
                        StartPosition::Earliest => OffsetSpec::Earliest,
                        StartPosition::Latest => OffsetSpec::Latest,
                    };
                    return self.offset_at(at).await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the committed offset; retrying");
                    if !self.pause(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn offset_at(&mut self, at: OffsetSpec) -> Option<i64> {
        let mut backoff = INFRA_BACKOFF;
        loop {
            let listed = tokio::select! {
                listed = self.client.list_offset(&self.tp.topic, self.tp.partition, at) => listed,
                _ = self.stop.changed() => return None,
            };
            match listed {
                Ok(offset) => return Some(offset),
                Err(e) => {
                    warn!(error = %e, "cannot read the partition's offsets; retrying");
                    if !self.pause(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits a back-off (doubling it for next time), or less if asked to
    /// stop; `false` when stopping.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(INFRA_BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => !self.stopping(),
            _ = self.stop.changed() => false,
        }
    }

    /// Offsets whose records cannot be read at all (a batch with a bad
    /// checksum, a record whose framing is broken): a dead letter saying so,
    /// with the offsets, then the partition moves on.
    async fn unreadable(&mut self, unreadable: &RecordError) -> Result<(), Interrupted> {
        warn!(
            first = unreadable.first_offset,
            last = unreadable.last_offset,
            error = %unreadable.error,
            "unreadable records; dead-lettering what is known of them"
        );
        let letter = KafkaRecord {
            key: None,
            headers: vec![(
                "mes-dlq-source-last-offset".to_owned(),
                unreadable.last_offset.to_string().into_bytes(),
            )],
            value: None,
        };
        self.dead_letter(
            &letter,
            unreadable.first_offset,
            &format!("unreadable: {unreadable}"),
            0,
        )
        .await?;
        self.commit(unreadable.last_offset + 1, None).await
    }

    /// Handles fetched records in order with one read of their seen marks
    /// and, when every handler succeeds at once, one commit; advances
    /// `offset` past what is committed. A record that needs a retry or a
    /// dead letter is handled alone, after the run before it is committed.
    async fn process(
        &mut self,
        records: Vec<Result<Record, RecordError>>,
        offset: &mut i64,
    ) -> Result<(), Interrupted> {
        let items: Vec<Item> = records.into_iter().map(Item::read).collect();
        let ids: Vec<&str> = items.iter().filter_map(Item::event_id).collect();
        let seen = self
            .retry_state(|state| {
                let ids = ids.clone();
                async move { state.seen(&ids).await }
            })
            .await?;
        // Plans of the events not seen yet, made up front so that their
        // point invalidations go to Redis together.
        // A second copy of an event in the same run counts as seen too.
        let mut seen = seen.into_iter();
        let mut in_run = std::collections::HashSet::new();
        let mut prepared: Vec<Option<Prepared>> = items
            .iter()
            .map(|item| match item {
                Item::Event { event, .. } => {
                    let marked = seen.next().unwrap_or(false);
                    Some(if marked || !in_run.insert(event.id().as_str()) {
                        Prepared::Seen
                    } else {
                        Prepared::Planned(self.handlers.plan(event))
                    })
                }
                _ => None,
            })
            .collect();
        let mut plans: Vec<&mut Plan> = prepared
            .iter_mut()
            .filter_map(|prepared| match prepared {
                Some(Prepared::Planned(Ok(Some(plan)))) => Some(plan),
                _ => None,
            })
            .collect();
        self.handlers.invalidate_ahead(&mut plans).await;
        let mut run = Run::default();
        for (item, prepared) in items.iter().zip(prepared) {
            if self.stopping() {
                break;
            }
            match item {
                Item::Unreadable(unreadable) => {
                    self.flush(&mut run, offset).await?;
                    self.unreadable(unreadable).await?;
                    self.advance(offset, unreadable.last_offset + 1);
                }
                Item::Undecodable { at, record, reason } => {
                    self.flush(&mut run, offset).await?;
                    warn!(offset = at, %reason, "undecodable record; dead-lettering it");
                    self.dead_letter(record, *at, &format!("undecodable: {reason}"), 0)
                        .await?;
                    self.commit(at + 1, None).await?;
                    self.advance(offset, at + 1);
                }
                Item::Event { at, record, event } => {
                    let span = info_span!(
                        "event",
                        offset = at,
                        event_id = %event.id(),
                        event_type = %event.event_type(),
                        correlation_id = event.correlation_id(),
                    );
                    let prepared = prepared.unwrap_or(Prepared::Seen);
                    self.event(*at, record, event, prepared, &mut run, offset)
                        .instrument(span)
                        .await?;
                }
            }
        }
        self.flush(&mut run, offset).await
    }

    /// One decoded event: skipped when seen, else planned and handled;
    /// joins the run when its first attempt succeeds.
    async fn event(
        &mut self,
        at: i64,
        record: &KafkaRecord,
        event: &DomainEvent<Value>,
        prepared: Prepared,
        run: &mut Run,
        offset: &mut i64,
    ) -> Result<(), Interrupted> {
        let id = event.id().as_str();
        let planned = match prepared {
            Prepared::Seen => {
                PartitionCounters::add(&self.counters.duplicates);
                self.metrics.duplicate.increment(1);
                run.next = Some(at + 1);
                return Ok(());
            }
            Prepared::Planned(planned) => planned,
        };
        let plan = match planned {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                PartitionCounters::add(&self.counters.ignored);
                self.metrics.ignored.increment(1);
                run.next = Some(at + 1);
                return Ok(());
            }
            Err(reason) => {
                self.flush(run, offset).await?;
                warn!(%reason, "dead-lettering the event");
                self.dead_letter(record, at, &reason, 1).await?;
                self.commit(at + 1, Some(id)).await?;
                self.advance(offset, at + 1);
                return Ok(());
            }
        };
        let max_attempts = self.config.retry.max_attempts;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let outcome = self.handlers.attempt(&plan, event).await;
            self.metrics.process.record(seconds(started.elapsed()));
            let outcome = outcome.map_err(|e| match e {
                AttemptError::Failed(e) => (e.to_string(), true),
                AttemptError::Rejected(reason) => (reason, false),
            });
            match outcome {
                Ok(effects) => {
                    PartitionCounters::add(&self.counters.handled);
                    self.metrics.handled.increment(1);
                    run.handled.push((id.to_owned(), effects));
                    run.next = Some(at + 1);
                    if attempt > 1 {
                        // Retried: commit at once rather than risk its
                        // attempts again on a later failure of the run.
                        self.flush(run, offset).await?;
                    }
                    return Ok(());
                }
                Err((reason, retryable)) if retryable && attempt < max_attempts => {
                    if attempt == 1 {
                        // What succeeded before it is committed before the wait.
                        self.flush(run, offset).await?;
                    }
                    PartitionCounters::add(&self.counters.retried);
                    self.metrics.retries.increment(1);
                    warn!(attempt, %reason, "handler failed; retrying");
                    attempt += 1;
                    let wait = self.config.retry.backoff_before(attempt);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.stop.changed() => return Err(Interrupted::Stopped),
                    }
                }
                Err((reason, _)) => {
                    self.flush(run, offset).await?;
                    warn!(attempt, %reason, "handler gave up; dead-lettering the event");
                    self.dead_letter(record, at, &reason, attempt).await?;
                    self.commit(at + 1, Some(id)).await?;
                    self.advance(offset, at + 1);
                    return Ok(());
                }
            }
        }
    }

    /// Commits the run so far, if any: its offset, and each handled
    /// event's mark and effects.
    async fn flush(&mut self, run: &mut Run, offset: &mut i64) -> Result<(), Interrupted> {
        let Some(next) = run.next.take() else {
            return Ok(());
        };
        let handled = std::mem::take(&mut run.handled);
        let events: Vec<Handled<'_>> = handled
            .iter()
            .map(|(event_id, effects)| Handled { event_id, effects })
            .collect();
        self.commit_events(next, &events).await?;
        self.advance(offset, next);
        Ok(())
    }

    /// Moves the position on after a commit, and says so.
    fn advance(&self, offset: &mut i64, next: i64) {
        *offset = next;
        self.committed(next);
    }

    /// Runs a state call until it succeeds (Redis may be down for a while);
    /// gives up only when asked to stop.
    async fn retry_state<T, F, Fut>(&mut self, call: F) -> Result<T, Interrupted>
    where
        F: Fn(Arc<GroupState>) -> Fut,
        Fut: Future<Output = Result<T, crate::Error>>,
    {
        let mut backoff = INFRA_BACKOFF;
        loop {
            match call(Arc::clone(&self.state)).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    warn!(error = %e, "consumer state unavailable; retrying");
                    if !self.pause(&mut backoff).await {
                        return Err(Interrupted::Stopped);
                    }
                }
            }
        }
    }

    /// Commits one record's offset, marking its event id (if any) seen.
    async fn commit(&mut self, next: i64, event_id: Option<&str>) -> Result<(), Interrupted> {
        let none = Effects::none();
        let events: Vec<Handled<'_>> = event_id
            .map(|event_id| Handled {
                event_id,
                effects: &none,
            })
            .into_iter()
            .collect();
        self.commit_events(next, &events).await
    }

    async fn commit_events(&mut self, next: i64, events: &[Handled<'_>]) -> Result<(), Interrupted> {
        let (tp, owner, from) = (self.tp.clone(), self.owner.clone(), self.stored);
        let started = Instant::now();
        let committed = self
            .retry_state(|state| {
                let (tp, owner) = (tp.clone(), owner.clone());
                async move { state.commit(&tp, &owner, from, next, events).await }
            })
            .await?;
        self.metrics.redis_commit.record(seconds(started.elapsed()));
        match committed {
            Committed::Written { already_marked } => {
                // Handled meanwhile by another partition's copy of the event
                // (or twice in this run): its effects were not applied again.
                self.counters
                    .duplicates
                    .fetch_add(already_marked, Ordering::Relaxed);
                self.metrics.duplicate.increment(already_marked);
                self.stored = Some(next);
                Ok(())
            }
            // An attempt whose reply was lost had written it all.
            Committed::Landed => {
                self.stored = Some(next);
                Ok(())
            }
            Committed::NotOwner => Err(Interrupted::ClaimLost),
            Committed::Diverged => Err(Interrupted::Diverged),
        }
    }

    /// Publishes the record to `{topic}.dlq` with why, and retries until the
    /// broker has it: a record is never dropped.
    async fn dead_letter(
        &mut self,
        record: &KafkaRecord,
        offset: i64,
        reason: &str,
        attempts: u32,
    ) -> Result<(), Interrupted> {
        let mut letter = record.clone();
        let headers = [
            ("mes-dlq-reason", reason.to_owned()),
            ("mes-dlq-attempts", attempts.to_string()),
            ("mes-dlq-group", self.config.group_id.clone()),
            ("mes-dlq-source-topic", self.tp.topic.clone()),
            ("mes-dlq-source-partition", self.tp.partition.to_string()),
            ("mes-dlq-source-offset", offset.to_string()),
        ];
        letter
            .headers
            .extend(headers.into_iter().map(|(k, v)| (k.to_owned(), v.into_bytes())));
        let topic = format!("{}.dlq", self.tp.topic);
        let mut backoff = INFRA_BACKOFF;
        loop {
            match self.dead_letters.publish_record(&topic, letter.clone()).await {
                Ok(_) => {
                    PartitionCounters::add(&self.counters.dead_lettered);
                    self.metrics.dead_lettered.increment(1);
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, topic, "dead-letter topic unavailable; the partition waits");
                    if !self.pause(&mut backoff).await {
                        return Err(Interrupted::Stopped);
                    }
                }
            }
        }
    }
}

/// The first offset a fetched entry covers.
fn starting_offset(entry: &Result<Record, RecordError>) -> i64 {
    match entry {
        Ok(record) => record.offset,
        Err(unreadable) => unreadable.first_offset,
    }
}

/// The record as the event codec reads it, and the first header name that
/// is not UTF-8 (that record cannot be an event; its names are kept lossily
/// in the dead letter).
fn kafka_record(record: Record) -> (KafkaRecord, Option<String>) {
    let bad = record.headers.iter().find_map(|(name, _)| {
        std::str::from_utf8(name)
            .is_err()
            .then(|| String::from_utf8_lossy(name).into_owned())
    });
    let record = KafkaRecord {
        key: record.key,
        headers: headers(record.headers),
        value: record.value,
    };
    (record, bad)
}

/// Header names as text, lossily where they are not UTF-8.
pub(crate) fn headers(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    raw.into_iter()
        .map(|(name, value)| {
            let name = String::from_utf8(name)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (name, value)
        })
        .collect()
}
