//! Cache sync rules as data: which cache entries an event makes stale.

use std::collections::HashMap;
use std::sync::Arc;

use mes_cache::{CacheKeyPrefix, ReferenceDataCache, escape_glob};
use mes_events_types::{
    DomainEvent, EventPayload, EventType, PartDeleted, PartUpdated, PersonnelUpdated, ProductUpdated,
    UserDeleted, UserUpdated, WorkCenterUpdated,
};
use serde_json::Value;

use crate::handler::HandlerError;

/// What one rule asks of the cache for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheAction {
    /// Remove `{prefix}:{id}`.
    Invalidate { prefix: CacheKeyPrefix, id: String },
    /// Remove every key matching the glob (ids already escaped).
    Pattern(String),
    /// Write `{prefix}:{id}` unless it holds data of a newer event.
    Refresh {
        prefix: CacheKeyPrefix,
        id: String,
        value: Value,
        version: String,
    },
}

type Rule = Arc<dyn Fn(&DomainEvent<Value>) -> Result<Vec<CacheAction>, String> + Send + Sync>;

/// The version a refresh writes into the envelope: the event's time (zero
/// padded milliseconds, so versions sort as strings) then its id, so the
/// later of two events wins, and of two at the same millisecond the one with
/// the greater id.
pub(crate) fn event_version(event: &DomainEvent<Value>) -> String {
    format!("{:013}-{}", event.time().unix_millis().max(0), event.id())
}

/// Rules that keep a service's cached copies in sync with the events of
/// the fleet, declared once instead of written into every handler.
///
/// A consumer given rules applies them to each matching event before its
/// handler runs, retried like the handler; they only remove entries, so
/// applying them again after a redelivery is harmless.
///
/// ```
/// use mes_cache::CacheKeyPrefix;
/// use mes_events_types::PartUpdated;
/// use mes_sync::CacheSync;
///
/// let rules = CacheSync::new()
///     .invalidate::<PartUpdated>(CacheKeyPrefix::Part, |p| &p.part_id)
///     // work orders cache entries keyed `work_order:{workOrderId}:{partId}`
///     .invalidate_pattern::<PartUpdated>("work_order:*:{}", |p| &p.part_id);
/// assert_eq!(rules.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct CacheSync {
    rules: HashMap<EventType, Vec<Rule>>,
}

impl std::fmt::Debug for CacheSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<&str> = self.rules.keys().map(EventType::as_str).collect();
        types.sort_unstable();
        f.debug_struct("CacheSync")
            .field("event_types", &types)
            .field("rules", &self.len())
            .finish()
    }
}

impl CacheSync {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rules for the fleet's reference data:
    ///
    /// | event | removes |
    /// |---|---|
    /// | `material.part.updated`, `material.part.deleted` | `part:{partId}`, `work_order:*:{partId}` |
    /// | `resource.workcenter.updated` | `work_center:{workCenterId}`, `work_center:{workCenterCode}` |
    /// | `resource.product.updated` | `product:{productId}`, `product:{productCode}` |
    /// | `resource.personnel.updated` | `user:{userId}` |
    /// | `auth.user.updated`, `auth.user.deleted` | `user:{userId}` |
    pub fn fleet() -> Self {
        Self::new()
            .invalidate::<PartUpdated>(CacheKeyPrefix::Part, |p| &p.part_id)
            .invalidate_pattern::<PartUpdated>("work_order:*:{}", |p| &p.part_id)
            .invalidate::<PartDeleted>(CacheKeyPrefix::Part, |p| &p.part_id)
            .invalidate_pattern::<PartDeleted>("work_order:*:{}", |p| &p.part_id)
            .invalidate::<WorkCenterUpdated>(CacheKeyPrefix::WorkCenter, |w| &w.work_center_id)
            .invalidate::<WorkCenterUpdated>(CacheKeyPrefix::WorkCenter, |w| &w.work_center_code)
            .invalidate::<ProductUpdated>(CacheKeyPrefix::Product, |p| &p.product_id)
            .invalidate::<ProductUpdated>(CacheKeyPrefix::Product, |p| &p.product_code)
            .invalidate::<PersonnelUpdated>(CacheKeyPrefix::User, |p| &p.user_id)
            .invalidate::<UserUpdated>(CacheKeyPrefix::User, |u| &u.user_id)
            .invalidate::<UserDeleted>(CacheKeyPrefix::User, |u| &u.user_id)
    }

