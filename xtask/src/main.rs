//! `cargo xtask`: the project's tasks, in Rust, with no dependencies.
//!
//! Run `cargo xtask help` for the list.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: it reports to the terminal"
)]

mod bench;
mod crates;
mod docker;
mod faults;
mod fuzz;
mod package;
mod redis;
mod services;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

pub(crate) type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const HELP: &str = "\
cargo xtask <task> [args]

Tasks:
  demo        Run the cache-sync scenario end to end, narrated, on a tansu
              broker, a redis-server and the machine's PostgreSQL (or
              KAFKA_BROKERS, REDIS_URL, DATABASE_URL); a service that cannot
              be had runs on its in-process test double, said plainly.
              `demo --in-process` starts nothing and uses the doubles.
              `demo --metrics [ADDR]` serves the crates' metrics on a
              Prometheus endpoint (a free port of 127.0.0.1 by default),
              says where, and prints an excerpt of a scrape at the end.
  test        Run every test of the workspace (unit, integration, doc, property,
              interop). Provides the services the suites need first and sets
              their MES_TEST_* variables; extra args go to `cargo test`.
              Without args it first checks that no published crate exposes
              another crate's type its manifest does not allow
              (cargo-check-external-types on rustdoc's JSON).
              `test --containers`: the shared Kafka, Redis and PostgreSQL
              come from containers the suites start (testcontainers) on a
              Docker engine (a private dockerd when none is reachable) from
              images built here; the unit and integration tests run, the doc
              tests stay on the native path. `test --containers --smoke`
              runs only the smoke suites (publish, outbox, redis_standalone,
              consume, kafkajs_group, group).
  bench       Benchmarks with baselines measured in the same run (ratios, not
              absolute times): `bench kafka` runs the publisher against raw
              rskafka, librdkafka (confluent-kafka) and kafkajs on one broker,
              the PostgreSQL outbox against direct publishing (end to end,
              relay drain, commit-to-ack latency with NOTIFY and polling) and
              the consumer against raw mes-kafka and rskafka fetches and the
              librdkafka and kafkajs (eachMessage, eachBatch) consumers;
              `bench redis [args]` the cache against raw fred, redis-benchmark
              and the legacy invalidation (see crates/mes-cache/benches/cache.rs);
              no argument runs both.
  package     Publish the crates to a cargo registry started for the occasion
              (ferro-cargo-registry-server on a spare port) in dependency
              order, verified; then build and run two sample services outside
              the workspace against it, one taking mes-events-types alone and
              one mes-cache alone, print their `cargo tree` and fail if the
              first pulls in a runtime or network crate or the second a Kafka
              client; and a third taking mes-sync from the checkout by path,
              with the README's [registries.mes] entry (never contacted).
              Extra args go to `cargo publish` (e.g. --allow-dirty).
  fuzz        Fuzz mes-kafka's decoders (answers, record batches, consumer
              protocol) with libFuzzer on stable: `fuzz [SECONDS] [TARGET...]`,
              60 s per target by default; corpus in fuzz/corpus/<target>.
              Prints executions, crashes and peak RSS per target; fails on a
              crash, naming the saved input.
  faults      The fault scenarios (e2e/tests/faults_*.rs) at full scale: links
              cut, blackholed and slowed, a Sentinel failover, a Cluster
              reshard, broker, member and PostgreSQL crashes under load for the
              cache with its near cache, the publisher, the outbox relay and a
              consumer group (Rust and kafkajs members); prints
              the table of what each promised and what was observed, written to
              target/faults/faults.{md,json}. `test` runs them at a short scale.
  ci          What CI checks: cargo fmt --check, clippy -D warnings, rustdoc
              without warnings, cargo deny (bans, licenses, sources), each
              published crate with no default features and each feature
              alone, then `test` (with the external types check).
  external-types
              The external types check alone, for each published crate.
  help        This text.

Services and tools are cached outside the clone under $MES_TOOLS_CACHE
(default ~/.cache/mes-tools): the first run on a machine builds them.

