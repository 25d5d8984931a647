//! Publisher throughput and latency against a real broker, with raw
//! rskafka in the same run as the baseline. Run by `cargo xtask bench`,
//! which starts the broker, runs the reference producers of other client
//! libraries on the same broker, and prints the ratios.
//!
//! Environment: `MES_BENCH_KAFKA_BROKERS`, `MES_BENCH_RUN` (a run id; the
//! topics of the run are `mes.bench{run}{name}.events`), `MES_BENCH_EVENTS`,
//! and `MES_BENCH_ONLY` (a comma-separated list of `raw_rskafka`,
//! `event_publisher` and `latency`) to run only those, e.g. under a profiler.
//!
//! Built with `--cfg mes_bench_jemalloc`, jemalloc is the global allocator
//! and the throughput names end in `_jemalloc`: the same code, so the two
//! builds show what a service's allocator is worth (glibc's malloc, the
//! default, frees the many small allocations of rskafka's records slowly).
//! Prints one `RESULT <name> <events/s>` or
//! `LATENCY <name> <p50 µs> <p99 µs>` line per measurement, and for the
//! two throughput runs a `CPU <name> <µs per event>` line: the CPU time
//! this process spent (all its threads, Linux only), which is far steadier
//! than the rate on a machine shared with other work; with
//! `MES_BENCH_BROKER_PID` also a `CPU broker_<name> <µs per event>` line,
//! what the broker spent meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use common::{events, report};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mes_events_types::{EncodeOptions, EventType, KafkaRecord, encode, partition_for_key};
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

#[cfg(mes_bench_jemalloc)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Appended to the throughput measurements' names: which allocator ran them.
const ALLOCATOR_SUFFIX: &str = if cfg!(mes_bench_jemalloc) { "_jemalloc" } else { "" };

const PARTITIONS: u16 = 6;
/// Every producer of the run gets a topic of its own.
const TOPICS: [&str; 8] = [
    "rskafka",
    "publisher",
    "publishernoidem",
    "confluentidem",
    "latency",
    "latencynolinger",
    "confluent",
    "kafkajs",
];

fn event_type(run: &str, name: &str) -> EventType {
    EventType::parse(&format!("bench{run}{name}.thing.happened")).unwrap()
}

