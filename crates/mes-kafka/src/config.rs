//! How to reach the brokers: [`KafkaConfig`], the one connection-settings
//! type of the publisher and the consumer.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use mes_redact::{REDACTED, Secret};

use crate::Error;

/// How to reach the Kafka brokers: bootstrap brokers, client id, TLS, SASL,
/// timeouts and retrying. The publisher's and the consumer's
/// configurations both carry one.
///
/// `Debug` never shows a password or private key material.
///
/// ```
/// use std::time::Duration;
/// use mes_kafka::{KafkaConfig, RetryPolicy};
///
/// let config = KafkaConfig::new(["kafka-1:9092", "kafka-2:9092"])
///     .client_id("material-service")
///     .request_timeout(Duration::from_secs(10))
///     .retry(RetryPolicy::default().retries(5));
/// assert_eq!(config.brokers(), ["kafka-1:9092", "kafka-2:9092"]);
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) brokers: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) sasl: Option<SaslCredentials>,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) metadata_max_age: Duration,
    pub(crate) max_answer_bytes: usize,
}

impl KafkaConfig {
    /// A configuration for these bootstrap brokers (`host:port`), with every
    /// other setting at its default.
    pub fn new<S: Into<String>>(brokers: impl IntoIterator<Item = S>) -> Self {
        Self {
            brokers: brokers.into_iter().map(Into::into).collect(),
            client_id: "mes-service".to_owned(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            sasl: None,
            tls: None,
            metadata_max_age: Duration::from_secs(300),
            max_answer_bytes: 128 * 1024 * 1024,
        }
    }

    /// The configuration the legacy services read from the environment:
    /// `KAFKA_BROKERS` (comma-separated, default `localhost:9092`),
    /// `KAFKA_CLIENT_ID` (default `mes-service`), and, when
    /// `KAFKA_SASL_USERNAME` is set, `KAFKA_SASL_PASSWORD` and
    /// `KAFKA_SASL_MECHANISM` (`plain`, `scram-sha-256` or `scram-sha-512`;
    /// default `plain`).
    ///
    /// TLS (feature `tls`) is on when `KAFKA_TLS` is `true` (or `1`), or
    /// when it is unset and any `KAFKA_TLS_*` variable below is set:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `KAFKA_TLS` | `true`/`1` or `false`/`0` |
    /// | `KAFKA_TLS_CA_FILE` | PEM file of the CA certificate(s) to trust instead of the system's roots |
    /// | `KAFKA_TLS_CERT_FILE`, `KAFKA_TLS_KEY_FILE` | PEM files of the client certificate (chain) and its private key, for brokers that require client certificates (mTLS); both or neither |
    /// | `KAFKA_TLS_SERVER_NAME` | the name the brokers' certificates are checked against, instead of each broker's host |
    ///
    /// `KAFKA_TLS=false` together with another `KAFKA_TLS_*` variable, and
    /// TLS without the `tls` feature, are [`Error::Config`]. The files are
    /// read when connecting.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub(crate) fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let brokers = var("KAFKA_BROKERS").unwrap_or_else(|| "localhost:9092".to_owned());
        let mut config: Self = brokers.parse()?;
        if let Some(client_id) = var("KAFKA_CLIENT_ID") {
            config.client_id = client_id;
        }
        if let Some(username) = var("KAFKA_SASL_USERNAME") {
            let mechanism = match var("KAFKA_SASL_MECHANISM") {
                None => SaslMechanism::Plain,
                Some(m) => m.parse()?,
            };
            let password = var("KAFKA_SASL_PASSWORD").ok_or_else(|| Error::Config {
                reason: "KAFKA_SASL_USERNAME is set but KAFKA_SASL_PASSWORD is not".to_owned(),
            })?;
            config.sasl = Some(SaslCredentials::new(mechanism, username, password));
        }
        config.tls = TlsSettings::from_vars(var)?;
        Ok(config)
    }

    /// Replaces the bootstrap brokers with a comma-separated `host:port`
    /// list (the form of `KAFKA_BROKERS`), keeping every other setting: a
    /// tool's `--brokers` over [`from_env`](Self::from_env)'s TLS and SASL.
    ///
    /// ```
    /// let config = mes_kafka::KafkaConfig::new(["a:9092"]).client_id("tool").bootstrap_brokers("b:9092, c:9093")?;
    /// assert_eq!((config.brokers(), config.get_client_id()), (&["b:9092".to_owned(), "c:9093".to_owned()][..], "tool"));
    /// # Ok::<(), mes_kafka::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list or an entry that is not
    /// `host:port`, as parsing a configuration.
    pub fn bootstrap_brokers(mut self, brokers: &str) -> Result<Self, Error> {
        let parsed: Self = brokers.parse()?;
        self.brokers = parsed.brokers;
        Ok(self)
    }

