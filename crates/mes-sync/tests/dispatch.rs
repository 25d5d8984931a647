//! `EventConsumer::dispatch`: a consumer's cache rules and handler run on
//! single events in process, as a service's unit test runs them. Needs no
//! service: the cache is the in-memory double, the events come from the
//! in-memory publisher or a legacy fixture.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, EventType, KafkaRecord, PartFields, PartUpdated};
use mes_publisher::EventPublisher;
use mes_sync::{CacheSync, ConsumerConfig, DispatchError, Dispatched, Effects, EventConsumer};
use mes_testkit::WireRecordFixture;
use serde_json::json;

fn config() -> ConsumerConfig {
    // Never connected: dispatch needs neither.
    ConsumerConfig::new(
        "work-order-service",
        mes_sync::KafkaConfig::new(["unused:9092"]),
        "redis://unused",
    )
}

fn renamed(part_id: &str, name: &str) -> DomainEvent<PartUpdated> {
    DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: part_id.into(),
            part_number: "N-1".into(),
            part_name: name.into(),
            revision: None,
            changes: PartFields {
                part_name: Some(name.into()),
                ..PartFields::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", part_id)
}

async fn cache_with_part(part_id: &str) -> ReferenceDataCache {
    let cache = ReferenceDataCache::in_memory(CacheConfig::default()).unwrap();
    let old = json!({"partNumber": "N-1", "partName": "Old"});
    cache
        .set(&CacheKeyPrefix::Part, part_id, &old, None)
        .await
        .unwrap();
    let work_order = CacheKeyPrefix::new("work_order");
    cache
        .set(&work_order, &format!("WO-1:{part_id}"), &old, None)
        .await
        .unwrap();
    cache.set(&work_order, "WO-2:P-other", &old, None).await.unwrap();
    cache
}

#[tokio::test]
async fn the_cache_rules_run_before_the_handler_and_its_effects_are_returned() {
    let cache = cache_with_part("P-1").await;
    // What the handler saw in the cache when it ran.
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let consumer = EventConsumer::new(config())
        .sync(cache.clone(), CacheSync::fleet())
        .try_on({
            let (cache, seen) = (cache.clone(), Arc::clone(&seen));
            move |event: DomainEvent<PartUpdated>| {
                let (cache, seen) = (cache.clone(), Arc::clone(&seen));
                async move {
                    let cached = cache
                        .get::<serde_json::Value>(&CacheKeyPrefix::Part, &event.data().part_id)
                        .await?;
                    seen.lock().unwrap().push(cached.is_some());
                    Ok(Effects::none().set(
                        format!("part-name:{}", event.data().part_id),
                        event.data().part_name.clone(),
                    ))
                }
            }
        });

    let outcome = consumer
        .dispatch(renamed("P-1", "Strut Mk II").into_raw().unwrap())
        .await
        .unwrap();

    assert_eq!(
        outcome,
        Dispatched::Handled(Effects::none().set("part-name:P-1", "Strut Mk II"))
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [false],
        "the entry was gone before the handler ran"
    );
    let work_order = CacheKeyPrefix::new("work_order");
    let get = |prefix: CacheKeyPrefix, id: &'static str| {
        let cache = cache.clone();
        async move { cache.get::<serde_json::Value>(&prefix, id).await.unwrap() }
    };
    assert!(get(work_order.clone(), "WO-1:P-1").await.is_none());
    assert!(
        get(work_order, "WO-2:P-other").await.is_some(),
        "other parts' entries stay"
    );
}

#[tokio::test]
async fn records_from_the_in_memory_publisher_and_legacy_records_are_decoded_like_a_running_consumer_does() {
    let cache = cache_with_part("P-1").await;
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let consumer = EventConsumer::new(config())
        .sync(cache.clone(), CacheSync::fleet())
        .on({
            let names = Arc::clone(&names);
            move |event: DomainEvent<PartUpdated>| {
                names.lock().unwrap().push(event.data().part_name.clone());
                async { Effects::none() }
            }
        });

    let (publisher, recorded) = EventPublisher::in_memory();
    publisher.publish(&renamed("P-1", "Strut Mk II")).await.unwrap();
    for record in recorded.records() {
        let outcome = consumer.dispatch_record(&record.record).await.unwrap();
        assert_eq!(outcome, Dispatched::Handled(Effects::none()));
    }
    assert!(
        cache
            .get::<serde_json::Value>(&CacheKeyPrefix::Part, "P-1")
            .await
            .unwrap()
            .is_none()
    );

    // A record the TypeScript services write today.
    let legacy = WireRecordFixture::load("event-part-updated.json");
    let record = KafkaRecord {
        key: Some(legacy.key.clone().into_bytes()),
        headers: legacy
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
        value: Some(legacy.value.clone().into_bytes()),
    };
    assert_eq!(
        consumer.dispatch_record(&record).await.unwrap(),
        Dispatched::Handled(Effects::none())
    );
    assert_eq!(names.lock().unwrap().len(), 2);
    assert_eq!(names.lock().unwrap()[0], "Strut Mk II");

    let garbage = KafkaRecord {
        key: None,
        headers: Vec::new(),
        value: Some(b"not an event".to_vec()),
    };
    assert!(matches!(
        consumer.dispatch_record(&garbage).await,
        Err(DispatchError::Undecodable(_))
    ));
}

