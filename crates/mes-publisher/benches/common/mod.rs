//! What the publisher's benchmarks share: the events and the result lines
//! `cargo xtask bench` reads.

use std::time::Duration;

use mes_events_types::{DomainEvent, EventType};
use serde_json::{Value, json};

/// Entities the events of a run are spread over.
pub(crate) const ENTITIES: usize = 500;

/// About 1 KB on the wire, like the reference producers' records.
pub(crate) fn events(event_type: &EventType, count: usize) -> Vec<DomainEvent<Value>> {
    let pad = "x".repeat(640);
    (0..count)
        .map(|i| {
            DomainEvent::new_raw(event_type.clone(), "bench", json!({"seq": i, "pad": pad}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect()
}

/// `RESULT <name> <events/s>`.
pub(crate) fn report(name: &str, count: usize, elapsed: Duration) {
    println!("RESULT {name} {:.0}", count as f64 / elapsed.as_secs_f64());
}
