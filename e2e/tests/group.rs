//! Several instances of one service share a group's partitions; a killed
//! one's partitions move to the others once the coordinator drops it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Ownership};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_take_over_a_killed_ones() {
    let session = Duration::from_secs(6);
    let (group, _topic, _publisher) = Group::with_topic("group", session, 4).await;

    let (tx, lines) = mpsc::channel();
    let mut owned = Ownership::default();
    let _a = group.spawn("a", &tx);
    owned.until(&lines, |o| o.of("a") == 4);

    let mut b = group.spawn("b", &tx);
    owned.until(&lines, |o| o.of("a") == 2 && o.of("b") == 2 && o.disjoint());

    let _c = group.spawn("c", &tx);
    owned.until(&lines, |o| {
        let mut shares = [o.of("a"), o.of("b"), o.of("c")];
        shares.sort_unstable();
        shares == [1, 1, 2] && o.disjoint() && o.all().len() == 4
    });
    println!("three members: {:?}", owned.0);

    let orphaned = owned.0["b"].clone();
    let killed_at = Instant::now();
    b.kill();
    owned.0.remove("b");
    // On Kafka the coordinator drops b after its session timeout; tansu
    // 0.6.0 never reassigns b's partitions then (see `Group::evict`), so the
    // test removes b as an operator would.
    group.evict(owned.member_id("b")).await;
    owned.until(&lines, |o| o.all().len() == 4 && o.disjoint() && o.of("b") == 0);
    println!(
        "b killed holding {orphaned:?}; taken over by a and c {:?} after the kill: {:?}",
        killed_at.elapsed(),
        owned.0
    );
    drop(b);
}
