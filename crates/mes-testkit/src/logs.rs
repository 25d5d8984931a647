//! Feature `logs`: what the code under test logged through `tracing`, for
//! tests that assert a warning, a start-up line or a span.
//!
//! ```
//! let logs = mes_testkit::logs::CapturedLogs::default();
//! let _guard = logs.install();
//! tracing::warn!(topic = "mes.material.events", "binary mode");
//! let warnings = logs.events_at(tracing::Level::WARN);
//! assert_eq!(warnings[0].message, "binary mode");
//! assert_eq!(warnings[0].fields["topic"], "mes.material.events");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// One logged event: its level, target, message and other fields, each
/// field as `Debug` shows it (strings without quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The event's level.
    pub level: Level,
    /// The module (or explicit target) it was logged from.
    pub target: String,
    /// The `message` field: the text of `info!("...")`.
    pub message: String,
    /// Every other field, by name.
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Captured {
    span_names: Vec<String>,
    events: Vec<LogEvent>,
}

/// A `tracing` layer that keeps every span name and event; clones share
/// what they kept.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Captured>>);

impl CapturedLogs {
    /// Makes this the current thread's subscriber until the guard drops.
    /// A `#[tokio::test]` runs its tasks on its own thread, so it sees
    /// everything they log; a multi-threaded runtime's workers it does not.
    #[must_use = "the capture ends when the guard drops"]
    pub fn install(&self) -> DefaultGuard {
        tracing::subscriber::set_default(Registry::default().with(self.clone()))
    }

    /// The names of the spans created so far, in order.
    pub fn span_names(&self) -> Vec<String> {
        self.captured(|c| c.span_names.clone())
    }

    /// The events logged so far, in order.
    pub fn events(&self) -> Vec<LogEvent> {
        self.captured(|c| c.events.clone())
    }

    /// The events logged so far at `level`, in order.
    pub fn events_at(&self, level: Level) -> Vec<LogEvent> {
        self.captured(|c| c.events.iter().filter(|e| e.level == level).cloned().collect())
    }

    fn captured<T>(&self, read: impl FnOnce(&mut Captured) -> T) -> T {
        // A test that panicked while logging leaves what it kept readable.
        read(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Subscriber> Layer<S> for CapturedLogs {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let name = attrs.metadata().name().to_owned();
        self.captured(|c| c.span_names.push(name));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let logged = LogEvent {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message: fields.message,
            fields: fields.others,
        };
        self.captured(|c| c.events.push(logged));
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    others: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.keep(field, format!("{value:?}"));
    }
}

impl Fields {
    fn keep(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.insert(field.name().to_owned(), value);
        }
    }
}
