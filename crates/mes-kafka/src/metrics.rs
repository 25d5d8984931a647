//! The Kafka client's metrics through the `metrics` facade (the table is in
//! the crate docs).
//!
//! Handles are registered once per connection and API, per producer and per
//! fetcher; only failures, which are rare, format their labels when they
//! happen.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use crate::error::Error;

pub(crate) const REQUESTS: &str = "mes.kafka.requests";
pub(crate) const REQUEST_DURATION: &str = "mes.kafka.request.duration";
pub(crate) const REQUEST_ERRORS: &str = "mes.kafka.request.errors";
pub(crate) const CONNECTIONS_OPENED: &str = "mes.kafka.connections.opened";
pub(crate) const CONNECTIONS_FAILED: &str = "mes.kafka.connections.failed";
pub(crate) const CONNECTIONS_BROKEN: &str = "mes.kafka.connections.broken";
pub(crate) const PRODUCER_BATCHES: &str = "mes.kafka.producer.batches";
pub(crate) const PRODUCER_RECORDS: &str = "mes.kafka.producer.records";
pub(crate) const PRODUCER_BYTES: &str = "mes.kafka.producer.bytes";
pub(crate) const PRODUCER_ERRORS: &str = "mes.kafka.producer.errors";
pub(crate) const PRODUCER_RETRIES: &str = "mes.kafka.producer.retries";
pub(crate) const FETCH_RECORDS: &str = "mes.kafka.fetch.records";
pub(crate) const FETCH_BYTES: &str = "mes.kafka.fetch.bytes";

const API: &str = "mes.kafka.api";
const BROKER: &str = "server.address";
const TOPIC: &str = "messaging.destination.name";
const PARTITION: &str = "messaging.destination.partition.id";
const ERROR_TYPE: &str = "error.type";

/// What kind of failure `error` is, as the `error.type` label: the Kafka
/// error code's name when the broker answered with one.
pub(crate) fn error_type(error: &Error) -> Cow<'static, str> {
    Cow::Borrowed(match error {
        Error::Broker { code, .. } => {
            return match code.name() {
                "an unlisted error" => Cow::Owned(code.0.to_string()),
                name => Cow::Borrowed(name),
            };
        }
        Error::Config { .. } => "config",
        Error::Connect { .. } => "connect",
        Error::NoBroker { .. } => "no_broker",
        Error::TlsSetup { .. } | Error::TlsHandshake { .. } => "tls",
        Error::Sasl { .. } => "sasl",
        Error::Io { .. } => "io",
        Error::Timeout { .. } => "timeout",
        Error::Decode { .. } => "decode",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::UnknownTopic { .. } => "unknown_topic",
    })
}

/// A connection attempt to `address` ended: counted as opened, or failed
/// with its error type.
pub(crate) fn connected<T>(address: &str, result: &Result<T, Error>) {
    match result {
        Ok(_) => counter!(CONNECTIONS_OPENED, BROKER => address.to_owned()).increment(1),
        Err(error) => {
            let kind = error_type(error);
            counter!(CONNECTIONS_FAILED, BROKER => address.to_owned(), ERROR_TYPE => kind).increment(1);
        }
    }
}

/// The counter of a connection breaking.
pub(crate) fn broken(address: &str) -> Counter {
    counter!(CONNECTIONS_BROKEN, BROKER => address.to_owned())
}

/// One API's handles on one connection.
struct ApiMetrics {
    api: &'static str,
    requests: Counter,
    duration: Histogram,
}

/// A connection's request handles, registered per API on its first use.
pub(crate) struct RequestMetrics {
    address: String,
    apis: Mutex<Vec<Arc<ApiMetrics>>>,
}

impl RequestMetrics {
    pub(crate) fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            apis: Mutex::new(Vec::new()),
        }
    }

    fn api(&self, api: &'static str) -> Arc<ApiMetrics> {
        let mut apis = self.apis.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = apis.iter().find(|m| m.api == api) {
            return Arc::clone(found);
        }
        let labels = [(API, api.to_owned()), (BROKER, self.address.clone())];
        let metrics = Arc::new(ApiMetrics {
            api,
            requests: counter!(REQUESTS, &labels),
            duration: histogram!(REQUEST_DURATION, &labels),
        });
        apis.push(Arc::clone(&metrics));
        metrics
    }

    /// A request of `api` went out and ended after `took`: answered, or
    /// failed with `error`.
    pub(crate) fn request(&self, api: &'static str, took: Duration, error: Option<&Error>) {
        let metrics = self.api(api);
        metrics.requests.increment(1);
        metrics.duration.record(took);
        if let Some(error) = error {
            counter!(REQUEST_ERRORS, API => api, BROKER => self.address.clone(), ERROR_TYPE => error_type(error))
                .increment(1);
        }
    }
}

/// A partition producer's handles.
pub(crate) struct ProducerMetrics {
    topic: String,
    pub(crate) batches: Counter,
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) retries: Counter,
}

impl ProducerMetrics {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        let labels = [(TOPIC, topic.to_owned()), (PARTITION, partition.to_string())];
        Self {
            topic: topic.to_owned(),
            batches: counter!(PRODUCER_BATCHES, &labels),
            records: counter!(PRODUCER_RECORDS, &labels),
            bytes: counter!(PRODUCER_BYTES, &labels),
            retries: counter!(PRODUCER_RETRIES, &labels),
        }
    }

    /// One attempt at a batch failed.
    pub(crate) fn failed(&self, error: &Error) {
        counter!(PRODUCER_ERRORS, TOPIC => self.topic.clone(), ERROR_TYPE => error_type(error)).increment(1);
    }
}

/// A partition fetcher's handles.
pub(crate) struct FetchMetrics {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
}

impl FetchMetrics {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        let labels = [(TOPIC, topic.to_owned()), (PARTITION, partition.to_string())];
        Self {
            records: counter!(FETCH_RECORDS, &labels),
            bytes: counter!(FETCH_BYTES, &labels),
        }
    }
}
