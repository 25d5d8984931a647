//! Feature `containers`: Redis, Kafka and PostgreSQL in Docker, through
//! testcontainers, for a suite run without `cargo xtask test` (a laptop with
//! Docker). Used only when the service's `MES_TEST_*` variable is unset.
//!
//! Each service is started at most once per test process and its endpoint
//! kept for every test of the binary. testcontainers-rs has no reaper (no
//! Ryuk; its `watchdog` feature only acts on SIGINT/SIGTERM/SIGQUIT), and a
//! container held until the process exits is never dropped, so a container
//! per process would be left behind by every test binary of every run.
//! Instead the containers are marked for reuse (`ReuseDirective::Always`)
//! and labelled with the service and image: the next test binary, and the
//! next run, find the running container and use it. They are created with
//! Docker's auto-remove, so stopping one removes it (`docker stop $(docker ps
//! -q --filter label=mes-testkit.service)` removes them all), and a reused
//! container is always the one that has run since it was created, with the
//! host port it was started with (which Kafka's advertised listener names).
//!
//! Kafka runs from either of two images, chosen by the image given: one
//! whose name ends in `tansu` (as `cargo xtask test --containers` builds,
//! `mes-test/tansu:HASH`) runs through [`Tansu`], started the way
//! testcontainers-modules starts `apache/kafka-native` (same port, same
//! advertised `127.0.0.1:{host port}`, the broker started once that port is
//! known and waited for by a line on standard output); any other through
//! testcontainers-modules' apache Kafka module.

use std::sync::OnceLock;

use std::borrow::Cow;

use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::core::{ContainerPort, ContainerState, ExecCommand, WaitFor};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{
    Container, ContainerRequest, Image, ImageExt, ReuseDirective, TestcontainersError,
};

use crate::Service;

/// The image each service runs when its `MES_TEST_*_IMAGE` variable is unset.
fn default_image(service: Service) -> &'static str {
    match service {
        // testcontainers-modules' own default for its apache Kafka module.
        Service::Kafka => "apache/kafka-native:3.8.0",
        // The module defaults to redis:5.0. 7.2 is the last BSD-licensed 7.x.
        Service::Redis => "redis:7.2-alpine",
        Service::Postgres => "postgres:16-alpine",
    }
}

/// The service's name in the containers' labels.
fn label(service: Service) -> &'static str {
    match service {
        Service::Redis => "redis",
        Service::Kafka => "kafka",
        Service::Postgres => "postgres",
    }
}

/// The variable that overrides a service's image, e.g. for a registry mirror.
pub(crate) fn image_variable(service: Service) -> &'static str {
    match service {
        Service::Kafka => "MES_TEST_KAFKA_IMAGE",
        Service::Redis => "MES_TEST_REDIS_IMAGE",
        Service::Postgres => "MES_TEST_POSTGRES_IMAGE",
    }
}

/// The image reference a service runs: its variable when set, else the default.
pub(crate) fn image(service: Service) -> String {
    std::env::var(image_variable(service))
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map_or_else(
            || default_image(service).to_owned(),
            |value| value.trim().to_owned(),
        )
}

/// Splits an image reference `name[:tag]` into name and tag. The tag is what
/// follows the last `:` only when that `:` comes after the last `/`, so the
/// port of a registry (`host:5000/img`) is not taken for a tag; without a
/// tag, Docker's `latest`. Name and tag joined by `:` give the reference back.
pub(crate) fn split_image_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    }
}

/// The endpoint of a service's container, started on the first call of the
/// process. A failure is kept too, so every later test fails at once with it.
pub(crate) fn endpoint(service: Service) -> Result<String, String> {
    static REDIS: OnceLock<Result<String, String>> = OnceLock::new();
    static KAFKA: OnceLock<Result<String, String>> = OnceLock::new();
    static POSTGRES: OnceLock<Result<String, String>> = OnceLock::new();
    let cell = match service {
        Service::Redis => &REDIS,
        Service::Kafka => &KAFKA,
        Service::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        // The sync runner blocks on a tokio runtime of its own, which panics
        // on a thread that already runs one (a `#[tokio::test]`); a thread of
        // its own runs none.
        std::thread::spawn(move || start(service))
            .join()
            .unwrap_or_else(|_| Err("testcontainers panicked while starting it".to_owned()))
    })
    .clone()
}