Environment (each one given is used as it is, and nothing is started for it):
  MES_TEST_KAFKA_BROKERS  Kafka-protocol broker (else a tansu broker is started).
  MES_TEST_KAFKA_TLS_BROKERS, MES_TEST_KAFKA_MTLS_BROKERS, MES_TEST_KAFKA_TLS_CA,
  MES_TEST_KAFKA_TLS_CLIENT_CERT, MES_TEST_KAFKA_TLS_CLIENT_KEY
                          Brokers over TLS and over TLS with client certificates,
                          their CA and the client certificate (else two tansu
                          brokers behind a TLS proxy, with a throwaway CA).
  MES_TEST_TANSU_BIN      tansu binary for suites that kill and restart brokers
                          (else built into the cache).
  MES_TEST_REDIS_URL, MES_TEST_REDIS_CLUSTER_URL, MES_TEST_REDIS_SENTINEL_URL,
  MES_TEST_REDIS_TLS_URL (+ MES_TEST_REDIS_TLS_CA)
                          Redis standalone, Cluster, Sentinel and TLS (else
                          private redis-server processes are started).
  MES_TEST_DATABASE_URL   PostgreSQL database for the outbox suites and bench
                          (else the machine's, 127.0.0.1:5432/test, started
                          with pg_ctlcluster if it is down).
  MES_TEST_PYTHON         Python with `cloudevents` and `confluent-kafka`
                          (else a cached venv).
  MES_TOOLS_CACHE         Where built tools and environments are kept.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let outcome = match task {
        "test" => test(rest),
        "ci" => ci(),
        "external-types" => check_external_types(),
        "demo" => demo(rest),
        "package" => package::package(rest),
        "fuzz" => fuzz::fuzz(rest),
        "faults" => faults::faults(rest),
        "bench" => match rest.split_first() {
            Some((which, args)) if which == "redis" => redis::bench(args),
            Some((which, _)) if which == "kafka" => bench::bench(),
            Some((other, _)) => Err(format!("unknown benchmark {other:?}: kafka or redis").into()),
            None => redis::bench(&[]).and_then(|()| bench::bench()),
        },
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown task {other:?}; `cargo xtask help` lists them").into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask {task}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Runs a command to completion, failing on a non-zero exit.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}").into())
    }
}

pub(crate) fn cargo_in_workspace() -> Command {
    let mut command = Command::new(tools::cargo());
    command.current_dir(workspace_root());
    command
}

/// The suites `test --containers --smoke` runs: publishing, the outbox,
/// the cache on standalone Redis, the consumer, a consumer group with
/// kafkajs members, and the end-to-end group suite.
const CONTAINER_SMOKE_SUITES: [&str; 6] = [
    "publish",
    "outbox",
    "redis_standalone",
    "consume",
    "kafkajs_group",
    "group",
];

fn test(args: &[String]) -> Result<()> {
    let containers = args.iter().any(|a| a == "--containers");
    let smoke = args.iter().any(|a| a == "--smoke");
    if smoke && !containers {
        return Err("--smoke selects the container run's smoke suites: give --containers too".into());
    }
    let extra: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--containers" && *a != "--smoke")
        .collect();
    // The whole suite only: a targeted run (`test -p mes-cache ...`) is for
    // iterating on one thing.
    if extra.is_empty() && !containers {
        check_external_types()?;
    }
    let shared = if containers {
        services::Shared::Containers
    } else {
        services::Shared::Native
    };
    let provided = Instant::now();
    let services = services::Services::provide(shared)?;
    eprintln!(
        "xtask: services provided in {:.1}s",
        provided.elapsed().as_secs_f64()
    );
    let mut command = cargo_in_workspace();
    command.args(["test", "--workspace", "--all-features", "--locked"]);
    if smoke {
        for suite in CONTAINER_SMOKE_SUITES {
            command.args(["--test", suite]);
        }
    } else if containers && !selects_targets(&extra) {
        // The doc examples read the services' own variables
        // (`from_env`), which only the native path sets.
        command.arg("--tests");
    }
    command.args(extra);
    services.export_to(&mut command);
    let started = Instant::now();
    let outcome = run(&mut command);
    eprintln!("xtask: the tests ran for {:.1}s", started.elapsed().as_secs_f64());
    if let Some(docker) = services.docker() {
        // The suites' containers run until the engine goes (or, on an
        // engine that was there already, until removed below).
        match docker.output(&[
            "ps",
            "-a",
            "--filter",
            "label=mes-testkit.service",
            "--format",
            "{{.ID}} {{.Image}} {{.Status}}",
        ]) {
            Ok(listed) => {
                let lines: Vec<&str> = listed.lines().collect();
                eprintln!(
                    "xtask: {} container(s) ran the suites' services (docker ps -a):",
                    lines.len()
                );
                for line in lines {
                    eprintln!("xtask:   {line}");
                }
            }
            Err(e) => eprintln!("xtask: cannot list the containers: {e}"),
        }
    }
    drop(services);
    outcome
}

