//! The demo binary, run as `cargo xtask demo` runs it: on its in-process
//! test doubles (no service needed), and on real services (a tansu broker
//! of its own, Redis and PostgreSQL from `cargo xtask test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "a test: a failed step fails it, and it shows the demo's output when it does"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

const OLD_NAME: &str = "Landing Gear Strut";
const NEW_NAME: &str = "Landing Gear Strut Mk II";

/// The demo binary with none of the `MES_DEMO_*` variables a caller may
/// have set.
fn demo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mes-demo"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MES_DEMO_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command.output().expect("cannot run the demo binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "--- demo stdout ---\n{stdout}--- demo stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output, stdout)
}

/// The line that starts with `prefix` after its indentation, without it.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
}

/// The work order shows the old name before the rename and the new one
/// after, in that order.
fn assert_stale_then_fresh(stdout: &str) {
    let before = line(stdout, "before:");
    let after = line(stdout, "after:");
    assert!(before.contains(&format!("\"{OLD_NAME}\"")), "{before}");
    assert!(after.contains(&format!("\"{NEW_NAME}\"")), "{after}");
    assert!(
        stdout.find(before) < stdout.find(after),
        "the old name is shown before the new one"
    );
    assert!(stdout.contains(&format!("Before: \"{OLD_NAME}\"  After: \"{NEW_NAME}\"")));
}

#[test]
fn in_process_fallback_shows_the_old_name_before_and_the_new_name_after() {
    let (output, stdout) = run(demo().arg("--in-process"));
    assert!(output.status.success(), "the demo failed: {:?}", output.status);
    assert_stale_then_fresh(&stdout);
    // Said at the start and in the summary.
    for service in ["Kafka:", "Redis:", "PostgreSQL:"] {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(service))
            .collect();
        assert_eq!(lines.len(), 2, "{service} is described at the start and the end");
        for line in lines {
            assert!(
                line.contains("in-process test double (forced with --in-process"),
                "{line}"
            );
        }
    }
    assert_eq!(
        stdout
            .matches("NOT a real-services run: Kafka, Redis, PostgreSQL, the consumer")
            .count(),
        2
    );
    assert!(stdout.contains("EventConsumer::dispatch ran the cache rules and the handler"));
    assert!(stdout.contains("outbox: none (PostgreSQL is an in-process test double)"));
}

