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

every_scenario!(Target::Sentinel);
near_scenarios!(Target::Sentinel);
