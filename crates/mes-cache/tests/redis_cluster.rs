//! The cache against a Redis Cluster of three masters
//! (`MES_TEST_REDIS_CLUSTER_URL`): keys spread over every slot and master.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Target;

every_scenario!(Target::Cluster);
near_scenarios!(Target::Cluster);