#[tokio::test]
async fn unrelated_events_are_ignored_mismatched_ones_rejected_and_handler_errors_returned() {
    let cache = cache_with_part("P-1").await;
    let consumer = EventConsumer::new(config())
        .sync(cache.clone(), CacheSync::fleet())
        .try_on(|event: DomainEvent<PartUpdated>| async move {
            if event.data().part_id == "P-broken" {
                return Err("the work order table is locked".into());
            }
            Ok(Effects::none())
        });

    let unrelated = DomainEvent::new_raw(
        EventType::parse("quality.inspection.completed").unwrap(),
        "quality-service",
        json!({}),
    );
    assert_eq!(consumer.dispatch(unrelated).await.unwrap(), Dispatched::Ignored);

    let mismatched = DomainEvent::new_raw(
        EventType::parse("material.part.updated").unwrap(),
        "material-service",
        json!({"unexpected": true}),
    );
    let error = consumer.dispatch(mismatched).await.unwrap_err();
    assert!(matches!(error, DispatchError::Rejected(_)), "{error:?}");
    assert!(
        error.to_string().contains("payload does not match its type"),
        "{error}"
    );

    let error = consumer
        .dispatch(renamed("P-broken", "x").into_raw().unwrap())
        .await
        .unwrap_err();
    let DispatchError::Failed(source) = &error else {
        panic!("expected a handler failure, got {error:?}");
    };
    assert_eq!(source.to_string(), "the work order table is locked");
    assert_eq!(
        error.to_string(),
        "handling failed: the work order table is locked"
    );
}

/// `on_type` and `on_unknown` take handlers that cannot fail (their future
/// ends with the effects), `try_on_type` and `try_on_unknown` ones that can;
/// `?` turns any error into the handler's error.
#[tokio::test]
async fn infallible_and_fallible_handlers_of_raw_events_take_one_path() {
    let calibrated = EventType::parse("maintenance.tool.calibrated").unwrap();
    let retired = EventType::parse("maintenance.tool.retired").unwrap();
    let infallible = EventConsumer::new(config())
        .on_type(
            calibrated.clone(),
            |event: DomainEvent<serde_json::Value>| async move {
                Effects::none().set("calibrated", event.data()["toolId"].to_string())
            },
        )
        .on_unknown(|_: DomainEvent<serde_json::Value>| async { Effects::none().delete("unknown") });
    let event = |event_type: &EventType| {
        DomainEvent::new_raw(
            event_type.clone(),
            "maintenance-service",
            json!({"toolId": "T-1"}),
        )
    };
    assert_eq!(
        infallible.dispatch(event(&calibrated)).await.unwrap(),
        Dispatched::Handled(Effects::none().set("calibrated", "\"T-1\""))
    );
    assert_eq!(
        infallible.dispatch(event(&retired)).await.unwrap(),
        Dispatched::Handled(Effects::none().delete("unknown"))
    );

    let fallible = EventConsumer::new(config())
        .try_on_type(
            calibrated.clone(),
            |event: DomainEvent<serde_json::Value>| async move {
                let tool: String = serde_json::from_value(event.data()["toolId"].clone())?;
                Ok(Effects::none().set("calibrated", tool))
            },
        )
        .try_on_unknown(|_: DomainEvent<serde_json::Value>| async {
            Err("no handler for this maintenance event".into())
        });
    assert_eq!(
        fallible.dispatch(event(&calibrated)).await.unwrap(),
        Dispatched::Handled(Effects::none().set("calibrated", "T-1"))
    );
    let malformed = DomainEvent::new_raw(calibrated, "maintenance-service", json!({"toolId": 7}));
    let error = fallible.dispatch(malformed).await.unwrap_err();
    assert!(
        matches!(&error, DispatchError::Failed(source) if source.to_string().contains("expected a string")),
        "{error:?}"
    );
    let error = fallible.dispatch(event(&retired)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "handling failed: no handler for this maintenance event"
    );
}
