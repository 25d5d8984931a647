//! Fault scenario: a rolling deploy's failures in a group shared by a Rust
//! and a kafkajs instance of one service, under steady load. The Rust
//! member is SIGKILLed (the kafkajs one takes its partitions), a new Rust
//! member joins, then the kafkajs member is SIGKILLed (the Rust one takes
//! everything) and a new kafkajs member joins.
//!
//! Promised, split by member kind: no event lost by either; the Rust
//! members' effects (in Redis, committed with their offsets) applied once
//! each and in order. The kafkajs members keep no de-duplication marks, so
//! a redelivery after a kill runs their handler again: counted, allowed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Lines, Ownership};
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use serde_json::json;

const ENTITIES: usize = 40;
const SESSION: Duration = Duration::from_secs(6);
/// How long the members may go without handling anything.
const PATIENCE: Duration = Duration::from_secs(60);

/// Handler runs per event id, by member kind.
#[derive(Default)]
struct Runs {
    rust: HashMap<String, u64>,
    kafkajs: HashMap<String, u64>,
}

impl Runs {
    fn distinct(&self) -> usize {
        self.rust
            .keys()
            .chain(self.kafkajs.keys())
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Takes in one line of a member.
fn note(member: &str, line: &str, owned: &mut Ownership, runs: &mut Runs) {
    match line.strip_prefix("HANDLED ") {
        Some(id) => {
            let by_kind = if member.starts_with("kafkajs") {
                &mut runs.kafkajs
            } else {
                &mut runs.rust
            };
            *by_kind.entry(id.to_owned()).or_default() += 1;
        }
        None => owned.note(member, line),
    }
}

/// Reads lines until `done` holds (bounded by [`PATIENCE`] without a line).
fn until(lines: &Lines, owned: &mut Ownership, runs: &mut Runs, done: impl Fn(&Ownership, &Runs) -> bool) {
    while !done(owned, runs) {
        let (member, line) = lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no member said anything for {PATIENCE:?}; owned {:?}", owned.0));
        note(&member, &line, owned, runs);
    }
}

/// Reads lines for `length`.
fn run_for(length: Duration, lines: &Lines, owned: &mut Ownership, runs: &mut Runs) {
    let end = Instant::now() + length;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Ok((member, line)) = lines.recv_timeout(left) {
            note(&member, &line, owned, runs);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_group_through_sigkills_of_either_kind_under_load() {
    let per_entity: usize = scaled(10, 50);
    let phase_length = scaled(Duration::from_secs(2), Duration::from_secs(8));
    let (group, _topic, publisher) = Group::with_topic("mixed", SESSION, 4).await;
    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();

    let (tx, lines) = mpsc::channel();
    let (mut owned, mut runs) = (Ownership::default(), Runs::default());
    let mut kafkajs = group.spawn_kafkajs("kafkajs-1", &tx);
    until(&lines, &mut owned, &mut runs, |o, _| o.of("kafkajs-1") == 4);
    let mut rust = group.spawn("rust-1", &tx);
    until(&lines, &mut owned, &mut runs, |o, _| {
        o.of("kafkajs-1") == 2 && o.of("rust-1") == 2 && o.disjoint()
    });

    // Steady load over the four phases, one event per request (see
    // faults_consumer_kill.rs).
    let publishing = {
        let events = events.clone();
        let gap = phase_length * 4 / u32::try_from(events.len()).unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut pace = tokio::time::interval(gap);
            for event in &events {
                pace.tick().await;
                publisher.publish(event).await.unwrap();
            }
            started.elapsed()
        })
    };
    let mut takeover_ms = serde_json::Map::new();
    run_for(phase_length, &lines, &mut owned, &mut runs);

    // The Rust member dies; the kafkajs one takes its partitions (evicted
    // at once: see `Group::evict`).
    rust.kill();
    owned.0.remove("rust-1");
    let killed = Instant::now();
    group.evict(owned.member_id("rust-1")).await;
    until(&lines, &mut owned, &mut runs, |o, _| o.of("kafkajs-1") == 4);
    takeover_ms.insert("rust_killed".into(), json!(killed.elapsed().as_millis() as u64));
    run_for(phase_length, &lines, &mut owned, &mut runs);

    // A new Rust member joins; then the kafkajs member dies.
    let mut rust = group.spawn("rust-2", &tx);
    until(&lines, &mut owned, &mut runs, |o, _| {
        o.of("kafkajs-1") == 2 && o.of("rust-2") == 2 && o.disjoint()
    });
    run_for(phase_length, &lines, &mut owned, &mut runs);
    kafkajs.kill();
    owned.0.remove("kafkajs-1");
    let killed = Instant::now();
    group.evict(owned.member_id("kafkajs-1")).await;
    until(&lines, &mut owned, &mut runs, |o, _| o.of("rust-2") == 4);
    takeover_ms.insert(
        "kafkajs_killed".into(),
        json!(killed.elapsed().as_millis() as u64),
    );

    // A new kafkajs member joins; everything published gets handled.
    let mut kafkajs = group.spawn_kafkajs("kafkajs-2", &tx);
    until(&lines, &mut owned, &mut runs, |o, _| {
        o.of("kafkajs-2") == 2 && o.of("rust-2") == 2 && o.disjoint()
    });
    let publish_time = publishing.await.unwrap();
    until(&lines, &mut owned, &mut runs, |_, runs| {
        runs.distinct() == events.len()
    });
    common::stop_members(&mut [&mut rust, &mut kafkajs], &lines);

    let handled_by_kafkajs: HashSet<String> = runs.kafkajs.keys().cloned().collect();
    let audit = group
        .audit_mixed_effects(&events, ENTITIES, &handled_by_kafkajs)
        .await;
    let repeated = |by: &HashMap<String, u64>| by.values().map(|n| n - 1).sum::<u64>();
    let mut report = Report::new(
        "mixed_group_sigkill",
        "in a group of one Rust and one kafkajs member: the Rust one SIGKILLed (a new one joins), then the kafkajs one (a new one joins)",
        format!(
            "{} events over {ENTITIES} entities published at {:.0}/s, 4 partitions",
            events.len(),
            events.len() as f64 / publish_time.as_secs_f64()
        ),
    );
    report
        .none("events lost (handled by neither kind)", audit.lost)
        .none("Rust members' effects applied twice", audit.doubled)
        .none("entities whose Rust effects are out of order", audit.out_of_order)
        .figure(
            "handled",
            json!({"by_rust": runs.rust.len(), "by_kafkajs": runs.kafkajs.len()}),
        )
        .figure("kafkajs_handler_runs_repeated", repeated(&runs.kafkajs))
        .figure("rust_handler_runs_repeated", repeated(&runs.rust))
        .figure(
            "takeover_ms_after_eviction",
            serde_json::Value::Object(takeover_ms),
        );
    println!("{:#}", report.to_json());
    report.finish();
}
