//! The services and tools the suites need, provided for one `cargo xtask`
//! run: taken from the environment when given, else started here and
//! stopped when the run ends.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mes_testkit::pki::TestCa;
use mes_testkit::tansu::{TansuBroker, TlsTansu};

use crate::docker::{DockerEngine, LocalImages};
use crate::redis::RedisServices;
use crate::{Result, tools};

/// Where the suites' shared Kafka, Redis and PostgreSQL come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// Started here (tansu, redis-server) or the machine's (PostgreSQL),
    /// given to the suites in their `MES_TEST_*` variables.
    Native,
    /// Containers the suites start through mes-testkit (testcontainers), on
    /// a Docker engine and from images provided here: the variables stay
    /// unset, the images are given in `MES_TEST_*_IMAGE`.
    Containers,
}

/// What a test run talks to. Dropping it stops what it started.
pub(crate) struct Services {
    /// Native only (containers: started by the suites).
    kafka_brokers: Option<String>,
    postgres_url: Option<String>,
    /// Containers only: the images, then the engine (dropped last).
    images: Option<LocalImages>,
    docker: Option<DockerEngine>,
    tansu_binary: PathBuf,
    python: PathBuf,
    node_modules: PathBuf,
    redis: RedisServices,
    kafka_tls: Env,
    _brokers: Vec<TansuBroker>,
    _tls_brokers: Vec<TlsTansu>,
    _scratch: Scratch,
}

impl Services {
    pub(crate) fn provide(shared: Shared) -> Result<Self> {
        let scratch = Scratch::new()?;
        let python = match std::env::var_os("MES_TEST_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => tools::python_env()?,
        };
        let node_modules = match std::env::var_os("MES_TEST_NODE_PATH") {
            Some(path) => PathBuf::from(path),
            None => tools::node_env()?,
        };
        let tansu_binary = match std::env::var_os("MES_TEST_TANSU_BIN") {
            Some(binary) => PathBuf::from(binary),
            None => tools::TANSU.ensure()?,
        };
        let given = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut brokers = Vec::new();
        let mut start = |storage: &str| -> Result<String> {
            let broker = TansuBroker::start(&tansu_binary, storage, &scratch.0)
                .map_err(|e| format!("cannot start tansu ({storage}): {e}"))?;
            eprintln!("xtask: tansu ({storage}) listening on {}", broker.address());
            let address = broker.address();
            brokers.push(broker);
            Ok(address)
        };
        let kafka_brokers = match (shared, given("MES_TEST_KAFKA_BROKERS")) {
            (Shared::Containers, _) => None,
            (Shared::Native, Some(brokers)) => Some(brokers),
            (Shared::Native, None) => Some(start("memory://tansu/")?),
        };
        let (kafka_tls, tls_brokers) = match given("MES_TEST_KAFKA_TLS_BROKERS") {
            // Given: the other variables are passed on as they are.
            Some(_) => (
                TLS_VARS
                    .iter()
                    .filter_map(|name| Some((*name, given(name)?)))
                    .collect(),
                Vec::new(),
            ),
            None => start_tls_brokers(&tansu_binary, &scratch.0)?,
        };
        let redis = RedisServices::provide(shared == Shared::Native)?;
        let (postgres_url, docker, images) = match shared {
            Shared::Native => (Some(postgres_url()?), None, None),
            Shared::Containers => {
                let docker = DockerEngine::provide()?;
                let images = LocalImages::provide(&docker, &tansu_binary)?;
                (None, Some(docker), Some(images))
            }
        };
        Ok(Self {
            kafka_brokers,
            postgres_url,
            images,
            docker,
            tansu_binary,
            python,
            node_modules,
            redis,
            kafka_tls,
            _brokers: brokers,
            _tls_brokers: tls_brokers,
            _scratch: scratch,
        })
    }

    /// The Docker engine of a containers run.
    pub(crate) fn docker(&self) -> Option<&DockerEngine> {
        self.docker.as_ref()
    }