#[tokio::main]
async fn main() {
    let brokers =
        std::env::var("MES_BENCH_KAFKA_BROKERS").expect("MES_BENCH_KAFKA_BROKERS (cargo xtask bench)");
    let run = std::env::var("MES_BENCH_RUN").expect("MES_BENCH_RUN (cargo xtask bench)");
    let count: usize = std::env::var("MES_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let config = PublisherConfig::new([brokers.as_str()]);
    let admin = EventPublisher::connect(config.clone()).await.unwrap();
    let settings = TopicSettings {
        partitions: PARTITIONS,
        replication: 1,
    };
    let specs: Vec<TopicSpec> = TOPICS
        .iter()
        .map(|n| TopicSpec::new(event_type(&run, n).topic().unwrap(), settings))
        .collect();
    admin.ensure_topics(&specs).await.unwrap();
    admin.disconnect().await;
    let record_bytes = encode(
        &events(&event_type(&run, "publisher"), 1)[0],
        &EncodeOptions::default(),
    )
    .map(|r| r.value.unwrap().len())
    .unwrap();
    println!("INFO record_value_bytes {record_bytes}");

    let only = std::env::var("MES_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == name));

    // What encoding alone costs, for reading the publisher's figure.
    let sample = events(&event_type(&run, "publisher"), count);
    let started = Instant::now();
    for event in &sample {
        std::hint::black_box(encode(event, &EncodeOptions::default()).unwrap());
    }
    report("encode_only", count, started.elapsed());

    if wanted("raw_rskafka") {
        raw_rskafka(&brokers, &event_type(&run, "rskafka"), count).await;
    }

    // Idempotent (the default), and without idempotence for comparison.
    for (wanted_as, topic, idempotence) in [
        ("event_publisher", "publisher", true),
        ("event_publisher_no_idempotence", "publishernoidem", false),
    ] {
        if !wanted(wanted_as) {
            continue;
        }
        let publisher = EventPublisher::connect(config.clone().idempotence(idempotence))
            .await
            .unwrap();
        let all = events(&event_type(&run, topic), count);
        let cpu = cpu_time();
        let started = Instant::now();
        // Like librdkafka's produce-everything-then-flush.
        for outcome in publisher.publish_batch(&all).await {
            outcome.unwrap();
        }
        let name = format!("{wanted_as}{ALLOCATOR_SUFFIX}");
        report(&name, count, started.elapsed());
        report_cpu(&name, count, cpu);
        publisher.disconnect().await;
    }

    if !wanted("latency") {
        return;
    }
    for (name, linger) in [
        ("latency", Duration::from_millis(5)),
        ("latencynolinger", Duration::ZERO),
    ] {
        let publisher = EventPublisher::connect(config.clone().linger(linger))
            .await
            .unwrap();
        let mut samples = Vec::new();
        for event in events(&event_type(&run, name), 2_000) {
            let started = Instant::now();
            publisher.publish(&event).await.unwrap();
            samples.push(started.elapsed());
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "LATENCY publish_linger_{}ms {} {}",
            linger.as_millis(),
            at(0.50),
            at(0.99)
        );
        publisher.disconnect().await;
    }
}

/// `count` events encoded before any clock starts, with their timestamps,
/// by the partition the publisher would pick.
fn records_by_partition(event_type: &EventType, count: usize) -> BTreeMap<u32, Vec<(KafkaRecord, i64)>> {
    let partitions = NonZeroU32::new(u32::from(PARTITIONS)).unwrap();
    let mut by_partition: BTreeMap<u32, Vec<(KafkaRecord, i64)>> = BTreeMap::new();
    for event in events(event_type, count) {
        let record = encode(&event, &EncodeOptions::default()).unwrap();
        let partition = partition_for_key(record.key.as_deref().unwrap(), partitions);
        by_partition
            .entry(partition)
            .or_default()
            .push((record, event.time().unix_millis()));
    }
    by_partition
}

/// rskafka's `PartitionClient` with records encoded and batched before the
/// clock starts (500 per request), partitions in parallel: what rskafka
/// itself costs.
async fn raw_rskafka(brokers: &str, event_type: &EventType, count: usize) {
    let topic = event_type.topic().unwrap();
    let client = Arc::new(
        ClientBuilder::new(vec![brokers.to_owned()])
            .build()
            .await
            .unwrap(),
    );
    let per_partition: BTreeMap<u32, Vec<Record>> = records_by_partition(event_type, count)
        .into_iter()
        .map(|(partition, records)| {
            let records = records
                .into_iter()
                .map(|(record, time)| Record {
                    key: record.key,
                    value: record.value,
                    headers: record.headers.into_iter().collect(),
                    timestamp: rskafka::chrono::DateTime::from_timestamp_millis(time).unwrap(),
                })
                .collect();
            (partition, records)
        })
        .collect();
    let mut clients = Vec::new();
    for partition in per_partition.keys() {
        let pc = client
            .partition_client(topic.clone(), *partition as i32, UnknownTopicHandling::Error)
            .await
            .unwrap();
        clients.push(pc);
    }
    let cpu = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (pc, (_, records)) in clients.into_iter().zip(per_partition) {
        tasks.push(tokio::spawn(async move {
            let mut records = records;
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(500));
                let batch = std::mem::replace(&mut records, rest);
                pc.produce(batch, Compression::NoCompression).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let name = format!("raw_rskafka{ALLOCATOR_SUFFIX}");
    report(&name, count, started.elapsed());
    report_cpu(&name, count, cpu);
}

/// CPU time so far of this process and of the broker
/// (`MES_BENCH_BROKER_PID`), all threads included.
fn cpu_time() -> [Option<Duration>; 2] {
    let broker = std::env::var("MES_BENCH_BROKER_PID").ok();
    [
        process_cpu_time("self"),
        broker.as_deref().and_then(process_cpu_time),
    ]
}

/// CPU time of a process so far, all threads included (from
/// `/proc/<pid>/task/*/schedstat`); `None` where that is not readable.
fn process_cpu_time(pid: &str) -> Option<Duration> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

fn report_cpu(name: &str, count: usize, before: [Option<Duration>; 2]) {
    for ((label, before), after) in ["", "broker_"].into_iter().zip(before).zip(cpu_time()) {
        if let (Some(before), Some(after)) = (before, after) {
            let micros = after.saturating_sub(before).as_secs_f64() * 1e6 / count as f64;
            println!("CPU {label}{name} {micros:.2}");
        }
    }
}
