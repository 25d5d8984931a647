//! A member frozen past its session (a long GC pause, a stopped VM: here
//! SIGSTOP) changes nothing when it wakes up: its partitions went to the
//! other member in a newer generation, whose claims replaced its own in
//! Redis, so whatever it was handling is refused at commit. Every effect is
//! applied once, each entity's in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use common::{Group, Ownership};
use mes_e2e::faults::Report;
use mes_events_types::{DomainEvent, EventType};
use serde_json::json;

const ENTITIES: usize = 40;
const PER_ENTITY: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_session_changes_nothing_when_it_wakes() {
    let (group, _topic, publisher) = Group::with_topic("zombie", Duration::from_secs(6), 4).await;
    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * PER_ENTITY)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();

    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let _a = group.spawn("a", &tx);
    owned.until(&lines, |o| o.of("a") == 4);
    let mut b = group.spawn("b", &tx);
    owned.until(&lines, |o| o.of("a") == 2 && o.of("b") == 2 && o.disjoint());
    // Published once both run, so both have work (one event per request:
    // see faults_consumer_kill.rs).
    for event in &events {
        publisher.publish(event).await.unwrap();
    }

    let mut handled = HashSet::new();
    let mut by_b = 0;
    while by_b < 100 {
        let (member, line) = lines.recv().unwrap();
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.insert(id.to_owned());
            by_b += usize::from(member == "b");
        }
    }
    b.pause();
    // b's session runs out; the coordinator drops it (here at once: see
    // `Group::evict`) and a takes every partition in a new generation.
    group.evict(owned.member_id("b")).await;
    while handled.len() < events.len() || owned.of("a") != 4 {
        let (member, line) = lines.recv().unwrap();
        // (b's last lines before it froze may still be on their way.)
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.insert(id.to_owned());
        } else {
            owned.note(&member, &line);
        }
    }

    // b wakes up in the middle of whatever it was doing: its handlers may
    // finish, its commits are refused, and it joins again as a new member.
    b.resume();
    owned.until(&lines, |o| o.of("a") == 2 && o.of("b") == 2 && o.disjoint());
    b.stop();
    loop {
        let (member, line) = lines.recv().unwrap();
        if member == "b" && line == "STOPPED" {
            break;
        }
    }
    b.wait();
    let audit = group.audit_effects(&events, ENTITIES).await;
    let mut report = Report::new(
        "consumer_sigstop_zombie",
        "one of two members SIGSTOPped past its session, removed from the group, then resumed",
        format!("{} events over {ENTITIES} entities, 4 partitions", events.len()),
    );
    audit.report_into(&mut report);
    report.figure("handled_by_the_zombie_before_it_froze", by_b as u64);
    report.finish();
    println!(
        "b frozen after handling {by_b}; a finished the other {} events",
        events.len()
    );
}
