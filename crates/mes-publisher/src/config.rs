//! Configuration of an [`EventPublisher`](crate::EventPublisher).

use std::fmt;
use std::time::Duration;

use mes_events_types::{ContentMode, EncodeOptions};
use mes_kafka::{KafkaConfig, RetryPolicy, SaslCredentials, TlsSettings};

pub use mes_kafka::protocol::record_batch::Compression;

use crate::Error;

/// How a publisher connects and batches: the connection settings
/// ([`KafkaConfig`], shared with the consumer) and the publisher's own.
///
/// Defaults follow the legacy TypeScript publisher (kafkajs): 8 retries with
/// a first back-off of 100 ms, no compression; plus a 5 ms linger so events
/// published together travel in one request per partition, and the
/// idempotent producer (as the Java client since 3.0 and librdkafka).
///
/// ```
/// use std::time::Duration;
/// use mes_publisher::{PublisherConfig, RetryPolicy};
///
/// let config = PublisherConfig::new(["kafka-1:9092", "kafka-2:9092"])
///     .client_id("material-service")
///     .linger(Duration::from_millis(2))
///     .retry(RetryPolicy::default().retries(5));
/// assert_eq!(config.brokers(), ["kafka-1:9092", "kafka-2:9092"]);
/// ```
#[derive(Clone)]
pub struct PublisherConfig {
    pub(crate) kafka: KafkaConfig,
    pub(crate) linger: Duration,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_record_bytes: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) compression: Compression,
    pub(crate) encode: EncodeOptions,
    pub(crate) auto_create_topics: Option<TopicSettings>,
    pub(crate) idempotence: bool,
}

impl PublisherConfig {
    /// A configuration for these bootstrap brokers (`host:port`), with every
    /// other setting at its default.
    pub fn new<S: Into<String>>(brokers: impl IntoIterator<Item = S>) -> Self {
        Self::with_kafka(KafkaConfig::new(brokers))
    }

    /// A configuration with these connection settings, and the publisher's
    /// own at their defaults.
    pub fn with_kafka(kafka: KafkaConfig) -> Self {
        Self {
            kafka,
            linger: Duration::from_millis(5),
            max_batch_bytes: 512 * 1024,
            max_record_bytes: 1_000_000,
            queue_capacity: 10_000,
            compression: Compression::None,
            encode: EncodeOptions::default(),
            auto_create_topics: None,
            idempotence: true,
        }
    }

