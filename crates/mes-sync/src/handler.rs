//! Handlers: typed per event type, raw for types no enum knows.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mes_cache::CacheKeyPrefix;
use mes_events_types::{DomainEvent, EventPayload, EventType};
use serde_json::Value;
use tracing::debug;

use crate::error::BoxError;
use crate::sync::{BoundSync, CacheAction};

/// The error a handler returns; its `Display` becomes the dead letter's
/// reason when retries run out.
pub type HandlerError = BoxError;

/// Redis writes a handler asks for, applied atomically together with the
/// event's de-duplication mark and its partition's offset commit, and only
/// if this instance still owns the partition (its generation of the group).
///
/// That makes such effects happen exactly once per event id, even when the
/// consumer dies right after the handler: either all of them and the commit
/// happened, or none and the event is handled again. Side effects outside
/// this Redis (a database write, a call to another service) are at least
/// once; make them idempotent. In Redis Cluster mode the keys must share the
/// group's hash tag (`{group}`), since one script touches them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub(crate) ops: Vec<Effect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    HashIncrement { key: String, field: String, by: i64 },
    Set { key: String, value: String },
    Delete { key: String },
    ListPush { key: String, value: String },
}

impl Effects {
    /// No effects.
    pub const fn none() -> Self {
        Self { ops: Vec::new() }
    }

    /// `HINCRBY key field by`.
    #[must_use]
    pub fn hash_increment(mut self, key: impl Into<String>, field: impl Into<String>, by: i64) -> Self {
        self.ops.push(Effect::HashIncrement {
            key: key.into(),
            field: field.into(),
            by,
        });
        self
    }

