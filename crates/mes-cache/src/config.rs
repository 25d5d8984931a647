//! [`CacheConfig`]: where Redis is and how the cache behaves.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mes_redact::{Secret, redact_url};

use crate::envelope::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::near::NearCache;

/// The URL used when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://localhost:6379";
/// The key namespace of the fleet: keys are `mes:cache:{prefix}:{id}`.
pub const DEFAULT_NAMESPACE: &str = "mes:cache";
/// The legacy default TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// How the client reconnects after losing its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectPolicy {
    /// Never reconnect: commands fail once the connection is gone.
    Never,
    /// Wait `delay` between attempts; `max_attempts == 0` means no limit.
    Constant {
        /// Pause between attempts.
        delay: Duration,
        /// Attempts before giving up; 0 for unlimited.
        max_attempts: u32,
    },
    /// Double the pause from `min_delay` up to `max_delay`; `max_attempts ==
    /// 0` means no limit.
    Exponential {
        /// First pause.
        min_delay: Duration,
        /// Longest pause.
        max_delay: Duration,
        /// Attempts before giving up; 0 for unlimited.
        max_attempts: u32,
    },
}

impl Default for ReconnectPolicy {
    /// Exponential from 100 ms to 10 s, unlimited attempts.
    fn default() -> Self {
        Self::Exponential {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 0,
        }
    }
}

/// The cache's configuration: a Redis URL plus behaviour, with chained
/// setters.
///
/// ```
/// use std::time::Duration;
/// use mes_cache::CacheConfig;
///
/// let config: CacheConfig = "redis://app:s3cret@redis.internal:6379/0".parse()?;
/// let config = config
///     .default_ttl(Duration::from_secs(600))
///     .command_timeout(Duration::from_secs(2))
///     .pool_size(4);
/// // Secrets never show up in Debug or Display.
/// assert!(!format!("{config:?} {config}").contains("s3cret"));
/// # Ok::<(), mes_cache::Error>(())
/// ```
///
/// URL forms (those of the `fred` client):
///
/// | deployment | URL |
/// |---|---|
/// | standalone | `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS (feature `tls`) |
/// | Cluster | `redis-cluster://[user:password@]host1:port1?node=host2:port2&node=…` |
/// | Sentinel | `redis-sentinel://[user:password@]host1:port1?node=host2:port2&sentinelServiceName=mymaster[&sentinelUsername=…&sentinelPassword=…]` |
#[derive(Clone)]
pub struct CacheConfig {
    pub(crate) url: Secret<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret<String>>,
    pub(crate) namespace: String,
    pub(crate) default_ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) pool_size: usize,
    pub(crate) scan_page_size: u32,
    pub(crate) batch_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tls_roots_pem: Option<Vec<u8>>,
    pub(crate) near_cache: Option<NearCache>,
    pub(crate) master_check_interval: Duration,
}

impl CacheConfig {
    /// A configuration for `url` with every default: namespace `mes:cache`,
    /// TTL 300 s, connect and command timeouts 5 s, exponential reconnect,
    /// a pool of 2 connections, SCAN pages of 1000 keys, batches of 1000
    /// commands per pipeline.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the URL cannot be parsed, or is
    /// `rediss://` without the `tls` feature.
    pub fn from_url(url: &str) -> Result<Self> {
        validate_url(url)?;
        Ok(Self::with_defaults(url))
    }

    /// Every setting at its default, for an already validated URL.
    fn with_defaults(url: &str) -> Self {
        Self {
            url: Secret::new(url.to_owned()),
            username: None,
            password: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            default_ttl: DEFAULT_TTL,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            master_check_interval: Duration::from_secs(1),
            reconnect: ReconnectPolicy::default(),
            pool_size: 2,
            scan_page_size: 1000,
            batch_size: 1000,
            clock: Arc::new(SystemClock),
            tls_roots_pem: None,
            near_cache: None,
        }
    }

