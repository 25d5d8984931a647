//! An outbox relay as a process a test can kill between the broker's
//! acknowledgement of a batch and the deletion of its rows.
//!
//! Prints `ACKED <event id>,<event id>,...` for every acknowledged batch.
//! With `MES_E2E_HOLD_AFTER_BATCHES=k` it stops dead right after printing
//! the k-th batch, before the batch's rows are deleted, and waits to be
//! killed. Without it, it relays until no row is ready, prints
//! `DRAINED <published>` and exits.

#![allow(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test process: its stdout is the protocol with the test that runs it, and it dies loudly on a broken set-up"
)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use mes_e2e::env;
use mes_publisher::{EventPublisher, Outbox, OutboxRelay, PublisherConfig, RelayConfig};
use sqlx::postgres::PgPoolOptions;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let hold_after: Option<usize> = std::env::var(env::HOLD_AFTER_BATCHES)
        .ok()
        .map(|k| k.parse().expect("batch count"));
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&var(env::POSTGRES))
        .await
        .expect("connect to PostgreSQL");
    let outbox = Outbox::new(var(env::OUTBOX_TABLE).parse().expect("outbox table"));
    let publisher = EventPublisher::connect(PublisherConfig::new([var(env::BROKERS)]))
        .await
        .expect("connect to the broker");
    let batches = AtomicUsize::new(0);
    let config = RelayConfig::default()
        .batch_size(100)
        .on_acknowledged(move |acked| {
            let ids: Vec<String> = acked.iter().map(|a| a.event_id.to_string()).collect();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ACKED {}", ids.join(","));
            let _ = out.flush();
            let done = batches.fetch_add(1, Ordering::SeqCst) + 1;
            if hold_after == Some(done) {
                // The broker has the batch; its rows are not deleted yet.
                // Stop here, as a crash would, until the test kills us.
                loop {
                    std::thread::park();
                }
            }
        });
    let relay = OutboxRelay::new(outbox, pool, publisher, config);
    match hold_after {
        Some(_) => {
            let running = relay.start();
            std::future::pending::<()>().await;
            running.shutdown().await;
        }
        None => {
            let drained = relay.drain().await.expect("drain the outbox");
            println!("DRAINED {}", drained.published);
        }
    }
}
