//! The cache over TLS (`rediss://`, `MES_TEST_REDIS_TLS_URL`, its CA in
//! `MES_TEST_REDIS_TLS_CA`): rustls with the ring provider, same behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Target;

every_scenario!(Target::Tls);
near_scenarios!(Target::Tls);

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    use std::time::Duration;

    use mes_cache::{CacheConfig, Error, ReconnectPolicy, ReferenceDataCache};

    // Without the test CA among the trusted roots, the handshake must fail.
    let url = mes_testkit::required_env("MES_TEST_REDIS_TLS_URL", "Redis over TLS");
    let config = CacheConfig::from_url(&url)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .reconnect(ReconnectPolicy::Never);
    let result = ReferenceDataCache::connect(config).await;
    assert!(
        matches!(result, Err(Error::Connect { .. } | Error::InvalidConfig { .. })),
        "{result:?}"
    );
}