    /// The configuration from `REDIS_URL`, or `redis://localhost:6379`
    /// when it is unset or empty.
    ///
    /// # Errors
    /// As [`CacheConfig::from_url`].
    pub fn from_env() -> Result<Self> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self::from_url(&url),
            _ => Self::from_url(DEFAULT_REDIS_URL),
        }
    }

    /// The prefix of every key, `mes:cache` by default (the legacy one).
    /// Give each test its own namespace to keep tests apart on a shared
    /// Redis.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// TTL of writes that do not give one (300 s by default). Whole seconds;
    /// a fraction is rounded up.
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long the first connection may take (5 s by default).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may take, including waiting for a reconnection
    /// (5 s by default).
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How often a Sentinel-managed cache asks the Sentinels which server is
    /// the master (1 s by default), and moves there when its connections
    /// are elsewhere: a switchover with the old master still up breaks no
    /// connection, and what is written to the old master until the
    /// Sentinels demote it is lost. Unused off a Sentinel.
    #[must_use]
    pub fn master_check_interval(mut self, every: Duration) -> Self {
        self.master_check_interval = every;
        self
    }

    /// How to reconnect after a lost connection.
    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Number of connections (2 by default; at least 1).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Username (Redis 6 ACL), overriding the one in the URL.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password, overriding the one in the URL. Never printed.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password.into()));
        self
    }

    /// `COUNT` of each `SCAN` page during invalidation and key counting
    /// (1000 by default): the most keys the client holds at once per node.
    #[must_use]
    pub fn scan_page_size(mut self, count: u32) -> Self {
        self.scan_page_size = count;
        self
    }

    /// Commands per pipeline in `set_many`, keys per `MGET` in `get_many`
    /// (1000 by default).
    #[must_use]
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// The clock for `cachedAt` and the expiry rule on read (the system
    /// clock by default; a [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Extra trusted root certificates (PEM) for `rediss://`, e.g. the
    /// company's internal CA, in addition to the system's (and those of
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`). Needs the `tls` feature to matter.
    #[must_use]
    pub fn tls_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots_pem = Some(pem.into());
        self
    }

    /// Keeps recently read entries in process memory too (the near cache,
    /// L1), kept right by Redis's invalidation messages: see [`NearCache`].
    /// Off by default.
    #[must_use]
    pub fn near_cache(mut self, near_cache: NearCache) -> Self {
        self.near_cache = Some(near_cache);
        self
    }

    /// The URL with any password replaced by `<redacted>`.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose())
    }

    /// The namespace keys are written under.
    pub fn namespace_str(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::config("pool_size must be at least 1"));
        }
        if self.scan_page_size == 0 || self.batch_size == 0 {
            return Err(Error::config("scan_page_size and batch_size must be at least 1"));
        }
        if self.default_ttl < Duration::from_secs(1) {
            return Err(Error::config("default_ttl must be at least one second"));
        }
        if self.namespace.is_empty() {
            return Err(Error::config("namespace must not be empty"));
        }
        if self.master_check_interval.is_zero() {
            return Err(Error::config("master_check_interval must not be zero"));
        }
        if let Some(near_cache) = &self.near_cache {
            near_cache.validate()?;
        }
        Ok(())
    }
}

impl Default for CacheConfig {
    /// `redis://localhost:6379` with every default (not `REDIS_URL`; see
    /// [`CacheConfig::from_env`]).
    fn default() -> Self {
        Self::with_defaults(DEFAULT_REDIS_URL)
    }
}

impl FromStr for CacheConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        Self::from_url(url)
    }
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("url", &self.redacted_url())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.default_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("master_check_interval", &self.master_check_interval)
            .field("reconnect", &self.reconnect)
            .field("pool_size", &self.pool_size)
            .field("scan_page_size", &self.scan_page_size)
            .field("batch_size", &self.batch_size)
            .field("clock", &self.clock)
            .field("tls_roots_pem", &self.tls_roots_pem.as_ref().map(Vec::len))
            .field("near_cache", &self.near_cache)
            .finish()
    }
}

impl fmt::Display for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (namespace {})", self.redacted_url(), self.namespace)
    }
}

