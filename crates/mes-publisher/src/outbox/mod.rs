//! The transactional outbox on PostgreSQL (feature `outbox-postgres`).
//!
//! A service writes its business change and the change's events in one
//! database transaction ([`Outbox::enqueue`], or
//! [`Outbox::publish_transactional`] which mirrors the legacy
//! `publishTransactional(events, dbCallback)`); both commit or neither does.
//! An [`OutboxRelay`] then publishes committed events through an
//! [`EventPublisher`](crate::EventPublisher) and deletes each row only after
//! the broker acknowledged it, so an event is published at least once; the
//! consumer's de-duplication by event id makes it once end to end.
//!
//! # Order
//!
//! One entity's events reach Kafka in the order their transactions
//! committed:
//!
//! - `enqueue` takes a transaction-scoped advisory lock per entity before
//!   inserting, so two transactions writing events for one entity serialise
//!   from the enqueue to the commit, and the one that commits later has the
//!   higher sequence number;
//! - a relay publishes an entity's rows only while it holds the entity's
//!   oldest row locked (`FOR UPDATE SKIP LOCKED`); other relays skip that
//!   entity, so several relays share the work without reordering it;
//! - a parked event holds back the later events of its entity until it is
//!   re-queued: publishing them first would reorder the entity's history.
//!
//! Kafka orders events within a partition only, so that is what the order
//! above means on the wire: an entity's events on one topic. Events of one
//! entity that are published in one round to different topics are
//! independent; one failing does not stop the other.

mod relay;
mod table;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mes_events_types::{ContentMode, DomainEvent, EncodeOptions, Timestamp, encode};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

pub use relay::{Acknowledged, BatchOutcome, OutboxRelay, RelayConfig, RelayStats, RunningRelay};
pub use table::OutboxTable;

use crate::Error;
use crate::metrics::OutboxGauges;
use table::Statements;

/// The future a [`Outbox::publish_transactional`] closure returns: it
/// borrows the transaction's connection.
pub type TransactionWork<'c, R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'c>>;

/// Writes events into the outbox table, inside the caller's transaction, and
/// reports on the table. Cheap to clone.
///
/// ```no_run
/// use mes_events_types::{DomainEvent, PartDeleted, Timestamp};
/// use mes_publisher::{Outbox, OutboxTable};
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), mes_publisher::Error> {
/// let outbox = Outbox::new(OutboxTable::default());
/// outbox.migrate(&pool).await?;
///
/// let event = DomainEvent::new(
///     "material-service",
///     PartDeleted { part_id: "P-1".into(), part_number: "N-1".into(), deleted_at: Timestamp::now() },
/// )
/// .with_entity("Part", "P-1");
/// // The delete and its event commit together, or neither happens.
/// outbox
///     .publish_transactional(&pool, &[event], |tx| {
///         Box::pin(async move {
///             sqlx::query("DELETE FROM parts WHERE id = $1").bind("P-1").execute(&mut *tx).await
///                 .map_err(|e| mes_publisher::Error::Outbox { what: "delete part".into(), source: e.into() })?;
///             Ok::<_, mes_publisher::Error>(())
///         })
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    table: OutboxTable,
    sql: Arc<Statements>,
    max_event_bytes: usize,
    gauges: OutboxGauges,
}

/// What the outbox table holds now, for dashboards and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Events waiting to be published (not parked).
    pub pending: u64,
    /// Events parked after failing; see [`Outbox::parked`].
    pub parked: u64,
    /// How long the oldest pending event has waited; `None` when none waits.
    pub oldest_pending_age: Option<Duration>,
}

/// An event the relays gave up on, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The entity (partition key) whose later events wait behind it.
    pub partition_key: String,
    /// Publish attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// When it was enqueued.
    pub enqueued_at: Option<Timestamp>,
    /// When it was parked.
    pub parked_at: Option<Timestamp>,
}

/// Which parked events [`Outbox::requeue`] puts back in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Every parked event.
    All,
    /// The parked events with these ids.
    Events(Vec<String>),
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(OutboxTable::default())
    }
}

