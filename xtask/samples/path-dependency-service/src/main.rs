//! A Work Order service's consumer, built on the crates of a checkout:
//! publishes a part rename to the in-memory publisher and runs the
//! consumer's cache rules and handler on the record, in process (no Kafka,
//! no Redis).

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, PartFields, PartUpdated};
use mes_publisher::EventPublisher;
use mes_sync::{CacheSync, ConsumerConfig, Effects, EventConsumer, KafkaConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = ReferenceDataCache::in_memory(CacheConfig::default())?;
    cache
        .set(&CacheKeyPrefix::Part, "P-12345", &"Landing Gear Strut", None)
        .await?;
    // Built as the service builds it; nothing connects before `start`.
    let config = ConsumerConfig::new(
        "work-order-service",
        KafkaConfig::new(["kafka:9092"]),
        "redis://redis:6379",
    );
    let consumer = EventConsumer::new(config)
        .sync(cache.clone(), CacheSync::fleet())
        .on(|event: DomainEvent<PartUpdated>| async move {
            println!("part {} is now {:?}", event.data().part_id, event.data().part_name);
            Effects::none()
        });

    let (publisher, recorded) = EventPublisher::in_memory();
    let rename = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: "P-12345".into(),
            part_name: "Landing Gear Strut Mk II".into(),
            revision: None,
            changes: PartFields {
                part_name: Some("Landing Gear Strut Mk II".into()),
                ..Default::default()
            },
            previous_values: None,
        },
    )
    .with_entity("Part", "P-12345");
    publisher.publish(&rename).await?;
    for record in recorded.records() {
        let outcome = consumer.dispatch_record(&record.record).await?;
        println!("{}: {outcome:?}", record.published.topic);
    }
    let cached = cache
        .get::<String>(&CacheKeyPrefix::Part, "P-12345")
        .await?;
    println!("cached part after the rename: {cached:?}");
    if cached.is_some() {
        return Err("the cache rule did not remove the renamed part".into());
    }
    Ok(())
}
