//! Every operation runs in a `mes_cache.*` span.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mes_cache::{CacheConfig, CacheKeyPrefix, ReferenceDataCache, WarmOptions};
use mes_testkit::logs::CapturedLogs;

#[tokio::test]
async fn every_operation_has_a_span() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let cache = ReferenceDataCache::in_memory(CacheConfig::default()).unwrap();
    let part = CacheKeyPrefix::Part;
    cache.set(&part, "1", &1, None).await.unwrap();
    cache.set_many(&part, [("2", 2)], None).await.unwrap();
    cache.get::<i32>(&part, "1").await.unwrap();
    cache.get_many::<i32, _, _>(&part, ["1", "2"]).await.unwrap();
    cache
        .get_or_load(&part, "3", || async { Ok::<_, mes_cache::Error>(Some(3)) })
        .await
        .unwrap();
    cache
        .warm_cache(
            &part,
            || async { Ok::<_, mes_cache::Error>(vec![("4".to_owned(), 4)]) },
            WarmOptions::once(),
        )
        .await
        .unwrap();
    cache.invalidate(&part, "1").await.unwrap();
    cache.invalidate_pattern("part:2").await.unwrap();
    cache.invalidate_all(&part).await.unwrap();
    cache.stats(&part).await.unwrap();
    cache.health_check().await.unwrap();
    cache.clear_all().await.unwrap();

    let seen = logs.span_names();
    for expected in [
        "mes_cache.set",
        "mes_cache.set_many",
        "mes_cache.get",
        "mes_cache.get_many",
        "mes_cache.load",
        "mes_cache.warm",
        "mes_cache.invalidate",
        "mes_cache.scan_unlink",
        "mes_cache.stats",
        "mes_cache.health_check",
    ] {
        assert!(
            seen.iter().any(|n| n == expected),
            "no span {expected} in {seen:?}"
        );
    }
}
