//! Fault scenario: the publisher's link to the broker slowed, cut, then
//! blackholed, during batches, under the idempotent producer. The producers
//! publish again what failed (at-least-once). Promised: a slow link fails
//! nothing; every acknowledged event on the topic, no record written twice
//! by the library's own retries, each entity's events in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mes_e2e::faults::{Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_publisher::{Delivery, EventPublisher, PublisherConfig, RetryPolicy, TopicSettings, TopicSpec};
use mes_testkit::fault_proxy::{Fault, FaultProxy};
use mes_testkit::tansu::{TansuBroker, spare_port};
use serde_json::json;

const ENTITIES: usize = 20;

#[derive(Default)]
struct Tally {
    maybe_written: AtomicU64,
    not_written: AtomicU64,
}

impl Tally {
    fn errors(&self) -> u64 {
        self.maybe_written.load(Ordering::Relaxed) + self.not_written.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_through_a_cut_and_blackholed_link_to_the_broker() {
    let fault_length = scaled(Duration::from_secs(3), Duration::from_secs(10));

    // A broker of this test that sends its clients to the proxy.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_address = listener.local_addr().unwrap().to_string();
    let port = spare_port().unwrap();
    let dir = std::env::temp_dir().join(format!("mes-faults-publish-{}", ulid::Ulid::new()));
    let broker = TansuBroker::start_advertising(
        &mes_testkit::tansu_binary(),
        "memory://tansu/",
        port,
        Some(&proxy_address),
        &dir,
    )
    .unwrap();
    let proxy = FaultProxy::start_on(listener, SocketAddr::from(([127, 0, 0, 1], broker.port()))).unwrap();

    let config = PublisherConfig::new([proxy.address()])
        // A retry budget shorter than the faults, so callers see errors
        // and publish again.
        .retry(RetryPolicy::default().retries(2))
        .request_timeout(Duration::from_secs(1));
    let publisher = EventPublisher::connect(config).await.unwrap();
    let event_type = EventType::parse(&format!(
        "tfaults{}.thing.happened",
        ulid::Ulid::new().to_string().to_lowercase()
    ))
    .unwrap();
    let topic = event_type.topic().unwrap();
    let settings = TopicSettings {
        partitions: 4,
        replication: 1,
    };
    publisher
        .ensure_topics(&[TopicSpec::new(&topic, settings)])
        .await
        .unwrap();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producers: Vec<_> = (0..ENTITIES)
        .map(|e| {
            let (publisher, tally, event_type, stop) = (
                publisher.clone(),
                Arc::clone(&tally),
                event_type.clone(),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut published_again = Vec::new();
                // Until the faults are over, each event published again
                // until acknowledged (at-least-once).
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let event = DomainEvent::new_raw(event_type.clone(), "test", json!({"seq": seq}))
                        .with_entity("Thing", format!("E-{e}"));
                    loop {
                        match publisher.publish(&event).await {
                            Ok(_) => {
                                acknowledged.push(event);
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
                    seq += 1;
                }
                (acknowledged, published_again)
            })
        })
        .collect();

    // The faults, each while the producers run: a slow link, a cut, then a
    // blackhole; the errors each brought.
    let mut errors_during = Vec::new();
    for fault in [
        Fault::Delay(Duration::from_millis(50)),
        Fault::Cut,
        Fault::Blackhole,
    ] {
        tokio::time::sleep(fault_length).await;
        let before = tally.errors();
        proxy.set(fault);
        tokio::time::sleep(fault_length).await;
        proxy.heal();
        errors_during.push(tally.errors() - before);
    }
    tokio::time::sleep(fault_length).await;
    stop.store(true, Ordering::Relaxed);
    let healed = Instant::now();
    let mut acknowledged = Vec::new();
    let mut published_again = HashSet::new();
    for producer in producers {
        let (landed, again) = producer.await.unwrap();
        acknowledged.extend(landed);
        published_again.extend(again);
    }
    let finished_after_heal = healed.elapsed();
    let elapsed = started.elapsed();
    publisher.disconnect().await;
    let audit = common::audit_topic(&proxy.address(), &topic, &acknowledged, &published_again).await;
    let total = acknowledged.len();
    let mut report = Report::new(
        "publisher_broker_cut",
        format!(
            "idempotent publisher <-> broker slowed (+50 ms per chunk each way), cut (RST), then blackholed, {} s each",
            fault_length.as_secs_f64()
        ),
        format!(
            "{ENTITIES} producers, {total} events at {:.0}/s overall",
            total as f64 / elapsed.as_secs_f64()
        ),
    );
    report
        .none("acknowledged events lost", audit.lost)
        .none(
            "records written twice by the library's retries",
            audit.duplicated_by_library,
        )
        .none("entities whose events are out of order", audit.out_of_order)
        .none("errors returned while only slowed", errors_during[0])
        .check(
            "errors returned while cut and blackholed",
            "> 0",
            json!(errors_during[1] + errors_during[2]),
            errors_during[1] + errors_during[2] > 0,
        )
        .figure(
            "errors_maybe_written",
            tally.maybe_written.load(Ordering::Relaxed),
        )
        .figure("errors_not_written", tally.not_written.load(Ordering::Relaxed))
        .figure(
            "duplicates_from_publishing_again",
            audit.duplicates - audit.duplicated_by_library,
        )
        .figure("stopped_ms_after_asked", finished_after_heal.as_millis() as u64)
        .figure("proxy", format!("{:?}", proxy.counts()));
    println!("{:#}", report.to_json());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    report.finish();
}