/// Whether `cargo test` arguments choose targets themselves.
fn selects_targets(args: &[&String]) -> bool {
    args.iter().take_while(|a| a.as_str() != "--").any(|a| {
        [
            "--test",
            "--tests",
            "--lib",
            "--doc",
            "--bin",
            "--bins",
            "--example",
            "--examples",
            "--bench",
            "--benches",
            "--all-targets",
        ]
        .iter()
        .any(|flag| a.as_str() == *flag || a.starts_with(&format!("{flag}=")))
    })
}

fn ci() -> Result<()> {
    run(cargo_in_workspace().args(["fmt", "--all", "--check"]))?;
    run(cargo_in_workspace().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo_in_workspace()
        .args(["doc", "--workspace", "--no-deps", "--all-features", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    let deny = tools::CARGO_DENY.ensure()?;
    // Advisories need the advisory database from the network; the offline
    // checks are the ones that keep the tree clean.
    run(cargo_in_workspace()
        .arg("deny")
        .args(["--all-features", "check", "bans", "licenses", "sources"])
        .env("PATH", prepend_path(deny.parent().unwrap_or(Path::new(".")))))?;
    check_feature_sets()?;
    test(&[])
}

/// No published crate exposes a type of another crate in its public API
/// unless its manifest allows it (`[package.metadata.cargo_check_external_types]`),
/// so upgrading a client library (fred, rustls, rsasl, sqlx, ...) is no
/// breaking change for the services. The tool reads rustdoc's JSON output,
/// which stable rustdoc writes with `RUSTC_BOOTSTRAP=1`; that setting
/// changes some build scripts' output, so it builds in a target folder of
/// its own instead of invalidating the usual one.
fn check_external_types() -> Result<()> {
    let tool = tools::CARGO_CHECK_EXTERNAL_TYPES.ensure()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("external-types");
    for krate in crates::PUBLISH_ORDER
        .iter()
        .filter(|krate| !crates::BINARY_ONLY.contains(krate))
    {
        eprintln!("xtask: cargo check-external-types -p {krate}");
        let manifest = workspace_root().join("crates").join(krate).join("Cargo.toml");
        run(cargo_in_workspace()
            .args(["check-external-types", "--all-features", "--manifest-path"])
            .arg(manifest)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("PATH", prepend_path(tool.parent().unwrap_or(Path::new(".")))))
        .map_err(|e| format!("the external types check of {krate} failed (see above): {e}"))?;
    }
    Ok(())
}

/// Each published crate builds with no default features, and with each of
/// its features alone: a feature that only compiles beside another is a
/// broken build for the service that takes it alone.
fn check_feature_sets() -> Result<()> {
    let output = cargo_in_workspace()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    let packages = metadata
        .get("packages")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    for krate in crates::PUBLISH_ORDER {
        let features: Vec<String> = packages
            .iter()
            .find(|p| p.get("name").and_then(serde_json::Value::as_str) == Some(krate))
            .and_then(|p| p.get("features"))
            .and_then(serde_json::Value::as_object)
            .map(|f| f.keys().filter(|k| *k != "default").cloned().collect())
            .unwrap_or_default();
        let mut sets: Vec<Option<&str>> = vec![None];
        sets.extend(features.iter().map(|f| Some(f.as_str())));
        for set in sets {
            eprintln!("xtask: {krate} with no default features {}", set.unwrap_or(""));
            let mut check = cargo_in_workspace();
            check.args([
                "clippy",
                "--locked",
                "-p",
                krate,
                "--no-default-features",
                "--all-targets",
            ]);
            if let Some(feature) = set {
                check.args(["--features", feature]);
            }
            run(check.args(["--", "-D", "warnings"]))?;
        }
    }
    Ok(())
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// The demo runs against the environment's services (`KAFKA_BROKERS`,
/// `REDIS_URL`, `DATABASE_URL`) when set, else against a tansu broker and a
/// redis-server started for it (tansu is built first if this machine never
/// built it) and the machine's PostgreSQL. A service given in the
/// environment must work; one that cannot be had otherwise is replaced by
/// its in-process test double, and the demo says so and why.
/// `--in-process` (or `MES_DEMO_IN_PROCESS=1`) starts nothing and runs
/// everything on the doubles. Other arguments (`--metrics [ADDR]`) go to
/// the demo as they are.
fn demo(extra: &[String]) -> Result<()> {
    let given = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // `cargo xtask demo -- --in-process` and `cargo xtask demo --in-process` alike.
    let args: Vec<&String> = extra.iter().filter(|arg| *arg != "--").collect();
    let in_process = args.iter().any(|arg| *arg == "--in-process")
        || given("MES_DEMO_IN_PROCESS").is_some_and(|v| v != "0");
    let mut command = cargo_in_workspace();
    command
        .args(["run", "--quiet", "--locked", "--package", "mes-demo", "--"])
        .args(args);
    // Each service: the variable with its address, or the one with the
    // reason the demo runs that part on its test double.
    let mut provide = |service: &str, vars: [&str; 3], address: Result<String>| {
        let [real, unavailable, given] = vars;
        match address {
            Ok(address) => {
                command.env(real, address);
            }
            Err(reason) => {
                eprintln!(
                    "xtask: {reason}; the demo runs {service} on its in-process test double \
                     ({given} names a running one)"
                );
                command.env(unavailable, reason.to_string());
            }
        }
    };
    let scratch = std::env::temp_dir().join(format!("mes-demo-{}", std::process::id()));
    let mut broker = None;
    let mut redis_server = None;
    if in_process {
        eprintln!("xtask: --in-process: starting no service; the demo runs on in-process test doubles");
        command.env("MES_DEMO_IN_PROCESS", "1");
    } else {
        let brokers = match given("KAFKA_BROKERS") {
            Some(brokers) => Ok(brokers),
            None => start_demo_broker(&scratch).map(|started| {
                let address = started.address();
                broker = Some(started);
                address
            }),
        };
        provide(
            "Kafka",
            [
                "MES_DEMO_KAFKA_BROKERS",
                "MES_DEMO_KAFKA_UNAVAILABLE",
                "KAFKA_BROKERS",
            ],
            brokers.map_err(|e| format!("no broker could be started: {e}").into()),
        );
        let redis_url = match given("REDIS_URL") {
            Some(url) => Ok(url),
            None => redis::RedisServices::standalone_server().map(|(server, port)| {
                eprintln!("xtask: started redis-server on port {port}");
                redis_server = Some(server);
                format!("redis://127.0.0.1:{port}")
            }),
        };
        provide(
            "Redis",
            ["MES_DEMO_REDIS_URL", "MES_DEMO_REDIS_UNAVAILABLE", "REDIS_URL"],
            redis_url.map_err(|e| format!("no redis-server could be started: {e}").into()),
        );
        let database_url = match given("DATABASE_URL") {
            Some(url) => Ok(url),
            None => services::local_postgres_url(),
        };
        provide(
            "PostgreSQL",
            [
                "MES_DEMO_DATABASE_URL",
                "MES_DEMO_DATABASE_UNAVAILABLE",
                "DATABASE_URL",
            ],
            database_url.map_err(|e| format!("no PostgreSQL is reachable: {e}").into()),
        );
    }
    let outcome = run(&mut command);
    drop(redis_server);
    // A broker that failed to start left its log there: keep it then.
    let started_broker = broker.is_some();
    drop(broker);
    if started_broker {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    outcome
}

/// A tansu broker for the demo, built first on a machine that never built it.
fn start_demo_broker(scratch: &Path) -> Result<mes_testkit::tansu::TansuBroker> {
    if !tools::TANSU.is_built() {
        eprintln!(
            "xtask: the demo's Kafka broker is tansu, not built on this machine yet. It is built \
             once, now; `cargo xtask demo --in-process` runs the demo at once on in-process test \
             doubles instead."
        );
    }
    let tansu = tools::TANSU
        .ensure()
        .map_err(|e| format!("tansu could not be built: {e}"))?;
    let started = mes_testkit::tansu::TansuBroker::start(&tansu, "memory://tansu/", scratch)
        .map_err(|e| format!("cannot start tansu: {e}"))?;
    eprintln!("xtask: started tansu on {}", started.address());
    Ok(started)
}
