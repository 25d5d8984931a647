//! One member of a consumer group, as a process a test can kill.
//!
//! Handles every event of one type with effects applied atomically with the
//! commit: `HINCRBY effects <event id> 1` and `RPUSH order:<entity> <seq>`.
//! Prints `MEMBER <member id>` whenever the group coordinator gives it a
//! member id, `OWNED <partitions>` whenever the partitions it holds change
//! and `HANDLED <event id>` after each event, then runs until killed (or until
//! stdin closes, when it shuts down gracefully).

#![allow(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test process: its stdout is the protocol with the test that runs it, and it dies loudly on a broken set-up"
)]

use std::io::Write;
use std::time::Duration;

use mes_e2e::{effects_key, env, order_key};
use mes_events_types::{DomainEvent, EventType};
use mes_sync::{ConsumerConfig, Effects, EventConsumer};
use serde_json::Value;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let group = var(env::GROUP);
    let _name = var(env::MEMBER);
    let event_type = EventType::parse(&var(env::EVENT_TYPE)).expect("event type");
    let session = Duration::from_millis(var(env::SESSION_MS).parse().expect("session ms"));
    let config = ConsumerConfig::new(
        group.clone(),
        mes_sync::KafkaConfig::new([var(env::BROKERS)]),
        var(env::REDIS),
    )
    .session_timeout(session)
    .rebalance_timeout(session)
    .heartbeat_interval(session / 10)
    .fetch_max_wait(Duration::from_millis(100));
    let consumer = EventConsumer::new(config)
        .on_type(event_type, move |event: DomainEvent<Value>| {
            let group = group.clone();
            async move {
                let entity = event.entity_id().unwrap_or("-").to_owned();
                let seq = event.data()["seq"].to_string();
                let effects = Effects::none()
                    .hash_increment(effects_key(&group), event.id().as_str(), 1)
                    .list_push(order_key(&group, &entity), seq);
                println!("HANDLED {}", event.id());
                effects
            }
        })
        .start()
        .await
        .expect("start the consumer");

    let mut stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    let mut owned = Vec::new();
    let mut member_id = String::new();
    loop {
        let changed = consumer.wait_for(|s| s.owned() != owned || s.group.member_id != member_id);
        tokio::select! {
            stats = changed => {
                if stats.group.member_id != member_id {
                    member_id.clone_from(&stats.group.member_id);
                    println!("MEMBER {member_id}");
                }
                owned = stats.owned();
                let names: Vec<String> = owned.iter().map(ToString::to_string).collect();
                println!("OWNED {}", names.join(","));
                let _ = std::io::stdout().flush();
            }
            _ = &mut stdin_closed => break,
        }
    }
    consumer.shutdown().await;
    println!("STOPPED");
}
