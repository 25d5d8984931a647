//! `cargo xtask demo`: the cache-sync scenario of the legacy docs, end to
//! end and narrated, on a real broker and a real Redis.
//!
//! `cargo xtask demo` passes `MES_DEMO_KAFKA_BROKERS` and `MES_DEMO_REDIS_URL`:
//! the services of the environment (`KAFKA_BROKERS`, `REDIS_URL`) when set,
//! else a tansu broker and a redis-server it starts for the occasion.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use mes_cache::{CacheConfig, CacheEntity, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, EventMetadata, PartFields, PartUpdated};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{CacheSync, ConsumerConfig, Effects, EventConsumer, StartPosition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

type Failure = Box<dyn std::error::Error>;

/// The part as the Material service caches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    part_number: String,
    part_name: String,
}

impl CacheEntity for Part {
    const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn var(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run the demo with `cargo xtask demo`").into())
}

async fn run() -> Result<(), Failure> {
    let brokers = var("MES_DEMO_KAFKA_BROKERS")?;
    let redis = var("MES_DEMO_REDIS_URL")?;
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    println!("MES cache-sync demo: Kafka {brokers}, Redis {}", redacted(&redis));
    println!("(cache keys under the namespace mes-demo-{run_id}:cache, so no real entry is touched)\n");

    // The Material service's database, and the cache both services share.
    let material_db: Arc<Mutex<HashMap<String, Part>>> = Arc::new(Mutex::new(HashMap::from([(
        "P-12345".to_owned(),
        Part {
            part_number: "P-12345".into(),
            part_name: "Landing Gear Strut".into(),
        },
    )])));
    let cache = ReferenceDataCache::connect(
        CacheConfig::from_url(&redis)?.namespace(format!("mes-demo-{run_id}:cache")),
    )
    .await?;
    let parts = cache.typed::<Part>();
    let read_part = |label: &'static str| {
        let (parts, db) = (parts.clone(), Arc::clone(&material_db));
        async move {
            let loaded = Arc::new(Mutex::new(false));
            let flag = Arc::clone(&loaded);
            let part = parts
                .get_or_load("P-12345", move || async move {
                    *flag.lock().map_err(|_| std::io::Error::other("poisoned"))? = true;
                    let db = db.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                    Ok::<_, std::io::Error>(db.get("P-12345").cloned())
                })
                .await?;
            let source = if *loaded.lock().map_err(|_| "poisoned")? {
                "miss, loaded from the Material service"
            } else {
                "cache hit"
            };
            let name = part.map(|p| p.part_name).unwrap_or_else(|| "(none)".into());
            println!("   {label}: work order WO-1001 shows part P-12345 \"{name}\" ({source})");
            Ok::<_, Failure>(name)
        }
    };

    println!("1. The Material service caches part P-12345.");
    let first = material_db
        .lock()
        .map_err(|_| "poisoned")?
        .get("P-12345")
        .cloned()
        .ok_or("no part")?;
    parts.set("P-12345", &first, None).await?;
    cache
        .set(
            &CacheKeyPrefix::new("work_order"),
            "WO-1001:P-12345",
            &first,
            None,
        )
        .await?;

    println!("2. The Work Order service reads it through the cache.");
    let before = read_part("before").await?;

    println!("3. The Work Order service's consumer starts (group work-order-service-demo).");
    let kafka = PublisherConfig::new([brokers.as_str()]).client_id("mes-demo");
    let publisher = EventPublisher::connect(kafka.clone()).await?;
    publisher
        .ensure_topics(&[TopicSpec::new("mes.material.events", TopicSettings::default())])
        .await?;
    let (applied, mut applied_rx) = mpsc::unbounded_channel();
    let work_orders: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::from([(
        "WO-1001".to_owned(),
        before.clone(),
    )])));
    let columns = Arc::clone(&work_orders);
    let consumer = EventConsumer::new(
        ConsumerConfig::new(format!("work-order-service-demo-{run_id}"), kafka, redis.clone())
            .start_position(StartPosition::Latest),
    )
    // part:{partId} and work_order:*:{partId} go when a part changes...
    .sync(cache.clone(), CacheSync::fleet())
    // ...and the denormalised part name on the work orders is updated.
    .on::<PartUpdated, _, _, std::io::Error>(move |event: DomainEvent<PartUpdated>| {
        let (applied, columns) = (applied.clone(), Arc::clone(&columns));
        async move {
            if event.data().part_id == "P-12345" {
                if let Ok(mut columns) = columns.lock() {
                    columns.insert("WO-1001".into(), event.data().part_name.clone());
                }
                let _ = applied.send(event.id().to_string());
            }
            Ok(Effects::none())
        }
    })
    .start()
    .await?;
    // Reading every partition from its latest offset before anything is published.
    let partitions = usize::from(TopicSettings::default().partitions);
    consumer.wait_for(|s| s.owned().len() == partitions).await;

    println!("4. The Material service renames the part and publishes material.part.updated.");
    let renamed = Part {
        part_number: "P-12345".into(),
        part_name: "Landing Gear Strut Mk II".into(),
    };
    material_db
        .lock()
        .map_err(|_| "poisoned")?
        .insert("P-12345".into(), renamed.clone());
    let event = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: "P-12345".into(),
            part_number: renamed.part_number.clone(),
            part_name: renamed.part_name.clone(),
            revision: None,
            changes: PartFields {
                part_name: Some(renamed.part_name.clone()),
                ..PartFields::default()
            },
            previous_values: Some(PartFields {
                part_name: Some(before.clone()),
                ..PartFields::default()
            }),
        },
    )
    .with_entity("Part", "P-12345")
    .with_metadata(EventMetadata::for_user("user-123"));
    let landed = publisher.publish(&event).await?;
    println!(
        "   event {} acknowledged at {}/{}@{} (no outbox yet: published directly)",
        event.id(),
        landed.topic,
        landed.partition,
        landed.offset
    );

    println!("5. The consumer handles it: cache entries invalidated, work order column updated.");
    while applied_rx.recv().await.ok_or("the consumer stopped")? != event.id().to_string() {}
    let column = work_orders
        .lock()
        .map_err(|_| "poisoned")?
        .get("WO-1001")
        .cloned()
        .unwrap_or_default();
    let gone = cache
        .get::<Part>(&CacheKeyPrefix::new("work_order"), "WO-1001:P-12345")
        .await?
        .is_none();
    println!(
        "   work order WO-1001's part name column: \"{column}\"; work_order:WO-1001:P-12345 removed: {gone}"
    );

    println!("6. The next read through the cache shows the new name.");
    let after = read_part("after").await?;

    let stats = parts.stats().await?;
    let consumed = consumer.stats();
    println!("\nStats:");
    println!(
        "   cache (part): {} hits, {} misses, hit rate {}",
        stats.counters.hits,
        stats.counters.misses,
        stats
            .hit_rate
            .map_or("n/a".to_owned(), |r| format!("{:.0}%", r * 100.0))
    );
    println!(
        "   consumer: {} events handled, {} duplicates, {} dead-lettered, lag {}",
        consumed.handled(),
        consumed.duplicates(),
        consumed.dead_lettered(),
        consumed.lag()
    );
    println!("\nBefore: \"{before}\"  After: \"{after}\"");
    consumer.shutdown().await;
    publisher.disconnect().await;
    cache.clear_all().await?;
    cache.close().await?;
    if before == after {
        return Err("the name did not change".into());
    }
    Ok(())
}

/// The URL without its password, for printing.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<credentials>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
