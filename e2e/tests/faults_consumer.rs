//! Fault scenario: one member of a consumer group loses its link to Redis
//! (cut, then blackholed) while events keep coming; its link to the broker
//! stays up, so it keeps its partitions. Promised: no event lost, no effect
//! applied twice, each entity's effects in order; the stalled partitions
//! move again once the link heals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Ownership};
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_testkit::fault_proxy::{Fault, FaultProxy};
use serde_json::json;

const ENTITIES: usize = 50;
const SESSION: Duration = Duration::from_secs(6);
/// How long the members may go without handling anything once healed.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_link_to_redis_cut_and_blackholed_under_load() {
    let per_entity: usize = scaled(20, 100);
    let fault_length = scaled(Duration::from_secs(3), Duration::from_secs(15));
    let (group, _topic, publisher) = Group::with_topic("rediscut", SESSION, 4).await;
    let (proxy, through_proxy) = FaultProxy::in_front_of(&group.redis).unwrap();
    let mut cut_off = group.clone();
    cut_off.redis = through_proxy;

    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let mut a = cut_off.spawn("a", &tx);
    owned.until(&lines, |o| o.of("a") == 4);
    let mut b = group.spawn("b", &tx);
    owned.until(&lines, |o| o.of("a") == 2 && o.of("b") == 2 && o.disjoint());

    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    // Steady load: published one by one (see faults_consumer_kill.rs) while the
    // faults come and go.
    let publishing = {
        let events = events.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for event in &events {
                publisher.publish(event).await.unwrap();
            }
            started.elapsed()
        })
    };

    let mut handled = HashSet::new();
    let mut runs = 0_u64;
    let mut handled_by_a_during = [0_u64; 2];
    let mut take = |member: &str, line: &str, owned: &mut Ownership, handled: &mut HashSet<String>| -> bool {
        match line.strip_prefix("HANDLED ") {
            Some(id) => {
                runs += 1;
                handled.insert(id.to_owned());
                member == "a"
            }
            None => {
                owned.note(member, line);
                false
            }
        }
    };
    // Faults start once a quarter of the events are handled.
    while handled.len() < events.len() / 4 {
        let (member, line) = lines.recv().unwrap();
        take(&member, &line, &mut owned, &mut handled);
    }
    let mut healed_at = Instant::now();
    for (index, fault) in [Fault::Cut, Fault::Blackhole].into_iter().enumerate() {
        proxy.set(fault);
        let until = Instant::now() + fault_length;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok((member, line)) = lines.recv_timeout(left)
                && take(&member, &line, &mut owned, &mut handled)
            {
                handled_by_a_during[index] += 1;
            }
        }
        proxy.heal();
        healed_at = Instant::now();
        println!(
            "{fault:?} healed: {} of {} handled, owned {:?}",
            handled.len(),
            events.len(),
            owned.0
        );
    }
    while handled.len() < events.len() {
        let Ok((member, line)) = lines.recv_timeout(PATIENCE) else {
            panic!(
                "no progress for {PATIENCE:?} after healing: {} of {} handled, owned {:?}",
                handled.len(),
                events.len(),
                owned.0
            );
        };
        take(&member, &line, &mut owned, &mut handled);
    }
    let caught_up = healed_at.elapsed();
    let publish_time = publishing.await.unwrap();
    common::stop_members(&mut [&mut a, &mut b], &lines);

    let audit = group.audit_effects(&events, ENTITIES).await;
    let mut report = Report::new(
        "consumer_redis_cut",
        format!(
            "one of two Rust members <-> Redis cut (RST) then blackholed, {} s each; its broker link up",
            fault_length.as_secs_f64()
        ),
        format!(
            "{} events over {ENTITIES} entities published at {:.0}/s, 4 partitions",
            events.len(),
            events.len() as f64 / publish_time.as_secs_f64()
        ),
    );
    audit.report_into(&mut report);
    report
        .figure("handler_runs_repeated", runs - events.len() as u64)
        .figure("handled_by_cut_member_while_cut", handled_by_a_during[0])
        .figure("handled_by_cut_member_while_blackholed", handled_by_a_during[1])
        .figure("caught_up_ms_after_last_heal", caught_up.as_millis() as u64);
    println!("{:#}", report.to_json());
    report.finish();
}
