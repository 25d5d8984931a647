//! Publishes MES domain events to Kafka as CloudEvents.
//!
//! **Not implemented yet**: this crate reserves its name and place in the
//! workspace (see the workspace's ARCHITECTURE.md for what it will hold and
//! the open issue that builds it). It exports nothing.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none yet) | | |
