//! [`OutboxRelay`]: publishes committed outbox rows and deletes them once
//! the broker acknowledged them.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mes_events_types::codec::STRUCTURED_CONTENT_TYPE;
use mes_events_types::{DomainEvent, EventId, KafkaRecord, decode};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Outbox, db};
use crate::metrics::{self, Tally};
use crate::{Error, EventPublisher, Published};

/// How a relay claims, waits and retries.
///
/// ```
/// use std::time::Duration;
/// use mes_publisher::RelayConfig;
///
/// let config = RelayConfig::default().batch_size(200).poll_interval(Duration::from_millis(250));
/// assert_eq!(config.batch_size_value(), 200);
/// ```
#[derive(Clone)]
pub struct RelayConfig {
    batch_size: usize,
    poll_interval: Duration,
    listen: bool,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    on_acknowledged: Option<Arc<AckCallback>>,
}

type AckCallback = dyn Fn(&[Acknowledged]) + Send + Sync;

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            listen: true,
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            on_acknowledged: None,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("listen", &self.listen)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("on_acknowledged", &self.on_acknowledged.is_some())
            .finish()
    }
}

impl RelayConfig {
    /// Rows claimed and published per round (default 500).
    #[must_use]
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// How often an idle relay looks for rows without being woken (default
    /// 1 s); with `LISTEN` on, this only matters when a notification is lost.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether to `LISTEN` for the enqueuers' notifications and start at
    /// once (default on); off, the relay polls only.
    #[must_use]
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// After how many failed attempts an event that fails by itself (its
    /// topic is missing, say) is parked (default 10). Events the broker
    /// refuses for good (too large, not encodable) are parked at once;
    /// broker outages never park anything.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Back-off after the first failure, doubled per attempt up to
    /// `max` (defaults 100 ms and 30 s).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Called with each batch's acknowledged events, after the broker's
    /// acknowledgement and before their rows are deleted (for metrics or
    /// audit). It runs on the relay's task: keep it quick.
    #[must_use]
    pub fn on_acknowledged(mut self, callback: impl Fn(&[Acknowledged]) + Send + Sync + 'static) -> Self {
        self.on_acknowledged = Some(Arc::new(callback));
        self
    }

    /// The batch size.
    pub fn batch_size_value(&self) -> usize {
        self.batch_size
    }

    fn backoff_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// An event the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acknowledged {
    /// The event's id.
    pub event_id: EventId,
    /// Where it landed.
    pub published: Published,
}

/// What one round of a relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published and deleted.
    pub published: usize,
    /// Rows whose publish failed (they stay, with their error).
    pub failed: usize,
    /// Rows parked in this round.
    pub parked: usize,
    /// Whether a failure was the broker's (unreachable, timed out) rather
    /// than one event's.
    pub broker_failed: bool,
}

/// A relay's counters since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Rounds that claimed at least one row.
    pub batches: u64,
    /// Events published and deleted.
    pub published: u64,
    /// Failed publish attempts.
    pub failed: u64,
    /// Events parked.
    pub parked: u64,
}

/// A relay's counts, each kept for [`RelayStats`] and the metrics recorder
/// at once.
#[derive(Debug)]
struct Counters {
    batches: Tally,
    published: Tally,
    failed: Tally,
    parked: Tally,
}

impl Counters {
    fn new(table: &str) -> Self {
        let tally = |name| Tally::new(metrics::relay_counter(name, table));
        Self {
            batches: tally(metrics::RELAY_BATCHES),
            published: tally(metrics::RELAY_PUBLISHED),
            failed: tally(metrics::RELAY_FAILED),
            parked: tally(metrics::RELAY_PARKED),
        }
    }

    fn add(&self, outcome: &BatchOutcome) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        if outcome.claimed > 0 {
            self.batches.add(1);
        }
        self.published.add(count(outcome.published));
        self.failed.add(count(outcome.failed));
        self.parked.add(count(outcome.parked));
    }

    fn snapshot(&self) -> RelayStats {
        RelayStats {
            batches: self.batches.get(),
            published: self.published.get(),
            failed: self.failed.get(),
            parked: self.parked.get(),
        }
    }
}

