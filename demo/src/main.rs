//! `cargo xtask demo`: the cache-sync scenario of the legacy docs, end to
//! end and narrated: the Material service keeps part P-12345 in
//! PostgreSQL, the Work Order service reads it through the Redis cache, the
//! part is renamed and `material.part.updated` goes out through the
//! transactional outbox to Kafka, and the Work Order service's consumer
//! makes the next read show the new name.
//!
//! Each service is either real or replaced by its in-process test double,
//! and the demo says which at the start and in its summary. `cargo xtask
//! demo` sets, per service, either the address to use or why none could be
//! had:
//!
//! | real (must work when set) | double, with the reason |
//! |---|---|
//! | `MES_DEMO_KAFKA_BROKERS` | `MES_DEMO_KAFKA_UNAVAILABLE` |
//! | `MES_DEMO_REDIS_URL` | `MES_DEMO_REDIS_UNAVAILABLE` |
//! | `MES_DEMO_DATABASE_URL` | `MES_DEMO_DATABASE_UNAVAILABLE` |
//!
//! `--in-process` (or `MES_DEMO_IN_PROCESS=1`) runs everything on the
//! doubles: `EventPublisher::in_memory`, mes-cache's in-memory store, a map
//! for the Material service's table (no outbox), and the consumer's rules
//! and handler through `EventConsumer::dispatch`.
//!
//! `--metrics [ADDR]` installs a Prometheus recorder (the crates' metrics go
//! through the `metrics` facade; the exporter is the demo's choice, never a
//! library's) and serves it at `http://ADDR/metrics` (a free port on
//! 127.0.0.1 by default) while the demo runs; at the end the demo scrapes
//! its own endpoint once and prints an excerpt.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the demo narrates its scenario on the terminal"
)]

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use mes_cache::{CacheConfig, CacheEntity, CacheKeyPrefix, ReferenceDataCache};
use mes_events_types::{DomainEvent, EventMetadata, PartFields, PartUpdated};
use mes_publisher::{
    Acknowledged, EventPublisher, Outbox, OutboxRelay, OutboxTable, PublisherConfig, RecordedEvents,
    RelayConfig, TopicSettings, TopicSpec,
};
use mes_redact::redact_url;
use mes_sync::{
    CacheSync, ConsumerConfig, Dispatched, Effects, EventConsumer, RunningConsumer, StartPosition,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

const PART_ID: &str = "P-12345";
const OLD_NAME: &str = "Landing Gear Strut";
const NEW_NAME: &str = "Landing Gear Strut Mk II";
const TOPIC: &str = "mes.material.events";
/// How long the demo waits for the relay or the consumer before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The part as the Material service stores and caches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    part_number: String,
    part_name: String,
}

impl CacheEntity for Part {
    const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where one service of the scenario runs.
enum Service {
    /// The real one, at this address.
    Real(String),
    /// Its in-process test double, for this reason.
    Double(String),
}

impl Service {
    fn from_env(real: &str, unavailable: &str, forced: bool) -> Result<Self, Failure> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if forced {
            return Ok(Self::Double(
                "forced with --in-process or MES_DEMO_IN_PROCESS".to_owned(),
            ));
        }
        if let Some(address) = var(real) {
            return Ok(Self::Real(address));
        }
        match var(unavailable) {
            Some(reason) => Ok(Self::Double(reason)),
            None => Err(format!(
                "neither {real} nor {unavailable} is set: run the demo with `cargo xtask demo` \
                 (add --in-process to run it on the in-process test doubles)"
            )
            .into()),
        }
    }

    fn real(&self) -> Option<&str> {
        match self {
            Self::Real(address) => Some(address),
            Self::Double(_) => None,
        }
    }
}

/// What each part of the scenario runs on, as printed at the start and in
/// the summary.
struct Backing {
    kafka: Service,
    redis: Service,
    database: Service,
    /// The schema of this run, when PostgreSQL is real.
    schema: String,
}

impl Backing {
    /// The consumer runs for real only with a real broker to read and a
    /// real Redis for its group's offsets and partition owners.
    fn consumer_is_real(&self) -> bool {
        self.kafka.real().is_some() && self.redis.real().is_some()
    }

