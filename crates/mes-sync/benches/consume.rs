//! Consumer throughput and cache-sync latency against a real broker and
//! Redis, with raw fetches of the same records (mes-kafka's, which the
//! consumer runs on, and rskafka's) as the baselines. Run
//! by `cargo xtask bench kafka`, which starts the broker and Redis.
//!
//! Environment: `MES_BENCH_KAFKA_BROKERS`, `MES_BENCH_REDIS_URL`,
//! `MES_BENCH_RUN`, `MES_BENCH_EVENTS`. Prints `RESULT <name> <events/s>` and
//! `LATENCY <name> <p50 µs> <p99 µs>` lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, PartFields, PartUpdated};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use mes_sync::{CacheSync, ConsumerConfig, Effects, EventConsumer};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use tokio::sync::mpsc;

const TOPIC: &str = "mes.material.events";
const PARTITIONS: u16 = 6;

fn update(part: &str, n: usize) -> DomainEvent<PartUpdated> {
    DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: part.to_owned(),
            part_number: format!("N-{n}"),
            part_name: "Landing Gear Strut".to_owned(),
            revision: None,
            changes: PartFields::default(),
            previous_values: None,
        },
    )
    .with_entity("Part", part)
}

fn report(name: &str, count: usize, elapsed: Duration) {
    println!("RESULT {name} {:.0}", count as f64 / elapsed.as_secs_f64());
}

