//! The outbox relay killed between the broker's acknowledgement of a batch
//! and the deletion of its rows: after a restart every event is on the
//! topic, the only duplicates are the events of the batches in flight at
//! the kills, and the consumer's de-duplication applies each event once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Group;
use mes_e2e::env;
use mes_events_types::{DomainEvent, EventType, decode};
use mes_publisher::{Outbox, OutboxTable};
use mes_testkit::postgres::TestSchema;
use serde_json::json;

const ENTITIES: usize = 50;
const PER_ENTITY: usize = 40;
/// Each round holds after this many acknowledged batches, then is killed.
const HOLD_AFTER: [usize; 3] = [2, 3, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_after_the_ack_duplicates_only_its_batch_in_flight() {
    let (group, topic, _publisher) = Group::with_topic("outboxkill", Duration::from_millis(1000), 4).await;
    let schema = TestSchema::create("outbox_kill").await;
    let pool = schema.pool(2).await;
    let table = OutboxTable::in_schema(schema.name(), "outbox").unwrap();
    let outbox = Outbox::new(table.clone());
    outbox.migrate(&pool).await.unwrap();

    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * PER_ENTITY)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    for chunk in events.chunks(20) {
        let mut tx = pool.begin().await.unwrap();
        outbox.enqueue(&mut tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }

    let relay = |hold_after: Option<usize>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
        command
            .env(env::POSTGRES, mes_testkit::postgres_url())
            .env(env::OUTBOX_TABLE, table.qualified_name())
            .env(env::BROKERS, &group.brokers)
            .stdout(Stdio::piped());
        if let Some(k) = hold_after {
            command.env(env::HOLD_AFTER_BATCHES, k.to_string());
        }
        command.spawn().expect("start outbox-relay")
    };

    // Each round: the k-th acknowledged batch is the one in flight at the kill.
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    for k in HOLD_AFTER {
        let mut child = relay(Some(k));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last_batch = Vec::new();
        for _ in 0..k {
            let line = lines.next().expect("an ACKED line").unwrap();
            last_batch = line
                .strip_prefix("ACKED ")
                .expect("ACKED")
                .split(',')
                .map(str::to_owned)
                .collect();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        println!("killed after {k} batches; {} events in flight", last_batch.len());
        for id in last_batch {
            *in_flight.entry(id).or_default() += 1;
        }
    }
    let mut last = relay(None);
    let drained = BufReader::new(last.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("DRAINED"))
        .expect("DRAINED");
    assert!(last.wait().unwrap().success());
    println!("{drained}");
    assert_eq!(outbox.stats(&pool).await.unwrap().pending, 0);

    // Every event is on the topic; the duplicates are exactly the events of
    // the batches in flight at the kills, once per kill.
    let mut copies: HashMap<String, usize> = HashMap::new();
    for read in mes_testkit::kafka::read_topic(&group.brokers, &topic).await {
        *copies
            .entry(decode(&read.record).unwrap().id().to_string())
            .or_default() += 1;
    }
    assert_eq!(copies.len(), events.len(), "every event on the topic");
    for event in &events {
        let id = event.id().to_string();
        let expected = 1 + in_flight.get(&id).copied().unwrap_or(0);
        assert_eq!(copies[&id], expected, "copies of {id}");
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(duplicates > 0, "the kills left no batch in flight");
    println!(
        "{} events, {} records on the topic, {duplicates} duplicates, all from the {} kills' batches",
        events.len(),
        copies.values().sum::<usize>(),
        HOLD_AFTER.len()
    );

    // End to end: the consumer group applies each event's effect once, in
    // each entity's order.
    let (tx, lines) = mpsc::channel();
    let mut member = group.spawn("consumer", &tx);
    let mut handled = HashSet::new();
    while handled.len() < events.len() {
        let (_, line) = lines.recv().unwrap();
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.insert(id.to_owned());
        }
    }
    member.stop();
    while lines.recv().unwrap().1 != "STOPPED" {}
    member.wait();

    group.assert_effects_once_in_order(&events, ENTITIES).await;
}
