//! The cache through a Sentinel (`MES_TEST_REDIS_SENTINEL_URL`): the same
//! API and behaviour as with a direct connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Target;

scenarios!(Target::Sentinel;
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