/// Splits a `rediss…://` URL into the same URL without TLS and `true`:
/// fred's own TLS set-up (`ClientConfig::builder()`) panics when more than
/// one rustls crypto provider is compiled in, so the cache builds the TLS
/// configuration itself with an explicit provider.
fn without_tls(url: &str) -> (String, bool) {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("rediss") => {
            (format!("redis{}://{rest}", &scheme["rediss".len()..]), true)
        }
        _ => (url.to_owned(), false),
    }
}

fn validate_url(url: &str) -> Result<()> {
    let (plain, tls) = without_tls(url);
    if tls && !cfg!(feature = "tls") {
        return Err(Error::config(format!(
            "a {}:// URL needs mes-cache's `tls` feature",
            url.split("://").next().unwrap_or_default()
        )));
    }
    fred::types::config::Config::from_url(&plain)
        .map(drop)
        .map_err(|e| Error::InvalidConfig {
            reason: format!("cannot parse the Redis URL {}", redact_url(url)),
            source: Some(Box::new(e)),
        })
}

impl CacheConfig {
    /// fred's configuration: the URL, credentials and TLS.
    pub(crate) fn fred_config(&self) -> Result<fred::types::config::Config> {
        validate_url(self.url.expose())?;
        let (plain, tls) = without_tls(self.url.expose());
        let mut config = fred::types::config::Config::from_url(&plain).map_err(|e| Error::InvalidConfig {
            reason: format!("cannot parse the Redis URL {}", self.redacted_url()),
            source: Some(Box::new(e)),
        })?;
        if let Some(username) = &self.username {
            config.username = Some(username.clone());
        }
        if let Some(password) = &self.password {
            config.password = Some(password.expose().clone());
        }
        if tls {
            #[cfg(feature = "tls")]
            {
                config.tls = Some(rustls_config(self.tls_roots_pem.as_deref())?);
            }
        }
        Ok(config)
    }
}

/// TLS through rustls with the ring provider, trusting the system's roots
/// (or those of `SSL_CERT_FILE` / `SSL_CERT_DIR`).
#[cfg(feature = "tls")]
fn rustls_config(extra_pem: Option<&[u8]>) -> Result<fred::types::config::TlsConfig> {
    use fred::rustls;
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = extra_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::InvalidConfig {
                reason: "TLS: unreadable root certificate PEM".to_owned(),
                source: Some(Box::new(e)),
            })?;
            roots.add(cert).map_err(|e| Error::InvalidConfig {
                reason: "TLS: unusable root certificate".to_owned(),
                source: Some(Box::new(e)),
            })?;
        }
    }
    let native = fred::rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate rustls cannot use is skipped, like browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::config(
            "TLS: no trusted root certificate found (system store, SSL_CERT_FILE or SSL_CERT_DIR)",
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig {
            reason: "TLS: cannot set up rustls".to_owned(),
            source: Some(Box::new(e)),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(fred::types::config::TlsConnector::from(config).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_master_check_interval_is_refused() {
        let config = CacheConfig::default().master_check_interval(Duration::ZERO);
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("master_check_interval"), "{error}");
        assert!(CacheConfig::default().validate().is_ok());
    }

    #[test]
    fn debug_and_display_never_show_secrets() {
        let config = CacheConfig::from_url("redis://app:s3cret@localhost:6379")
            .unwrap()
            .password("other-secret");
        let shown = format!("{config:?} {config} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("other-secret"), "{shown}");
    }

    #[test]
    fn urls_parse_for_every_deployment() {
        for url in [
            "redis://localhost:6379",
            "redis://user:pw@localhost:6379/2",
            "redis-cluster://localhost:7000?node=localhost:7001&node=localhost:7002",
            "redis-sentinel://localhost:26379?node=localhost:26380&sentinelServiceName=mymaster",
        ] {
            let config: CacheConfig = url.parse().unwrap();
            assert_eq!(config.default_ttl, DEFAULT_TTL);
            assert_eq!(config.namespace, "mes:cache");
        }
        assert!(matches!(
            "not a url".parse::<CacheConfig>(),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn rediss_needs_the_tls_feature() {
        let parsed = CacheConfig::from_url("rediss://localhost:6380");
        assert_eq!(parsed.is_ok(), cfg!(feature = "tls"), "{parsed:?}");
    }
}
