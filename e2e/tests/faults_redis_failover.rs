//! Fault scenario: the Redis master behind a Sentinel fails over while a
//! cache with the near cache (L1) serves reads and writes and a consumer
//! group commits its offsets and effects there. First a crash: the master
//! is SIGKILLed while its replica lags behind (its link blackholed), the
//! Sentinel promotes the replica, then the old master comes back as a
//! replica. Then a switchover back to it (`SENTINEL FAILOVER`) with the
//! other master still up: nothing breaks the clients' connections, they
//! must follow the master the Sentinels name.
//!
//! Redis replicates asynchronously, so a failover may lose writes it had
//! acknowledged; that is Redis's promise, not ours, and is counted as a
//! figure. Promised by the libraries: once a failover settled, the near
//! cache answers what the new master holds (its entries from the old
//! master are gone); operations during the failover fail with typed
//! errors, never a panic; the group loses no event and applies no effect
//! twice, even when the commits of the last moments were lost with the old
//! master (the partition goes back to what Redis holds), and also when the
//! partitions of a member that died with the master are taken over by
//! another (a member SIGKILLed with it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Group, Ownership};
use mes_cache::{CacheConfig, CacheKeyPrefix, NearCache, ReferenceDataCache};
use mes_e2e::faults::{ErrorTally, Report, scaled};
use mes_events_types::{DomainEvent, EventType};
use mes_testkit::fault_proxy::{Fault, FaultProxy};
use mes_testkit::redis::{RedisBinaries, RedisServer};
use serde_json::{Value, json};

const ENTITIES: usize = 50;
const SESSION: Duration = Duration::from_secs(6);
const SERVICE: &str = "mymaster";
/// How far behind the replica falls before the master crashes.
const LAG: Duration = Duration::from_millis(500);
/// How long the members may go without handling anything.
const PATIENCE: Duration = Duration::from_secs(60);

/// A floor of a key: the version last acknowledged, tagged with the
/// master's epoch it was acknowledged under (`epoch << 32 | version`).
fn floor(epoch: u64, version: u64) -> u64 {
    epoch << 32 | version
}

fn version(value: &Value) -> u64 {
    value["v"].as_u64().unwrap()
}

/// Reads from the cache and counts, per phase, reads, stale reads and
/// typed errors.
#[derive(Default)]
struct CacheLoad {
    reads: AtomicU64,
    writes: AtomicU64,
    stale: AtomicU64,
    errors: ErrorTally,
}

impl CacheLoad {
    fn figures(&self) -> Value {
        json!({
            "reads": self.reads.load(Ordering::Relaxed),
            "writes": self.writes.load(Ordering::Relaxed),
            "stale_reads": self.stale.load(Ordering::Relaxed),
            "typed_errors": self.errors.to_json(),
        })
    }
}

/// Waits (blocking the calling worker thread only) until the Sentinel
/// names `server` as the master.
fn wait_promoted(sentinel: &RedisServer, server: &RedisServer) -> Duration {
    let started = Instant::now();
    tokio::task::block_in_place(|| sentinel.wait_promoted(SERVICE, server).unwrap());
    started.elapsed()
}

/// With the writer held: how many keys `reader` (L1 on) answers
/// differently from the master once every earlier invalidation was handled.
async fn l1_differing_from_master(
    reader: &ReferenceDataCache,
    writer: &ReferenceDataCache,
    prefix: &CacheKeyPrefix,
    ids: &[String],
) -> u64 {
    common::fence_near_cache(reader, writer, prefix).await;
    let master = writer.get_many::<Value, _, _>(prefix, ids).await.unwrap();
    let mut differing = 0;
    for id in ids {
        if reader.get::<Value>(prefix, id).await.unwrap().as_ref() != master.get(id) {
            differing += 1;
        }
    }
    differing
}

