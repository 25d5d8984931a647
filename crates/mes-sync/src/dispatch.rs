//! [`EventConsumer::dispatch`]: a consumer's cache rules and handlers run on
//! one event in process, without Kafka or the group's state in Redis.

use mes_events_types::{DomainEvent, KafkaRecord, decode};
use serde_json::Value;

use crate::consumer::EventConsumer;
use crate::handler::{AttemptError, Effects, HandlerError};

/// What [`EventConsumer::dispatch`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatched {
    /// The cache rules were applied and the handler (if any) succeeded,
    /// asking for these effects. They are returned, not applied: a running
    /// consumer applies them with the offset commit.
    Handled(Effects),
    /// No handler and no cache rule applies to the event; a running
    /// consumer commits past it.
    Ignored,
}

/// Why [`EventConsumer::dispatch`] could not handle an event. Each variant
/// says what a running consumer does with such a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The record is not a domain event in any of the three formats; a
    /// running consumer dead-letters it at once.
    #[error("undecodable record: {0}")]
    Undecodable(#[source] mes_events_types::Error),

    /// The event's data does not match the payload type of its handler or
    /// of a cache rule; a running consumer dead-letters it at once.
    #[error("{0}")]
    Rejected(String),

    /// A cache rule or the handler failed; a running consumer retries it
    /// (see [`HandlerRetry`](crate::HandlerRetry)), then dead-letters it.
    #[error("handling failed: {0}")]
    Failed(#[source] HandlerError),
}

impl EventConsumer {
    /// Runs this consumer's cache rules and then its handler on `event`,
    /// once, in this process: the same rules and handler a running consumer
    /// applies, with no Kafka, no group and no state in Redis (nothing
    /// connects, so the configuration's brokers and Redis URL are unused).
    ///
    /// For services' unit tests, fed with what an
    /// [`EventPublisher::in_memory`](mes_publisher::EventPublisher::in_memory)
    /// recorded, and for tools that replay events. Compared with a running
    /// consumer there are no retries, no dead letters, no de-duplication by
    /// event id, and the handler's [`Effects`] are returned instead of
    /// applied; the cache rules do act on the consumer's cache (an
    /// in-memory one in unit tests).
    ///
    /// ```
    /// use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
    /// use mes_events_types::{DomainEvent, PartFields, PartUpdated};
    /// use mes_sync::{CacheSync, ConsumerConfig, Dispatched, Effects, EventConsumer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = ReferenceDataCache::in_memory(CacheConfig::default())?;
    /// cache.set(&CacheKeyPrefix::Part, "P-1", &"Strut", None).await?;
    /// // Built the way the service builds it; nothing connects before `start`.
    /// let config = ConsumerConfig::new("work-order-service", mes_sync::KafkaConfig::new(["unused:9092"]), "redis://unused");
    /// let consumer = EventConsumer::new(config)
    ///     .sync(cache.clone(), CacheSync::fleet())
    ///     .on(|event: DomainEvent<PartUpdated>| async move {
    ///         Effects::none().set(format!("part-name:{}", event.data().part_id), event.data().part_name.clone())
    ///     });
    ///
    /// let renamed = DomainEvent::new(
    ///     "material-service",
    ///     PartUpdated {
    ///         part_id: "P-1".into(),
    ///         part_number: "N-1".into(),
    ///         part_name: "Strut Mk II".into(),
    ///         revision: None,
    ///         changes: PartFields { part_name: Some("Strut Mk II".into()), ..PartFields::default() },
    ///         previous_values: None,
    ///     },
    /// )
    /// .with_entity("Part", "P-1");
    /// let outcome = consumer.dispatch(renamed.into_raw()?).await?;
    ///
    /// assert_eq!(outcome, Dispatched::Handled(Effects::none().set("part-name:P-1", "Strut Mk II")));
    /// assert_eq!(cache.get::<String>(&CacheKeyPrefix::Part, "P-1").await?, None); // invalidated
    /// # Ok(()) }
    /// ```
    pub async fn dispatch(&self, event: DomainEvent<Value>) -> Result<Dispatched, DispatchError> {
        let Some(plan) = self.handlers.plan(&event).map_err(DispatchError::Rejected)? else {
            return Ok(Dispatched::Ignored);
        };
        match self.handlers.attempt(&plan, &event).await {
            Ok(effects) => Ok(Dispatched::Handled(effects)),
            Err(AttemptError::Failed(error)) => Err(DispatchError::Failed(error)),
            Err(AttemptError::Rejected(reason)) => Err(DispatchError::Rejected(reason)),
        }
    }

    /// [`dispatch`](Self::dispatch) for a Kafka record, decoded as a running
    /// consumer decodes it (CloudEvents structured or binary, or a legacy
    /// record): for the records an in-memory publisher recorded
    /// (`recorded.records()`), or legacy fixtures.
    pub async fn dispatch_record(&self, record: &KafkaRecord) -> Result<Dispatched, DispatchError> {
        let event = decode(record).map_err(DispatchError::Undecodable)?;
        self.dispatch(event).await
    }
}