    /// Sets the `MES_TEST_*` variables the suites read.
    pub(crate) fn export_to(&self, command: &mut Command) {
        if let (Some(docker), Some(images)) = (&self.docker, &self.images) {
            // Every shared endpoint comes from a container: none of the
            // caller's may reach the suites.
            for name in [
                "MES_TEST_KAFKA_BROKERS",
                "MES_TEST_REDIS_URL",
                "MES_TEST_DATABASE_URL",
                "KAFKA_BROKERS",
                "REDIS_URL",
                "DATABASE_URL",
            ] {
                command.env_remove(name);
            }
            for (name, value) in [
                ("MES_TEST_KAFKA_IMAGE", &images.kafka),
                ("MES_TEST_REDIS_IMAGE", &images.redis),
                ("MES_TEST_POSTGRES_IMAGE", &images.postgres),
            ] {
                eprintln!("xtask: {name}={value}");
                command.env(name, value);
            }
            if let Some(host) = docker.host() {
                eprintln!("xtask: DOCKER_HOST={host}");
                command.env("DOCKER_HOST", host);
            }
            if docker.is_private() {
                // The engine runs here, its ports published on 127.0.0.1;
                // testcontainers would take this machine's /.dockerenv for
                // a container's and go to the bridge's gateway instead.
                eprintln!("xtask: TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1");
                command.env("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1");
            }
        }
        for (name, value) in [
            ("MES_TEST_KAFKA_BROKERS", self.kafka_brokers.as_deref()),
            ("MES_TEST_DATABASE_URL", self.postgres_url.as_deref()),
        ] {
            if let Some(value) = value {
                eprintln!("xtask: {name}={value}");
                command.env(name, value);
            }
        }
        for (name, value) in [
            ("MES_TEST_TANSU_BIN", self.tansu_binary.as_os_str()),
            ("MES_TEST_PYTHON", self.python.as_os_str()),
            ("MES_TEST_NODE_PATH", self.node_modules.as_os_str()),
        ] {
            eprintln!("xtask: {name}={}", value.to_string_lossy());
            command.env(name, value);
        }
        for (name, value) in &self.kafka_tls {
            eprintln!("xtask: {name}={value}");
            command.env(name, value);
        }
        command.envs(self.redis.env());
        // The crates' doc examples read the services the way a service does
        // (`PublisherConfig::from_env`, `CacheConfig::from_env`), so they
        // run against the suites' broker and Redis; variables of the
        // caller's own environment must not point them anywhere else.
        for name in [
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SASL_MECHANISM",
            "KAFKA_TLS",
            "KAFKA_TLS_CA_FILE",
            "KAFKA_TLS_CERT_FILE",
            "KAFKA_TLS_KEY_FILE",
            "KAFKA_TLS_SERVER_NAME",
        ] {
            command.env_remove(name);
        }
        let redis_url = self
            .redis
            .env()
            .into_iter()
            .find_map(|(name, url)| (name == "MES_TEST_REDIS_URL").then_some(url));
        // The doc examples run on the native services only.
        if let (Some(brokers), Some(redis_url), Some(postgres_url)) =
            (&self.kafka_brokers, redis_url, &self.postgres_url)
        {
            command
                .env("KAFKA_BROKERS", brokers)
                .env("KAFKA_CLIENT_ID", "mes-doc-examples")
                .env("REDIS_URL", redis_url)
                .env("DATABASE_URL", postgres_url);
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // On an engine that was there before the run, the suites'
        // containers go; a private engine goes whole.
        if let (Some(docker), Some(images)) = (&self.docker, &self.images) {
            docker.remove_containers_of(&images.all());
        }
    }
}

/// `MES_TEST_DATABASE_URL` when given, else [`local_postgres_url`]. The
/// suites share its database, each in schemas of its own.
pub(crate) fn postgres_url() -> Result<String> {
    if let Some(url) = std::env::var("MES_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Ok(url);
    }
    local_postgres_url()
}

/// The machine's PostgreSQL (127.0.0.1:5432, trust auth, database `test`),
/// started with the cluster's own tool when it is not listening.
pub(crate) fn local_postgres_url() -> Result<String> {
    const ADDRESS: &str = "127.0.0.1:5432";
    let listening = || {
        ADDRESS.parse().is_ok_and(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
        })
    };
    if !listening() {
        eprintln!("xtask: PostgreSQL is not listening on {ADDRESS}; starting the local cluster");
        let versions = std::fs::read_dir("/etc/postgresql").map_err(|e| {
            format!("PostgreSQL is not running on {ADDRESS} and none is installed here ({e})")
        })?;
        for version in versions.flatten() {
            let _ = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect"])
                .arg(version.file_name())
                .args(["main", "start"])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening() {
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL is not listening on {ADDRESS} and could not be started; \
                     set MES_TEST_DATABASE_URL to a database the suites may use"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(format!("postgres://postgres@{ADDRESS}/test"))
}

/// Variables for the suites.
type Env = Vec<(&'static str, String)>;

/// The TLS brokers' variables, set together.
const TLS_VARS: [&str; 5] = [
    "MES_TEST_KAFKA_TLS_BROKERS",
    "MES_TEST_KAFKA_MTLS_BROKERS",
    "MES_TEST_KAFKA_TLS_CA",
    "MES_TEST_KAFKA_TLS_CLIENT_CERT",
    "MES_TEST_KAFKA_TLS_CLIENT_KEY",
];

/// Two tansu brokers (memory storage) reachable only over TLS, with a
/// throwaway CA: one that asks for no client certificate and one that
/// requires one. Their certificate names `localhost` only, not 127.0.0.1,
/// so the suite can reach a broker by an address its certificate does not
/// name.
fn start_tls_brokers(tansu: &std::path::Path, scratch: &std::path::Path) -> Result<(Env, Vec<TlsTansu>)> {
    let dir = scratch.join("kafka-tls");
    let ca = TestCa::create(&dir, "mes-test-kafka-ca")?;
    let server = ca.server_cert("broker", &["DNS:localhost"])?;
    let client = ca.client_cert("mes-test-client")?;
    let start = |client_ca| {
        TlsTansu::start(tansu, "memory://tansu/", scratch, &server, client_ca)
            .map_err(|e| format!("cannot start tansu behind TLS: {e}"))
    };
    let tls = start(None)?;
    let mtls = start(Some(ca.cert()))?;
    let path = |file: &std::path::Path| file.display().to_string();
    let env = TLS_VARS
        .into_iter()
        .zip([
            tls.address(),
            mtls.address(),
            path(ca.cert()),
            path(&client.cert),
            path(&client.key),
        ])
        .collect();
    Ok((env, vec![tls, mtls]))
}

/// A scratch folder for logs and data of the services of one run, removed
/// at the end unless `MES_KEEP_SCRATCH` is set.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mes-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("MES_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