    fn doubles(&self) -> Vec<&'static str> {
        let mut doubles = Vec::new();
        for (name, service) in [
            ("Kafka", &self.kafka),
            ("Redis", &self.redis),
            ("PostgreSQL", &self.database),
        ] {
            if service.real().is_none() {
                doubles.push(name);
            }
        }
        if !self.consumer_is_real() {
            doubles.push("the consumer");
        }
        doubles
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn line(
            f: &mut fmt::Formatter<'_>,
            name: &str,
            service: &Service,
            real: &str,
            double: &str,
        ) -> fmt::Result {
            match service {
                Service::Real(_) => writeln!(f, "   {name:<11} real: {real}"),
                Service::Double(reason) => {
                    writeln!(f, "   {name:<11} in-process test double ({reason}): {double}")
                }
            }
        }
        let address = |service: &Service| service.real().map(redact_url).unwrap_or_default();
        line(
            f,
            "Kafka:",
            &self.kafka,
            &format!("broker {}", address(&self.kafka)),
            "EventPublisher::in_memory records the events",
        )?;
        line(
            f,
            "Redis:",
            &self.redis,
            &format!("server {}", address(&self.redis)),
            "the cache is mes-cache's InMemoryStore",
        )?;
        line(
            f,
            "PostgreSQL:",
            &self.database,
            &format!(
                "database {}, schema {} (dropped at the end)",
                address(&self.database),
                self.schema
            ),
            "the parts table is a map and there is no outbox",
        )?;
        if self.consumer_is_real() {
            writeln!(
                f,
                "   {:<11} real: EventConsumer reading the broker, its group's offsets and partition owners in Redis",
                "consumer:"
            )?;
        } else {
            writeln!(
                f,
                "   {:<11} in process (EventConsumer::dispatch runs its cache rules and handler on the \
                 published event; no group, offsets, retries or de-duplication), since {} is a test double",
                "consumer:",
                if self.kafka.real().is_none() {
                    "Kafka"
                } else {
                    "Redis"
                }
            )?;
        }
        let doubles = self.doubles();
        if doubles.is_empty() {
            writeln!(f, "   No test double: every part on a real service.")
        } else {
            writeln!(
                f,
                "   NOT a real-services run: {} on in-process test doubles.",
                doubles.join(", ")
            )
        }
    }
}