/// Publishes the outbox's committed events through an [`EventPublisher`].
///
/// Run one or several per service (each process or task its own): they
/// share the rows without reordering any entity's events. A row is deleted
/// only after the broker acknowledged its event, in the transaction that
/// held its lock; a relay that dies in between leaves the row to be
/// published again (at-least-once; consumers de-duplicate by event id).
///
/// ```no_run
/// use mes_publisher::{EventPublisher, Outbox, OutboxRelay, PublisherConfig, RelayConfig};
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), mes_publisher::Error> {
/// let publisher = EventPublisher::connect(PublisherConfig::from_env()?).await?;
/// let relay = OutboxRelay::new(Outbox::default(), pool, publisher, RelayConfig::default()).start();
/// // ... on shutdown:
/// relay.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    outbox: Outbox,
    pool: PgPool,
    publisher: EventPublisher,
    config: RelayConfig,
    counters: Arc<Counters>,
}

impl OutboxRelay {
    /// A relay of `outbox` on `pool`, publishing through `publisher`.
    pub fn new(outbox: Outbox, pool: PgPool, publisher: EventPublisher, config: RelayConfig) -> Self {
        let counters = Arc::new(Counters::new(&outbox.table().qualified_name()));
        Self {
            outbox,
            pool,
            publisher,
            config,
            counters,
        }
    }

