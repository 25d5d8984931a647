//! Fault scenario: bad input at load. Among the events of a topic, 1 % are
//! poison records (not JSON, JSON that is no CloudEvent, an unknown spec
//! version), and an oversized event is attempted now and then. Promised: the
//! partition keeps moving, every poison record lands in the dead-letter
//! topic with its reason, every good event is handled once and in order,
//! the oversized one is refused with a typed error, and nothing panics.
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
use std::time::Instant;

use common::{Group, Ownership};
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType, KafkaRecord};
use mes_publisher::Error;
use serde_json::json;

const ENTITIES: usize = 20;

/// The poison of the `n`-th bad record.
fn poison(n: usize) -> Vec<u8> {
    match n % 3 {
        0 => format!("not json {n}").into_bytes(),
        1 => json!({"hello": n}).to_string().into_bytes(),
        _ => json!({"specversion": "0.3", "id": format!("bad-{n}"), "type": "x", "source": "y"})
            .to_string()
            .into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_and_oversized_events_at_load() {
    let per_entity: usize = scaled(25, 250);
    let (group, topic, publisher) = Group::with_topic("poison", std::time::Duration::from_secs(6), 4).await;
    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let mut member = group.spawn("a", &tx);
    owned.until(&lines, |o| o.of("a") == 4);

    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    let started = Instant::now();
    let (mut poisoned, mut oversized_refused, mut oversized_other) = (Vec::new(), 0_u64, Vec::new());
    for (i, event) in events.iter().enumerate() {
        publisher.publish(event).await.unwrap();
        // Mid-hundred: the poison's entity has later events on the same
        // partition, whose handling shows the poison was passed.
        if i % 100 == 49 {
            let n = poisoned.len();
            let record = KafkaRecord {
                key: Some(format!("E-{}", i % ENTITIES).into_bytes()),
                headers: Vec::new(),
                value: Some(poison(n)),
            };
            publisher.publish_record(&topic, record).await.unwrap();
            poisoned.push(poison(n));
            let huge = DomainEvent::new_raw(parsed.clone(), "test", json!({"blob": "x".repeat(2 << 20)}))
                .with_entity("Thing", "E-huge");
            match publisher.publish(&huge).await {
                Err(Error::RecordTooLarge { .. }) => oversized_refused += 1,
                other => oversized_other.push(format!("{other:?}")),
            }
        }
    }
    let publish_time = started.elapsed();

    let mut handled = HashSet::new();
    let mut runs = 0_u64;
    while handled.len() < events.len() {
        let (member, line) = lines.recv().unwrap();
        match line.strip_prefix("HANDLED ") {
            Some(id) => {
                runs += 1;
                handled.insert(id.to_owned());
            }
            None => owned.note(&member, &line),
        }
    }
    // Each poison record has later good events on its partition (same key),
    // handled only after the poison was dead-lettered: all letters are
    // there now.
    let letters = mes_testkit::kafka::read_topic(&group.brokers, &format!("{topic}.dlq")).await;
    common::stop_members(&mut [&mut member], &lines);

    let dead: Vec<&KafkaRecord> = letters.iter().map(|l| &l.record).collect();
    let missing_from_dlq = poisoned
        .iter()
        .filter(|value| !dead.iter().any(|d| d.value.as_ref() == Some(*value)))
        .count() as u64;
    let without_reason = dead
        .iter()
        .filter(|d| d.header("mes-dlq-reason").is_none_or(<[u8]>::is_empty))
        .count() as u64;
    let reasons: HashSet<String> = dead
        .iter()
        .filter_map(|d| d.header("mes-dlq-reason"))
        .map(|r| {
            let reason = String::from_utf8_lossy(r);
            reason.split(':').next().unwrap_or_default().to_owned()
        })
        .collect();
    let audit = group.audit_effects(&events, ENTITIES).await;

    let mut report = Report::new(
        "bad_input_at_load",
        "1 % poison records (not JSON, not a CloudEvent, spec 0.3) and an oversized (2 MiB) event per 100",
        format!(
            "{} good events over {ENTITIES} entities at {:.0}/s, 1 Rust member, 4 partitions",
            events.len(),
            events.len() as f64 / publish_time.as_secs_f64()
        ),
    );
    report
        .none("good events lost", audit.lost)
        .none("good effects applied twice", audit.doubled)
        .none("entities whose effects are out of order", audit.out_of_order)
        .none("poison records not in the dead-letter topic", missing_from_dlq)
        .none("dead letters without a reason", without_reason)
        .check(
            "dead letters",
            &poisoned.len().to_string(),
            json!(dead.len()),
            dead.len() == poisoned.len(),
        )
        .check(
            "oversized events refused with RecordTooLarge",
            &poisoned.len().to_string(),
            json!(oversized_refused),
            oversized_refused == poisoned.len() as u64 && oversized_other.is_empty(),
        )
        .figure("poison_records", poisoned.len() as u64)
        .figure("reasons", reasons.into_iter().collect::<Vec<_>>())
        .figure("oversized_other_outcomes", oversized_other)
        .figure("handler_runs_repeated", runs - events.len() as u64);
    println!("{:#}", report.to_json());
    report.finish();
}
