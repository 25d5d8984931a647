//! Reads while a slot migrates, on a Redis Cluster of our own (three
//! masters; the test moves one slot by hand, as `redis-cli --cluster
//! reshard` does).
//!
//! fred 10.1, following an `ASK` itself, reads the next reply on the target
//! node's connection as the reply to its `ASKING`: with other commands in
//! flight there, each of them got the reply of the next, another key's
//! value (see `backend/redirect.rs`). The cache follows redirections itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache};
use mes_testkit::redis::{RedisBinaries, RedisCluster};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_an_ask_redirection_answer_their_own_keys() {
    let cluster =
        tokio::task::block_in_place(|| RedisCluster::start(&RedisBinaries::for_tests(), 3).unwrap());
    // One client: the reads share its connections, as a loaded service's do.
    let config = CacheConfig::from_url(&cluster.url())
        .unwrap()
        .namespace("redirects")
        .pool_size(1)
        .command_timeout(Duration::from_secs(10));
    let cache = ReferenceDataCache::connect(config).await.unwrap();
    let prefix = CacheKeyPrefix::new("part");
    let slot_of = |id: &str| fred::util::redis_keyslot(cache.key(&prefix, id).as_bytes());
    let ids = (0..).map(|n| format!("P-{n}"));
    let moved = ids
        .clone()
        .find(|id| cluster.first_owner(slot_of(id)) == 0)
        .unwrap();
    let held: Vec<String> = ids
        .filter(|id| cluster.first_owner(slot_of(id)) == 1)
        .take(4)
        .collect();
    for id in held.iter().chain([&moved]) {
        cache.set(&prefix, id, &json!({"id": id}), None).await.unwrap();
    }

    // The moved key's slot half-way from the first master to the second:
    // its key is on the second already, so the first answers ASK.
    let (first, second) = (cluster.node(0).unwrap(), cluster.node(1).unwrap());
    let key = cache.key(&prefix, &moved);
    let slot_move = tokio::task::block_in_place(|| {
        let slot_move = cluster.begin_move(slot_of(&moved), 0, 1).unwrap();
        slot_move.migrate(&[&key]).unwrap();
        let answer = first.cli(&["GET", &key]).unwrap();
        assert!(answer.starts_with("ASK"), "the first master redirects: {answer}");
        // The second holds its replies a while: the reads of its keys are
        // in flight when the moved key's redirection comes back.
        second.cli(&["CLIENT", "PAUSE", "500", "ALL"]).unwrap();
        slot_move
    });

    // Sent in this order: the held keys' reads, then the moved key's.
    let (held_values, moved_value) = futures::join!(
        async {
            let values =
                futures::future::join_all(held.iter().map(|id| cache.get::<Value>(&prefix, id))).await;
            // Then the migration ends, as a reshard's does.
            tokio::task::block_in_place(|| slot_move.finish().unwrap());
            values
        },
        cache.get::<Value>(&prefix, &moved),
    );
    for (id, value) in held.iter().zip(held_values) {
        assert_eq!(value.unwrap(), Some(json!({"id": id})), "the read of {id}");
    }
    assert_eq!(moved_value.unwrap(), Some(json!({"id": moved})));
    cache.close().await.unwrap();
}
