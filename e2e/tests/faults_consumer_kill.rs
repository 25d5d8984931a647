//! No loss and no double effect: 10,000 events over 200 entities, the
//! consumer process killed with SIGKILL at random points and restarted
//! several times. Every event's effect is applied exactly once (effects are
//! committed atomically with the offset) and each entity's effects are in
//! publish order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use common::Group;
use mes_e2e::faults::Report;

use mes_events_types::{DomainEvent, EventType};
use serde_json::json;

const ENTITIES: usize = 200;
const PER_ENTITY: usize = 50;
const KILLS: usize = 4;
/// The group's session timeout (tansu holds a join up to 3 s and drops a
/// member whose session runs out meanwhile, so it cannot be much shorter).
const SESSION: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_consumers_apply_every_effect_once_in_order() {
    let (group, _topic, publisher) = Group::with_topic("kill", SESSION, 4).await;
    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * PER_ENTITY)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    // One event per produce request, so every offset starts a record batch:
    // tansu's memory storage answers a fetch from inside a multi-record batch
    // with nothing or with the next batch (records skipped), and a restarted
    // consumer resumes from arbitrary offsets. Real Kafka needs no such care.
    for event in &events {
        publisher.publish(event).await.unwrap();
    }

    // Kill points spread over the run, varied from run to run.
    let seed = ulid::Ulid::new().random() as u64;
    let kill_after: Vec<usize> = (0..KILLS)
        .map(|k| 800 + (seed >> (k * 8)) as usize % 1200)
        .collect();
    let (tx, lines) = mpsc::channel();
    let mut handled = HashSet::new();
    let mut handled_lines = 0;
    for (round, after) in kill_after.iter().enumerate() {
        let mut member = group.spawn(&format!("m{round}"), &tx);
        let mut in_round = 0;
        let mut member_id = String::new();
        while in_round < *after {
            let (_, line) = lines.recv().unwrap();
            if let Some(id) = line.strip_prefix("HANDLED ") {
                handled.insert(id.to_owned());
                handled_lines += 1;
                in_round += 1;
            } else if let Some(id) = line.strip_prefix("MEMBER ") {
                member_id = id.to_owned();
            }
        }
        member.kill();
        // What the coordinator does after the session timeout on Kafka, and
        // tansu 0.6.0 gets wrong (see `Group::evict`).
        group.evict(&member_id).await;
        println!(
            "round {round}: killed after {after} events handled ({} distinct so far)",
            handled.len()
        );
    }
    let mut last = group.spawn("last", &tx);
    while handled.len() < events.len() {
        let (_, line) = lines.recv().unwrap();
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.insert(id.to_owned());
            handled_lines += 1;
        }
    }
    // Graceful stop: the in-flight event is committed before it exits.
    last.stop();
    loop {
        let (_, line) = lines.recv().unwrap();
        if line == "STOPPED" {
            break;
        }
    }
    last.wait();
    println!(
        "{} events, {handled_lines} handler runs ({} repeated after kills), {KILLS} kills",
        events.len(),
        handled_lines - events.len()
    );

    let audit = group.audit_effects(&events, ENTITIES).await;
    let mut report = Report::new(
        "consumer_sigkill",
        format!("the only member SIGKILLed {KILLS} times at random points, restarted each time"),
        format!("{} events over {ENTITIES} entities, 4 partitions", events.len()),
    );
    audit.report_into(&mut report);
    report.figure("handler_runs_repeated", (handled_lines - events.len()) as u64);
    report.finish();
}