    /// On every `T` event, remove the entry `{prefix}:{id(payload)}`.
    #[must_use]
    pub fn invalidate<T: EventPayload + 'static>(
        self,
        prefix: CacheKeyPrefix,
        id: impl Fn(&T) -> &str + Send + Sync + 'static,
    ) -> Self {
        self.rule::<T>(move |payload| {
            vec![CacheAction::Invalidate {
                prefix: prefix.clone(),
                id: id(payload).to_owned(),
            }]
        })
    }

    /// On every `T` event, remove every entry matching `pattern` (a Redis
    /// glob after the namespace) with its `{}` replaced by `id(payload)`,
    /// escaped: an id like `P-1*` matches only itself.
    #[must_use]
    pub fn invalidate_pattern<T: EventPayload + 'static>(
        self,
        pattern: &str,
        id: impl Fn(&T) -> &str + Send + Sync + 'static,
    ) -> Self {
        let pattern = pattern.to_owned();
        self.rule::<T>(move |payload| {
            vec![CacheAction::Pattern(
                pattern.replace("{}", &escape_glob(id(payload))),
            )]
        })
    }

    /// On every `T` event, write `value(payload)` to `{prefix}:{id(payload)}`
    /// with the event's time and id as the envelope's `version`, unless the
    /// entry already holds the data of a newer event (compared atomically in
    /// Redis): an event handled late never overwrites a newer one's data.
    #[must_use]
    pub fn refresh<T: EventPayload + 'static, V: serde::Serialize>(
        mut self,
        prefix: CacheKeyPrefix,
        id: impl Fn(&T) -> &str + Send + Sync + 'static,
        value: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Self {
        let rule: Rule = Arc::new(move |event: &DomainEvent<Value>| {
            let payload = T::deserialize(event.data()).map_err(|e| e.to_string())?;
            let value = serde_json::to_value(value(&payload)).map_err(|e| e.to_string())?;
            Ok(vec![CacheAction::Refresh {
                prefix: prefix.clone(),
                id: id(&payload).to_owned(),
                value,
                version: event_version(event),
            }])
        });
        self.rules.entry(T::EVENT_TYPE).or_default().push(rule);
        self
    }

    fn rule<T: EventPayload + 'static>(
        mut self,
        actions: impl Fn(&T) -> Vec<CacheAction> + Send + Sync + 'static,
    ) -> Self {
        let rule: Rule = Arc::new(move |event: &DomainEvent<Value>| {
            let payload = T::deserialize(event.data()).map_err(|e| e.to_string())?;
            Ok(actions(&payload))
        });
        self.rules.entry(T::EVENT_TYPE).or_default().push(rule);
        self
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn event_types(&self) -> impl Iterator<Item = &EventType> {
        self.rules.keys()
    }

    /// The actions for an event; an error when its data does not match
    /// the payload type a rule was declared for.
    pub(crate) fn actions(&self, event: &DomainEvent<Value>) -> Result<Vec<CacheAction>, String> {
        let mut actions = Vec::new();
        for rule in self.rules.get(event.event_type()).into_iter().flatten() {
            actions.extend(rule(event)?);
        }
        Ok(actions)
    }
}

/// Rules bound to the cache they act on.
#[derive(Clone)]
pub(crate) struct BoundSync {
    pub(crate) cache: ReferenceDataCache,
    pub(crate) rules: CacheSync,
}

impl BoundSync {
    pub(crate) async fn apply(&self, actions: &[CacheAction]) -> Result<(), HandlerError> {
        for action in actions {
            match action {
                CacheAction::Invalidate { prefix, id } => {
                    self.cache.invalidate(prefix, id).await?;
                }
                CacheAction::Pattern(pattern) => {
                    self.cache.invalidate_pattern(pattern).await?;
                }
                CacheAction::Refresh {
                    prefix,
                    id,
                    value,
                    version,
                } => {
                    // `false`: a newer event's data is there already.
                    self.cache.set_if_newer(prefix, id, value, None, version).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mes_events_types::PartFields;

    #[test]
    fn ids_are_escaped_in_patterns_and_rules_follow_their_type() {
        let rules = CacheSync::fleet();
        let event = DomainEvent::new(
            "material-service",
            PartUpdated {
                part_id: "P-1*".into(),
                part_number: "N".into(),
                part_name: "Strut".into(),
                revision: None,
                changes: PartFields::default(),
                previous_values: None,
            },
        )
        .into_raw()
        .unwrap();
        assert_eq!(
            rules.actions(&event).unwrap(),
            [
                CacheAction::Invalidate {
                    prefix: CacheKeyPrefix::Part,
                    id: "P-1*".into()
                },
                CacheAction::Pattern(r"work_order:*:P-1\*".into()),
            ]
        );
        let unrelated = DomainEvent::new_raw(EventType::parse("x.y").unwrap(), "s", Value::Null);
        assert_eq!(rules.actions(&unrelated).unwrap(), []);
    }

    fn renamed(name: &str, at_ms: i64) -> DomainEvent<Value> {
        DomainEvent::new(
            "material-service",
            PartUpdated {
                part_id: "P-1".into(),
                part_number: "N-1".into(),
                part_name: name.into(),
                revision: None,
                changes: PartFields::default(),
                previous_values: None,
            },
        )
        .with_time(mes_events_types::Timestamp::from_unix_millis(at_ms).unwrap())
        .into_raw()
        .unwrap()
    }

    #[tokio::test]
    async fn a_late_older_event_never_overwrites_a_newer_refresh() {
        let cache = ReferenceDataCache::in_memory(mes_cache::CacheConfig::default()).unwrap();
        let sync = BoundSync {
            cache: cache.clone(),
            rules: CacheSync::new().refresh::<PartUpdated, _>(
                CacheKeyPrefix::Part,
                |p| &p.part_id,
                |p| serde_json::json!({"partNumber": p.part_number, "partName": p.part_name}),
            ),
        };
        let (older, newer) = (renamed("Old", 1_000), renamed("New", 2_000));
        sync.apply(&sync.rules.actions(&newer).unwrap()).await.unwrap();
        sync.apply(&sync.rules.actions(&older).unwrap()).await.unwrap();
        let cached: Value = cache.get(&CacheKeyPrefix::Part, "P-1").await.unwrap().unwrap();
        assert_eq!(cached["partName"], "New");
        let newest = renamed("Newest", 3_000);
        sync.apply(&sync.rules.actions(&newest).unwrap()).await.unwrap();
        let cached: Value = cache.get(&CacheKeyPrefix::Part, "P-1").await.unwrap().unwrap();
        assert_eq!(cached["partName"], "Newest");
    }
}
