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

/// What a fault scenario promised and observed, for `cargo xtask faults`'
/// table.
///
/// Each scenario of `tests/faults*.rs` builds one [`faults::Report`], writes
/// it as JSON into `MES_FAULTS_REPORT` (a folder) when that is set, and then
/// asserts it: a broken invariant fails the test after its figures are
/// written, so the table shows what failed and by how much.
pub mod faults {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, PoisonError};

    use serde_json::{Value, json};

    /// Typed errors a scenario's load got, counted by variant (the name in
    /// their `Debug` form, never their message).
    #[derive(Debug, Default)]
    pub struct ErrorTally(Mutex<BTreeMap<String, u64>>);

    impl ErrorTally {
        /// Counts `error`; returns how many of its variant there are now.
        /// The first of each variant is printed with its causes.
        pub fn add(&self, error: &(impl std::error::Error + ?Sized)) -> u64 {
            let debug = format!("{error:?}");
            let variant = debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("?")
                .to_owned();
            let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let count = counts.entry(variant).or_default();
            *count += 1;
            #[allow(clippy::print_stdout, reason = "a scenario's log, read when it fails")]
            if *count == 1 {
                let mut causes = String::new();
                let mut source = error.source();
                while let Some(cause) = source {
                    causes.push_str(": ");
                    causes.push_str(&cause.to_string());
                    source = cause.source();
                }
                println!("first error of its kind: {error}{causes}");
            }
            *count
        }

        /// All errors counted.
        pub fn total(&self) -> u64 {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .sum()
        }

        /// `{"Variant": count, ...}`.
        pub fn to_json(&self) -> Value {
            json!(*self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    /// The variable naming the folder reports are written to.
    pub const REPORT_DIR: &str = "MES_FAULTS_REPORT";
    /// The variable choosing the scale: `full` for `cargo xtask faults`,
    /// anything else (or unset) for the short version `cargo xtask test`
    /// runs.
    pub const SCALE: &str = "MES_FAULTS_SCALE";

    /// Whether this is the full run.
    pub fn full() -> bool {
        std::env::var(SCALE).is_ok_and(|scale| scale == "full")
    }

    /// `short` or `full`, picked by [`full`].
    pub fn scaled<T>(short: T, full_scale: T) -> T {
        if full() { full_scale } else { short }
    }

    /// One promise of the library and what was observed of it.
    #[derive(Debug, Clone)]
    pub struct Invariant {
        name: String,
        promised: String,
        observed: Value,
        held: bool,
    }

    /// A scenario's figures.
    #[derive(Debug, Clone)]
    pub struct Report {
        scenario: String,
        fault: String,
        load: String,
        invariants: Vec<Invariant>,
        figures: serde_json::Map<String, Value>,
    }

    impl Report {
        /// A report for `scenario`: the `fault` injected and the `load` it ran under, in words.
        pub fn new(scenario: &str, fault: impl Into<String>, load: impl Into<String>) -> Self {
            Self {
                scenario: scenario.to_owned(),
                fault: fault.into(),
                load: load.into(),
                invariants: Vec::new(),
                figures: serde_json::Map::new(),
            }
        }

        /// A count that must be zero (events lost, double effects ...).
        pub fn none(&mut self, name: &str, observed: u64) -> &mut Self {
            self.check(name, "0", json!(observed), observed == 0)
        }

        /// An invariant with its own wording of the promise.
        pub fn check(&mut self, name: &str, promised: &str, observed: Value, held: bool) -> &mut Self {
            self.invariants.push(Invariant {
                name: name.to_owned(),
                promised: promised.to_owned(),
                observed,
                held,
            });
            self
        }

        /// A figure reported without a promise (throughput, recovery time,
        /// typed errors returned ...).
        pub fn figure(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
            self.figures.insert(name.to_owned(), value.into());
            self
        }

        /// The report as the JSON `cargo xtask faults` reads.
        pub fn to_json(&self) -> Value {
            let invariants: Vec<Value> = self
                .invariants
                .iter()
                .map(|i| json!({"name": i.name, "promised": i.promised, "observed": i.observed, "held": i.held}))
                .collect();
            json!({
                "scenario": self.scenario,
                "fault": self.fault,
                "load": self.load,
                "scale": if full() { "full" } else { "short" },
                "invariants": invariants,
                "figures": self.figures,
            })
        }

        /// Writes the report (when `MES_FAULTS_REPORT` is set), then fails
        /// if an invariant did not hold.
        ///
        /// # Panics
        /// When an invariant did not hold, or the report cannot be written.
        #[allow(clippy::panic, reason = "it is the assertion of a test")]
        pub fn finish(&self) {
            let json = self.to_json();
            if let Some(dir) = std::env::var_os(REPORT_DIR) {
                let path = std::path::Path::new(&dir).join(format!("{}.json", self.scenario));
                if let Err(e) =
                    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json.to_string()))
                {
                    panic!("cannot write {}: {e}", path.display());
                }
            }
            let broken: Vec<String> = self
                .invariants
                .iter()
                .filter(|i| !i.held)
                .map(|i| format!("{}: promised {}, observed {}", i.name, i.promised, i.observed))
                .collect();
            assert!(
                broken.is_empty(),
                "{}: {}\n{json:#}",
                self.scenario,
                broken.join("; ")
            );
        }
    }
}