async fn run() -> Result<(), Failure> {
    let mut forced = std::env::var("MES_DEMO_IN_PROCESS").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut metrics: Option<Option<String>> = None;
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--in-process" => forced = true,
            "--metrics" => metrics = Some(args.next_if(|next| !next.starts_with("--"))),
            "--" => {}
            other => match other.strip_prefix("--metrics=") {
                Some(address) => metrics = Some(Some(address.to_owned())),
                None => {
                    return Err(format!(
                        "unknown argument {other:?}; the demo takes --in-process and --metrics [ADDR]"
                    )
                    .into());
                }
            },
        }
    }
    let endpoint = match metrics {
        Some(address) => Some(MetricsEndpoint::serve(address.as_deref())?),
        None => None,
    };
    let backing = Backing {
        kafka: Service::from_env("MES_DEMO_KAFKA_BROKERS", "MES_DEMO_KAFKA_UNAVAILABLE", forced)?,
        redis: Service::from_env("MES_DEMO_REDIS_URL", "MES_DEMO_REDIS_UNAVAILABLE", forced)?,
        database: Service::from_env("MES_DEMO_DATABASE_URL", "MES_DEMO_DATABASE_UNAVAILABLE", forced)?,
        schema: format!("mes_demo_{}", std::process::id()),
    };
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    println!("MES cache-sync demo. Running on:\n{backing}");
    if let Some(endpoint) = &endpoint {
        println!(
            "Metrics: Prometheus endpoint http://{}/metrics (while the demo runs)",
            endpoint.address
        );
    }
    println!("(cache keys under the namespace mes-demo-{run_id}:cache, so no real entry is touched)\n");

    // Connections only: nothing is created before the guarded part below.
    let db = MaterialDb::connect(&backing).await?;
    let namespace = format!("mes-demo-{run_id}:cache");
    let cache = match &backing.redis {
        Service::Real(url) => {
            ReferenceDataCache::connect(CacheConfig::from_url(url)?.namespace(namespace)).await?
        }
        Service::Double(_) => ReferenceDataCache::in_memory(CacheConfig::default().namespace(namespace))?,
    };
    let group = format!("work-order-service-demo-{run_id}");

    // A panic, like an error or Ctrl-C, still leads to the clean-up below.
    let outcome = tokio::select! {
        outcome = AssertUnwindSafe(scenario(&backing, &db, &cache, &group)).catch_unwind() => {
            outcome.unwrap_or_else(|_| Err("the scenario panicked".into()))
        }
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err("interrupted".into()),
            Err(error) => Err(format!("cannot wait for Ctrl-C: {error}").into()),
        },
    };

    // Clean up, also after a failure: the schema, the cache entries and
    // the group's state in Redis (offsets, partition owners, seen event ids).
    db.drop_schema().await;
    let _ = cache.clear_all().await;
    let _ = cache.close().await;
    if backing.consumer_is_real()
        && let Some(url) = backing.redis.real()
    {
        // The consumer keeps its state under `mes:sync:{group}:`; a cache
        // whose namespace is that prefix removes exactly those keys.
        let config = CacheConfig::from_url(url).map(|c| c.namespace(format!("mes:sync:{{{group}}}")));
        if let Ok(config) = config
            && let Ok(state) = ReferenceDataCache::connect(config).await
        {
            let _ = state.clear_all().await;
            let _ = state.close().await;
        }
    }

    println!("\nRan on:\n{backing}");
    if let Some(endpoint) = &endpoint {
        match endpoint.scrape().await {
            Ok(text) => print!("{}", metrics_excerpt(&text, endpoint.address)),
            Err(error) => println!(
                "Metrics: cannot scrape http://{}/metrics: {error}",
                endpoint.address
            ),
        }
    }
    let (before, after) = outcome?;
    println!("Before: \"{before}\"  After: \"{after}\"");
    if before == after {
        return Err("the name did not change".into());
    }
    Ok(())
}

/// The Prometheus endpoint of `--metrics`.
struct MetricsEndpoint {
    address: SocketAddr,
}

impl MetricsEndpoint {
    /// Installs the Prometheus recorder, serving on `address` or a free
    /// port of 127.0.0.1.
    fn serve(address: Option<&str>) -> Result<Self, Failure> {
        let mut address = match address {
            Some(address) => address
                .parse::<SocketAddr>()
                .map_err(|e| format!("--metrics {address:?}: not an IP address and port ({e})"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        if address.port() == 0 {
            // A free port asked of the system, then let go for the exporter
            // to bind: the demo must say where it serves.
            address = std::net::TcpListener::bind(address)?.local_addr()?;
        }
        PrometheusBuilder::new()
            .with_http_listener(address)
            .install()
            .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
        Ok(Self { address })
    }

    /// One `GET /metrics` of the endpoint: the text it serves.
    async fn scrape(&self) -> Result<String, Failure> {
        let mut stream = tokio::net::TcpStream::connect(self.address).await?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .map_err(|_| "no answer")??;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("answered {}", head.lines().next().unwrap_or_default()).into());
        }
        Ok(body.to_owned())
    }
}

/// The scraped metrics this scenario is about: the series of the cache, the
/// publisher, the outbox and the consumer that moved, at most a few each.
fn metrics_excerpt(text: &str, address: SocketAddr) -> String {
    const SHOWN: [&str; 8] = [
        "mes_cache_hits",
        "mes_cache_misses",
        "mes_cache_loads",
        "messaging_client_sent_messages",
        "mes_outbox_relay_published",
        "mes_outbox_pending",
        "messaging_client_consumed_messages",
        "mes_kafka_requests",
    ];
    let series: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect();
    let mut excerpt = format!(
        "Metrics scraped from http://{address}/metrics ({} series; an excerpt):\n",
        series.len()
    );
    for name in SHOWN {
        // Series that moved: a counter still at 0 says little.
        let of_name = series.iter().filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && !line.ends_with(" 0")
        });
        for line in of_name.take(3) {
            excerpt.push_str("   ");
            excerpt.push_str(line);
            excerpt.push('\n');
        }
    }
    excerpt
}

