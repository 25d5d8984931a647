//! Reads reference data through the cache, on the in-memory double so it
//! runs without Redis, and shows the legacy entry it wrote.

use mes_cache::{CacheConfig, CacheEntity, CacheKeyPrefix, InMemoryStore, ReferenceDataCache};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    part_number: String,
    part_name: String,
}

impl CacheEntity for Part {
    const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), mes_cache::Error> {
    let config = CacheConfig::from_url("redis://redis:6379")?;
    let store = InMemoryStore::new();
    let cache = ReferenceDataCache::with_store(config, store.clone())?;
    let parts = cache.typed::<Part>();
    for _ in 0..2 {
        let part = parts
            .get_or_load("P-12345", || async {
                println!("miss: loading P-12345 from the Material service");
                Ok::<_, std::io::Error>(Some(Part {
                    part_number: "P-12345".into(),
                    part_name: "Landing Gear Strut".into(),
                }))
            })
            .await?;
        println!("read {part:?}");
    }
    let key = cache.key(&CacheKeyPrefix::Part, "P-12345");
    let raw = store.get_raw(&key).unwrap_or_default();
    println!("{key} = {}", String::from_utf8_lossy(&raw));
    let counters = parts.counters();
    println!(
        "hits {}, misses {}, loads {}",
        counters.hits, counters.misses, counters.loads
    );
    Ok(())
}
