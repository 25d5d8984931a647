//! Starting, reading and killing `sync-member` processes.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fred::prelude::*;
use mes_e2e::{effects_key, env, order_key};
use mes_events_types::DomainEvent;
use mes_publisher::{EventPublisher, PublisherConfig, TopicSettings, TopicSpec};

/// Effects counted against the events published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EffectsAudit {
    /// Events whose effect was never applied.
    pub lost: u64,
    /// Events whose effect was applied more than once.
    pub doubled: u64,
    /// Entities whose effects are not exactly their events in order.
    pub out_of_order: u64,
}

impl EffectsAudit {
    /// The three promises of a consumer group's effects, as report lines.
    pub fn report_into(&self, report: &mut mes_e2e::faults::Report) {
        report
            .none("events lost", self.lost)
            .none("effects applied twice", self.doubled)
            .none("entities whose effects are out of order", self.out_of_order);
    }
}

/// What a topic holds of the events meant for it (entity `E-{e}`, data
/// `{"seq": n}` increasing per entity).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopicAudit {
    /// Events not on the topic.
    pub lost: u64,
    /// Records beyond the first of each event.
    pub duplicates: u64,
    /// Of those, records of events the application never published again
    /// (after a `MaybeWritten` error): written twice by the library itself.
    pub duplicated_by_library: u64,
    /// Entities whose events' first copies are not in increasing order.
    pub out_of_order: u64,
}

/// Reads the whole topic and counts it against `events`, of which
/// `published_again` were published once more by the application after an
/// error that said they may have been written.
pub async fn audit_topic(
    brokers: &str,
    topic: &str,
    events: &[DomainEvent],
    published_again: &HashSet<String>,
) -> TopicAudit {
    let mut records = mes_testkit::kafka::read_topic(brokers, topic).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut copies: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for read in records {
        let event = mes_events_types::decode(&read.record).unwrap();
        let count = copies.entry(event.id().to_string()).or_default();
        *count += 1;
        if *count == 1 {
            first_seen
                .entry(event.entity_id().unwrap().to_owned())
                .or_default()
                .push(event.data()["seq"].as_u64().unwrap());
        }
    }
    TopicAudit {
        lost: events
            .iter()
            .filter(|e| !copies.contains_key(e.id().as_str()))
            .count() as u64,
        duplicates: copies.values().map(|n| n - 1).sum(),
        duplicated_by_library: copies
            .iter()
            .filter(|(id, _)| !published_again.contains(*id))
            .map(|(_, n)| n - 1)
            .sum(),
        out_of_order: first_seen
            .values()
            .filter(|seqs| seqs.windows(2).any(|w| w[0] >= w[1]))
            .count() as u64,
    }
}

