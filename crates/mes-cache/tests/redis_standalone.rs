//! The cache against a real standalone Redis (`MES_TEST_REDIS_URL`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::Target;
use mes_cache::{CacheConfig, Error, ReconnectPolicy, ReferenceDataCache};

every_scenario!(Target::Standalone);
near_scenarios!(Target::Standalone);

#[tokio::test]
async fn connection_failure_is_an_error() {
    // A port nothing listens on: the first connection fails, typed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = CacheConfig::from_url(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::Never);
    let result = ReferenceDataCache::connect(config).await;
    assert!(matches!(result, Err(Error::Connect { .. })), "{result:?}");
}

#[tokio::test]
async fn wrong_password_is_a_connect_error_that_hides_the_password() {
    let url = mes_testkit::redis_url();
    let config = CacheConfig::from_url(&url)
        .unwrap()
        .username("nobody")
        .password("hunter2-secret")
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::Never);
    let shown = format!("{config:?} {config}");
    assert!(!shown.contains("hunter2"));
    let error = ReferenceDataCache::connect(config).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(!format!("{error:?} {error}").contains("hunter2"));
}