/// The Prometheus endpoint `--metrics` serves: where, said at the start,
/// and an excerpt of one scrape at the end.
fn assert_metrics_served(stdout: &str) -> String {
    let served = line(stdout, "Metrics: Prometheus endpoint http://127.0.0.1:");
    let address = served
        .trim_start_matches("Metrics: Prometheus endpoint ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let scraped = format!("Metrics scraped from {address} (");
    assert!(stdout.contains(&scraped), "no scrape of {address}");
    assert!(stdout.find(served) < stdout.find(&scraped), "said before scraped");
    stdout[stdout.find(&scraped).unwrap()..].to_owned()
}

#[test]
fn with_metrics_the_demo_serves_them_and_shows_a_scrape() {
    let (output, stdout) = run(demo().args(["--in-process", "--metrics"]));
    assert!(output.status.success(), "the demo failed: {:?}", output.status);
    assert_stale_then_fresh(&stdout);
    let excerpt = assert_metrics_served(&stdout);
    // The cache's figures for the part: one hit before the rename, one miss after.
    assert!(
        excerpt.contains("mes_cache_hits{mes_cache_prefix=\"part\"} 1"),
        "{excerpt}"
    );
    assert!(
        excerpt.contains("mes_cache_misses{mes_cache_prefix=\"part\"} 1"),
        "{excerpt}"
    );

    let (output, stdout) = run(demo().args(["--in-process", "--metrics", "not-an-address"]));
    assert!(!output.status.success());
    assert!(!stdout.contains("Metrics scraped"));
}

#[test]
fn a_service_that_could_not_be_had_is_a_double_with_its_reason() {
    let (output, stdout) = run(demo()
        .env(
            "MES_DEMO_KAFKA_UNAVAILABLE",
            "no broker could be started: tansu exploded",
        )
        .env(
            "MES_DEMO_REDIS_UNAVAILABLE",
            "no redis-server could be started: none installed",
        )
        .env(
            "MES_DEMO_DATABASE_UNAVAILABLE",
            "no PostgreSQL is reachable: refused",
        ));
    assert!(output.status.success(), "the demo failed: {:?}", output.status);
    assert_stale_then_fresh(&stdout);
    assert!(
        stdout.contains("Kafka:      in-process test double (no broker could be started: tansu exploded)")
    );
    assert!(
        stdout.contains(
            "Redis:      in-process test double (no redis-server could be started: none installed)"
        )
    );
    assert!(stdout.contains("PostgreSQL: in-process test double (no PostgreSQL is reachable: refused)"));

    // Neither the service nor a reason: refused, not silently faked.
    let (output, _) = run(&mut demo());
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("neither MES_DEMO_KAFKA_BROKERS nor MES_DEMO_KAFKA_UNAVAILABLE")
    );
}

async fn schema_exists(url: &str, schema: &str) -> bool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let found: Option<String> = sqlx::query_scalar(
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(schema)
    .fetch_optional(&pool)
    .await
    .unwrap();
    pool.close().await;
    found.is_some()
}

/// `mes_demo_{pid}`, as the demo names it.
fn schema_of(stdout: &str) -> String {
    let start = stdout.find("mes_demo_").expect("the demo names its schema");
    stdout[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mes-demo-test-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_real_services_the_rename_goes_through_the_outbox_and_the_schema_is_dropped() {
    // A broker of its own, as `cargo xtask demo` starts one: the consumer
    // starts at the latest offset, which the suites' shared broker may
    // report inside a batch (see ARCHITECTURE.md).
    let dir = scratch("real");
    let broker =
        mes_testkit::tansu::TansuBroker::start(&mes_testkit::tansu_binary(), "memory://tansu/", &dir)
            .expect("cannot start tansu");
    let database = mes_testkit::postgres_url();
    let (output, stdout) = run(demo()
        .arg("--metrics")
        .env("MES_DEMO_KAFKA_BROKERS", broker.address())
        .env("MES_DEMO_REDIS_URL", mes_testkit::redis_url())
        .env("MES_DEMO_DATABASE_URL", &database));
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "the demo failed: {:?}", output.status);

    assert_stale_then_fresh(&stdout);
    assert_eq!(
        stdout
            .matches("No test double: every part on a real service.")
            .count(),
        2
    );
    assert!(!stdout.contains("in-process test double"));
    assert!(!stdout.contains("NOT a real-services run"));
    assert!(stdout.contains("committed together: parts row P-12345 renamed and outbox row for event"));
    let acked = line(&stdout, "the outbox relay published it:");
    assert!(
        acked.starts_with("the outbox relay published it: acknowledged at mes.material.events/"),
        "{acked}"
    );
    assert!(stdout.contains("consumer: 1 events handled, 0 duplicates, 0 dead-lettered, lag 0"));
    assert!(stdout.contains("outbox: 0 pending, 0 parked; relay: 1 published"));
    assert!(line(&stdout, "after:").contains("miss, loaded from the Material service's table mes_demo_"));
    let schema = schema_of(&stdout);
    assert!(!schema_exists(&database, &schema).await, "{schema} was dropped");
    // Every crate's metrics, on the endpoint the demo served.
    let excerpt = assert_metrics_served(&stdout);
    for series in [
        "messaging_client_sent_messages{messaging_destination_name=\"mes.material.events\"",
        "mes_outbox_relay_published{mes_outbox_table=",
        "messaging_client_consumed_messages{",
        "mes_kafka_requests{",
    ] {
        assert!(excerpt.contains(series), "no {series} in {excerpt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_dropped_when_the_demo_fails() {
    let database = mes_testkit::postgres_url();
    // A given broker must work: nothing listens on this port.
    let closed = mes_testkit::tansu::spare_port().unwrap();
    let (output, stdout) = run(demo()
        .env("MES_DEMO_KAFKA_BROKERS", format!("127.0.0.1:{closed}"))
        .env("MES_DEMO_REDIS_UNAVAILABLE", "not needed")
        .env("MES_DEMO_DATABASE_URL", &database));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("demo failed"));
    assert!(
        stdout.contains("0. The Material service's database"),
        "it got as far as the schema"
    );
    let schema = schema_of(&stdout);
    assert!(stdout.contains(&format!("(schema {schema} dropped)")));
    assert!(
        stdout.contains("Ran on:"),
        "the summary is printed after a failure too"
    );
    assert!(!schema_exists(&database, &schema).await, "{schema} was dropped");
}