/// A fence through a near cache: returns once `reader`'s L1 has dropped
/// an entry `writer` rewrote after every write before this call, so every
/// earlier invalidation has been handled too (they arrive in order on one
/// connection). The fence entry is removed afterwards.
pub async fn fence_near_cache(
    reader: &mes_cache::ReferenceDataCache,
    writer: &mes_cache::ReferenceDataCache,
    prefix: &mes_cache::CacheKeyPrefix,
) {
    const FENCE: &str = "fence";
    let started = std::time::Instant::now();
    let step = |what: &str| {
        assert!(started.elapsed() < Duration::from_secs(30), "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20))
    };
    writer.set(prefix, FENCE, &0, None).await.unwrap();
    loop {
        let _ = reader.get::<u64>(prefix, FENCE).await;
        if reader.near_cache_holds(prefix, FENCE) {
            break;
        }
        step("the fence cached in L1").await;
    }
    writer.set(prefix, FENCE, &1, None).await.unwrap();
    while reader.get::<u64>(prefix, FENCE).await.ok().flatten() != Some(1) {
        step("the fence's invalidation handled").await;
    }
    writer.invalidate(prefix, FENCE).await.unwrap();
}

/// Waits until the outbox has no pending row (a failed read counts as not
/// yet), within `patience`; returns how long it took.
pub async fn wait_drained(
    outbox: &mes_publisher::Outbox,
    pool: &sqlx::PgPool,
    patience: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    while outbox.stats(pool).await.map_or(true, |stats| stats.pending > 0) {
        assert!(
            started.elapsed() < patience,
            "the outbox drains within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Stops the members gracefully and waits for each to say `STOPPED` and exit.
pub fn stop_members(members: &mut [&mut Member], lines: &Lines) {
    for member in members.iter_mut() {
        member.stop();
    }
    let mut stopped = 0;
    while stopped < members.len() {
        let (_, line) = lines.recv().unwrap();
        stopped += usize::from(line == "STOPPED");
    }
    for member in members.iter_mut() {
        member.wait();
    }
}

/// What the members say, tagged by member name.
pub type Lines = mpsc::Receiver<(String, String)>;

pub struct Member {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

#[derive(Clone)]
pub struct Group {
    pub brokers: String,
    pub redis: String,
    pub group: String,
    pub event_type: String,
    pub session: Duration,
}

impl Group {
    /// A group reading events of a type of its own (`t{name}{ulid}.thing.happened`),
    /// whose topic is created with `partitions`; and a publisher to it that
    /// sends one event per request (see `faults_consumer_kill.rs` on why).
    pub async fn with_topic(
        name: &str,
        session: Duration,
        partitions: u16,
    ) -> (Self, String, EventPublisher) {
        Self::with_topic_on(&mes_testkit::kafka_brokers(), name, session, partitions).await
    }

    /// [`with_topic`](Self::with_topic) on the broker at `brokers`.
    pub async fn with_topic_on(
        brokers: &str,
        name: &str,
        session: Duration,
        partitions: u16,
    ) -> (Self, String, EventPublisher) {
        let event_type = format!(
            "t{name}{}.thing.happened",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut group = Self::new(&event_type, session);
        brokers.clone_into(&mut group.brokers);
        let topic = mes_events_types::topic_for_type(&event_type).unwrap();
        let config = PublisherConfig::new([group.brokers.as_str()]).linger(Duration::ZERO);
        let publisher = EventPublisher::connect(config).await.unwrap();
        let settings = TopicSettings {
            partitions,
            replication: 1,
        };
        publisher
            .ensure_topics(&[TopicSpec::new(&topic, settings)])
            .await
            .unwrap();
        (group, topic, publisher)
    }

    pub fn new(event_type: &str, session: Duration) -> Self {
        Self {
            brokers: mes_testkit::kafka_brokers(),
            redis: mes_testkit::redis_url(),
            group: format!("e2e-{}", ulid::Ulid::new()),
            event_type: event_type.to_owned(),
            session,
        }
    }

    /// Checks what the group's `sync-member`s applied in Redis: every event's
    /// effect exactly once, and each entity `E-{e}`'s in order; then removes
    /// those keys.
    pub async fn assert_effects_once_in_order(&self, events: &[DomainEvent], entities: usize) {
        let audit = self.audit_effects(events, entities).await;
        assert_eq!(audit.lost, 0, "every event's effect applied: {audit:?}");
        assert_eq!(audit.doubled, 0, "each effect applied once: {audit:?}");
        assert_eq!(audit.out_of_order, 0, "each entity's effects in order: {audit:?}");
    }

    /// What the group's `sync-member`s applied in Redis, counted against
    /// `events` (entities `E-0..E-{entities}`, data `{"seq": n}` increasing
    /// per entity); then removes those keys.
    pub async fn audit_effects(&self, events: &[DomainEvent], entities: usize) -> EffectsAudit {
        self.audit_mixed_effects(events, entities, &HashSet::new()).await
    }

    /// [`audit_effects`](Self::audit_effects) for a group with kafkajs
    /// members, which keep no effects in Redis: an event is lost when no
    /// Rust member applied its effect and no kafkajs member handled it
    /// (`handled_by_kafkajs`); the Rust members' effects must still be
    /// applied once each, each entity's in increasing order.
    pub async fn audit_mixed_effects(
        &self,
        events: &[DomainEvent],
        entities: usize,
        handled_by_kafkajs: &HashSet<String>,
    ) -> EffectsAudit {
        let redis = Builder::from_config(Config::from_url(&self.redis).unwrap())
            .build()
            .unwrap();
        redis.init().await.unwrap();
        let effects: std::collections::HashMap<String, i64> =
            redis.hgetall(effects_key(&self.group)).await.unwrap();
        let mut audit = EffectsAudit::default();
        for event in events {
            match effects.get(event.id().as_str()) {
                None if !handled_by_kafkajs.contains(event.id().as_str()) => audit.lost += 1,
                None | Some(1) => {}
                Some(_) => audit.doubled += 1,
            }
        }
        let order_keys: Vec<String> = (0..entities)
            .map(|e| order_key(&self.group, &format!("E-{e}")))
            .collect();
        for key in &order_keys {
            // With none lost and none twice (counted above), increasing
            // means exactly the entity's events in publish order.
            let order: Vec<u64> = redis.lrange(key, 0, -1).await.unwrap();
            if order.windows(2).any(|pair| pair[0] >= pair[1]) {
                audit.out_of_order += 1;
            }
        }
        let keys: Vec<String> = std::iter::once(effects_key(&self.group))
            .chain(order_keys)
            .collect();
        let _: i64 = redis.del(keys).await.unwrap();
        audit
    }

    /// Removes a killed member from the Kafka group at once (the admin
    /// call), instead of waiting for its session to time out.
    ///
    /// A work-around of the test broker, not of the library: tansu 0.6.0
    /// evicts a member whose session timed out inside the survivors'
    /// heartbeat without starting a new generation, so the survivors rejoin
    /// into the old generation and get their old assignment back: the dead
    /// member's partitions are never reassigned (tansu's
    /// `coordinator/group/administrator.rs`, fixed upstream after 0.6.0 in
    /// 9b50583). A LeaveGroup does start a new generation. See
    /// `mes_testkit::tansu`.
    pub async fn evict(&self, member_id: &str) {
        let client = mes_kafka::KafkaClient::connect(mes_kafka::KafkaConfig::new([self.brokers.as_str()]))
            .await
            .unwrap();
        assert!(
            client.remove_group_member(&self.group, member_id).await.unwrap(),
            "{member_id} was a member of {}",
            self.group
        );
    }

    /// A kafkajs 2 instance of the same service in the same group (mes-sync's
    /// `tests/node/kafkajs_member.js`), its output turned into the
    /// `sync-member` protocol: `MEMBER`, `OWNED` and `HANDLED` lines. It
    /// has no Redis state: its commits are Kafka's only.
    pub fn spawn_kafkajs(&self, name: &str, lines: &mpsc::Sender<(String, String)>) -> Member {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/mes-sync/tests/node/kafkajs_member.js"
        );
        let topic = mes_events_types::topic_for_type(&self.event_type).unwrap();
        let mut child = Command::new("node")
            .arg(script)
            .args([&self.brokers, &self.group, &topic])
            .arg(self.session.as_millis().to_string())
            .env("NODE_PATH", mes_testkit::node_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (kafkajs) starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, tag) = (lines.clone(), name.to_owned());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let translated = match line.strip_prefix("ASSIGNED ") {
                    Some(assigned) => {
                        let assigned: serde_json::Value = serde_json::from_str(assigned).unwrap();
                        let owned: Vec<String> = assigned["partitions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| format!("{topic}/{p}"))
                            .collect();
                        vec![
                            format!("MEMBER {}", assigned["memberId"].as_str().unwrap()),
                            format!("OWNED {}", owned.join(",")),
                        ]
                    }
                    None => vec![line],
                };
                for line in translated {
                    if tx.send((tag.clone(), line)).is_err() {
                        return;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Member {
            name: name.to_owned(),
            child,
            stdin,
        }
    }

    pub fn spawn(&self, name: &str, lines: &mpsc::Sender<(String, String)>) -> Member {
        self.spawn_with(Command::new(env!("CARGO_BIN_EXE_sync-member")), name, lines)
    }

    /// A `sync-member` inside a network jail.
    pub fn spawn_jailed(
        &self,
        jail: &mes_testkit::netns::Jail,
        name: &str,
        lines: &mpsc::Sender<(String, String)>,
    ) -> Member {
        self.spawn_with(jail.command(env!("CARGO_BIN_EXE_sync-member")), name, lines)
    }

    fn spawn_with(&self, mut command: Command, name: &str, lines: &mpsc::Sender<(String, String)>) -> Member {
        let mut child = command
            .env(env::BROKERS, &self.brokers)
            .env(env::REDIS, &self.redis)
            .env(env::GROUP, &self.group)
            .env(env::EVENT_TYPE, &self.event_type)
            .env(env::MEMBER, name)
            .env(env::SESSION_MS, self.session.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sync-member");
        let stdout = child.stdout.take().unwrap();
        let (tx, tag) = (lines.clone(), name.to_owned());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((tag.clone(), line)).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Member {
            name: name.to_owned(),
            child,
            stdin,
        }
    }
}

impl Member {
    /// SIGKILL: no shutdown, no claim released, no LeaveGroup, nothing
    /// flushed.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGSTOP: frozen (a long GC pause, a VM stopped), its sockets open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: it goes on where it was frozen.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {}", self.name);
    }

    /// Closes its stdin: it shuts down gracefully (finishes, commits,
    /// releases its claims, leaves the group).
    pub fn stop(&mut self) {
        self.stdin.take();
    }

    pub fn wait(&mut self) {
        self.child.wait().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The latest `OWNED` line of each member, and its latest member id.
#[derive(Default, Debug)]
pub struct Ownership(
    pub BTreeMap<String, BTreeSet<String>>,
    pub BTreeMap<String, String>,
);

impl Ownership {
    /// Reads lines until `done` holds for the ownership.
    pub fn until(&mut self, lines: &Lines, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let (member, line) = lines.recv().expect("a member's output");
            self.note(&member, &line);
        }
    }

    /// Takes in a member's `MEMBER` or `OWNED` line; other lines change
    /// nothing.
    pub fn note(&mut self, member: &str, line: &str) {
        if let Some(id) = line.strip_prefix("MEMBER ") {
            self.1.insert(member.to_owned(), id.to_owned());
        } else if let Some(owned) = line.strip_prefix("OWNED") {
            let owned = owned
                .trim()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            self.0.insert(member.to_owned(), owned);
        }
    }

    /// The group member id of the member called `member`.
    pub fn member_id(&self, member: &str) -> &str {
        self.1.get(member).map_or("", String::as_str)
    }

    pub fn of(&self, member: &str) -> usize {
        self.0.get(member).map_or(0, BTreeSet::len)
    }

    pub fn all(&self) -> BTreeSet<String> {
        self.0.values().flatten().cloned().collect()
    }

    /// Each partition held by exactly one member.
    pub fn disjoint(&self) -> bool {
        self.0.values().map(BTreeSet::len).sum::<usize>() == self.all().len()
    }
}