    /// This relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Claims one batch, publishes it and deletes what the broker
    /// acknowledged; failures are recorded on their rows. Returns what it
    /// did (nothing claimed when no row is ready).
    pub async fn relay_once(&self) -> Result<BatchOutcome, Error> {
        let span = tracing::info_span!(
            "outbox_relay_batch",
            table = %self.outbox.table(),
            claimed = tracing::field::Empty,
            published = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        let outcome = self.relay_batch().instrument(span.clone()).await?;
        span.record("claimed", outcome.claimed);
        span.record("published", outcome.published);
        span.record("failed", outcome.failed);
        self.counters.add(&outcome);
        Ok(outcome)
    }

    /// Relays until no row is ready (rows backing off stay); returns the
    /// total. For tools and tests; services run [`start`](Self::start).
    /// The table's gauges are set at the end, as [`Outbox::stats`] does.
    pub async fn drain(&self) -> Result<BatchOutcome, Error> {
        let total = self.drain_rounds().await?;
        self.outbox.stats(&self.pool).await?;
        Ok(total)
    }

    async fn drain_rounds(&self) -> Result<BatchOutcome, Error> {
        let mut total = BatchOutcome::default();
        loop {
            let outcome = self.relay_once().await?;
            if outcome.claimed == 0 {
                return Ok(total);
            }
            total.claimed += outcome.claimed;
            total.published += outcome.published;
            total.failed += outcome.failed;
            total.parked += outcome.parked;
            total.broker_failed |= outcome.broker_failed;
            if outcome.published == 0 {
                // Everything failed: the rows back off; don't spin on them.
                return Ok(total);
            }
        }
    }

    /// Runs the relay on a task until [`RunningRelay::shutdown`]: woken by
    /// the enqueuers' notifications (when `listen` is on) and by the poll
    /// interval, backing off while the broker or the database fails.
    pub fn start(self) -> RunningRelay {
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::clone(&self.counters);
        let task = tokio::spawn(self.run(stopped));
        RunningRelay {
            counters,
            stop,
            task: Some(task),
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let _listener = self.config.listen.then(|| {
            ListenerTask(tokio::spawn(listen(
                self.pool.clone(),
                self.outbox.table().channel(),
                Arc::clone(&wake),
                self.config.clone(),
            )))
        });
        let mut failures = 0u32;
        let mut gauges = GaugeRefresh::default();
        loop {
            if *stopped.borrow() {
                return;
            }
            let round = self.relay_once().await;
            gauges.after(&self, round.as_ref().ok()).await;
            let pause = match round {
                Ok(outcome) if outcome.broker_failed || (outcome.claimed > 0 && outcome.published == 0) => {
                    failures = failures.saturating_add(1);
                    Some(self.config.backoff_after(failures))
                }
                Ok(outcome) => {
                    failures = 0;
                    // A full batch means more is probably waiting.
                    (outcome.claimed < self.config.batch_size).then_some(self.config.poll_interval)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause = self.config.backoff_after(failures);
                    tracing::warn!(%error, retry_in = ?pause, "outbox relay round failed");
                    Some(pause)
                }
            };
            let Some(pause) = pause else { continue };
            let woken = wake.notified();
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(pause) => {}
                // Notifications only cut the idle wait, not a back-off.
                () = woken, if failures == 0 => {}
            }
        }
    }

    async fn relay_batch(&self) -> Result<BatchOutcome, Error> {
        let sql = self.outbox.statements();
        let limit = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(db("begin a relay transaction"))?;
        let heads: Vec<String> = sqlx::query_scalar(&sql.claim_heads)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("claim outbox rows"))?;
        if heads.is_empty() {
            return Ok(BatchOutcome::default());
        }
        // The batch shared among the claimed entities, in order within each.
        let per_entity = self.config.batch_size.div_ceil(heads.len());
        let rows: Vec<(i64, String, String, i32)> = sqlx::query_as(&sql.claim_rows)
            .bind(&heads)
            .bind(i64::try_from(per_entity).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("read claimed outbox rows"))?;

        let mut outcome = BatchOutcome {
            claimed: rows.len(),
            ..BatchOutcome::default()
        };
        // Rows are in sequence order; once one of an entity's rows fails,
        // its later rows wait for the next round.
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut failures: Vec<Failure> = Vec::new();
        let mut decoded = Vec::with_capacity(rows.len());
        for (seq, key, json, attempts) in &rows {
            let record = KafkaRecord {
                key: None,
                headers: vec![(
                    "content-type".to_owned(),
                    STRUCTURED_CONTENT_TYPE.as_bytes().to_vec(),
                )],
                value: Some(json.clone().into_bytes()),
            };
            match decode(&record) {
                Ok(event) => decoded.push(((*seq, key.as_str(), *attempts), event)),
                Err(error) => {
                    blocked.insert(key);
                    failures.push(Failure::event(*seq, *attempts, &error, true));
                }
            }
        }
        // An entity whose row did not decode sends nothing after it.
        let (sent, events): (Vec<RowRef<'_>>, Vec<DomainEvent<Value>>) = decoded
            .into_iter()
            .filter(|((_, key, _), _)| !blocked.contains(key))
            .unzip();

        let results = self.publisher.publish_batch(&events).await;
        let mut acknowledged = Vec::new();
        let mut done = Vec::new();
        for (((seq, key, attempts), event), result) in sent.iter().zip(&events).zip(results) {
            match result {
                // Acknowledged is deleted, whatever happened to the entity's
                // other events: it is on the topic. (Within a partition, an
                // event never gets past a failed one of its entity: the
                // publisher fails those queued behind it.)
                Ok(published) => {
                    done.push(*seq);
                    acknowledged.push(Acknowledged {
                        event_id: event.id().clone(),
                        published,
                    });
                }
                // The entity's first failure is recorded; its later rows
                // stay as they are and go again behind it.
                Err(error) if blocked.insert(key) => match classify(&error) {
                    Kind::Waiting => {}
                    Kind::Broker => {
                        outcome.broker_failed = true;
                        failures.push(Failure::broker(*seq, &error));
                    }
                    Kind::Event { permanent } => {
                        failures.push(Failure::event(*seq, *attempts, &error, permanent));
                    }
                },
                Err(_) => {}
            }
        }
        if let Some(callback) = &self.config.on_acknowledged
            && !acknowledged.is_empty()
        {
            callback(&acknowledged);
        }

        if !done.is_empty() {
            sqlx::query(&sql.delete)
                .bind(&done)
                .execute(&mut *tx)
                .await
                .map_err(db("delete published outbox rows"))?;
        }
        for failure in &failures {
            let park = failure.park_now || failure.attempts_after >= self.config.max_attempts;
            let park = park && !failure.broker;
            let backoff = self.config.backoff_after(failure.attempts_after);
            sqlx::query(&sql.record_failure)
                .bind(failure.seq)
                .bind(&failure.error)
                .bind(f64::from(u32::try_from(backoff.as_millis()).unwrap_or(u32::MAX)))
                .bind(park)
                .execute(&mut *tx)
                .await
                .map_err(db("record a failed publish"))?;
            if park {
                outcome.parked += 1;
                tracing::error!(seq = failure.seq, error = %failure.error, "outbox event parked");
            } else {
                tracing::warn!(seq = failure.seq, error = %failure.error, retry_in = ?backoff, "outbox publish failed");
            }
        }
        tx.commit().await.map_err(db("commit a relay transaction"))?;
        outcome.published = done.len();
        outcome.failed = failures.len();
        Ok(outcome)
    }
}

/// When a running relay reads the table's figures into its gauges: when a
/// round found nothing to do after rows moved, else at most once per poll
/// interval (counting a large table on every busy round would cost more
/// than the rounds).
#[derive(Default)]
struct GaugeRefresh {
    last: Option<Instant>,
    moved: bool,
}

impl GaugeRefresh {
    async fn after(&mut self, relay: &OutboxRelay, outcome: Option<&BatchOutcome>) {
        let idle = outcome.is_some_and(|o| o.claimed == 0);
        self.moved |= outcome.is_none_or(|o| o.claimed > 0);
        let due = self
            .last
            .is_none_or(|last| last.elapsed() >= relay.config.poll_interval);
        if !(due || (idle && self.moved)) {
            return;
        }
        match relay.outbox.stats(&relay.pool).await {
            Ok(_) => {
                self.last = Some(Instant::now());
                self.moved = false;
            }
            Err(error) => tracing::warn!(%error, "outbox relay cannot read the outbox's figures"),
        }
    }
}

/// A claimed row being published: its sequence number, entity and attempts.
type RowRef<'a> = (i64, &'a str, i32);