#[tokio::main]
async fn main() {
    let brokers = std::env::var("MES_BENCH_KAFKA_BROKERS").expect("MES_BENCH_KAFKA_BROKERS");
    let redis = std::env::var("MES_BENCH_REDIS_URL").expect("MES_BENCH_REDIS_URL");
    let run = std::env::var("MES_BENCH_RUN").expect("MES_BENCH_RUN");
    let count: usize = std::env::var("MES_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let kafka = PublisherConfig::new([brokers.as_str()]);
    let publisher = EventPublisher::connect(kafka.clone()).await.unwrap();
    let kafka = kafka.kafka().clone();
    let settings = TopicSettings {
        partitions: PARTITIONS,
        replication: 1,
    };
    publisher
        .ensure_topics(&[TopicSpec::new(TOPIC, settings)])
        .await
        .unwrap();
    let events: Vec<_> = (0..count)
        .map(|i| update(&format!("P-{}", i % 1000), i))
        .collect();
    for outcome in publisher.publish_batch(&events).await {
        outcome.unwrap();
    }

    raw_fetch(&brokers, count).await;
    raw_mes_kafka_fetch(&brokers, count).await;

    let cache = ReferenceDataCache::connect(
        CacheConfig::from_url(&redis)
            .unwrap()
            .namespace(format!("mes-bench-{run}:cache")),
    )
    .await
    .unwrap();
    // Point invalidation (`part:{partId}`). Pattern rules (the fleet set's
    // `work_order:*:{partId}`) SCAN the whole keyspace per event: their cost
    // grows with the Redis, not with the consumer.
    let invalidate_part = || CacheSync::new().invalidate::<PartUpdated>(CacheKeyPrefix::Part, |p| &p.part_id);
    for (name, rules) in [
        ("consumer_noop", None),
        ("consumer_cache_invalidation", Some(invalidate_part())),
    ] {
        let config = ConsumerConfig::new(format!("bench-{run}-{name}"), kafka.clone(), redis.clone());
        let started = Arc::new(std::sync::OnceLock::new());
        let first = Arc::clone(&started);
        let mut consumer = EventConsumer::new(config).on(move |_: DomainEvent<PartUpdated>| {
            let _ = first.set(Instant::now());
            async { Effects::none() }
        });
        if let Some(rules) = rules {
            consumer = consumer.sync(cache.clone(), rules);
        }
        let consumer = consumer.start().await.unwrap();
        consumer
            .wait_for(|s| s.handled() as usize >= count && s.lag() == 0)
            .await;
        let elapsed = started.get().map(Instant::elapsed).unwrap_or_default();
        report(name, count, elapsed);
        consumer.shutdown().await;
    }

    // Latency: from `publish` returning to the cached part being gone, with
    // the default fetch wait and a short one (tansu holds a fetch for its
    // whole wait even when records arrive, where Kafka answers at once).
    for wait_ms in [500u64, 20] {
        let (gone, mut gone_rx) = mpsc::unbounded_channel();
        let config = ConsumerConfig::new(
            format!("bench-{run}-latency-{wait_ms}"),
            kafka.clone(),
            redis.clone(),
        )
        .start_position(mes_sync::StartPosition::Latest)
        .fetch_max_wait(Duration::from_millis(wait_ms));
        let consumer = EventConsumer::new(config)
            .sync(cache.clone(), invalidate_part())
            // The rules ran before the handler: the entry is gone when it runs.
            .on(move |event: DomainEvent<PartUpdated>| {
                let _ = gone.send((event.data().part_id.clone(), Instant::now()));
                async { Effects::none() }
            })
            .start()
            .await
            .unwrap();
        consumer
            .wait_for(|s| s.owned().len() == usize::from(PARTITIONS))
            .await;
        let mut samples = Vec::new();
        for i in 0..200 {
            let part = format!("L-{wait_ms}-{i}");
            cache
                .set(&CacheKeyPrefix::Part, &part, &"old", None)
                .await
                .unwrap();
            publisher.publish(&update(&part, i)).await.unwrap();
            let published = Instant::now();
            loop {
                let (id, at) = gone_rx.recv().await.unwrap();
                if id == part {
                    assert!(
                        cache
                            .get::<String>(&CacheKeyPrefix::Part, &part)
                            .await
                            .unwrap()
                            .is_none()
                    );
                    samples.push(at.saturating_duration_since(published));
                    break;
                }
            }
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "LATENCY publish_to_cache_invalidated_fetch_wait_{wait_ms}ms {} {}",
            at(0.50),
            at(0.99)
        );
        consumer.shutdown().await;
    }
    cache.clear_all().await.unwrap();
    publisher.disconnect().await;
}

/// The ceiling: rskafka's `PartitionClient` fetching every partition from
/// the start, concurrently, doing nothing with the records.
async fn raw_fetch(brokers: &str, count: usize) {
    let client = Arc::new(
        ClientBuilder::new(vec![brokers.to_owned()])
            .build()
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for partition in 0..i32::from(PARTITIONS) {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let pc = client
                .partition_client(TOPIC, partition, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let (mut offset, mut read) = (0, 0);
            loop {
                let (records, high_watermark) = pc.fetch_records(offset, 1..1024 * 1024, 500).await.unwrap();
                read += records.len();
                offset = records.last().map_or(offset, |r| r.offset + 1);
                if offset >= high_watermark {
                    return read;
                }
            }
        }));
    }
    let mut read = 0;
    for task in tasks {
        read += task.await.unwrap();
    }
    assert_eq!(read, count);
    report("raw_rskafka_fetch", count, started.elapsed());
}

/// mes-kafka's `PartitionFetcher` fetching every partition from the start,
/// concurrently, doing nothing with the records: the consumer's own ceiling.
async fn raw_mes_kafka_fetch(brokers: &str, count: usize) {
    let client = mes_kafka::KafkaClient::connect(mes_kafka::KafkaConfig::new([brokers]))
        .await
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for partition in 0..i32::from(PARTITIONS) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut fetcher = mes_kafka::PartitionFetcher::new(client, TOPIC, partition)
                .max_wait(Duration::from_millis(500))
                .max_bytes(1024 * 1024);
            // Until the high watermark the fetches report (tansu's memory
            // engine answers ListOffsets(latest) wrongly after a batch).
            let (mut offset, mut read) = (0, 0);
            loop {
                let fetched = fetcher.fetch(offset).await.unwrap();
                read += fetched.records.len();
                offset = fetched.next_offset;
                if offset >= fetched.high_watermark {
                    break;
                }
            }
            read
        }));
    }
    let mut read = 0;
    for task in tasks {
        read += task.await.unwrap();
    }
    assert_eq!(read, count);
    report("raw_mes_kafka_fetch", count, started.elapsed());
}
