//! What a consumer did, for operators.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::state::TopicPartition;

#[derive(Debug, Default)]
pub(crate) struct PartitionCounters {
    pub(crate) owned: AtomicBool,
    pub(crate) committed: AtomicI64,
    pub(crate) mirrored: AtomicI64,
    pub(crate) high_watermark: AtomicI64,
    pub(crate) handled: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) ignored: AtomicU64,
}

impl PartitionCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct StatsRegistry {
    partitions: Arc<Mutex<BTreeMap<TopicPartition, Arc<PartitionCounters>>>>,
    group: Arc<Mutex<GroupStats>>,
    changed: Arc<Notify>,
}

impl StatsRegistry {
    /// Wakes whoever waits for the figures to change.
    pub(crate) fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until `condition` holds for the figures; checks again after
    /// every commit and every change of ownership.
    pub(crate) async fn wait_for(&self, condition: impl Fn(&ConsumerStats) -> bool) -> ConsumerStats {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let stats = self.snapshot();
            if condition(&stats) {
                return stats;
            }
            notified.await;
        }
    }

    pub(crate) fn partition(&self, tp: &TopicPartition) -> Arc<PartitionCounters> {
        let mut partitions = self.partitions.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(partitions.entry(tp.clone()).or_default())
    }

    /// Updates the group figures and wakes whoever waits for them.
    pub(crate) fn group(&self, update: impl FnOnce(&mut GroupStats)) {
        update(&mut self.group.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed();
    }

    pub(crate) fn snapshot(&self) -> ConsumerStats {
        let group = self.group.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let partitions = self.partitions.lock().unwrap_or_else(PoisonError::into_inner);
        let partitions = partitions
            .iter()
            .map(|(tp, c)| {
                let committed = c.committed.load(Ordering::Relaxed);
                let high_watermark = c.high_watermark.load(Ordering::Relaxed);
                PartitionStats {
                    partition: tp.clone(),
                    owned: c.owned.load(Ordering::Relaxed),
                    committed_offset: committed,
                    kafka_committed_offset: c.mirrored.load(Ordering::Relaxed),
                    high_watermark,
                    lag: (high_watermark - committed).max(0),
                    handled: c.handled.load(Ordering::Relaxed),
                    retried: c.retried.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                    duplicates: c.duplicates.load(Ordering::Relaxed),
                    ignored: c.ignored.load(Ordering::Relaxed),
                }
            })
            .collect();
        ConsumerStats { partitions, group }
    }
}

/// One partition as this instance last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// The partition.
    pub partition: TopicPartition,
    /// Whether this instance is assigned the partition, holds its claim and
    /// reads it now (its start position is known: anything published from
    /// then on will be read).
    pub owned: bool,
    /// The next offset the group will read (what is committed in Redis).
    pub committed_offset: i64,
    /// The offset this instance last committed to Kafka for the group (0
    /// before any): what Kafka's tooling and lag exporters see. It follows
    /// `committed_offset` at each heartbeat.
    pub kafka_committed_offset: i64,
    /// The end of the partition's log at the last fetch.
    pub high_watermark: i64,
    /// Records not yet committed: `high_watermark - committed_offset`.
    pub lag: i64,
    /// Events whose handler succeeded.
    pub handled: u64,
    /// Handler attempts that failed and were retried.
    pub retried: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Redelivered events skipped by de-duplication.
    pub duplicates: u64,
    /// Events of types with no handler, committed without work.
    pub ignored: u64,
}

/// This instance's place in its Kafka consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The member id the coordinator gave this instance (empty before the
    /// first join).
    pub member_id: String,
    /// The generation this instance last joined (-1 before).
    pub generation_id: i32,
    /// Whether this instance led that generation (it assigned the
    /// partitions).
    pub leader: bool,
    /// Generations joined so far: each one is a rebalance.
    pub joins: u64,
    /// Topics some member of the group subscribes to that the leader does
    /// not: nobody is assigned their partitions, so nobody consumes them.
    /// Not empty means the fleet's instances disagree on their topics; it is
    /// also logged as an error on every join.
    pub subscription_gaps: Vec<String>,
    /// Topics assigned to this instance that it does not read (the leader
    /// subscribes to more than it does).
    pub unsubscribed: Vec<String>,
}

impl Default for GroupStats {
    fn default() -> Self {
        Self {
            member_id: String::new(),
            generation_id: -1,
            leader: false,
            joins: 0,
            subscription_gaps: Vec::new(),
            unsubscribed: Vec::new(),
        }
    }
}

/// Figures of a consumer instance: its group membership, and each
/// partition it has held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Every partition this instance has held, in order.
    pub partitions: Vec<PartitionStats>,
    /// Its membership of the Kafka consumer group.
    pub group: GroupStats,
}

impl ConsumerStats {
    /// Total lag over the partitions held now.
    pub fn lag(&self) -> i64 {
        self.partitions.iter().filter(|p| p.owned).map(|p| p.lag).sum()
    }

    /// Events handled, over all partitions.
    pub fn handled(&self) -> u64 {
        self.partitions.iter().map(|p| p.handled).sum()
    }

    /// Records dead-lettered, over all partitions.
    pub fn dead_lettered(&self) -> u64 {
        self.partitions.iter().map(|p| p.dead_lettered).sum()
    }

    /// Events of types with no handler, committed without work, over all
    /// partitions.
    pub fn ignored(&self) -> u64 {
        self.partitions.iter().map(|p| p.ignored).sum()
    }

    /// Redeliveries skipped, over all partitions.
    pub fn duplicates(&self) -> u64 {
        self.partitions.iter().map(|p| p.duplicates).sum()
    }

    /// Handler retries, over all partitions.
    pub fn retried(&self) -> u64 {
        self.partitions.iter().map(|p| p.retried).sum()
    }

    /// The partitions this instance holds now.
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|p| p.owned)
            .map(|p| p.partition.clone())
            .collect()
    }
}
