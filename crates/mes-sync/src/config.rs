//! Configuration of an [`EventConsumer`](crate::EventConsumer).

use std::fmt;
use std::time::Duration;

use mes_kafka::KafkaConfig;
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
/// state, and how it shares partitions with the other instances of its
/// service.
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
/// .lease_ttl(Duration::from_secs(15));
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
    pub(crate) lease_ttl: Duration,
    pub(crate) max_concurrent_partitions: usize,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) dead_letter_topics: TopicSettings,
    pub(crate) member_id: String,
}

impl ConsumerConfig {
    /// A consumer of group `group_id` on the Kafka cluster `kafka` says how
    /// to reach (brokers, client id, TLS, SASL, timeouts; the dead letters
    /// are published with it too), keeping its offsets, leases and
    /// de-duplication marks in the Redis at `redis_url`.
    pub fn new(group_id: impl Into<String>, kafka: KafkaConfig, redis_url: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            kafka,
            redis_url: redis_url.into(),
            start: StartPosition::default(),
            retry: HandlerRetry::default(),
            dedup_window: Duration::from_secs(24 * 3600),
            lease_ttl: Duration::from_secs(10),
            max_concurrent_partitions: usize::MAX,
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            dead_letter_topics: TopicSettings {
                partitions: 1,
                replication: 1,
            },
            member_id: ulid::Ulid::new().to_string(),
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

    /// How long a partition lease lasts without renewal (default 10 s): the
    /// bound on how long a dead instance's partitions stay unread. Leases
    /// are renewed every third of it.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
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

    /// This instance's name in the group (default: a fresh ULID).
    #[must_use]
    pub fn member_id(mut self, id: impl Into<String>) -> Self {
        self.member_id = id.into();
        self
    }

    /// How often the partitions of the subscribed topics are read again
    /// (new partitions, new topics): every 30 s.
    pub(crate) fn metadata_max_age(&self) -> Duration {
        Duration::from_secs(30)
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

    /// This instance's name in the group.
    pub fn member(&self) -> &str {
        &self.member_id
    }
}

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("group_id", &self.group_id)
            .field("member_id", &self.member_id)
            .field("kafka", &self.kafka)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("start", &self.start)
            .field("retry", &self.retry)
            .field("dedup_window", &self.dedup_window)
            .field("lease_ttl", &self.lease_ttl)
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