fn start(service: Service) -> Result<String, String> {
    let image = image(service);
    match service {
        Service::Redis => {
            let redis = run(Redis::default(), service, &image)?;
            let port = redis.get_host_port_ipv4(REDIS_PORT).map_err(|e| describe(&e))?;
            Ok(format!("redis://{}:{port}", host(&redis)?))
        }
        Service::Postgres => {
            // Trust authentication and a known password both: the URL works
            // either way. Database `test`, like the machines' PostgreSQL.
            let postgres = run(
                Postgres::default().with_host_auth().with_db_name("test"),
                service,
                &image,
            )?;
            let port = postgres.get_host_port_ipv4(5432).map_err(|e| describe(&e))?;
            Ok(format!(
                "postgres://postgres:postgres@{}:{port}/test",
                host(&postgres)?
            ))
        }
        Service::Kafka if is_tansu(&image) => {
            let tansu = run(Tansu, service, &image)?;
            kafka_endpoint(&tansu)
        }
        Service::Kafka => {
            // Apache Kafka's default auto.create.topics.enable=true creates a
            // missing topic, with one partition, when a client asks for its
            // metadata by name, and rskafka's requests allow it (Metadata v4,
            // allow_auto_topic_creation left to its default, true). tansu,
            // which the suites are written against, never does: a missing
            // topic stays missing until a suite creates it with its partitions.
            let kafka = Kafka::default().with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false");
            let kafka = run(kafka, service, &image)?;
            kafka_endpoint(&kafka)
        }
    }
}

/// Whether an image reference names a tansu image: its name's last part is
/// `tansu` (`mes-test/tansu:HASH`, `tansu`, `mirror.example/tansu:0.6.0`).
fn is_tansu(reference: &str) -> bool {
    let (name, _) = split_image_reference(reference);
    name.rsplit('/').next() == Some("tansu")
}

/// The bootstrap address of a Kafka-protocol broker's container.
fn kafka_endpoint<I: Image>(kafka: &Container<I>) -> Result<String, String> {
    let port = kafka.get_host_port_ipv4(KAFKA_PORT).map_err(|e| describe(&e))?;
    // rskafka bootstraps from this address, then connects to the broker
    // the metadata names. Both Kafka modules learn the mapped port only
    // once the container runs: the command waits for a start script that
    // `exec_after_start` writes, naming the advertised listener
    // 127.0.0.1:{host port}. So the broker advertises 127.0.0.1 and the
    // mapped port, which only a client on the Docker host reaches:
    // bootstrap there too, and refuse a Docker elsewhere rather than fail in
    // the client.
    let host = host(kafka)?;
    if host != "127.0.0.1" {
        return Err(format!(
            "the Kafka container runs on {host}, but advertises 127.0.0.1:{port}, which only \
             a client on the Docker host reaches"
        ));
    }
    Ok(format!("127.0.0.1:{port}"))
}

/// Where [`Tansu`]'s command waits for its start script.
const TANSU_START_SCRIPT: &str = "/tmp/tansu-start.sh";

/// What the start script prints once the broker listens, waited for.
const TANSU_READY: &str = "tansu broker listening on 9092";

/// tansu (in-memory storage) in a container, started the way
/// testcontainers-modules' apache Kafka module starts `apache/kafka-native`:
/// the container's command waits for a start script, which
/// [`exec_after_start`](Image::exec_after_start) writes once the mapped
/// port is known, so the broker advertises `127.0.0.1:{host port}`. The
/// script starts the broker and prints [`TANSU_READY`] once it listens
/// (tansu itself logs nothing at its default level). The image needs
/// `/bin/sh`, `grep`, `sleep`, `mv` and `tansu` on its `PATH`, as the one
/// `cargo xtask test --containers` builds has (busybox).
#[derive(Debug, Clone, Copy)]
struct Tansu;

impl Image for Tansu {
    // Placeholders: `run` names the image given.
    fn name(&self) -> &str {
        "mes-test/tansu"
    }

    fn tag(&self) -> &str {
        "latest"
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        // The broker starts only after `exec_after_start`, which waits.
        Vec::new()
    }

    fn entrypoint(&self) -> Option<&str> {
        Some("sh")
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        [
            "-c".to_owned(),
            format!("while [ ! -f {TANSU_START_SCRIPT} ]; do sleep 0.1; done; exec sh {TANSU_START_SCRIPT}"),
        ]
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[KAFKA_PORT]
    }

    fn exec_after_start(&self, state: ContainerState) -> Result<Vec<ExecCommand>, TestcontainersError> {
        let port = state.host_port_ipv4(KAFKA_PORT)?;
        let internal = KAFKA_PORT.as_u16();
        // Listening shows in the container's own /proc/net/tcp[6] as the
        // port in hexadecimal, state 0A. Bounded: 60 s, then the container
        // fails (and its log says why).
        let script = format!(
            "tansu broker --listener-url tcp://0.0.0.0:{internal} \\
  --advertised-listener-url tcp://127.0.0.1:{port} --storage-engine memory://tansu/ &
broker=$!
trap 'kill -TERM $broker' TERM INT
tries=0
until grep -qE '^ *[0-9]+: [0-9A-F]+:{internal:04X} [0-9A-F]+:[0-9A-F]+ 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
  kill -0 $broker 2>/dev/null || exit 1
  tries=$((tries + 1))
  [ $tries -lt 600 ] || {{ echo 'tansu did not listen within 60 s' >&2; kill $broker; exit 1; }}
  sleep 0.1
done
echo '{TANSU_READY}'
wait $broker
"
        );
        // Written whole, then moved into place: the waiting command never
        // runs half a script.
        let write = format!(
            "cat > {TANSU_START_SCRIPT}.part <<'EOF'\n{script}EOF\nmv {TANSU_START_SCRIPT}.part {TANSU_START_SCRIPT}"
        );
        Ok(vec![
            ExecCommand::new(["sh".to_owned(), "-c".to_owned(), write])
                .with_container_ready_conditions(vec![WaitFor::message_on_stdout(TANSU_READY)]),
        ])
    }
}