/// The scenario; returns the part's name as the Work Order service read it
/// before and after the rename.
async fn scenario(
    backing: &Backing,
    db: &MaterialDb,
    cache: &ReferenceDataCache,
    group: &str,
) -> Result<(String, String), Failure> {
    db.prepare().await?;
    if let MaterialDb::Postgres { schema, outbox, .. } = db {
        println!(
            "0. The Material service's database: table {schema}.parts holding part {PART_ID} \
             \"{OLD_NAME}\", and the outbox table {}.",
            outbox.table()
        );
    }
    let parts = cache.typed::<Part>();
    let read_part = |label: &'static str| {
        let (parts, db) = (parts.clone(), db.clone());
        async move {
            let loaded = Arc::new(Mutex::new(false));
            let (flag, source_db) = (Arc::clone(&loaded), db.clone());
            let part = parts
                .get_or_load(PART_ID, move || async move {
                    *flag.lock().map_err(|_| "poisoned")? = true;
                    source_db.load(PART_ID).await
                })
                .await?;
            let source = if *loaded.lock().map_err(|_| "poisoned")? {
                format!("miss, loaded from {}", db.describe())
            } else {
                "cache hit".to_owned()
            };
            let name = part.map(|p| p.part_name).unwrap_or_else(|| "(none)".into());
            println!("   {label}: work order WO-1001 shows part {PART_ID} \"{name}\" ({source})");
            Ok::<_, Failure>(name)
        }
    };

    println!(
        "1. The Material service reads part {PART_ID} from {} and caches it.",
        db.describe()
    );
    let first = db
        .load(PART_ID)
        .await?
        .ok_or("no part in the Material service's table")?;
    parts.set(PART_ID, &first, None).await?;
    let work_order_entries = CacheKeyPrefix::new("work_order");
    cache
        .set(&work_order_entries, &format!("WO-1001:{PART_ID}"), &first, None)
        .await?;

    println!("2. The Work Order service reads it through the cache.");
    let before = read_part("before").await?;

    // Kafka, real or the in-memory double.
    let partitions = TopicSettings::default().partitions;
    let brokers = backing.kafka.real().into_iter().flat_map(|b| b.split(','));
    let kafka_config = PublisherConfig::new(brokers).client_id("mes-demo");
    let (publisher, recorded): (EventPublisher, Option<RecordedEvents>) = match &backing.kafka {
        Service::Real(_) => {
            let publisher = EventPublisher::connect(kafka_config.clone()).await?;
            publisher
                .ensure_topics(&[TopicSpec::new(TOPIC, TopicSettings::default())])
                .await?;
            (publisher, None)
        }
        Service::Double(_) => {
            let (publisher, recorded) = EventPublisher::in_memory_with(&kafka_config, u32::from(partitions));
            (publisher, Some(recorded))
        }
    };

    let consumer_kind = if backing.consumer_is_real() {
        "on the broker"
    } else {
        "in process"
    };
    println!("3. The Work Order service's consumer starts ({consumer_kind}, group {group}).");
    let (applied, mut applied_rx) = mpsc::unbounded_channel();
    let work_orders: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::from([(
        "WO-1001".to_owned(),
        before.clone(),
    )])));
    let columns = Arc::clone(&work_orders);
    let redis_url = backing.redis.real().unwrap_or("redis://in-process.invalid");
    let consumer = EventConsumer::new(
        ConsumerConfig::new(group, kafka_config.kafka().clone(), redis_url)
            .start_position(StartPosition::Latest),
    )
    // part:{partId} and work_order:*:{partId} go when a part changes...
    .sync(cache.clone(), CacheSync::fleet())
    // ...and the denormalised part name on the work orders is updated.
    .on(move |event: DomainEvent<PartUpdated>| {
        let (applied, columns) = (applied.clone(), Arc::clone(&columns));
        async move {
            if event.data().part_id == PART_ID {
                if let Ok(mut columns) = columns.lock() {
                    columns.insert("WO-1001".into(), event.data().part_name.clone());
                }
                let _ = applied.send(event.id().to_string());
            }
            Effects::none()
        }
    });
    let consumer = if backing.consumer_is_real() {
        let running = consumer.start().await?;
        // Reading every partition from its latest offset before anything is published.
        running
            .wait_for(|s| s.owned().len() == usize::from(partitions))
            .await;
        WorkOrderConsumer::Running(running)
    } else {
        WorkOrderConsumer::InProcess {
            consumer: Box::new(consumer),
            handled: 0,
        }
    };

    // The relay of the Material service's outbox, publishing what commits.
    let (acked, mut acked_rx) = mpsc::unbounded_channel::<Acknowledged>();
    let relay = match db {
        MaterialDb::Postgres { pool, outbox, .. } => {
            println!("   The Material service's outbox relay starts.");
            let config = RelayConfig::default().on_acknowledged(move |batch: &[Acknowledged]| {
                for ack in batch {
                    let _ = acked.send(ack.clone());
                }
            });
            Some(OutboxRelay::new(outbox.clone(), pool.clone(), publisher.clone(), config).start())
        }
        MaterialDb::InProcess(_) => None,
    };

    let renamed = Part {
        part_number: PART_ID.into(),
        part_name: NEW_NAME.into(),
    };
    let event = DomainEvent::new(
        "material-service",
        PartUpdated {
            part_id: PART_ID.into(),
            part_number: renamed.part_number.clone(),
            part_name: renamed.part_name.clone(),
            revision: None,
            changes: PartFields {
                part_name: Some(renamed.part_name.clone()),
                ..PartFields::default()
            },
            previous_values: Some(PartFields {
                part_name: Some(before.clone()),
                ..PartFields::default()
            }),
        },
    )
    .with_entity("Part", PART_ID)
    .with_metadata(EventMetadata::for_user("user-123"));
    let double_note = if recorded.is_some() {
        " (by the in-process test double, not a broker)"
    } else {
        ""
    };
    match db {
        MaterialDb::Postgres { .. } => {
            println!(
                "4. The Material service renames the part: the UPDATE and its material.part.updated \
                 event in one transaction (Outbox::publish_transactional)."
            );
            db.rename(&event, &renamed).await?;
            println!(
                "   committed together: parts row {PART_ID} renamed and outbox row for event {}",
                event.id()
            );
            let ack = tokio::time::timeout(PATIENCE, async {
                while let Some(ack) = acked_rx.recv().await {
                    if ack.event_id == *event.id() {
                        return Some(ack);
                    }
                }
                None
            })
            .await
            .map_err(|_| format!("the outbox relay did not publish the event within {PATIENCE:?}"))?
            .ok_or("the outbox relay stopped")?;
            println!(
                "   the outbox relay published it: acknowledged{double_note} at {}/{}@{}",
                ack.published.topic, ack.published.partition, ack.published.offset
            );
        }
        MaterialDb::InProcess(_) => {
            println!("4. The Material service renames the part and publishes material.part.updated.");
            db.rename(&event, &renamed).await?;
            let landed = publisher.publish(&event).await?;
            println!(
                "   event {} acknowledged{double_note} at {}/{}@{} (PostgreSQL is a test double: no \
                 outbox, the change and the publish are two steps, not one transaction)",
                event.id(),
                landed.topic,
                landed.partition,
                landed.offset
            );
        }
    }

    println!("5. The consumer handles it: cache entries invalidated, work order column updated.");
    let consumer = match consumer {
        WorkOrderConsumer::InProcess {
            consumer,
            mut handled,
        } => {
            // What the in-memory publisher recorded, decoded as the consumer
            // decodes records; with a real broker, the event it acknowledged.
            let outcomes = match &recorded {
                Some(recorded) => {
                    let mut outcomes = Vec::new();
                    for record in recorded.records() {
                        outcomes.push(consumer.dispatch_record(&record.record).await?);
                    }
                    outcomes
                }
                None => vec![consumer.dispatch(event.clone().into_raw()?).await?],
            };
            handled += outcomes
                .iter()
                .filter(|o| matches!(o, Dispatched::Handled(_)))
                .count();
            println!(
                "   in process: EventConsumer::dispatch ran the cache rules and the handler on {} \
                 published event(s)",
                outcomes.len()
            );
            WorkOrderConsumer::InProcess { consumer, handled }
        }
        running => running,
    };
    tokio::time::timeout(PATIENCE, async {
        while applied_rx.recv().await.ok_or("the consumer stopped")? != event.id().to_string() {}
        Ok::<_, Failure>(())
    })
    .await
    .map_err(|_| format!("the consumer did not handle the event within {PATIENCE:?}"))??;
    let column = work_orders
        .lock()
        .map_err(|_| "poisoned")?
        .get("WO-1001")
        .cloned()
        .unwrap_or_default();
    let gone = cache
        .get::<Part>(&work_order_entries, &format!("WO-1001:{PART_ID}"))
        .await?
        .is_none();
    println!(
        "   work order WO-1001's part name column: \"{column}\"; work_order:WO-1001:{PART_ID} removed: {gone}"
    );

    println!("6. The next read through the cache shows the new name.");
    let after = read_part("after").await?;

    // The relay stops after its round, whose rows are then deleted.
    let relayed = match relay {
        Some(relay) => Some(relay.shutdown().await),
        None => None,
    };
    let stats = parts.stats().await?;
    println!("\nStats:");
    println!(
        "   cache (part): {} hits, {} misses, hit rate {}",
        stats.counters.hits,
        stats.counters.misses,
        stats
            .hit_rate
            .map_or("n/a".to_owned(), |r| format!("{:.0}%", r * 100.0))
    );
    match &consumer {
        WorkOrderConsumer::Running(running) => {
            let consumed = running.stats();
            println!(
                "   consumer: {} events handled, {} duplicates, {} dead-lettered, lag {}",
                consumed.handled(),
                consumed.duplicates(),
                consumed.dead_lettered(),
                consumed.lag()
            );
        }
        WorkOrderConsumer::InProcess { handled, .. } => {
            println!("   consumer (in process): {handled} events handled");
        }
    }
    match (db, relayed) {
        (MaterialDb::Postgres { pool, outbox, .. }, Some(relayed)) => {
            let pending = outbox.stats(pool).await?;
            println!(
                "   outbox: {} pending, {} parked; relay: {} published, {} failed publishes",
                pending.pending, pending.parked, relayed.published, relayed.failed
            );
        }
        _ => println!("   outbox: none (PostgreSQL is an in-process test double)"),
    }
    if let WorkOrderConsumer::Running(running) = consumer {
        running.shutdown().await;
    }
    publisher.disconnect().await;
    Ok((before, after))
}