    /// The client id the broker sees (legacy `clientId`).
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// How failed requests are retried.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long opening a connection may take: TCP, TLS and SASL (default
    /// 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may wait for its answer, retries excluded
    /// (default 30 s). A fetch's own wait is added to it.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Authenticates with SASL.
    #[must_use]
    pub fn sasl(mut self, credentials: SaslCredentials) -> Self {
        self.sasl = Some(credentials);
        self
    }

    /// Connects to the brokers over TLS (feature `tls`; without it,
    /// connecting fails with [`Error::Config`]).
    #[must_use]
    pub fn tls(mut self, settings: TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// How long cluster metadata (leaders, partition counts) is trusted
    /// before it is read again (default 5 min, Kafka's
    /// `metadata.max.age.ms`). Leader errors refresh it at once.
    #[must_use]
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// Largest answer read from a broker (default 128 MiB); a larger size
    /// prefix is taken for a broken stream and closes the connection.
    #[must_use]
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes.max(1024);
        self
    }

    /// The bootstrap brokers.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// The client id.
    pub fn get_client_id(&self) -> &str {
        &self.client_id
    }

    /// The retry policy.
    pub fn get_retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The request timeout.
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The connect timeout.
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long cluster metadata is trusted.
    pub fn get_metadata_max_age(&self) -> Duration {
        self.metadata_max_age
    }

    /// Whether TLS is configured.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A comma-separated list of bootstrap brokers, as in `KAFKA_BROKERS`.
impl std::str::FromStr for KafkaConfig {
    type Err = Error;

    fn from_str(brokers: &str) -> Result<Self, Error> {
        let config = Self::new(brokers.split(',').map(str::trim).filter(|b| !b.is_empty()));
        if config.brokers.is_empty() {
            return Err(Error::Config {
                reason: "no broker named (expected host:port[,host:port...])".to_owned(),
            });
        }
        if let Some(bad) = config
            .brokers
            .iter()
            .find(|b| b.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
        {
            return Err(Error::Config {
                reason: format!("broker {bad:?} is not host:port"),
            });
        }
        Ok(config)
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .field("metadata_max_age", &self.metadata_max_age)
            .finish_non_exhaustive()
    }
}

/// How failed requests are retried.
///
/// Retrying is bounded by a span of time (the retry budget), not a number
/// of attempts, for produce batches and admin requests alike; the
/// policy turns `retries` into that span: the sum of the back-offs of that many
/// retries (100 ms, 200 ms, 400 ms, ... capped at `max_backoff`), capped by
/// `max_total`. With the defaults that is 8 retries within 25.5 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub(crate) retries: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_total: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Number of retries after the first attempt (default 8).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// First back-off (default 100 ms); each next one doubles.
    #[must_use]
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Longest single back-off (default 30 s).
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Upper bound of all retrying of one request (default 60 s).
    #[must_use]
    pub fn max_total(mut self, total: Duration) -> Self {
        self.max_total = total;
        self
    }

    /// The span within which a request is retried.
    pub fn retry_budget(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut backoff = self.initial_backoff;
        for _ in 0..self.retries {
            total = total.saturating_add(backoff.min(self.max_backoff));
            backoff = backoff.saturating_mul(2);
            if total >= self.max_total {
                break;
            }
        }
        total.min(self.max_total)
    }
}

/// SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// PLAIN (only over TLS in production).
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's SASL name (`PLAIN`, `SCRAM-SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "plain" => Ok(Self::Plain),
            "scram-sha-256" => Ok(Self::ScramSha256),
            "scram-sha-512" => Ok(Self::ScramSha512),
            other => Err(Error::Config {
                reason: format!("unknown SASL mechanism {other:?} (plain, scram-sha-256, scram-sha-512)"),
            }),
        }
    }
}

/// SASL user and password. `Debug` never shows the password.
#[derive(Clone)]
pub struct SaslCredentials {
    pub(crate) mechanism: SaslMechanism,
    pub(crate) username: String,
    pub(crate) password: Secret<String>,
}

