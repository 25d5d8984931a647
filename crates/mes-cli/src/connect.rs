//! Reaching Redis and Kafka: the libraries' settings from the environment,
//! the command line's flags over them, and bounded connects.

use mes_cache::{CacheConfig, ReconnectPolicy, ReferenceDataCache};
use mes_kafka::{KafkaClient, KafkaConfig, RetryPolicy};

use crate::cli::Global;
use crate::error::Error;

/// The Redis URL the cache connects to: `--redis-url`, else what
/// `CacheConfig::from_env` reads.
pub(crate) fn cache_config(global: &Global) -> Result<CacheConfig, Error> {
    let config = match &global.redis_url {
        Some(url) => CacheConfig::from_url(url),
        None => CacheConfig::from_env(),
    }
    .map_err(Error::CacheSettings)?;
    // One connection, no reconnecting: a tool fails at once and says why.
    Ok(config
        .namespace(global.namespace.clone())
        .connect_timeout(global.connect_timeout)
        .command_timeout(global.connect_timeout.max(std::time::Duration::from_secs(5)))
        .reconnect(ReconnectPolicy::Never)
        .pool_size(1))
}

/// The cache, connected within `--connect-timeout`.
pub(crate) async fn cache(global: &Global) -> Result<(ReferenceDataCache, String), Error> {
    let config = cache_config(global)?;
    let url = config.redacted_url();
    let cache = ReferenceDataCache::connect(config)
        .await
        .map_err(|source| Error::Cache {
            url: url.clone(),
            source,
        })?;
    Ok((cache, url))
}

/// `KafkaConfig::from_env` with `--brokers` over `KAFKA_BROKERS`, and
/// retries bounded by `--connect-timeout`.
pub(crate) fn kafka_config(global: &Global) -> Result<KafkaConfig, Error> {
    let mut config = KafkaConfig::from_env().map_err(Error::kafka("settings from the environment"))?;
    if let Some(brokers) = &global.brokers {
        config = config
            .bootstrap_brokers(brokers)
            .map_err(Error::kafka("--brokers"))?;
    }
    Ok(config
        .client_id("mes-cli")
        .connect_timeout(global.connect_timeout)
        .retry(RetryPolicy::default().max_total(global.connect_timeout)))
}

/// A client that reached a broker within `--connect-timeout`.
pub(crate) async fn kafka(global: &Global) -> Result<KafkaClient, Error> {
    let config = kafka_config(global)?;
    let brokers = config.brokers().join(",");
    KafkaClient::connect(config)
        .await
        .map_err(Error::kafka(format!("connect to {brokers}")))
}

/// The Redis URL of a consumer group's state for mes-sync: the same one the
/// cache uses.
pub(crate) fn state_redis_url(global: &Global) -> String {
    global
        .redis_url
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok().filter(|url| !url.is_empty()))
        .unwrap_or_else(|| mes_cache::DEFAULT_REDIS_URL.to_owned())
}