impl Outbox {
    /// The outbox in `table`.
    pub fn new(table: OutboxTable) -> Self {
        let sql = Arc::new(Statements::new(&table));
        let gauges = OutboxGauges::new(&table.qualified_name());
        Self {
            table,
            sql,
            max_event_bytes: 1_000_000,
            gauges,
        }
    }

    /// The largest event (its structured JSON) `enqueue` accepts; default
    /// 1,000,000 bytes, the publisher's and Kafka's default record limit.
    /// Refusing it in the business transaction beats parking it later.
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// The table.
    pub fn table(&self) -> &OutboxTable {
        &self.table
    }

    /// Creates the table and its indexes if missing (the SQL of
    /// [`OutboxTable::migration_sql`]); safe to run from several processes
    /// at once.
    pub async fn migrate(&self, pool: &PgPool) -> Result<(), Error> {
        let mut tx = pool.begin().await.map_err(db("begin the migration"))?;
        // CREATE ... IF NOT EXISTS races with itself; one migration at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("mes-outbox-migrate:{}", self.table))
            .execute(&mut *tx)
            .await
            .map_err(db("lock the migration"))?;
        sqlx::raw_sql(&self.table.migration_sql())
            .execute(&mut *tx)
            .await
            .map_err(db("create the outbox table"))?;
        tx.commit().await.map_err(db("commit the migration"))
    }

    /// Writes `events` to the outbox on `connection`, which should be inside
    /// the transaction of the business change they describe: they are
    /// published once it commits, and never if it rolls back. Events that
    /// cannot be encoded or are larger than
    /// [`max_event_bytes`](Self::max_event_bytes) are refused before
    /// anything is written.
    ///
    /// Holds a lock per entity until the transaction ends, so concurrent
    /// transactions writing events for one entity commit one after the
    /// other, in the order their events will be published.
    #[tracing::instrument(name = "outbox_enqueue", skip_all, fields(events = events.len(), table = %self.table))]
    pub async fn enqueue<T: Serialize>(
        &self,
        connection: &mut PgConnection,
        events: &[DomainEvent<T>],
    ) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = OutboxRows::encode(events, self.max_event_bytes)?;
        sqlx::query(&self.sql.lock_and_notify)
            .bind(&rows.keys)
            .bind(self.table.qualified_name())
            .bind(self.table.channel())
            .execute(&mut *connection)
            .await
            .map_err(db("lock the events' entities"))?;
        sqlx::query(&self.sql.insert)
            .bind(&rows.ids)
            .bind(&rows.types)
            .bind(&rows.topics)
            .bind(&rows.keys)
            .bind(&rows.events)
            .execute(&mut *connection)
            .await
            .map_err(|e| {
                let what = if is_unique_violation(&e) {
                    "insert the events: an event with one of these ids is already in the outbox"
                } else {
                    "insert the events"
                };
                db(what)(e)
            })?;
        Ok(())
    }

    /// Runs `work` and enqueues `events` in one transaction, and commits
    /// both, or rolls both back when `work` or the enqueue fails; the
    /// counterpart of the legacy `publishTransactional(events, dbCallback)`,
    /// except that here the two are atomic.
    ///
    /// `work` runs first, so the locks of the business change are taken
    /// before the outbox's entity locks, in every transaction alike.
    pub async fn publish_transactional<T, R, E, F>(
        &self,
        pool: &PgPool,
        events: &[DomainEvent<T>],
        work: F,
    ) -> Result<R, E>
    where
        T: Serialize,
        E: From<Error>,
        F: for<'c> FnOnce(&'c mut PgConnection) -> TransactionWork<'c, R, E>,
    {
        let mut tx = pool.begin().await.map_err(db("begin the transaction"))?;
        // On an early return the transaction is dropped, which rolls it back.
        let result = work(&mut tx).await?;
        self.enqueue(&mut tx, events).await?;
        tx.commit().await.map_err(db("commit the transaction"))?;
        Ok(result)
    }

    /// Counts pending and parked events and the age of the oldest pending,
    /// and sets the table's gauges (`mes.outbox.*`) to what it read; a
    /// running relay calls it as it polls.
    pub async fn stats(&self, pool: &PgPool) -> Result<OutboxStats, Error> {
        let (pending, parked, oldest_ms): (i64, i64, Option<i64>) = sqlx::query_as(&self.sql.stats)
            .fetch_one(pool)
            .await
            .map_err(db("read the outbox stats"))?;
        let stats = OutboxStats {
            pending: u64::try_from(pending).unwrap_or_default(),
            parked: u64::try_from(parked).unwrap_or_default(),
            oldest_pending_age: oldest_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or_default())),
        };
        #[allow(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        {
            self.gauges.pending.set(stats.pending as f64);
            self.gauges.parked.set(stats.parked as f64);
        }
        self.gauges
            .oldest_pending_age
            .set(stats.oldest_pending_age.unwrap_or_default());
        Ok(stats)
    }

    /// The parked events, oldest first, at most `limit`.
    pub async fn parked(&self, pool: &PgPool, limit: u32) -> Result<Vec<ParkedEvent>, Error> {
        type Row = (String, String, String, i32, String, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(&self.sql.parked)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db("list the parked events"))?;
        let time = |ms: Option<i64>| ms.and_then(|ms| Timestamp::from_unix_millis(ms).ok());
        Ok(rows
            .into_iter()
            .map(
                |(event_id, event_type, partition_key, attempts, last_error, enqueued, parked)| ParkedEvent {
                    event_id,
                    event_type,
                    partition_key,
                    attempts: u32::try_from(attempts).unwrap_or_default(),
                    last_error,
                    enqueued_at: time(enqueued),
                    parked_at: time(parked),
                },
            )
            .collect())
    }

    /// Puts parked events back in line with their attempts reset; returns
    /// how many. Their last error stays visible until they are published.
    pub async fn requeue(&self, pool: &PgPool, which: Requeue) -> Result<u64, Error> {
        let done = match which {
            Requeue::All => sqlx::query(&self.sql.requeue_all).execute(pool).await,
            Requeue::Events(ids) => sqlx::query(&self.sql.requeue_ids).bind(ids).execute(pool).await,
        };
        Ok(done.map_err(db("re-queue parked events"))?.rows_affected())
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.sql
    }
}