impl SaslCredentials {
    /// Credentials for `mechanism`.
    pub fn new(mechanism: SaslMechanism, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            mechanism,
            username: username.into(),
            password: Secret::new(password.into()),
        }
    }
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How to connect over TLS: which certificate authorities to trust, the
/// client certificate for brokers that require one (mTLS), and the name the
/// brokers' certificates must carry.
///
/// By default the system's root certificates are trusted (the platform
/// store; on Linux also `SSL_CERT_FILE` / `SSL_CERT_DIR`) and each broker's
/// certificate must name the host it is reached at (the bootstrap host, then
/// the host the cluster metadata advertises). A CA given with
/// [`ca_file`](Self::ca_file) or [`ca_pem`](Self::ca_pem) is trusted
/// *instead of* the system's roots, like a Kafka truststore.
///
/// Files are read when the publisher connects; an unreadable file, a PEM
/// without certificate, or a key that does not match its certificate is
/// [`Error::TlsSetup`] before any connection is made, and a broker
/// certificate that fails verification ends the connect at once with
/// [`Error::TlsHandshake`]. `Debug` never shows private key material.
#[derive(Clone, Default)]
pub struct TlsSettings {
    pub(crate) ca: Option<Pem>,
    pub(crate) client: Option<(Pem, KeyPem)>,
    pub(crate) server_name: Option<String>,
}

/// PEM text, given inline or as a file read at connect time.
#[derive(Clone)]
pub(crate) enum Pem {
    File(PathBuf),
    Inline(Vec<u8>),
}

