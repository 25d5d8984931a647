//! The in-process test double runs the same scenarios as Redis, so what a
//! service tests against it holds against Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Target;

every_scenario!(Target::Memory);
