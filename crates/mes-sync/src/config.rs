//! Configuration of an [`EventConsumer`](crate::EventConsumer).

use std::fmt;
use std::time::Duration;

use mes_kafka::{GroupOptions, KafkaConfig};
use mes_publisher::{PublisherConfig, TopicSettings};
use mes_redact::redact_url;

/// Where a group starts reading a partition it has never committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartPosition {
    /// From the oldest record the broker keeps (the default: nothing the
    /// topic still holds is missed).
    #[default]
    Earliest,
    /// From the next record written after the group started.
    Latest,
}

/// How a failing handler is retried before its record is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerRetry {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for HandlerRetry {
    /// 5 attempts, back-off 100 ms doubling up to 10 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl HandlerRetry {
    /// Attempts in all, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Back-off before the second attempt; it doubles after each.
    #[must_use]
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Longest back-off.
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    pub(crate) fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// How an [`EventConsumer`](crate::EventConsumer) reads, where it keeps its
/// state, and how it takes part in its Kafka consumer group.
///
/// The group timings default to kafkajs's (session 30 s, rebalance 60 s,
/// heartbeat 3 s), so Rust and TypeScript instances of one service can share
/// a group with the same settings.
///
/// ```
/// use std::time::Duration;
/// use mes_sync::{ConsumerConfig, KafkaConfig, StartPosition};
///
/// let config = ConsumerConfig::new(
///     "work-order-service",
///     KafkaConfig::new(["kafka:9092"]),
///     "redis://redis:6379",
/// )
/// .start_position(StartPosition::Latest)
/// .session_timeout(Duration::from_secs(10));
/// assert_eq!(config.group_id(), "work-order-service");
/// ```
#[derive(Clone)]
pub struct ConsumerConfig {
    pub(crate) group_id: String,
    pub(crate) kafka: KafkaConfig,
    pub(crate) redis_url: String,
    pub(crate) start: StartPosition,
    pub(crate) retry: HandlerRetry,
    pub(crate) dedup_window: Duration,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) max_concurrent_partitions: usize,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) dead_letter_topics: TopicSettings,
}

impl ConsumerConfig {
    /// A consumer of group `group_id` on the Kafka cluster `kafka` says how
    /// to reach (brokers, client id, TLS, SASL, timeouts; the dead letters
    /// are published with it too), keeping its offsets, partition owners and
    /// de-duplication marks in the Redis at `redis_url`.
    pub fn new(group_id: impl Into<String>, kafka: KafkaConfig, redis_url: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            kafka,
            redis_url: redis_url.into(),
            start: StartPosition::default(),
            retry: HandlerRetry::default(),
            dedup_window: Duration::from_secs(24 * 3600),
            session_timeout: Duration::from_secs(30),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            max_concurrent_partitions: usize::MAX,
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            dead_letter_topics: TopicSettings {
                partitions: 1,
                replication: 1,
            },
        }
    }

    /// Where a partition the group never committed is read from.
    #[must_use]
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// How failing handlers are retried.
    #[must_use]
    pub fn handler_retry(mut self, retry: HandlerRetry) -> Self {
        self.retry = retry;
        self
    }

    /// How long an event id is remembered to skip redeliveries (default 24 h).
    #[must_use]
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// How long the group coordinator waits for a heartbeat before it drops
    /// this instance and gives its partitions to the others (default 30 s):
    /// the bound on how long a dead instance's partitions stay unread.
    ///
    /// An instance that cannot heartbeat stops committing before its session
    /// ends: its claim on each partition in Redis lapses by then.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout.max(Duration::from_millis(500));
        self
    }

    /// How long the coordinator waits for every member to rejoin during a
    /// rebalance (default 60 s). An instance finishes and commits its
    /// events in flight before it rejoins.
    #[must_use]
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// How often this instance heartbeats, renews its partition claims and
    /// mirrors its offsets to Kafka (default 3 s; keep it a third of the
    /// session timeout or less).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Partitions processed at the same time by this instance (default: all
    /// it holds).
    #[must_use]
    pub fn max_concurrent_partitions(mut self, partitions: usize) -> Self {
        self.max_concurrent_partitions = partitions.max(1);
        self
    }

    /// Most bytes one fetch returns (default 1 MiB).
    #[must_use]
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.fetch_max_bytes = bytes.max(1024);
        self
    }

    /// How long the broker holds a fetch open when there is nothing new
    /// (default 500 ms); also how quickly an idle partition notices shutdown.
    #[must_use]
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }

    /// Partitions and replication of dead-letter topics the consumer creates.
    #[must_use]
    pub fn dead_letter_topics(mut self, settings: TopicSettings) -> Self {
        self.dead_letter_topics = settings;
        self
    }

    /// The dead-letter publisher's configuration: the same connection
    /// settings, creating `{topic}.dlq` topics as needed.
    pub(crate) fn dead_letter_publisher(&self) -> PublisherConfig {
        PublisherConfig::with_kafka(self.kafka.clone()).auto_create_topics(self.dead_letter_topics)
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// How this instance joins its Kafka group, subscribed to `topics`.
    pub(crate) fn group_options(&self, topics: Vec<String>) -> GroupOptions {
        GroupOptions::new(self.group_id.clone(), topics)
            .session_timeout(self.session_timeout)
            .rebalance_timeout(self.rebalance_timeout)
            .heartbeat_interval(self.heartbeat_interval)
    }
}

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("group_id", &self.group_id)
            .field("kafka", &self.kafka)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("start", &self.start)
            .field("retry", &self.retry)
            .field("dedup_window", &self.dedup_window)
            .field("session_timeout", &self.session_timeout)
            .field("rebalance_timeout", &self.rebalance_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_attempt_up_to_the_cap() {
        let retry = HandlerRetry::default();
        assert_eq!(retry.backoff_before(2), Duration::from_millis(100));
        assert_eq!(retry.backoff_before(3), Duration::from_millis(200));
        assert_eq!(retry.backoff_before(30), Duration::from_secs(10));
    }

    #[test]
    fn debug_hides_the_redis_password() {
        let config = ConsumerConfig::new("g", KafkaConfig::new(["k:9092"]), "redis://app:s3cret@r:6379/0");
        let shown = format!("{config:?}");
        assert!(
            shown.contains("app:<redacted>@r:6379") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
