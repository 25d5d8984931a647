//! End to end: a `PartUpdated` published by `EventPublisher`, and the same
//! change as a legacy TypeScript record produced raw, make the consumer's
//! cache rules remove the cached part and the matching work-order entries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, KafkaRecord, PartFields, PartUpdated};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{CacheSync, ConsumerConfig, Effects, EventConsumer};
use mes_testkit::WireRecordFixture;
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_updates_from_rust_and_legacy_producers_invalidate_the_cached_copies() {
    let brokers = mes_testkit::kafka_brokers();
    let redis = mes_testkit::redis_url();
    let namespace = format!("mes-test-sync-{}:cache", ulid::Ulid::new());
    let cache = ReferenceDataCache::connect(CacheConfig::from_url(&redis).unwrap().namespace(namespace))
        .await
        .unwrap();
    let part = CacheKeyPrefix::Part;
    let work_order = CacheKeyPrefix::new("work_order");
    let value = json!({"partNumber": "old", "partName": "Old name"});
    for id in ["P-7*", "P-8", "P-12345"] {
        cache.set(&part, id, &value, None).await.unwrap();
    }
    for id in ["WO-1:P-7*", "WO-2:P-7*", "WO-3:P-77", "WO-4:P-12345", "WO-5:P-8"] {
        cache.set(&work_order, id, &value, None).await.unwrap();
    }

    let publisher = EventPublisher::connect(PublisherConfig::new([brokers.as_str()]))
        .await
        .unwrap();
    publisher
        .ensure_topics(&[TopicSpec::new("mes.material.events", TopicSettings::default())])
        .await
        .unwrap();
    let update = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-7*".into(),
            part_number: "P-7000".into(),
            part_name: "New name".into(),
            revision: None,
            changes: PartFields {
                part_number: Some("P-7000".into()),
                ..PartFields::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", "P-7*");
    publisher.publish(&update).await.unwrap();
    let legacy = WireRecordFixture::load("event-part-updated.json");
    publisher
        .publish_record(
            &legacy.topic,
            KafkaRecord {
                key: Some(legacy.key.clone().into_bytes()),
                headers: legacy
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect(),
                value: Some(legacy.value.clone().into_bytes()),
            },
        )
        .await
        .unwrap();

    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let config = ConsumerConfig::new(
        format!("sync-{}", ulid::Ulid::new()),
        mes_sync::KafkaConfig::new([brokers.as_str()]),
        redis.clone(),
    )
    .fetch_max_wait(Duration::from_millis(100));
    let consumer = EventConsumer::new(config)
        .sync(cache.clone(), CacheSync::fleet())
        // The rules run before the handler: when it sees an event, its
        // entries are gone.
        .on(move |event: DomainEvent<PartUpdated>| {
            let seen = seen.clone();
            async move {
                seen.send(event.id().to_string()).unwrap();
                Effects::none()
            }
        })
        .start()
        .await
        .unwrap();
    let mut waiting = vec![update.id().to_string(), "evt_1760789696789_k3j9x0a1b".to_owned()];
    while !waiting.is_empty() {
        let id = seen_rx.recv().await.unwrap();
        waiting.retain(|w| *w != id);
    }
    consumer.shutdown().await;

    let present = |prefix: &CacheKeyPrefix, id: &str| {
        let (cache, prefix, id) = (cache.clone(), prefix.clone(), id.to_owned());
        async move {
            cache
                .get::<serde_json::Value>(&prefix, &id)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(!present(&part, "P-7*").await, "the updated part is invalidated");
    assert!(
        !present(&part, "P-12345").await,
        "the legacy record's part is invalidated"
    );
    assert!(!present(&work_order, "WO-1:P-7*").await);
    assert!(!present(&work_order, "WO-2:P-7*").await);
    assert!(!present(&work_order, "WO-4:P-12345").await);
    assert!(
        present(&work_order, "WO-3:P-77").await,
        "the id is escaped: P-7* does not match P-77"
    );
    assert!(present(&part, "P-8").await, "other parts stay");
    assert!(present(&work_order, "WO-5:P-8").await);
    cache.clear_all().await.unwrap();
    cache.close().await.unwrap();
}