    /// `SET key value`.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.ops.push(Effect::Set {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// `DEL key`.
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Effect::Delete { key: key.into() });
        self
    }

    /// `RPUSH key value`.
    #[must_use]
    pub fn list_push(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.ops.push(Effect::ListPush {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a handler's future ends with: [`Effects`] for a handler that cannot
/// fail (`on`), a `Result` for one that can (`try_on`). Both kinds are
/// registered, retried and dead-lettered by the same code; this is the one
/// place they differ.
pub(crate) trait HandlerOutput {
    fn into_result(self) -> Result<Effects, HandlerError>;
}

impl HandlerOutput for Effects {
    fn into_result(self) -> Result<Effects, HandlerError> {
        Ok(self)
    }
}

impl HandlerOutput for Result<Effects, HandlerError> {
    fn into_result(self) -> Result<Effects, HandlerError> {
        self
    }
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Effects, HandlerError>> + Send>>;

/// A handler over the raw event; typed handlers are wrapped into one.
pub(crate) type RawHandler = Arc<dyn Fn(DomainEvent<Value>) -> Result<HandlerFuture, Rejected> + Send + Sync>;

/// An event a typed handler cannot take: its data does not match the
/// payload type. Dead-lettered at once; retrying cannot help.
#[derive(Debug)]
pub(crate) struct Rejected(pub(crate) String);

/// What to do with one event: the cache actions its rules name and the
/// handler of its type. Made once per event, attempted once per try.
pub(crate) struct Plan {
    handler: Option<RawHandler>,
    actions: Vec<CacheAction>,
}

/// Why an attempt at an event failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// A cache rule or the handler failed; another attempt may succeed.
    Failed(HandlerError),
    /// The event's data does not match its handler's payload type;
    /// retrying cannot help.
    Rejected(String),
}

/// The handlers of a consumer, by event type.
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    pub(crate) by_type: HashMap<EventType, RawHandler>,
    pub(crate) unknown: Option<RawHandler>,
    pub(crate) extra_topics: Vec<String>,
    pub(crate) sync: Option<BoundSync>,
}

impl Handlers {
    pub(crate) fn typed<T, F, Fut>(&mut self, handler: F)
    where
        T: EventPayload + Send + 'static,
        F: Fn(DomainEvent<T>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let handler = Arc::new(handler);
        let raw: RawHandler = Arc::new(move |event: DomainEvent<Value>| {
            let typed = event.into_typed::<T>().map_err(|e| Rejected(e.to_string()))?;
            let future = handler(typed);
            Ok(Box::pin(async move { future.await.into_result() }) as HandlerFuture)
        });
        self.by_type.insert(T::EVENT_TYPE, raw);
    }

    pub(crate) fn raw<F, Fut>(&mut self, event_type: Option<EventType>, handler: F)
    where
        F: Fn(DomainEvent<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let raw: RawHandler = Arc::new(move |event: DomainEvent<Value>| {
            let future = handler(event);
            Ok(Box::pin(async move { future.await.into_result() }) as HandlerFuture)
        });
        match event_type {
            Some(t) => {
                self.by_type.insert(t, raw);
            }
            None => self.unknown = Some(raw),
        }
    }

    /// The handler of an event: its type's, else the catch-all for types
    /// no enum knows.
    pub(crate) fn for_type(&self, event_type: &EventType) -> Option<&RawHandler> {
        self.by_type.get(event_type).or_else(|| {
            (!event_type.is_known())
                .then_some(self.unknown.as_ref())
                .flatten()
        })
    }

    /// What to do with `event`: `Ok(None)` when no handler and no cache
    /// rule applies to it; `Err` with the reason when its data does not
    /// match the payload type a cache rule was declared for.
    pub(crate) fn plan(&self, event: &DomainEvent<Value>) -> Result<Option<Plan>, String> {
        let handler = self.for_type(event.event_type()).cloned();
        let actions = match &self.sync {
            Some(sync) => sync
                .rules
                .actions(event)
                .map_err(|reason| format!("payload does not match its type: {reason}"))?,
            None => Vec::new(),
        };
        if handler.is_none() && actions.is_empty() {
            return Ok(None);
        }
        Ok(Some(Plan { handler, actions }))
    }

    /// Applies the point invalidations of several events' plans at once,
    /// one `UNLINK` per cache prefix, and takes them out of the plans; their
    /// other actions stay. They only remove entries, so running one event's
    /// ahead of an earlier event's handler changes nothing a reader could
    /// tell, and an event later dead-lettered loses nothing by it. When
    /// Redis fails, the plans keep them: each event applies its own, retried.
    pub(crate) async fn invalidate_ahead(&self, plans: &mut [&mut Plan]) {
        let Some(sync) = &self.sync else { return };
        let mut by_prefix: HashMap<&CacheKeyPrefix, Vec<&str>> = HashMap::new();
        for plan in plans.iter() {
            for action in &plan.actions {
                if let CacheAction::Invalidate { prefix, id } = action {
                    by_prefix.entry(prefix).or_default().push(id);
                }
            }
        }
        if by_prefix.is_empty() {
            return;
        }
        for (prefix, ids) in by_prefix {
            if let Err(e) = sync.cache.invalidate_many(prefix, ids).await {
                debug!(error = %e, "cannot invalidate a run's entries at once; each event does its own");
                return;
            }
        }
        for plan in plans.iter_mut() {
            plan.actions
                .retain(|action| !matches!(action, CacheAction::Invalidate { .. }));
        }
    }

    /// One attempt at `event`: the cache rules first (idempotent, so
    /// repeating them on a retry is harmless), then the handler.
    pub(crate) async fn attempt(
        &self,
        plan: &Plan,
        event: &DomainEvent<Value>,
    ) -> Result<Effects, AttemptError> {
        if let Some(sync) = &self.sync
            && !plan.actions.is_empty()
        {
            sync.apply(&plan.actions).await.map_err(AttemptError::Failed)?;
        }
        match &plan.handler {
            None => Ok(Effects::none()),
            Some(handler) => match handler(event.clone()) {
                Ok(future) => future.await.map_err(AttemptError::Failed),
                Err(rejected) => Err(AttemptError::Rejected(format!(
                    "payload does not match its type: {}",
                    rejected.0
                ))),
            },
        }
    }

    /// The event types with a handler or a cache rule, and whether unknown
    /// types have one, for the start-up log.
    pub(crate) fn registered_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.by_type.keys().map(ToString::to_string).collect();
        types.extend(
            self.sync
                .iter()
                .flat_map(|s| s.rules.event_types())
                .map(|t| format!("{t} (cache rule)")),
        );
        if self.unknown.is_some() {
            types.push("(unknown types)".to_owned());
        }
        types.sort();
        types
    }

    /// Topics the registered types are published to, sorted, without repeats.
    pub(crate) fn topics(&self) -> Result<Vec<String>, mes_events_types::Error> {
        let mut topics = self.extra_topics.clone();
        for event_type in self.by_type.keys() {
            topics.push(event_type.topic()?);
        }
        for event_type in self.sync.iter().flat_map(|s| s.rules.event_types()) {
            topics.push(event_type.topic()?);
        }
        topics.sort();
        topics.dedup();
        Ok(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mes_events_types::PartUpdated;

    /// What the start-up log names: each handled type, and unknown types
    /// when they have a handler; the topics follow from them.
    #[test]
    fn registered_types_and_topics_follow_the_handlers() {
        let mut handlers = Handlers::default();
        handlers.typed(|_: DomainEvent<PartUpdated>| async { Effects::none() });
        assert_eq!(
            handlers.registered_types(),
            vec!["material.part.updated".to_owned()]
        );
        handlers.raw(None, |_: DomainEvent<Value>| async { Effects::none() });
        handlers.extra_topics.push("mes.maintenance.events".to_owned());
        assert_eq!(
            handlers.registered_types(),
            vec!["(unknown types)".to_owned(), "material.part.updated".to_owned()]
        );
        assert_eq!(
            handlers.topics().unwrap(),
            vec![
                "mes.maintenance.events".to_owned(),
                "mes.material.events".to_owned()
            ]
        );
    }
}