/// Starts (or finds, see the module docs) a service's container.
fn run<I: Image>(
    request: impl Into<ContainerRequest<I>>,
    service: Service,
    image: &str,
) -> Result<Container<I>, String> {
    let (name, tag) = split_image_reference(image);
    let request = request
        .into()
        .with_name(name)
        .with_tag(tag)
        .with_labels([
            ("mes-testkit.service", label(service)),
            ("mes-testkit.image", image),
        ])
        .with_reuse(ReuseDirective::Always)
        .with_host_config_modifier(|config| config.auto_remove = Some(true));
    request.start().map_err(|e| describe(&e))
}

/// The variable that names the address of the containers' published ports
/// (the name testcontainers for Java and Go read; testcontainers-rs 0.27
/// has none). testcontainers-rs takes a process that sees `/.dockerenv` for
/// one running in a container and answers the default bridge's gateway,
/// which is wrong when the engine runs beside it in the same container, as
/// `cargo xtask test --containers`'s private engine does (it sets this to
/// 127.0.0.1).
const HOST_OVERRIDE: &str = "TESTCONTAINERS_HOST_OVERRIDE";

/// The container's host: [`HOST_OVERRIDE`] when set, else testcontainers'
/// answer, as an IPv4 address when it is this machine: the port is the IPv4
/// mapping, and `localhost` may resolve to `::1` first.
fn host<I: Image>(container: &Container<I>) -> Result<String, String> {
    if let Some(host) = std::env::var(HOST_OVERRIDE).ok().filter(|h| !h.trim().is_empty()) {
        return Ok(host.trim().to_owned());
    }
    let host = container.get_host().map_err(|e| describe(&e))?.to_string();
    Ok(if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    })
}

/// A testcontainers error, with its `Debug` form: its `Display` stops at
/// the Docker client's error (e.g. "client error (Connect)"), whose cause
/// (the socket missing, the connection refused) only the `Debug` form shows.
fn describe(error: &TestcontainersError) -> String {
    format!("{error} [{error:?}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_splits_at_the_tag_and_joins_back() {
        for (reference, name, tag) in [
            ("redis:7.2-alpine", "redis", "7.2-alpine"),
            ("apache/kafka-native:3.8.0", "apache/kafka-native", "3.8.0"),
            (
                "mirror.example/apache/kafka-native:3.8.0",
                "mirror.example/apache/kafka-native",
                "3.8.0",
            ),
            (
                "host:5000/library/postgres:16-alpine",
                "host:5000/library/postgres",
                "16-alpine",
            ),
        ] {
            assert_eq!(split_image_reference(reference), (name, tag), "{reference}");
            assert_eq!(format!("{name}:{tag}"), reference);
        }
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(
            split_image_reference("host:5000/img"),
            ("host:5000/img", "latest")
        );
        assert_eq!(
            split_image_reference("host:5000/team/img"),
            ("host:5000/team/img", "latest")
        );
    }

    #[test]
    fn a_reference_without_tag_is_latest() {
        assert_eq!(split_image_reference("redis"), ("redis", "latest"));
        assert_eq!(
            split_image_reference("mirror.example/redis"),
            ("mirror.example/redis", "latest")
        );
    }

    #[test]
    fn a_tansu_image_is_told_by_its_name() {
        for tansu in [
            "mes-test/tansu:0123456789abcdef",
            "tansu",
            "mirror.example/tansu:0.6.0",
        ] {
            assert!(is_tansu(tansu), "{tansu}");
        }
        for other in [
            "apache/kafka-native:3.8.0",
            "tansu/kafka:1",
            "mirror.example/tansu-fork:1",
            "host:5000/tansu-io",
        ] {
            assert!(!is_tansu(other), "{other}");
        }
    }

    #[test]
    fn the_kafka_default_is_the_modules_own() {
        let kafka = Kafka::default();
        assert_eq!(
            format!("{}:{}", kafka.name(), kafka.tag()),
            default_image(Service::Kafka)
        );
    }
}
