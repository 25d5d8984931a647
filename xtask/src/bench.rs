//! `cargo xtask bench`: benchmarks that report ratios against baselines
//! measured in the same run, on the same services.

use std::process::Command;

use mes_testkit::tansu::TansuBroker;

use crate::redis::RedisServices;
use crate::{Result, cargo_in_workspace, tools, workspace_root};

const EVENTS: &str = "50000";
/// Turns each publisher benchmark takes; the summary gives the median.
const PUBLISHER_ROUNDS: usize = 3;
const OUTBOX_EVENTS: &str = "20000";

pub(crate) fn bench() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("mes-bench-{}", std::process::id()));
    let tansu = tools::TANSU.ensure()?;
    let python = tools::python_env()?;
    let node_modules = tools::node_env()?;
    let broker = TansuBroker::start(&tansu, "memory://tansu/", &scratch)
        .map_err(|e| format!("cannot start tansu: {e}"))?;
    let brokers = broker.address();
    // Each producer reports what the broker spent during its run too.
    let broker_pid = broker.pid().to_string();
    let run = format!("{}", std::process::id());
    eprintln!(
        "xtask: benchmarking the publisher against tansu (memory://) on {brokers}, {EVENTS} events of ~1 KB, \
         {PUBLISHER_ROUNDS} rounds"
    );

    // The producers take turns, round after round, so that the broker's
    // state (it keeps every record in memory) and the machine's other work
    // weigh on each alike; the summary gives each one's median.
    let mut results = Vec::new();
    let bench_dir = workspace_root().join("xtask/bench");
    // The jemalloc build: the same code with jemalloc as the global
    // allocator (`--cfg mes_bench_jemalloc` changes every crate's flags), in
    // a target folder of its own so it does not evict the usual build.
    let mut jemalloc_flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    jemalloc_flags.push_str(" --cfg mes_bench_jemalloc");
    for round in 0..PUBLISHER_ROUNDS {
        let run = format!("{run}r{round}");
        let topic = |name: &str| format!("mes.bench{run}{name}.events");
        // Single-publish latency once: it does not depend on the others.
        let only = if round == 0 {
            "raw_rskafka,event_publisher,event_publisher_no_idempotence,latency"
        } else {
            "raw_rskafka,event_publisher,event_publisher_no_idempotence"
        };
        results.extend(capture(
            cargo_in_workspace()
                .args(["bench", "--locked", "-p", "mes-publisher", "--bench", "publish"])
                .env("MES_BENCH_KAFKA_BROKERS", &brokers)
                .env("MES_BENCH_BROKER_PID", &broker_pid)
                .env("MES_BENCH_RUN", &run)
                .env("MES_BENCH_EVENTS", EVENTS)
                .env("MES_BENCH_ONLY", only),
        )?);
        results.extend(capture(
            cargo_in_workspace()
                .args(["bench", "--locked", "-p", "mes-publisher", "--bench", "publish"])
                .env("RUSTFLAGS", jemalloc_flags.trim())
                .env("CARGO_TARGET_DIR", workspace_root().join("target/bench-jemalloc"))
                .env("MES_BENCH_KAFKA_BROKERS", &brokers)
                .env("MES_BENCH_BROKER_PID", &broker_pid)
                .env("MES_BENCH_RUN", format!("{run}jemalloc"))
                .env("MES_BENCH_EVENTS", EVENTS)
                .env("MES_BENCH_ONLY", "raw_rskafka,event_publisher"),
        )?);
        results.extend(capture(
            Command::new(&python)
                .arg(bench_dir.join("confluent_producer.py"))
                .args([&brokers, &topic("confluent"), EVENTS])
                .env("MES_BENCH_BROKER_PID", &broker_pid),
        )?);
        results.extend(capture(
            Command::new(&python)
                .arg(bench_dir.join("confluent_producer.py"))
                .args([&brokers, &topic("confluentidem"), EVENTS, "idempotent"])
                .env("MES_BENCH_BROKER_PID", &broker_pid),
        )?);
        results.extend(capture(
            Command::new("node")
                .arg(bench_dir.join("kafkajs_producer.js"))
                .args([&brokers, &topic("kafkajs"), EVENTS])
                .env("MES_BENCH_BROKER_PID", &broker_pid)
                .env("NODE_PATH", &node_modules),
        )?);
    }
    let run = format!("{run}o");
    eprintln!("xtask: benchmarking the PostgreSQL outbox on the same broker and the local PostgreSQL");
    results.extend(capture(
        cargo_in_workspace()
            .args([
                "bench",
                "--locked",
                "-p",
                "mes-publisher",
                "--features",
                "outbox-postgres",
                "--bench",
                "outbox",
            ])
            .env("MES_BENCH_KAFKA_BROKERS", &brokers)
            .env("MES_BENCH_POSTGRES_URL", crate::services::postgres_url()?)
            .env("MES_BENCH_RUN", &run)
            .env("MES_BENCH_EVENTS", OUTBOX_EVENTS),
    )?);
    eprintln!("xtask: benchmarking the consumer on the same broker and a private redis-server");
    let (redis, redis_port) = RedisServices::bench_server()?;
    results.extend(capture(
        cargo_in_workspace()
            .args(["bench", "--locked", "-p", "mes-sync", "--bench", "consume"])
            .env("MES_BENCH_KAFKA_BROKERS", &brokers)
            .env("MES_BENCH_REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
            .env("MES_BENCH_RUN", &run)
            .env("MES_BENCH_EVENTS", "20000"),
    )?);
    // librdkafka's and kafkajs's consumers on the topic the consumer bench
    // filled.
    results.extend(capture(
        Command::new(&python)
            .arg(bench_dir.join("confluent_consumer.py"))
            .args([&brokers, "mes.material.events"]),
    )?);
    for mode in ["each-message", "each-batch"] {
        results.extend(capture(
            Command::new("node")
                .arg(bench_dir.join("kafkajs_consumer.js"))
                .args([brokers.as_str(), "mes.material.events", "20000", mode])
                .env("NODE_PATH", &node_modules),
        )?);
    }
    drop(redis);
    drop(broker);
    let _ = std::fs::remove_dir_all(&scratch);
    summarise(&results);
    Ok(())
}

