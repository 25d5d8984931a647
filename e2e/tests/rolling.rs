//! A rolling deploy while the fleet publishes: a service's two kafkajs
//! instances are replaced one by one by Rust instances in the same group.
//! Nothing is lost; an event handled twice (by a kafkajs instance and then a
//! Rust one) is counted, and only happens around a hand-over.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Group, Lines, Ownership};
use mes_events_types::{DomainEvent, EventType};
use serde_json::json;

/// Reads lines until `done` holds, noting who handled which event.
fn until(
    lines: &Lines,
    owned: &mut Ownership,
    handled: &mut HashMap<String, Vec<String>>,
    done: impl Fn(&Ownership, &HashMap<String, Vec<String>>) -> bool,
) {
    while !done(owned, handled) {
        let (member, line) = lines.recv().expect("a member's output");
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.entry(id.to_owned()).or_default().push(member);
        } else {
            owned.note(&member, &line);
        }
    }
}

fn stopped(lines: &Lines, handled: &mut HashMap<String, Vec<String>>, who: &str) {
    loop {
        let (member, line) = lines.recv().expect("a member's output");
        if let Some(id) = line.strip_prefix("HANDLED ") {
            handled.entry(id.to_owned()).or_default().push(member);
        } else if member == who && line == "STOPPED" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_instances_replaced_one_by_one_by_rust_lose_nothing() {
    let (group, _topic, publisher) = Group::with_topic("rolling", Duration::from_secs(6), 4).await;
    let parsed = EventType::parse(&group.event_type).unwrap();
    let (tx, lines) = mpsc::channel();
    let (mut owned, mut handled) = (Ownership::default(), HashMap::new());

    let mut k1 = group.spawn_kafkajs("k1", &tx);
    let mut k2 = group.spawn_kafkajs("k2", &tx);
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("k1") == 2 && o.of("k2") == 2 && o.disjoint()
    });

    // The fleet publishes throughout the deploy.
    let publishing = Arc::new(AtomicBool::new(true));
    let producer = {
        let publishing = Arc::clone(&publishing);
        tokio::spawn(async move {
            let mut published = Vec::new();
            let mut i = 0usize;
            while publishing.load(Ordering::SeqCst) {
                let event = DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i}))
                    .with_entity("Thing", format!("E-{}", i % 32));
                publisher.publish(&event).await.unwrap();
                published.push(event.id().to_string());
                i += 1;
                tokio::task::yield_now().await;
            }
            published
        })
    };
    until(&lines, &mut owned, &mut handled, |_, h| h.len() >= 100);

    let _r1 = group.spawn("r1", &tx);
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("r1") > 0 && o.disjoint() && o.all().len() == 4
    });
    k1.stop();
    stopped(&lines, &mut handled, "k1");
    owned.0.remove("k1");
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("r1") + o.of("k2") == 4 && o.disjoint()
    });

    let _r2 = group.spawn("r2", &tx);
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("r2") > 0 && o.disjoint() && o.all().len() == 4
    });
    k2.stop();
    stopped(&lines, &mut handled, "k2");
    owned.0.remove("k2");
    until(&lines, &mut owned, &mut handled, |o, _| {
        o.of("r1") == 2 && o.of("r2") == 2 && o.disjoint()
    });

    publishing.store(false, Ordering::SeqCst);
    let published = producer.await.unwrap();
    let expected: HashSet<&String> = published.iter().collect();
    until(&lines, &mut owned, &mut handled, |_, h| {
        expected.iter().all(|id| h.contains_key(*id))
    });

    // Handler runs repeat around hand-overs: kafkajs keeps no de-dup marks,
    // and a Rust member whose partition moved on before it committed its
    // run has its commit refused (the next owner runs those handlers
    // again). The Rust members' Redis effects still apply once per event.
    let redis = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&group.redis).unwrap())
        .build()
        .unwrap();
    fred::prelude::ClientLike::init(&redis).await.unwrap();
    let effects: HashMap<String, i64> =
        fred::prelude::HashesInterface::hgetall(&redis, mes_e2e::effects_key(&group.group))
            .await
            .unwrap();
    assert!(
        effects.values().all(|n| *n == 1),
        "a Rust member applied an effect twice"
    );
    let twice = handled.values().filter(|by| by.len() > 1).count();
    let across = handled
        .values()
        .filter(|by| by.iter().any(|m| m.starts_with('k')) && by.iter().any(|m| m.starts_with('r')))
        .count();
    let _: i64 = fred::prelude::KeysInterface::del(&redis, mes_e2e::effects_key(&group.group))
        .await
        .unwrap();
    println!(
        "{} events published during the deploy, all handled; {twice} handled more than once ({across} across a kafkajs/Rust hand-over), effects once each",
        published.len()
    );
}
