//! Test support for the MES shared crates' own suites. Not published.
//!
//! - The wire fixtures of the TypeScript services (`testdata/wire/`, a copy
//!   of the shared `wire/` folder) as typed values.
//! - The endpoints of the real services the suites talk to, from the
//!   environment `cargo xtask test` sets up. A missing service is a test
//!   failure with a message that says how to get it, never a skip.
//! - With the feature `containers`, a fallback for a laptop with Docker:
//!   [`redis_url`], [`kafka_brokers`] and [`postgres_url`] start a container
//!   (testcontainers) when their variable is unset, instead of failing:
//!
//!   ```sh
//!   cargo test -p mes-publisher --test publish --features mes-testkit/containers
//!   ```
//!
//!   | service | variable that wins | image (override: full reference `name[:tag]`) |
//!   |---|---|---|
//!   | Redis | `MES_TEST_REDIS_URL` | `redis:7.2-alpine` (`MES_TEST_REDIS_IMAGE`) |
//!   | Kafka | `MES_TEST_KAFKA_BROKERS` | `apache/kafka-native:3.8.0` (`MES_TEST_KAFKA_IMAGE`; a name ending in `tansu` runs tansu) |
//!   | PostgreSQL | `MES_TEST_DATABASE_URL` | `postgres:16-alpine` (`MES_TEST_POSTGRES_IMAGE`), database `test` |
//!
//!   `TESTCONTAINERS_HOST_OVERRIDE` names the address of the published
//!   ports when testcontainers' guess is wrong (it takes a machine with
//!   `/.dockerenv` for a container). `cargo xtask test --containers` sets
//!   all of this for a Docker engine and images of its own.
//!
//!   A container is started once and reused by the next test binaries and
//!   runs until it is stopped (stopping removes it): `docker stop $(docker
//!   ps -q --filter label=mes-testkit.service)`. Kafka needs a Docker daemon
//!   on this machine (the broker advertises `127.0.0.1`). The suites that
//!   need tansu itself, TLS brokers, a Redis Cluster, Sentinel or TLS
//!   server, the `redis-server` binary or Python still need `cargo xtask
//!   test`, and say so when run without it.
//! - With the feature `logs`, `logs::CapturedLogs`: what the code under
//!   test logged, for tests that assert a warning or a span.
//! - With the feature `metrics`, `metrics::recorded`: what the code under
//!   test recorded through the `metrics` facade.
//! - The pieces `cargo xtask` starts them from: [`tansu::TansuBroker`],
//!   [`tansu::TlsTansu`] (tansu behind a [`tls_proxy::TlsProxy`]) and the
//!   throwaway certificates of [`pki`].
//! - [`fault_proxy::FaultProxy`]: latency, cuts and blackholes between a
//!   client and a server, and [`netns::Jail`]: a process in a network
//!   namespace of its own, cut off from one address or from everything; for
//!   the fault scenarios (`cargo xtask faults`).
//! - [`redis::RedisServer`] and [`redis::RedisCluster`]: Redis servers of a
//!   test's own, to kill, restart, fail over (a Sentinel) or reshard.

#![allow(
    clippy::panic,
    clippy::print_stderr,
    reason = "a test kit fails the test that asked for a missing service with a panic saying how to get it, and says what it starts"
)]
#[cfg(feature = "containers")]
mod containers;
pub mod fault_proxy;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "logs")]
pub mod logs;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod netns;
pub mod pki;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redis;
pub mod tansu;
pub mod tls_proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// Folder of the wire fixtures.
pub fn wire_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wire")
}

/// A Kafka record as a legacy service wrote it (`testdata/wire/event-*.json`).
#[derive(Debug, Clone)]
pub struct WireRecordFixture {
    /// File name, e.g. `event-part-updated.json`.
    pub name: String,
    /// Topic it was written to.
    pub topic: String,
    /// Record key.
    pub key: String,
    /// Headers, all UTF-8.
    pub headers: BTreeMap<String, String>,
    /// Record value, the JSON text exactly as written.
    pub value: String,
}

