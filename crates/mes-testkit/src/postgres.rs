//! A PostgreSQL schema of a test's own in the shared database, dropped with
//! everything in it when the test ends.

use sqlx::postgres::{PgPool, PgPoolOptions};

/// A schema named after the test and the process, created on the shared
/// database of [`postgres_url`](crate::postgres_url). Dropping it drops the
/// schema (`CASCADE`), also when the test panics.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
    url: String,
}

impl TestSchema {
    /// Creates `mes_test_{test}_{pid}_{n}`.
    ///
    /// # Panics
    /// When the database cannot be reached: a suite without its service
    /// fails.
    pub async fn create(test: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "mes_test_{}_{}_{}",
            test.to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = crate::postgres_url();
        let pool = connect(&url, 1).await;
        // The name is built from [a-z0-9_] only, so it needs no quoting.
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {name} at {url}: {e}"));
        pool.close().await;
        Self { name, url }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool of up to `connections` connections to the shared database.
    pub async fn pool(&self, connections: u32) -> PgPool {
        connect(&self.url, connections).await
    }
}

async fn connect(url: &str, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"))
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        // Drop may run inside a runtime, which cannot block on another
        // future: the clean-up gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let pool = PgPoolOptions::new().max_connections(1).connect(&url).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        });
        let _ = cleanup.join();
    }
}