/// How long until `cache` gets answers again (its connection follows the
/// Sentinel to the new master by itself).
async fn until_answering(cache: &ReferenceDataCache) -> Duration {
    let started = Instant::now();
    while cache.health_check().await.is_err() {
        assert!(
            started.elapsed() < PATIENCE,
            "the cache answers again within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// How many keys the master now holds at a version older than the one
/// acknowledged before the failover (`acked`): writes Redis lost. Keys
/// rewritten since hide a loss, so this is a lower bound.
async fn lost_writes(
    cache: &ReferenceDataCache,
    prefix: &CacheKeyPrefix,
    ids: &[String],
    acked: &[u64],
) -> u64 {
    let held = cache.get_many::<Value, _, _>(prefix, ids).await.unwrap();
    let lost = ids
        .iter()
        .zip(acked)
        .filter(|(id, acked)| held.get(id.as_str()).map_or(0, version) < **acked)
        .count();
    lost as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_and_switchover_under_cache_and_consumer_load() {
    let per_entity: usize = scaled(30, 150);
    let phase_length = scaled(Duration::from_secs(2), Duration::from_secs(10));
    let keys: usize = scaled(200, 1_000);

    let binaries = RedisBinaries::for_tests();
    let mut first = RedisServer::start(&binaries, &[]).unwrap();
    // The replica replicates through a proxy, so that its link can lag.
    let (replication, _) = FaultProxy::in_front_of(&first.url()).unwrap();
    let second = tokio::task::block_in_place(|| {
        let replica = RedisServer::start(
            &binaries,
            &["--replicaof", "127.0.0.1", &replication.port().to_string()],
        )
        .unwrap();
        replica
            .wait_for(&["INFO", "replication"], "master_link_status:up")
            .unwrap();
        replica
    });
    // Down after 1 s: the failover is quick enough for a test and slow
    // enough for a loaded 2-core machine not to fail over by mistake.
    let sentinel = RedisServer::start_sentinel(&first, SERVICE, Duration::from_secs(1), 1).unwrap();
    let url = format!(
        "redis-sentinel://{}?sentinelServiceName={SERVICE}",
        sentinel.address()
    );

    // The cache: readers with L1 and a writer (another service), both
    // through the Sentinel.
    let namespace = format!("faults-{}", ulid::Ulid::new());
    let connect = |near: bool| {
        let config = CacheConfig::from_url(&url)
            .unwrap()
            .namespace(&namespace)
            .command_timeout(Duration::from_secs(1));
        let config = if near {
            config.near_cache(
                NearCache::new(10_000, Duration::from_secs(60)).heartbeat(Duration::from_millis(500)),
            )
        } else {
            config
        };
        ReferenceDataCache::connect(config)
    };
    let reader = connect(true).await.unwrap();
    let writer = connect(false).await.unwrap();
    let prefix = CacheKeyPrefix::new("part");
    let ids: Arc<Vec<String>> = Arc::new((0..keys).map(|k| format!("P-{k}")).collect());
    for id in ids.iter() {
        writer.set(&prefix, id, &json!({"v": 0}), None).await.unwrap();
    }
    let epoch = Arc::new(AtomicU64::new(0));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let phases: Arc<Vec<CacheLoad>> = Arc::new((0..5).map(|_| CacheLoad::default()).collect());
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Held by the checks that need the writer still.
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let writing = {
        let gate = Arc::clone(&gate);
        let (writer, prefix, ids, acked, stop, epoch, phases, phase) = (
            writer.clone(),
            prefix.clone(),
            Arc::clone(&ids),
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&epoch),
            Arc::clone(&phases),
            Arc::clone(&phase),
        );
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The writer's own versions: never reused, whatever Redis lost.
            let mut versions = vec![0_u64; ids.len()];
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let _turn = gate.lock().await;
                versions[k] += 1;
                let counts = &phases[phase.load(Ordering::Relaxed)];
                match writer
                    .set(&prefix, &ids[k], &json!({"v": versions[k]}), None)
                    .await
                {
                    Ok(()) => {
                        acked[k].store(floor(epoch.load(Ordering::SeqCst), versions[k]), Ordering::SeqCst);
                        counts.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.errors.add(&e);
                    }
                }
                k = (k + 7) % ids.len();
            }
        })
    };
    let readers: Vec<_> = (0..2_usize)
        .map(|r| {
            let (reader, prefix, ids, acked, stop, epoch, phases, phase) = (
                reader.clone(),
                prefix.clone(),
                Arc::clone(&ids),
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&epoch),
                Arc::clone(&phases),
                Arc::clone(&phase),
            );
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_micros(500));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    k = (k * 31 + 17) % ids.len();
                    let (now, floor) = (epoch.load(Ordering::SeqCst), acked[k].load(Ordering::SeqCst));
                    let read = reader.get::<Value>(&prefix, &ids[k]).await;
                    let counts = &phases[phase.load(Ordering::Relaxed)];
                    match read {
                        Ok(Some(value)) => {
                            counts.reads.fetch_add(1, Ordering::Relaxed);
                            // Only floors the current master acknowledged.
                            if floor >> 32 == now && version(&value) < floor & 0xffff_ffff {
                                counts.stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The crash lost the key itself (it was written
                        // only just before): Redis's loss, counted there.
                        Ok(None) => {
                            counts.reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counts.errors.add(&e);
                        }
                    }
                }
            })
        })
        .collect();

    // The consumer group: two Rust members whose state is behind the Sentinel.
    let (mut group, _topic, publisher) = Group::with_topic("failover", SESSION, 4).await;
    group.redis.clone_from(&url);
    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let mut a = group.spawn("a", &tx);
    let mut b = group.spawn("b", &tx);
    // Both hold partitions: a has some to lose, and its member id is known.
    owned.until(&lines, |o| {
        o.of("a") > 0 && o.of("b") > 0 && o.of("a") + o.of("b") == 4 && o.disjoint()
    });
    let parsed = EventType::parse(&group.event_type).unwrap();
    let events: Vec<DomainEvent> = (0..ENTITIES * per_entity)
        .map(|i| {
            DomainEvent::new_raw(parsed.clone(), "test", json!({"seq": i / ENTITIES}))
                .with_entity("Thing", format!("E-{}", i % ENTITIES))
        })
        .collect();
    // One by one, paced over the phases (see faults_consumer_kill.rs).
    let publishing = {
        let events = events.clone();
        let gap = phase_length * 5 / u32::try_from(events.len()).unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut pace = tokio::time::interval(gap);
            for event in &events {
                pace.tick().await;
                publisher.publish(event).await.unwrap();
            }
            started.elapsed()
        })
    };
    let mut handled = HashSet::new();
    let mut runs = 0_u64;
    let mut take = |until: Instant, handled: &mut HashSet<String>, owned: &mut Ownership| {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok((member, line)) = lines.recv_timeout(left) {
                match line.strip_prefix("HANDLED ") {
                    Some(id) => {
                        runs += 1;
                        handled.insert(id.to_owned());
                    }
                    None => owned.note(&member, &line),
                }
            }
        }
    };

    // Phase 0: steady.
    take(Instant::now() + phase_length, &mut handled, &mut owned);

    // Phase 1: the replica falls behind (its link blackholed), the master
    // crashes, the Sentinel promotes the replica.
    phase.store(1, Ordering::Relaxed);
    replication.set(Fault::Blackhole);
    tokio::time::sleep(LAG).await;
    let before_crash: Vec<u64> = acked
        .iter()
        .map(|f| f.load(Ordering::SeqCst) & 0xffff_ffff)
        .collect();
    first.kill();
    // Member a dies with the master: its partitions go to b, which
    // chooses where to start between the offsets a mirrored to Kafka and
    // what the new master holds, which may have lost a's last commits and
    // the record of its last mirror. It is removed from the group as the
    // coordinator would after its session: tansu 0.6.0 drops a member
    // whose session ran out without a new generation, so had a2 joined
    // first, a's share of that generation would never be dealt again (see
    // `Group::evict`).
    a.kill();
    group.evict(owned.member_id("a")).await;
    // What the partition held back is lost with the master (a cut drops
    // it; healing would deliver it, as TCP would have).
    replication.set(Fault::Cut);
    let crash_promotion = wait_promoted(&sentinel, &second);
    replication.heal();
    epoch.store(1, Ordering::SeqCst);
    // What the new master holds of the writes acknowledged before the
    // crash (keys rewritten since only hide a loss: a lower bound).
    let crash_reconnect = until_answering(&writer).await;
    let writes_lost_by_crash = lost_writes(&writer, &prefix, &ids, &before_crash).await;
    take(Instant::now() + phase_length, &mut handled, &mut owned);
    let differing_after_crash = {
        let _held = gate.lock().await;
        l1_differing_from_master(&reader, &writer, &prefix, &ids).await
    };

    // Phase 2: the old master comes back (empty: no persistence); the
    // Sentinel makes it a replica of the new one.
    phase.store(2, Ordering::Relaxed);
    let mut a2 = group.spawn("a2", &tx);
    tokio::task::block_in_place(|| {
        first.restart().unwrap();
        first
            .wait_for(&["INFO", "replication"], "master_link_status:up")
            .unwrap();
    });
    take(Instant::now() + phase_length, &mut handled, &mut owned);

    // Phase 3: a switchover back to it (refused until the Sentinel has
    // heard from the replica: polled).
    phase.store(3, Ordering::Relaxed);
    let before_switch: Vec<u64> = acked
        .iter()
        .map(|f| f.load(Ordering::SeqCst) & 0xffff_ffff)
        .collect();
    tokio::task::block_in_place(|| {
        sentinel
            .wait_for(&["SENTINEL", "FAILOVER", SERVICE], "OK")
            .unwrap();
    });
    let switch_promotion = wait_promoted(&sentinel, &first);
    epoch.store(2, Ordering::SeqCst);
    let switch_reconnect = until_answering(&writer).await;
    take(Instant::now() + phase_length, &mut handled, &mut owned);
    // After the Sentinels demoted the old master (its copy of what was
    // written there since is gone).
    tokio::task::block_in_place(|| {
        second.wait_for(&["ROLE"], "slave").unwrap();
    });
    let writes_lost_by_switchover = lost_writes(&writer, &prefix, &ids, &before_switch).await;
    let differing_after_switchover = {
        let _held = gate.lock().await;
        l1_differing_from_master(&reader, &writer, &prefix, &ids).await
    };

    // Phase 4: steady on the first master again; then the load stops.
    phase.store(4, Ordering::Relaxed);
    take(Instant::now() + phase_length, &mut handled, &mut owned);
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    for reading in readers {
        reading.await.unwrap();
    }
    let publish_time = publishing.await.unwrap();
    let healed = Instant::now();
    while handled.len() < events.len() {
        let before = handled.len();
        take(
            Instant::now() + Duration::from_millis(500),
            &mut handled,
            &mut owned,
        );
        assert!(
            handled.len() > before || healed.elapsed() < PATIENCE,
            "no progress: {} of {} handled, owned {:?}",
            handled.len(),
            events.len(),
            owned.0
        );
    }
    let caught_up = healed.elapsed();
    common::stop_members(&mut [&mut a2, &mut b], &lines);
    let audit = group.audit_effects(&events, ENTITIES).await;

    let stale_reads: u64 = phases
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, p)| p.stale.load(Ordering::Relaxed))
        .sum();
    let stale_in_switchover = phases[3].stale.load(Ordering::Relaxed);
    let failover_errors = phases[1].errors.total();
    let names = [
        "steady",
        "crashed and promoted",
        "old master back as replica",
        "switchover",
        "steady after",
    ];
    let per_phase: serde_json::Map<String, Value> = names
        .iter()
        .zip(phases.iter())
        .map(|(name, load)| ((*name).to_owned(), load.figures()))
        .collect();
    let near = reader.near_cache_stats().unwrap();
    let mut report = Report::new(
        "redis_sentinel_failover",
        format!(
            "Redis replica's link blackholed {} ms, then the master and one consumer member SIGKILLed and the replica promoted by the Sentinel (down after 1 s); then the old master back as a replica, a new member joining, and a switchover to it with the other master up; {} s per phase",
            LAG.as_millis(),
            phase_length.as_secs_f64()
        ),
        format!(
            "2 cache readers with L1 and 1 writer over {keys} keys; 2 Rust members committing through the Sentinel (one SIGKILLed with the master, another joining later), {} events over {ENTITIES} entities published at {:.0}/s, 4 partitions",
            events.len(),
            events.len() as f64 / publish_time.as_secs_f64()
        ),
    );
    report.none(
        "L1 reads differing from the master once each failover settled",
        differing_after_crash + differing_after_switchover,
    );
    audit.report_into(&mut report);
    report
        .check(
            "cache operations failed with a typed error during the crash",
            "> 0",
            json!(failover_errors),
            failover_errors > 0,
        )
        .figure(
            "promotion_ms",
            json!({"crash": crash_promotion.as_millis() as u64, "switchover": switch_promotion.as_millis() as u64}),
        )
        .figure(
            "cache_answering_ms_after_promotion",
            json!({"crash": crash_reconnect.as_millis() as u64, "switchover": switch_reconnect.as_millis() as u64}),
        )
        // Acknowledged writes the new master never got (Redis replicates
        // asynchronously; a lower bound), and the consumers' commits lost
        // with them show as handler runs repeated.
        .figure(
            "cache_writes_lost_by_redis",
            json!({"crash": writes_lost_by_crash, "switchover": writes_lost_by_switchover}),
        )
        .figure("handler_runs_repeated", runs - events.len() as u64)
        // Reads older than a write the current master had acknowledged,
        // while its invalidation was still on its way (the near cache's
        // window, as without faults).
        .figure("reads_racing_an_invalidation", stale_reads)
        // The same during the switchover, where it also counts the writes
        // the old master acknowledged until the writer's next look at the
        // Sentinels moved it (lost with the old master's demotion).
        .figure("switchover_reads_older_than_an_acknowledged_write", stale_in_switchover)
        .figure("caught_up_ms_after_load_stopped", caught_up.as_millis() as u64)
        .figure("phases", Value::Object(per_phase))
        .figure(
            "near_cache",
            json!({"hits": near.hits, "flushes": format!("{:?}", near.flushes)}),
        );
    println!("{:#}", report.to_json());
    report.finish();
}