    /// The configuration the legacy services read from the environment:
    /// [`KafkaConfig::from_env`] (`KAFKA_BROKERS`, `KAFKA_CLIENT_ID`,
    /// `KAFKA_SASL_*`, `KAFKA_TLS*`).
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self::with_kafka(KafkaConfig::from_env()?))
    }

    /// The connection settings.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// Changes the connection settings.
    #[must_use]
    pub fn map_kafka(mut self, change: impl FnOnce(KafkaConfig) -> KafkaConfig) -> Self {
        self.kafka = change(self.kafka);
        self
    }

    /// The client id the broker sees (legacy `clientId`).
    #[must_use]
    pub fn client_id(self, client_id: impl Into<String>) -> Self {
        self.map_kafka(|k| k.client_id(client_id))
    }

    /// How failed requests are retried.
    #[must_use]
    pub fn retry(self, retry: RetryPolicy) -> Self {
        self.map_kafka(|k| k.retry(retry))
    }

    /// How long [`EventPublisher::connect`](crate::EventPublisher::connect)
    /// may take to reach a broker (default 10 s).
    #[must_use]
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.map_kafka(|k| k.connect_timeout(timeout))
    }

    /// How long one produce request may take, retries excluded (default 30 s,
    /// the broker's own acks=all timeout).
    #[must_use]
    pub fn request_timeout(self, timeout: Duration) -> Self {
        self.map_kafka(|k| k.request_timeout(timeout))
    }

    /// Authenticates with SASL.
    #[must_use]
    pub fn sasl(self, credentials: SaslCredentials) -> Self {
        self.map_kafka(|k| k.sasl(credentials))
    }

    /// Connects to the brokers over TLS (feature `tls`; without it,
    /// connecting fails with [`Error::Config`]).
    ///
    /// ```
    /// use mes_publisher::{PublisherConfig, TlsSettings};
    ///
    /// let config = PublisherConfig::new(["kafka-1.mes.internal:9093"]).tls(
    ///     TlsSettings::new()
    ///         .ca_file("/etc/mes/kafka-ca.pem")
    ///         .client_cert_files("/etc/mes/client.pem", "/etc/mes/client-key.pem"),
    /// );
    /// assert!(!format!("{config:?}").contains("BEGIN"));
    /// ```
    #[must_use]
    pub fn tls(self, settings: TlsSettings) -> Self {
        self.map_kafka(|k| k.tls(settings))
    }

    /// How long a topic's partition count is trusted before it is read
    /// again (default 5 min, Kafka's `metadata.max.age.ms`).
    #[must_use]
    pub fn metadata_max_age(self, age: Duration) -> Self {
        self.map_kafka(|k| k.metadata_max_age(age))
    }

    /// The idempotent producer (default on): each batch carries the
    /// producer id and a sequence number, so a batch retried after a lost
    /// answer is not written twice. Turn it off only for brokers without
    /// `InitProducerId` (Kafka before 0.11).
    #[must_use]
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// How long a partition waits for more events before it sends a batch
    /// (default 5 ms; zero sends what is queued at once).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Upper bound of one batch's uncompressed size (default 512 KiB).
    #[must_use]
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// Largest record the publisher sends (default 1,000,000 bytes, Kafka's
    /// default `max.message.bytes`); larger events fail before sending.
    #[must_use]
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Events queued per partition before `publish` waits (default 10,000).
    #[must_use]
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// Compression of record batches (default none, like the legacy services).
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Content mode of the records (default structured). Binary mode puts
    /// the data alone in the value, which **no TypeScript consumer of the
    /// fleet can read** (it finds no `id` in the value): use it only on
    /// topics that no legacy consumer reads. A publisher in binary mode says
    /// so once, as a warning, when it connects.
    #[must_use]
    pub fn content_mode(mut self, mode: ContentMode) -> Self {
        self.encode = self.encode.mode(mode);
        self
    }

    /// Whether the legacy `ce-*` headers are added (default yes, so legacy
    /// tooling keeps working).
    #[must_use]
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.encode = self.encode.legacy_headers(on);
        self
    }

    /// Creates a missing topic on first publish with these settings. Off by
    /// default: publishing to a missing topic is [`Error::TopicNotFound`].
    #[must_use]
    pub fn auto_create_topics(mut self, settings: TopicSettings) -> Self {
        self.auto_create_topics = Some(settings);
        self
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &[String] {
        self.kafka.brokers()
    }
}

impl fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("kafka", &self.kafka)
            .field("linger", &self.linger)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("compression", &self.compression)
            .field("encode", &self.encode)
            .field("auto_create_topics", &self.auto_create_topics)
            .field("idempotence", &self.idempotence)
            .finish_non_exhaustive()
    }
}

/// Partitions and replication of a topic the publisher creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: u16,
    /// Replication factor.
    pub replication: u16,
}

impl Default for TopicSettings {
    /// 6 partitions, replication 1.
    fn default() -> Self {
        Self {
            partitions: 6,
            replication: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mes_kafka::SaslMechanism;

    #[test]
    fn debug_never_shows_the_password() {
        let config = PublisherConfig::new(["b:9092"]).sasl(SaslCredentials::new(
            SaslMechanism::ScramSha512,
            "svc",
            "hunter2",
        ));
        let shown = format!("{config:?}");
        assert!(shown.contains("svc") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn connection_settings_are_the_kafka_configs() {
        let config = PublisherConfig::new(["b:9092"])
            .client_id("svc")
            .request_timeout(Duration::from_secs(3));
        assert_eq!(config.kafka().get_client_id(), "svc");
        assert_eq!(config.kafka().get_request_timeout(), Duration::from_secs(3));
        assert!(config.idempotence);
    }
}