/// Column arrays for one multi-row insert.
struct OutboxRows {
    ids: Vec<String>,
    types: Vec<String>,
    topics: Vec<String>,
    keys: Vec<String>,
    events: Vec<String>,
}

impl OutboxRows {
    /// Rows hold the event as the structured CloudEvents JSON the codec
    /// writes (what legacy consumers read too), so the relay publishes it in
    /// whatever mode its publisher is configured for.
    fn encode<T: Serialize>(events: &[DomainEvent<T>], max_bytes: usize) -> Result<Self, Error> {
        let options = EncodeOptions::default()
            .mode(ContentMode::Structured)
            .legacy_headers(false);
        let mut rows = Self {
            ids: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            topics: Vec::with_capacity(events.len()),
            keys: Vec::with_capacity(events.len()),
            events: Vec::with_capacity(events.len()),
        };
        for event in events {
            let topic = event.topic().map_err(Error::Encode)?;
            let record = encode(event, &options).map_err(Error::Encode)?;
            let json = record
                .value
                .and_then(|value| String::from_utf8(value).ok())
                .ok_or_else(|| Error::Config {
                    reason: "the codec wrote a structured record without a UTF-8 value".to_owned(),
                })?;
            if json.len() > max_bytes {
                return Err(Error::RecordTooLarge {
                    topic,
                    size: json.len(),
                    limit: max_bytes,
                });
            }
            rows.ids.push(event.id().as_str().to_owned());
            rows.types.push(event.event_type().to_string());
            rows.topics.push(topic);
            rows.keys.push(event.partition_key().to_owned());
            rows.events.push(json);
        }
        Ok(rows)
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

/// Wraps a database error with what was being done.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Outbox {
        what: what.to_owned(),
        source: Box::new(source),
    }
}
