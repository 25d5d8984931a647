//! Fault scenario: network partitions of one consumer-group member, made
//! with a network namespace of its own. First it loses the broker (the
//! group coordinator) but keeps Redis, so it goes on handling and trying to
//! commit what it holds while the other member takes its partitions over;
//! then it is cut off from everything, silently. Promised: no event lost,
//! no effect applied twice (the old owner's commits are refused), each
//! entity's effects in order; the partitions move to the other member and
//! the cut-off member joins again when the network heals.
//!
//! Needs root and iproute2 (`mes_testkit::netns`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Lines, Ownership};
use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_testkit::fault_proxy::FaultProxy;
use mes_testkit::netns::{HostAddress, Jail};
use mes_testkit::tansu::TansuBroker;
use serde_json::json;

const ENTITIES: usize = 50;
const SESSION: Duration = Duration::from_secs(6);

/// Reads lines until `done`, counting handled events.
struct Progress {
    handled: HashSet<String>,
    runs: u64,
    owned: Ownership,
}

impl Progress {
    fn until(&mut self, lines: &Lines, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let (member, line) = lines.recv().expect("a member's output");
            self.take(&member, &line);
        }
    }

    fn take(&mut self, member: &str, line: &str) {
        match line.strip_prefix("HANDLED ") {
            Some(id) => {
                self.runs += 1;
                self.handled.insert(id.to_owned());
            }
            None => self.owned.note(member, line),
        }
    }

    /// Keeps reading for `length` (the fault's duration, not a wait for
    /// something to happen).
    fn during(&mut self, lines: &Lines, length: Duration) {
        let until = Instant::now() + length;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok((member, line)) = lines.recv_timeout(left) {
                self.take(&member, &line);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_partitioned_from_the_coordinator_then_from_everything() {
    let per_entity: usize = scaled(20, 100);
    let fault_length = scaled(Duration::from_secs(3), Duration::from_secs(15));

    // The services on host addresses a jail can reach: a broker of this
    // test, and the suites' Redis through a proxy.
    let kafka_host = HostAddress::add().unwrap();
    let redis_host = HostAddress::add().unwrap();
    let dir = std::env::temp_dir().join(format!("mes-faults-partition-{}", ulid::Ulid::new()));
    let broker = TansuBroker::start_on_host(
        &mes_testkit::tansu_binary(),
        "memory://tansu/",
        kafka_host.ip(),
        &dir,
    )
    .unwrap();
    let redis: SocketAddr = mes_testkit::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let redis_proxy = FaultProxy::start_on(TcpListener::bind((redis_host.ip(), 0)).unwrap(), redis).unwrap();
    let (mut group, _topic, publisher) =
        Group::with_topic_on(&broker.address(), "partition", SESSION, 4).await;
    group.redis = format!("redis://{}:{}", redis_host.ip(), redis_proxy.port());

    let jail = Jail::new().unwrap();
    let (tx, lines) = mpsc::channel();
    let mut progress = Progress {
        handled: HashSet::new(),
        runs: 0,
        owned: Ownership::default(),
    };
    let mut a = group.spawn_jailed(&jail, "a", &tx);
    progress.until(&lines, |p| p.owned.of("a") == 4);
    let mut b = group.spawn("b", &tx);
    progress.until(&lines, |p| {
        p.owned.of("a") == 2 && p.owned.of("b") == 2 && p.owned.disjoint()
    });

    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
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
    progress.until(&lines, |p| p.handled.len() >= events.len() / 4);

    // 1. a loses the coordinator, keeps Redis. The coordinator drops it when
    // its session runs out; the test removes it at once instead (tansu
    // 0.6.0 never reassigns a timed-out member's partitions: see
    // `Group::evict`), so b takes over while a still runs and can reach
    // Redis: the fencing case.
    let mut takeover = Vec::new();
    for fault in ["coordinator", "everything"] {
        let a_id = progress.owned.member_id("a").to_owned();
        match fault {
            "coordinator" => jail.cut(kafka_host.ip()).unwrap(),
            _ => jail.isolate().unwrap(),
        }
        let cut_at = Instant::now();
        group.evict(&a_id).await;
        progress.until(&lines, |p| p.owned.of("b") == 4);
        takeover.push(cut_at.elapsed().as_millis() as u64);
        progress.during(&lines, fault_length);
        match fault {
            "coordinator" => jail.heal(kafka_host.ip()).unwrap(),
            _ => jail.rejoin().unwrap(),
        }
        // a finds out it was dropped and joins again.
        progress.until(&lines, |p| {
            p.owned.of("a") == 2
                && p.owned.of("b") == 2
                && p.owned.disjoint()
                && p.owned.member_id("a") != a_id
        });
    }
    progress.until(&lines, |p| p.handled.len() == events.len());
    let publish_time = publishing.await.unwrap();
    common::stop_members(&mut [&mut a, &mut b], &lines);

    let audit = group.audit_effects(&events, ENTITIES).await;
    let mut report = Report::new(
        "consumer_partitioned",
        format!(
            "one of two Rust members cut from the broker (routes, Redis kept), then from everything (link down), {} s each",
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
        .figure("handler_runs_repeated", progress.runs - events.len() as u64)
        .figure("takeover_ms_after_removal", takeover);
    println!("{:#}", report.to_json());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    report.finish();
}