/// A private key's PEM: like [`Pem`], but `Debug` never shows inline bytes.
#[derive(Clone)]
pub(crate) struct KeyPem(pub(crate) Pem);

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
        }
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            Pem::Inline(_) => write!(f, "Inline({REDACTED})"),
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TlsSettings");
        match &self.ca {
            Some(ca) => debug.field("ca", ca),
            None => debug.field("ca", &"system roots"),
        };
        debug
            .field("client_cert", &self.client.as_ref().map(|(cert, _)| cert))
            .field("client_key", &self.client.as_ref().map(|(_, key)| key))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsSettings {
    /// TLS trusting the system's root certificates, without a client
    /// certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificate(s) of this PEM file (one or more
    /// `CERTIFICATE` blocks) instead of the system's roots.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Trusts the CA certificate(s) of this PEM text instead of the
    /// system's roots.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Inline(pem.into()));
        self
    }

    /// Presents this client certificate (PEM file: the certificate, then
    /// any intermediates) with its private key (PEM file: PKCS#8, PKCS#1 or
    /// SEC1) to brokers that ask for one (mTLS).
    #[must_use]
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client = Some((Pem::File(cert.into()), KeyPem(Pem::File(key.into()))));
        self
    }

    /// [`client_cert_files`](Self::client_cert_files) with the PEM text
    /// itself, e.g. from a secret store. `Debug` never shows the key.
    #[must_use]
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((Pem::Inline(cert.into()), KeyPem(Pem::Inline(key.into()))));
        self
    }

    /// Checks every broker's certificate against this DNS name (or IP
    /// address) instead of the host the broker is reached at: for brokers
    /// reached through addresses their certificates do not name, such as a
    /// load balancer or an IP address. The certificate is still verified
    /// against the trusted CAs.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The `KAFKA_TLS*` variables (see [`KafkaConfig::from_env`]).
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, Error> {
        const FILES: [&str; 4] = [
            "KAFKA_TLS_CA_FILE",
            "KAFKA_TLS_CERT_FILE",
            "KAFKA_TLS_KEY_FILE",
            "KAFKA_TLS_SERVER_NAME",
        ];
        let given: Vec<&str> = FILES.into_iter().filter(|name| var(name).is_some()).collect();
        let on = match var("KAFKA_TLS")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => !given.is_empty(),
            Some("true" | "1") => true,
            Some("false" | "0") if given.is_empty() => false,
            Some("false" | "0") => {
                return Err(Error::Config {
                    reason: format!("KAFKA_TLS is false but {} is set", given.join(" and ")),
                });
            }
            Some(other) => {
                return Err(Error::Config {
                    reason: format!("KAFKA_TLS is {other:?}; expected true, false, 1 or 0"),
                });
            }
        };
        if !on {
            return Ok(None);
        }
        if !cfg!(feature = "tls") {
            return Err(Error::Config {
                reason: "KAFKA_TLS asks for TLS, which needs the `tls` feature (of mes-kafka, or of the crate that depends on it)".to_owned(),
            });
        }
        let mut settings = Self::new();
        if let Some(ca) = var("KAFKA_TLS_CA_FILE") {
            settings = settings.ca_file(ca);
        }
        match (var("KAFKA_TLS_CERT_FILE"), var("KAFKA_TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => settings = settings.client_cert_files(cert, key),
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config {
                    reason: "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together: set both or neither"
                        .to_owned(),
                });
            }
        }
        if let Some(name) = var("KAFKA_TLS_SERVER_NAME") {
            settings = settings.server_name(name);
        }
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_brokers_replace_the_list_and_keep_the_rest() {
        let config = KafkaConfig::new(["a:1"])
            .client_id("tool")
            .sasl(SaslCredentials::new(SaslMechanism::Plain, "u", "p"))
            .bootstrap_brokers("b:2,c:3")
            .unwrap();
        assert_eq!(config.brokers(), ["b:2", "c:3"]);
        assert_eq!(config.get_client_id(), "tool");
        assert!(config.sasl.is_some());
        assert!(KafkaConfig::new(["a:1"]).bootstrap_brokers("").is_err());
        assert!(KafkaConfig::new(["a:1"]).bootstrap_brokers("no-port").is_err());
    }

    #[test]
    fn default_retry_budget_is_eight_doubling_backoffs_from_100ms() {
        assert_eq!(
            RetryPolicy::default().retry_budget(),
            Duration::from_millis(25_500)
        );
        assert_eq!(RetryPolicy::default().retries(0).retry_budget(), Duration::ZERO);
        let capped = RetryPolicy::default().max_total(Duration::from_secs(1));
        assert_eq!(capped.retry_budget(), Duration::from_secs(1));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let config = KafkaConfig::new(["b:9092"]).sasl(SaslCredentials::new(
            SaslMechanism::ScramSha512,
            "svc",
            "hunter2",
        ));
        let shown = format!("{config:?}");
        assert!(shown.contains("svc") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn debug_never_shows_a_private_key() {
        let key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let config = KafkaConfig::new(["b:9093"]).tls(
            TlsSettings::new()
                .ca_pem("-----BEGIN CERTIFICATE-----\n...")
                .client_cert_pem("-----BEGIN CERTIFICATE-----\n...", key),
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        assert!(shown.contains("client_key: Some(Inline(<redacted>))"), "{shown}");
        // A key file's path is no secret, and helps when it cannot be read.
        let files = TlsSettings::new().client_cert_files("/run/client.pem", "/run/client-key.pem");
        assert!(format!("{files:?}").contains("/run/client-key.pem"));
    }

    fn from_vars(vars: &[(&str, &str)]) -> Result<KafkaConfig, Error> {
        KafkaConfig::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn tls_from_the_environment() {
        assert!(from_vars(&[]).unwrap().tls.is_none());
        assert!(from_vars(&[("KAFKA_TLS", "false")]).unwrap().tls.is_none());
        let contradiction = from_vars(&[("KAFKA_TLS", "false"), ("KAFKA_TLS_CA_FILE", "/ca.pem")]);
        assert!(
            matches!(&contradiction, Err(Error::Config { reason }) if reason.contains("KAFKA_TLS_CA_FILE")),
            "{contradiction:?}"
        );
        assert!(matches!(
            from_vars(&[("KAFKA_TLS", "yes please")]),
            Err(Error::Config { .. })
        ));
        let half = from_vars(&[("KAFKA_TLS_CERT_FILE", "/c.pem")]);
        assert!(matches!(half, Err(Error::Config { .. })), "{half:?}");

        let on = from_vars(&[("KAFKA_TLS", "TRUE")]);
        let full = from_vars(&[
            ("KAFKA_TLS_CA_FILE", "/ca.pem"),
            ("KAFKA_TLS_CERT_FILE", "/c.pem"),
            ("KAFKA_TLS_KEY_FILE", "/k.pem"),
            ("KAFKA_TLS_SERVER_NAME", "kafka.mes.internal"),
        ]);
        if cfg!(feature = "tls") {
            let on = on.unwrap().tls.unwrap();
            assert!(on.ca.is_none() && on.client.is_none() && on.server_name.is_none());
            let full = full.unwrap().tls.unwrap();
            assert!(matches!(&full.ca, Some(Pem::File(p)) if p.to_str() == Some("/ca.pem")));
            assert!(
                matches!(&full.client, Some((Pem::File(_), KeyPem(Pem::File(k)))) if k.to_str() == Some("/k.pem"))
            );
            assert_eq!(full.server_name.as_deref(), Some("kafka.mes.internal"));
        } else {
            for without_feature in [on, full] {
                assert!(
                    matches!(&without_feature, Err(Error::Config { reason }) if reason.contains("`tls` feature")),
                    "{without_feature:?}"
                );
            }
        }
    }
}
