//! The consumer's metrics through the `metrics` facade (the table is in the
//! crate docs).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::state::TopicPartition;

pub(crate) const CONSUMED: &str = "messaging.client.consumed.messages";
pub(crate) const PROCESS_DURATION: &str = "messaging.process.duration";
pub(crate) const RETRIES: &str = "mes.consumer.retries";
pub(crate) const LAG: &str = "mes.consumer.lag";
pub(crate) const COMMIT_DURATION: &str = "mes.consumer.commit.duration";
pub(crate) const REBALANCES: &str = "mes.consumer.rebalances";
pub(crate) const SUBSCRIPTION_GAPS: &str = "mes.consumer.subscription_gaps";
pub(crate) const DIVERGED: &str = "mes.consumer.commits.diverged";

const GROUP: &str = "messaging.consumer.group.name";
const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";
const OUTCOME: &str = "mes.outcome";
const STORE: &str = "mes.store";
const REASON: &str = "mes.reason";

/// The handles of one partition, registered once when it is assigned.
pub(crate) struct PartitionMetrics {
    pub(crate) handled: Counter,
    pub(crate) duplicate: Counter,
    pub(crate) ignored: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) retries: Counter,
    pub(crate) lag: Gauge,
    pub(crate) process: Histogram,
    pub(crate) redis_commit: Histogram,
    pub(crate) diverged: Counter,
}

impl PartitionMetrics {
    pub(crate) fn new(group: &str, tp: &TopicPartition) -> Self {
        let (group, topic, partition) = (group.to_owned(), tp.topic.clone(), tp.partition.to_string());
        let consumed = |outcome: &'static str| counter!(CONSUMED, GROUP => group.clone(), TOPIC => topic.clone(), PARTITION => partition.clone(), OUTCOME => outcome);
        Self {
            handled: consumed("handled"),
            duplicate: consumed("duplicate"),
            ignored: consumed("ignored"),
            dead_lettered: consumed("dead_lettered"),
            retries: counter!(RETRIES, GROUP => group.clone(), TOPIC => topic.clone()),
            lag: gauge!(LAG, GROUP => group.clone(), TOPIC => topic.clone(), PARTITION => partition),
            process: histogram!(PROCESS_DURATION, GROUP => group.clone(), TOPIC => topic),
            redis_commit: histogram!(COMMIT_DURATION, GROUP => group.clone(), STORE => "redis"),
            diverged: counter!(DIVERGED, GROUP => group, TOPIC => tp.topic.clone()),
        }
    }
}

/// The handles of the group as a whole.
pub(crate) struct GroupMetrics {
    group: String,
    pub(crate) kafka_commit: Histogram,
    pub(crate) subscription_gaps: Gauge,
}

impl GroupMetrics {
    pub(crate) fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            kafka_commit: histogram!(COMMIT_DURATION, GROUP => group.to_owned(), STORE => "kafka"),
            subscription_gaps: gauge!(SUBSCRIPTION_GAPS, GROUP => group.to_owned()),
        }
    }

    pub(crate) fn rebalanced(&self, reason: &'static str) {
        counter!(REBALANCES, GROUP => self.group.clone(), REASON => reason).increment(1);
    }
}

/// A duration as the seconds a histogram records.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
