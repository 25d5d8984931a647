//! Support for the end-to-end suites: the environment protocol between a
//! test and the `sync-member` and `outbox-relay` processes it starts and
//! kills.

/// Names of the variables a test passes to `sync-member`.
pub mod env {
    /// Bootstrap brokers.
    pub const BROKERS: &str = "MES_E2E_BROKERS";
    /// Redis URL of the group's state.
    pub const REDIS: &str = "MES_E2E_REDIS";
    /// Consumer group.
    pub const GROUP: &str = "MES_E2E_GROUP";
    /// The event type to handle (its topic is read).
    pub const EVENT_TYPE: &str = "MES_E2E_EVENT_TYPE";
    /// This member's name in the test's output.
    pub const MEMBER: &str = "MES_E2E_MEMBER";
    /// Session timeout of the group membership, in milliseconds.
    pub const SESSION_MS: &str = "MES_E2E_SESSION_MS";
    /// PostgreSQL URL of the outbox (`outbox-relay`).
    pub const POSTGRES: &str = "MES_E2E_POSTGRES";
    /// The outbox table, `schema.table` (`outbox-relay`).
    pub const OUTBOX_TABLE: &str = "MES_E2E_OUTBOX_TABLE";
    /// After how many acknowledged batches `outbox-relay` stops dead.
    pub const HOLD_AFTER_BATCHES: &str = "MES_E2E_HOLD_AFTER_BATCHES";
}

/// The Redis key of the effects hash of a group (event id -> times applied).
pub fn effects_key(group: &str) -> String {
    format!("mes:sync:{{{group}}}:e2e:effects")
}

/// The Redis key of the list of sequence numbers applied for an entity.
pub fn order_key(group: &str, entity: &str) -> String {
    format!("mes:sync:{{{group}}}:e2e:order:{entity}")
}
