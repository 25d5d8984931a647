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

/// A PostgreSQL server of a test's own (`initdb` into a scratch folder, on
/// a spare port), for a test that crashes and restarts it: the shared one
/// must stay up for every other suite. Trust authentication, user
/// `postgres`, database `postgres`. Stopped (immediately) and removed on
/// drop.
///
/// The server binaries come from `MES_TEST_POSTGRES_BIN` (a folder holding
/// `initdb`, `pg_ctl` and `postgres`), else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's packages). PostgreSQL refuses to run
/// as root, so as root they run as the `postgres` user.
#[derive(Debug)]
pub struct PrivateServer {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateServer {
    /// Initialises and starts a server.
    ///
    /// # Errors
    /// When the binaries are missing or the server does not start; the
    /// error carries the command's output.
    pub fn start() -> std::io::Result<Self> {
        let bin = match std::env::var_os("MES_TEST_POSTGRES_BIN") {
            Some(bin) => std::path::PathBuf::from(bin),
            None => newest_debian_bin()?,
        };
        let dir = std::env::temp_dir().join(format!("mes-pg-{}-{}", std::process::id(), ulid_like()));
        std::fs::create_dir_all(&dir)?;
        let port = crate::tansu::spare_port()?;
        let server = Self { bin, dir, port };
        if as_root() {
            server.run(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&server.dir),
            )?;
        }
        let data = server.dir.join("data");
        server.run(server.tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]))?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:port/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it the way a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint, every connection cut).
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn crash(&self) -> std::io::Result<()> {
        self.run(self.tool("pg_ctl").arg("-D").arg(self.dir.join("data")).args([
            "stop",
            "-m",
            "immediate",
            "-w",
        ]))
    }

    /// Starts it again after [`crash`](Self::crash) (crash recovery runs).
    ///
    /// # Errors
    /// When it does not start.
    pub fn restart(&self) -> std::io::Result<()> {
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&self) -> std::io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-o", &options, "-l"])
                .arg(self.dir.join("server.log"))
                .args(["start", "-w"]),
        )
    }

    /// A server binary, run as `postgres` when this process is root.
    fn tool(&self, name: &str) -> std::process::Command {
        let path = self.bin.join(name);
        if as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    fn run(&self, command: &mut std::process::Command) -> std::io::Result<()> {
        let output = command.output()?;
        if output.status.success() {
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "{command:?} failed ({}): {}{} (log: {})",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim(),
            self.dir.join("server.log").display()
        )))
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// A name part unique within the process.
fn ulid_like() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn newest_debian_bin() -> std::io::Result<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; set MES_TEST_POSTGRES_BIN",
        )
    })
}
