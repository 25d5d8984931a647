//! The publisher's and the outbox relay's metrics through the `metrics`
//! facade (the table is in the crate docs).
//!
//! Handles are registered once per partition (when its topic is first
//! looked up) and once per outbox table; an error, which is rare, registers
//! its own.

#[cfg(feature = "outbox-postgres")]
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::error::Error;

pub(crate) const SENT: &str = "messaging.client.sent.messages";
pub(crate) const OPERATION_DURATION: &str = "messaging.client.operation.duration";
pub(crate) const BATCH_SIZE: &str = "mes.publisher.batch.size";
pub(crate) const QUEUED: &str = "mes.publisher.queued";
pub(crate) const ERRORS: &str = "mes.publisher.errors";
#[cfg(feature = "outbox-postgres")]
pub(crate) const OUTBOX_PENDING: &str = "mes.outbox.pending";
#[cfg(feature = "outbox-postgres")]
pub(crate) const OUTBOX_PARKED: &str = "mes.outbox.parked";
#[cfg(feature = "outbox-postgres")]
pub(crate) const OUTBOX_OLDEST_AGE: &str = "mes.outbox.oldest_pending_age";
#[cfg(feature = "outbox-postgres")]
pub(crate) const RELAY_BATCHES: &str = "mes.outbox.relay.batches";
#[cfg(feature = "outbox-postgres")]
pub(crate) const RELAY_PUBLISHED: &str = "mes.outbox.relay.published";
#[cfg(feature = "outbox-postgres")]
pub(crate) const RELAY_FAILED: &str = "mes.outbox.relay.failed";
#[cfg(feature = "outbox-postgres")]
pub(crate) const RELAY_PARKED: &str = "mes.outbox.relay.parked";

const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";
const OPERATION: &str = "messaging.operation.name";
const ERROR_TYPE: &str = "error.type";
#[cfg(feature = "outbox-postgres")]
const TABLE: &str = "mes.outbox.table";

/// The handles of one partition: its queue and its worker.
pub(crate) struct PartitionMetrics {
    pub(crate) sent: Counter,
    pub(crate) duration: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) queued: Gauge,
}

impl PartitionMetrics {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        let (topic, partition) = (topic.to_owned(), partition.to_string());
        Self {
            sent: counter!(SENT, TOPIC => topic.clone(), PARTITION => partition.clone()),
            duration: histogram!(OPERATION_DURATION, OPERATION => "send", TOPIC => topic.clone(), PARTITION => partition.clone()),
            batch_size: histogram!(BATCH_SIZE, TOPIC => topic.clone(), PARTITION => partition.clone()),
            queued: gauge!(QUEUED, TOPIC => topic, PARTITION => partition),
        }
    }
}

/// A publish that failed, counted by the kind of its error.
pub(crate) fn failed(error: &Error) {
    counter!(ERRORS, ERROR_TYPE => error_type(error)).increment(1);
}

/// The `error.type` label of a publisher error.
fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Config { .. } => "config",
        Error::Connect { .. } => "connect",
        Error::TlsSetup { .. } | Error::TlsHandshake { .. } => "tls",
        Error::Encode(_) => "encode",
        Error::TopicNotFound { .. } => "topic_not_found",
        Error::RecordTooLarge { .. } => "record_too_large",
        Error::Produce { .. } => "produce",
        Error::EarlierBatchFailed { .. } => "earlier_batch_failed",
        Error::Admin { .. } => "admin",
        Error::Outbox { .. } => "outbox",
        Error::Disconnected => "disconnected",
    }
}

/// One count kept for two readers: a relay's own figures (`stats()`) and the
/// metrics recorder, bumped by one call.
#[cfg(feature = "outbox-postgres")]
#[derive(Debug)]
pub(crate) struct Tally {
    local: AtomicU64,
    metric: Counter,
}

#[cfg(feature = "outbox-postgres")]
impl Tally {
    pub(crate) fn new(metric: Counter) -> Self {
        Self {
            local: AtomicU64::new(0),
            metric,
        }
    }

    pub(crate) fn add(&self, by: u64) {
        self.local.fetch_add(by, Ordering::Relaxed);
        self.metric.increment(by);
    }

    pub(crate) fn get(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }
}

/// A relay counter handle of an outbox table.
#[cfg(feature = "outbox-postgres")]
pub(crate) fn relay_counter(name: &'static str, table: &str) -> Counter {
    counter!(name, TABLE => table.to_owned())
}

/// The gauges of an outbox table, set whenever its figures are read.
#[cfg(feature = "outbox-postgres")]
#[derive(Debug, Clone)]
pub(crate) struct OutboxGauges {
    pub(crate) pending: Gauge,
    pub(crate) parked: Gauge,
    pub(crate) oldest_pending_age: Gauge,
}

#[cfg(feature = "outbox-postgres")]
impl OutboxGauges {
    pub(crate) fn new(table: &str) -> Self {
        Self {
            pending: gauge!(OUTBOX_PENDING, TABLE => table.to_owned()),
            parked: gauge!(OUTBOX_PARKED, TABLE => table.to_owned()),
            oldest_pending_age: gauge!(OUTBOX_OLDEST_AGE, TABLE => table.to_owned()),
        }
    }
}