/// Runs a benchmark program, echoes its output, and returns its
/// `RESULT`/`LATENCY`/`CPU` lines.
fn capture(command: &mut Command) -> Result<Vec<String>> {
    let output = command
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(stdout
        .lines()
        .filter(|l| l.starts_with("RESULT ") || l.starts_with("LATENCY ") || l.starts_with("CPU "))
        .map(str::to_owned)
        .collect())
}

fn summarise(lines: &[String]) {
    // The median of a measurement's values (one per round).
    let value = |kind: &str, name: &str| {
        let mut values: Vec<f64> = lines
            .iter()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                (parts.next() == Some(kind) && parts.next() == Some(name))
                    .then(|| parts.next().and_then(|v| v.parse::<f64>().ok()))
                    .flatten()
            })
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let rate = |name: &str| value("RESULT", name);
    println!(
        "\nPublisher throughput on one broker ({EVENTS} events of ~1 KB, 6 partitions; \
         median of {PUBLISHER_ROUNDS} rounds, the producers taking turns):"
    );
    // The Rust measurements ran twice: with glibc's malloc (what a service
    // gets by default) and with jemalloc as the global allocator.
    const PRODUCERS: [&str; 8] = [
        "raw_rskafka",
        "event_publisher",
        "event_publisher_no_idempotence",
        "raw_rskafka_jemalloc",
        "event_publisher_jemalloc",
        "confluent_kafka",
        "confluent_kafka_idempotent",
        "kafkajs",
    ];
    for name in PRODUCERS {
        if let Some(r) = rate(name) {
            println!("  {name:<24} {r:>10.0} events/s");
        }
    }
    for (allocator, suffix) in [("glibc malloc", ""), ("jemalloc", "_jemalloc")] {
        if let (Some(ours), Some(raw), Some(rdkafka)) = (
            rate(&format!("event_publisher{suffix}")),
            rate(&format!("raw_rskafka{suffix}")),
            rate("confluent_kafka"),
        ) {
            println!(
                "  {allocator}: EventPublisher / raw rskafka = {:.2} (goal >= 0.80); \
                 EventPublisher / librdkafka = {:.2} (goal >= 1.00)",
                ours / raw,
                ours / rdkafka
            );
        }
    }
    if let (Some(ours), Some(rdkafka)) = (rate("event_publisher"), rate("confluent_kafka_idempotent")) {
        println!(
            "  idempotent: EventPublisher / librdkafka (enable.idempotence=true) = {:.2} (goal >= 1.00)",
            ours / rdkafka
        );
    }
    if let (Some(on), Some(off)) = (rate("event_publisher"), rate("event_publisher_no_idempotence")) {
        println!("  EventPublisher idempotent / not idempotent = {:.2}", on / off);
    }
    println!("  CPU per event during each run (µs; the client's process, and the broker meanwhile):");
    for name in PRODUCERS {
        let broker = value("CPU", &format!("broker_{name}"));
        if let Some(client) = value("CPU", name) {
            let broker = broker.map_or_else(|| "?".to_owned(), |b| format!("{b:.2}"));
            println!("  {name:<24} client {client:>6.2}  broker {broker:>6}");
        }
    }
    if let (Some(ours), Some(js)) = (rate("event_publisher"), rate("kafkajs")) {
        println!("  EventPublisher / kafkajs = {:.2}", ours / js);
    }
    if let (Some(direct), Some(one), Some(three)) = (
        rate("outbox_baseline_direct_publish"),
        rate("outbox_end_to_end_1_relay"),
        rate("outbox_end_to_end_3_relays"),
    ) {
        println!(
            "\nOutbox, {OUTBOX_EVENTS} events of ~1 KB from commit to broker acknowledgement \
             (4 writers, 10 events per transaction):"
        );
        println!("  direct publish (baseline)  {direct:>10.0} events/s");
        println!(
            "  outbox, 1 relay            {one:>10.0} events/s = {:.2} of direct",
            one / direct
        );
        println!(
            "  outbox, 3 relays           {three:>10.0} events/s = {:.2} of direct",
            three / direct
        );
        for (label, name) in [
            (
                "enqueue alone (4 writers) ",
                "outbox_end_to_end_1_relay_enqueue_only",
            ),
            ("relay drain, 1 relay      ", "outbox_relay_drain_1_relay"),
            ("relay drain, 3 relays     ", "outbox_relay_drain_3_relays"),
        ] {
            if let Some(r) = rate(name) {
                println!("  {label} {r:>10.0} events/s = {:.2} of direct", r / direct);
            }
        }
    }
    if let (Some(noop), Some(cache), Some(raw)) = (
        rate("consumer_noop"),
        rate("consumer_cache_invalidation"),
        rate("raw_mes_kafka_fetch"),
    ) {
        println!("\nConsumer throughput, 20000 events, 6 partitions, one group member:");
        println!("  raw_mes_kafka_fetch        {raw:>10.0} events/s (fetch only, the consumer's path)");
        if let Some(rskafka) = rate("raw_rskafka_fetch") {
            println!(
                "  raw_rskafka_fetch          {rskafka:>10.0} events/s = mes-kafka at {:.2}x rskafka",
                raw / rskafka
            );
        }
        if let Some(rdkafka) = rate("confluent_kafka_consumer") {
            println!(
                "  librdkafka consumer        {rdkafka:>10.0} events/s = mes-kafka at {:.2}x librdkafka (goal >= 1.00)",
                raw / rdkafka
            );
        }
        for (label, name) in [
            ("kafkajs eachMessage       ", "kafkajs_consumer_each_message"),
            ("kafkajs eachBatch         ", "kafkajs_consumer_each_batch"),
        ] {
            if let Some(r) = rate(name) {
                println!("  {label} {r:>10.0} events/s = {:.2} of raw fetch", r / raw);
            }
        }
        println!(
            "  consumer, no-op handler    {noop:>10.0} events/s = {:.2} of raw fetch (goal >= 0.80)",
            noop / raw
        );
        println!(
            "  consumer, invalidation     {cache:>10.0} events/s = {:.2} of raw fetch (goal >= 0.60)",
            cache / raw
        );
    }
    for line in lines.iter().filter(|l| l.starts_with("LATENCY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [_, name, p50, p99] = parts.as_slice() {
            println!("  {name}: p50 {p50} µs, p99 {p99} µs");
        }
    }
}