/// The Work Order service's consumer: running on the broker, or not
/// started and given the published events in process.
enum WorkOrderConsumer {
    Running(RunningConsumer),
    InProcess {
        consumer: Box<EventConsumer>,
        handled: usize,
    },
}

/// The Material service's own database: a `parts` table and the outbox
/// in a schema of this run, or a map when PostgreSQL is a test double.
#[derive(Clone)]
enum MaterialDb {
    Postgres {
        pool: PgPool,
        schema: String,
        outbox: Outbox,
    },
    InProcess(Arc<Mutex<HashMap<String, Part>>>),
}

impl MaterialDb {
    /// Connects; creates nothing yet (see [`prepare`](Self::prepare)).
    async fn connect(backing: &Backing) -> Result<Self, Failure> {
        match &backing.database {
            Service::Double(_) => Ok(Self::InProcess(Arc::default())),
            Service::Real(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to PostgreSQL at {}: {e}", redact_url(url)))?;
                let schema = backing.schema.clone();
                let outbox = Outbox::new(OutboxTable::in_schema(&schema, "mes_outbox")?);
                Ok(Self::Postgres { pool, schema, outbox })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Postgres { schema, .. } => format!("the Material service's table {schema}.parts"),
            Self::InProcess(_) => "the Material service's (in-process) table".to_owned(),
        }
    }

    /// The schema with the parts table and the outbox, and the part.
    async fn prepare(&self) -> Result<(), Failure> {
        match self {
            Self::Postgres { pool, schema, outbox } => {
                // `schema` is `mes_demo_{pid}`: an identifier as it is.
                sqlx::raw_sql(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE;
                     CREATE SCHEMA {schema};
                     CREATE TABLE {schema}.parts (
                         id          text PRIMARY KEY,
                         part_number text NOT NULL,
                         part_name   text NOT NULL
                     );"
                ))
                .execute(pool)
                .await
                .map_err(|e| format!("cannot create schema {schema}: {e}"))?;
                sqlx::query(&format!("INSERT INTO {schema}.parts VALUES ($1, $2, $3)"))
                    .bind(PART_ID)
                    .bind(PART_ID)
                    .bind(OLD_NAME)
                    .execute(pool)
                    .await?;
                outbox.migrate(pool).await?;
            }
            Self::InProcess(parts) => {
                parts.lock().map_err(|_| "poisoned")?.insert(
                    PART_ID.to_owned(),
                    Part {
                        part_number: PART_ID.into(),
                        part_name: OLD_NAME.into(),
                    },
                );
            }
        }
        Ok(())
    }