impl WireRecordFixture {
    /// Loads one fixture by file name.
    ///
    /// # Panics
    /// If the file is missing or not shaped like a record fixture.
    pub fn load(name: &str) -> Self {
        let text = std::fs::read_to_string(wire_dir().join(name))
            .unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"));
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"));
        let field = |f: &str| {
            json.get(f)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("fixture {name} lacks string field {f}"))
                .to_owned()
        };
        let headers = json
            .get("headers")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("fixture {name} lacks headers"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        Self {
            name: name.to_owned(),
            topic: field("topic"),
            key: field("key"),
            headers,
            value: field("value"),
        }
    }

    /// Every record fixture (`event-*.json`), sorted by name.
    pub fn all() -> Vec<Self> {
        let mut names: Vec<String> = std::fs::read_dir(wire_dir())
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", wire_dir().display()))
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("event-") && n.ends_with(".json"))
            .collect();
        names.sort();
        names.iter().map(|n| Self::load(n)).collect()
    }
}

/// The rows of `testdata/wire/partitioner.json`: key, partition count, and
/// the partition kafkajs picks.
pub fn partitioner_rows() -> Vec<(String, u32, u32)> {
    let path = wire_dir().join("partitioner.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("partitioner.json: {e}"));
    let rows = json
        .get("rows")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("partitioner.json has no rows"));
    rows.iter()
        .map(|row| {
            let n = |f: &str| {
                row.get(f)
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or_else(|| panic!("partitioner row lacks {f}"))
            };
            let key = row
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (key, n("partitions"), n("partition"))
        })
        .collect()
}

/// The value of an environment variable that `cargo xtask test` sets.
///
/// # Panics
/// With a message that says how to provide it, when it is not set: a suite
/// without its service fails, it is never skipped.
pub fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set, so this test has no {what}. Run the suites with `cargo xtask test`, \
             which provides every service and sets it, or set {name} yourself."
        ),
    }
}

/// The Python interpreter with the independent CloudEvents SDK installed
/// (`MES_TEST_PYTHON`).
pub fn python() -> PathBuf {
    PathBuf::from(required_env(
        "MES_TEST_PYTHON",
        "Python interpreter with the `cloudevents` package",
    ))
}

/// The `node_modules` folder with kafkajs 2 (`MES_TEST_NODE_PATH`), for
/// the suites that run kafkajs group members beside ours; `cargo xtask
/// test` installs it from npm into its tools cache.
///
/// # Panics
/// When the variable is unset.
pub fn node_path() -> PathBuf {
    PathBuf::from(required_env(
        "MES_TEST_NODE_PATH",
        "node_modules folder with kafkajs 2",
    ))
}

/// The standalone Redis the suites share (`MES_TEST_REDIS_URL`), a
/// `redis://` URL; with the feature `containers`, a Redis container when the
/// variable is unset.
///
/// # Panics
/// When there is none, with a message that says how to get one.
pub fn redis_url() -> String {
    endpoint(Service::Redis)
}

/// The bootstrap brokers of the Kafka-protocol broker the suites share
/// (`MES_TEST_KAFKA_BROKERS`); with the feature `containers`, a Kafka
/// container when the variable is unset.
///
/// # Panics
/// When there is none, with a message that says how to get one.
pub fn kafka_brokers() -> String {
    endpoint(Service::Kafka)
}

/// The PostgreSQL database the suites share (`MES_TEST_DATABASE_URL`), a
/// `postgres://` URL; with the feature `containers`, a PostgreSQL container
/// when the variable is unset. Each suite works in a schema of its own.
///
/// # Panics
/// When there is none, with a message that says how to get one.
pub fn postgres_url() -> String {
    endpoint(Service::Postgres)
}

/// A service the suites share, which the feature `containers` can start.
#[derive(Debug, Clone, Copy)]
enum Service {
    Redis,
    Kafka,
    Postgres,
}

