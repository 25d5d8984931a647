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

scenarios!(Target::Tls;
    set_get_and_envelope,
    typed_views_keep_types_apart,
    errors_are_not_misses,
    legacy_expiry_rule,
    get_many_and_set_many_across_slots,
    invalidation_escapes_ids,
    clear_all_stays_in_its_namespace,
    corrupt_values_are_counted_misses,
    single_flight,
    periodic_warming,
    warm_handle_stop,
    stats_and_health,
    close_ends_everything,
    legacy_fixtures_are_read,
    set_if_newer_never_goes_back,
);

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
