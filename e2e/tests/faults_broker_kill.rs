//! Fault scenario: the broker SIGKILLed under the idempotent producer and a
//! consumer group, twice: once straight back up, once down for a while.
//! The producers publish again what failed (at-least-once); the group's
//! members reconnect and rejoin by themselves. Promised: every
//! acknowledged event on the topic, no record written twice by the
//! library's own retries, each entity's events in order on the topic, and
//! every event's effect applied exactly once, in order.
//!
//! A broker of its own with `sqlite://` storage, which keeps every
//! acknowledged record across a kill.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Ownership};
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{Delivery, EventPublisher, PublisherConfig, RetryPolicy};
use mes_testkit::tansu::TansuBroker;
use serde_json::json;

const ENTITIES: usize = 20;
const SESSION: Duration = Duration::from_secs(6);
/// How long the members may go without handling anything.
const PATIENCE: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Tally {
    maybe_written: AtomicU64,
    not_written: AtomicU64,
    acknowledged: AtomicU64,
}

impl Tally {
    fn errors(&self) -> u64 {
        self.maybe_written.load(Ordering::Relaxed) + self.not_written.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_under_producers_and_a_consumer_group() {
    let per_entity: usize = scaled(15, 60);
    let down_for = scaled(Duration::from_secs(2), Duration::from_secs(8));
    let phase_length = scaled(Duration::from_secs(2), Duration::from_secs(8));
    let dir = std::env::temp_dir().join(format!("mes-faults-broker-kill-{}", ulid::Ulid::new()));
    let mut broker = TansuBroker::start(&mes_testkit::tansu_binary(), "sqlite://tansu.db", &dir).unwrap();
    let (group, topic, _) = Group::with_topic_on(&broker.address(), "brokerkill", SESSION, 4).await;

    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let mut a = group.spawn("a", &tx);
    let mut b = group.spawn("b", &tx);
    owned.until(&lines, |o| o.of("a") + o.of("b") == 4 && o.disjoint());

    let config = PublisherConfig::new([broker.address()])
        // A retry budget shorter than the outage, so callers see errors
        // and publish again.
        .retry(RetryPolicy::default().retries(2))
        .request_timeout(Duration::from_secs(1));
    let publisher = EventPublisher::connect(config).await.unwrap();
    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    // One producer per entity, paced to span the phases, each event
    // published again until acknowledged (one by one: see
    // faults_consumer_kill.rs).
    let gap = (phase_length * 3 + down_for) / u32::try_from(per_entity).unwrap();
    let producers: Vec<_> = (0..ENTITIES)
        .map(|e| {
            let (publisher, tally) = (publisher.clone(), Arc::clone(&tally));
            let mine: Vec<DomainEvent> = events.iter().skip(e).step_by(ENTITIES).cloned().collect();
            tokio::spawn(async move {
                let mut published_again = Vec::new();
                let mut pace = tokio::time::interval(gap);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for event in &mine {
                    pace.tick().await;
                    loop {
                        match publisher.publish(event).await {
                            Ok(_) => {
                                tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(error) => {
                                let counter = match error.delivery() {
                                    Delivery::MaybeWritten => {
                                        published_again.push(event.id().to_string());
                                        &tally.maybe_written
                                    }
                                    _ => &tally.not_written,
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                published_again
            })
        })
        .collect();

    let mut handled = HashSet::new();
    let mut runs = 0_u64;
    let mut take = |until: Instant, handled: &mut HashSet<String>, owned: &mut Ownership| {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok((member, line)) = lines.recv_timeout(left) {
                match line.strip_prefix("HANDLED ") {
                    Some(id) => {
                        runs += 1;
                        handled.insert(id.to_owned());
                    }
                    None => owned.note(&member, &line),
                }
            }
        }
    };
    // Steady, then a kill and a restart at once; steady, then a kill and
    // the broker down for a while.
    take(Instant::now() + phase_length, &mut handled, &mut owned);
    broker.kill().unwrap();
    let killed = Instant::now();
    broker.restart().unwrap();
    let first_restart = killed.elapsed();
    take(Instant::now() + phase_length, &mut handled, &mut owned);
    let before_second = tally.errors();
    broker.kill().unwrap();
    take(Instant::now() + down_for, &mut handled, &mut owned);
    broker.restart().unwrap();
    let back = Instant::now();
    let errors_while_down = tally.errors() - before_second;

    let mut published_again = HashSet::new();
    for producer in producers {
        published_again.extend(producer.await.unwrap());
    }
    let publish_time = started.elapsed();
    let since = Instant::now();
    while handled.len() < events.len() {
        let before = handled.len();
        take(
            Instant::now() + Duration::from_millis(500),
            &mut handled,
            &mut owned,
        );
        assert!(
            handled.len() > before || since.elapsed() < PATIENCE,
            "no progress: {} of {} handled, owned {:?}",
            handled.len(),
            events.len(),
            owned.0
        );
    }
    let caught_up = back.elapsed();
    common::stop_members(&mut [&mut a, &mut b], &lines);
    let effects = group.audit_effects(&events, ENTITIES).await;
    let on_topic = common::audit_topic(&broker.address(), &topic, &events, &published_again).await;
    publisher.disconnect().await;

    let mut report = Report::new(
        "broker_sigkill",
        format!(
            "the broker (tansu, sqlite storage) SIGKILLed twice: restarted at once, then after {} s down",
            down_for.as_secs_f64()
        ),
        format!(
            "{ENTITIES} idempotent producers, {} events at {:.0}/s; 2 Rust members, 4 partitions",
            events.len(),
            events.len() as f64 / publish_time.as_secs_f64()
        ),
    );
    report
        .none("acknowledged events lost", on_topic.lost)
        .none(
            "records written twice by the library's retries",
            on_topic.duplicated_by_library,
        )
        .none(
            "entities whose events are out of order on the topic",
            on_topic.out_of_order,
        );
    effects.report_into(&mut report);
    report
        .check(
            "publishes failed with a typed error while the broker was down",
            "> 0",
            json!(errors_while_down),
            errors_while_down > 0,
        )
        .figure(
            "errors_maybe_written",
            tally.maybe_written.load(Ordering::Relaxed),
        )
        .figure("errors_not_written", tally.not_written.load(Ordering::Relaxed))
        .figure(
            "duplicates_from_publishing_again",
            on_topic.duplicates - on_topic.duplicated_by_library,
        )
        .figure("handler_runs_repeated", runs - events.len() as u64)
        .figure("first_restart_ms", first_restart.as_millis() as u64)
        .figure(
            "all_handled_ms_after_second_restart",
            caught_up.as_millis() as u64,
        );
    println!("{:#}", report.to_json());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    report.finish();
}