    async fn load(&self, id: &str) -> Result<Option<Part>, Failure> {
        match self {
            Self::Postgres { pool, schema, .. } => {
                let row: Option<(String, String)> = sqlx::query_as(&format!(
                    "SELECT part_number, part_name FROM {schema}.parts WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?;
                Ok(row.map(|(part_number, part_name)| Part {
                    part_number,
                    part_name,
                }))
            }
            Self::InProcess(parts) => Ok(parts.lock().map_err(|_| "poisoned")?.get(id).cloned()),
        }
    }

    /// Renames the part; in PostgreSQL together with `event` in the outbox,
    /// in one transaction.
    async fn rename(&self, event: &DomainEvent<PartUpdated>, renamed: &Part) -> Result<(), Failure> {
        match self {
            Self::Postgres { pool, schema, outbox } => {
                let update = format!("UPDATE {schema}.parts SET part_name = $1 WHERE id = $2");
                let name = renamed.part_name.clone();
                outbox
                    .publish_transactional(pool, std::slice::from_ref(event), move |tx| {
                        Box::pin(async move {
                            let updated = sqlx::query(&update)
                                .bind(name)
                                .bind(PART_ID)
                                .execute(&mut *tx)
                                .await
                                .map_err(|e| mes_publisher::Error::Outbox {
                                    what: "rename the part".into(),
                                    source: e.into(),
                                })?;
                            if updated.rows_affected() != 1 {
                                // Rolls back: no event for a change that did not happen.
                                return Err(mes_publisher::Error::Outbox {
                                    what: "rename the part".into(),
                                    source: format!("part {PART_ID} not found").into(),
                                });
                            }
                            Ok::<_, mes_publisher::Error>(())
                        })
                    })
                    .await?;
            }
            Self::InProcess(parts) => {
                parts
                    .lock()
                    .map_err(|_| "poisoned")?
                    .insert(PART_ID.to_owned(), renamed.clone());
            }
        }
        Ok(())
    }

    /// Drops this run's schema; says so when it cannot.
    async fn drop_schema(&self) {
        if let Self::Postgres { pool, schema, .. } = self {
            match sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(pool)
                .await
            {
                // Not println!: the clean-up goes on when stdout is gone.
                Ok(_) => {
                    let _ = writeln!(std::io::stdout(), "(schema {schema} dropped)");
                }
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "could not drop schema {schema}: {e}; drop it by hand"
                    );
                }
            }
            pool.close().await;
        }
    }
}
