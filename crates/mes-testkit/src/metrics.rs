//! What the code under test recorded through the `metrics` facade, seen
//! through `metrics-util`'s debugging recorder.
//!
//! The recorder is process-wide: [`recorded`] installs it once per test
//! binary and hands out a guard that keeps the binary's metrics tests one
//! at a time (a snapshot empties the counters and histograms of every test
//! in the process, so two at once would steal each other's counts).
//!
//! ```no_run
//! # async fn example() {
//! let metrics = mes_testkit::metrics::recorded().await;
//! // ... use the crate ...
//! let snapshot = metrics.snapshot();
//! assert_eq!(snapshot.counter("mes.cache.misses", &[("mes.cache.prefix", "part")]), 3);
//! # }
//! ```

use std::sync::OnceLock;

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::{Mutex, MutexGuard};

/// The recorder of this test binary, and the right to read it alone.
pub struct Recorded {
    snapshotter: &'static Snapshotter,
    _alone: MutexGuard<'static, ()>,
}

/// Installs the debugging recorder (once per process), waits for the other
/// metrics tests of this binary to end, and drops what they left.
pub async fn recorded() -> Recorded {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    static ALONE: Mutex<()> = Mutex::const_new(());
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        if recorder.install().is_err() {
            panic!("another metrics recorder is installed in this test binary");
        }
        snapshotter
    });
    let alone = ALONE.lock().await;
    drop(snapshotter.snapshot());
    Recorded {
        snapshotter,
        _alone: alone,
    }
}

impl Recorded {
    /// What was recorded since the last snapshot: counters and histograms
    /// are emptied by taking it (gauges keep their value), so take one per
    /// point where the test asserts.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }
}

/// The metrics recorded between two snapshots.
#[derive(Debug)]
pub struct Snapshot(Vec<(CompositeKey, DebugValue)>);

impl Snapshot {
    /// Each value of the metric `name` whose labels include `labels`.
    pub fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&DebugValue> {
        self.0
            .iter()
            .filter(|(key, _)| {
                key.key().name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, value)| value)
            .collect()
    }

    /// The sum of the counters `name` whose labels include `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.values(name, labels)
            .into_iter()
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The gauge `name` whose labels include `labels`; `None` when there is
    /// none, and a failure when there are several.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self.values(name, labels);
        assert!(
            values.len() <= 1,
            "{name} {labels:?} names {} gauges",
            values.len()
        );
        values.first().map(|v| match v {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        })
    }

    /// How many samples the histograms `name` whose labels include `labels`
    /// got.
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.values(name, labels)
            .into_iter()
            .map(|v| match v {
                DebugValue::Histogram(samples) => samples.len(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// The label names the metrics `name` carry (to check that no id is
    /// ever a label).
    pub fn label_names(&self, name: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(key, _)| key.key().name() == name)
            .flat_map(|(key, _)| key.key().labels().map(|l| l.key().to_owned()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