/// How a failed publish is treated.
enum Kind {
    /// Not sent because an earlier event failed: retried with it.
    Waiting,
    /// The broker or the connection failed: back off, never park.
    Broker,
    /// This event failed by itself; `permanent` when retrying cannot help.
    Event { permanent: bool },
}

fn classify(error: &Error) -> Kind {
    match error {
        Error::EarlierBatchFailed { .. } => Kind::Waiting,
        Error::Encode(_) | Error::RecordTooLarge { .. } | Error::Config { .. } => {
            Kind::Event { permanent: true }
        }
        Error::TopicNotFound { .. } => Kind::Event { permanent: false },
        _ => Kind::Broker,
    }
}

struct Failure {
    seq: i64,
    error: String,
    attempts_after: u32,
    park_now: bool,
    broker: bool,
}

impl Failure {
    fn event(seq: i64, attempts: i32, error: &dyn std::error::Error, permanent: bool) -> Self {
        Self {
            seq,
            error: error_chain(error),
            attempts_after: u32::try_from(attempts).unwrap_or_default().saturating_add(1),
            park_now: permanent,
            broker: false,
        }
    }

    fn broker(seq: i64, error: &Error) -> Self {
        Self {
            seq,
            error: error_chain(error),
            attempts_after: 1,
            park_now: false,
            broker: true,
        }
    }
}

/// The error and its sources, for the row's `last_error`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Wakes the relay on every notification of its channel; reconnects after
/// losing the connection (the poll interval covers the gap).
async fn listen(pool: PgPool, channel: String, wake: Arc<Notify>, config: RelayConfig) {
    let mut failures = 0u32;
    loop {
        let result = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            // Rows committed before the LISTEN took effect are found by the
            // relay's next round.
            wake.notify_one();
            loop {
                listener.recv().await?;
                failures = 0;
                wake.notify_one();
            }
        }
        .await;
        let error: sqlx::Error = match result {
            Ok(()) => return,
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let pause = config.backoff_after(failures);
        tracing::warn!(%error, retry_in = ?pause, "outbox relay lost its LISTEN connection");
        tokio::time::sleep(pause).await;
    }
}

struct ListenerTask(JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A relay running on a task.
#[derive(Debug)]
pub struct RunningRelay {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RunningRelay {
    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Stops after the round in progress (whose acknowledged rows are still
    /// deleted), waits for it, and returns the final counters.
    pub async fn shutdown(mut self) -> RelayStats {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.counters.snapshot()
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
