//! A rolling deploy's failures: a Rust instance killed while it shares a
//! group with a kafkajs instance, whose partitions the kafkajs one takes
//! over, and the other way round. Every event is handled (at least once:
//! the kafkajs instance keeps no de-duplication marks, so a redelivery
//! after a kill runs its handler again, counted here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use common::{Group, Lines, Ownership};
use mes_events_types::{DomainEvent, EventType};
use serde_json::json;

/// Reads lines until `done` holds, noting each handled event id.
fn until(
    lines: &Lines,
    owned: &mut Ownership,
    handled: &mut Vec<String>,
    done: impl Fn(&Ownership, usize) -> bool,
) {
    let mut distinct: HashSet<String> = handled.iter().cloned().collect();
    while !done(owned, distinct.len()) {
        let (member, line) = lines.recv().expect("a member's output");
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.push(id.to_owned());
            distinct.insert(id.to_owned());
        } else {
            owned.note(&member, &line);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_members_partitions_go_to_the_other_kind() {
    let (group, _topic, publisher) = Group::with_topic("mixedkill", Duration::from_secs(6), 4).await;
    let parsed = EventType::parse(&group.event_type).unwrap();
    let event = |i: usize| {
        DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i}))
            .with_entity("Thing", format!("E-{}", i % 16))
    };
    let (tx, lines) = mpsc::channel();
    let (mut owned, mut handled) = (Ownership::default(), Vec::new());

    let _kafkajs = {
        let kafkajs = group.spawn_kafkajs("kafkajs", &tx);
        until(&lines, &mut owned, &mut handled, |o, _| o.of("kafkajs") == 4);
        kafkajs
    };
    let mut rust = group.spawn("rust", &tx);
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("kafkajs") == 2 && o.of("rust") == 2 && o.disjoint()
    });
    let first: Vec<DomainEvent> = (0..200).map(event).collect();
    for e in &first {
        publisher.publish(e).await.unwrap();
    }
    until(&lines, &mut owned, &mut handled, |_, distinct| distinct >= 100);

    // The Rust instance dies; the kafkajs one takes everything.
    rust.kill();
    owned.0.remove("rust");
    group.evict(owned.member_id("rust")).await;
    until(&lines, &mut owned, &mut handled, |o, distinct| {
        o.of("kafkajs") == 4 && distinct == first.len()
    });
    println!(
        "rust killed: kafkajs took its partitions and finished the first {} events",
        first.len()
    );

    // A Rust instance joins again; then the kafkajs one dies.
    let _rust = group.spawn("rust2", &tx);
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("kafkajs") == 2 && o.of("rust2") == 2 && o.disjoint()
    });
    let mut kafkajs = _kafkajs;
    kafkajs.kill();
    owned.0.remove("kafkajs");
    group.evict(owned.member_id("kafkajs")).await;
    let second: Vec<DomainEvent> = (200..400).map(event).collect();
    for e in &second {
        publisher.publish(e).await.unwrap();
    }
    let total = first.len() + second.len();
    until(&lines, &mut owned, &mut handled, |o, distinct| {
        o.of("rust2") == 4 && distinct == total
    });

    let published: HashSet<String> = first.iter().chain(&second).map(|e| e.id().to_string()).collect();
    let seen: HashSet<String> = handled.iter().cloned().collect();
    assert_eq!(seen, published, "every event handled");
    println!(
        "{total} events, {} handler runs: {} redelivered after the kills",
        handled.len(),
        handled.len() - total
    );
}