impl Service {
    /// The variable that gives its endpoint.
    fn variable(self) -> &'static str {
        match self {
            Self::Redis => "MES_TEST_REDIS_URL",
            Self::Kafka => "MES_TEST_KAFKA_BROKERS",
            Self::Postgres => "MES_TEST_DATABASE_URL",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Redis => "standalone Redis",
            Self::Kafka => "Kafka-protocol broker",
            Self::Postgres => "PostgreSQL database",
        }
    }
}

/// The service's variable when set; else, with the feature `containers`, its
/// container; else a panic that says how to get it.
fn endpoint(service: Service) -> String {
    let variable = service.variable();
    if let Some(value) = std::env::var(variable).ok().filter(|value| !value.is_empty()) {
        return value;
    }
    #[cfg(feature = "containers")]
    {
        containers::endpoint(service).unwrap_or_else(|error| {
            let docker = std::env::var("DOCKER_HOST").map_or_else(
                |_| "its default socket".to_owned(),
                |host| format!("DOCKER_HOST={host}"),
            );
            panic!(
                "{variable} is not set, and no {what} could be started in Docker (image \
                 {image}, which {image_variable} overrides; Docker at {docker}): {error}. \
                 Start Docker (or point DOCKER_HOST at it), set {variable} to a {what} the \
                 suites may use, or run the suites with `cargo xtask test`.",
                what = service.what(),
                image = containers::image(service),
                image_variable = containers::image_variable(service),
            )
        })
    }
    #[cfg(not(feature = "containers"))]
    panic!(
        "{variable} is not set, so this test has no {what}. Run the suites with \
         `cargo xtask test`, which provides every service and sets it; set {variable} yourself; \
         or, with Docker running, turn on the feature `mes-testkit/containers` to start one in \
         a container (e.g. `cargo test -p mes-publisher --features mes-testkit/containers`).",
        what = service.what(),
    )
}

/// The tansu binary, for suites that start and kill brokers of their own
/// (`MES_TEST_TANSU_BIN`).
pub fn tansu_binary() -> PathBuf {
    PathBuf::from(required_env("MES_TEST_TANSU_BIN", "tansu broker binary"))
}

/// The bootstrap brokers of a Kafka-protocol broker reachable only over TLS
/// (`MES_TEST_KAFKA_TLS_BROKERS`), its certificate signed by
/// [`kafka_tls_ca`] and naming the brokers' host (not its IP address).
pub fn kafka_tls_brokers() -> String {
    required_env("MES_TEST_KAFKA_TLS_BROKERS", "Kafka-protocol broker over TLS")
}

/// The bootstrap brokers of a Kafka-protocol broker over TLS that requires
/// a client certificate signed by [`kafka_tls_ca`]
/// (`MES_TEST_KAFKA_MTLS_BROKERS`).
pub fn kafka_mtls_brokers() -> String {
    required_env(
        "MES_TEST_KAFKA_MTLS_BROKERS",
        "Kafka-protocol broker requiring client certificates",
    )
}

/// The PEM file of the CA of the TLS brokers and of the client certificate
/// (`MES_TEST_KAFKA_TLS_CA`).
pub fn kafka_tls_ca() -> PathBuf {
    PathBuf::from(required_env("MES_TEST_KAFKA_TLS_CA", "CA of the TLS brokers"))
}

/// The client certificate and key (PEM files) the mTLS broker accepts
/// (`MES_TEST_KAFKA_TLS_CLIENT_CERT`, `MES_TEST_KAFKA_TLS_CLIENT_KEY`).
pub fn kafka_tls_client_cert() -> pki::Issued {
    pki::Issued {
        cert: PathBuf::from(required_env(
            "MES_TEST_KAFKA_TLS_CLIENT_CERT",
            "client certificate for the mTLS broker",
        )),
        key: PathBuf::from(required_env(
            "MES_TEST_KAFKA_TLS_CLIENT_KEY",
            "client key for the mTLS broker",
        )),
    }
}

// The workspace README's examples are compiled (and run, unless marked
// `no_run`) as doc tests of this crate, which has every crate at hand.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
