//! The services and tools the suites need, provided for one `cargo xtask`
//! run: taken from the environment when given, else started here and
//! stopped when the run ends.

use std::path::PathBuf;
use std::process::Command;

use mes_testkit::tansu::TansuBroker;

use crate::redis::RedisServices;
use crate::{Result, tools};

/// What a test run talks to. Dropping it stops what it started.
pub(crate) struct Services {
    kafka_brokers: String,
    tansu_binary: PathBuf,
    python: PathBuf,
    redis: RedisServices,
    _brokers: Vec<TansuBroker>,
    _scratch: Scratch,
}

impl Services {
    pub(crate) fn provide() -> Result<Self> {
        let scratch = Scratch::new()?;
        let python = match std::env::var_os("MES_TEST_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => tools::python_env()?,
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
        let kafka_brokers = match given("MES_TEST_KAFKA_BROKERS") {
            Some(brokers) => brokers,
            None => start("memory://tansu/")?,
        };
        let redis = RedisServices::provide()?;
        Ok(Self {
            kafka_brokers,
            tansu_binary,
            python,
            redis,
            _brokers: brokers,
            _scratch: scratch,
        })
    }

    /// Sets the `MES_TEST_*` variables the suites read.
    pub(crate) fn export_to(&self, command: &mut Command) {
        for (name, value) in [
            ("MES_TEST_KAFKA_BROKERS", self.kafka_brokers.as_str().as_ref()),
            ("MES_TEST_TANSU_BIN", self.tansu_binary.as_os_str()),
            ("MES_TEST_PYTHON", self.python.as_os_str()),
        ] {
            eprintln!("xtask: {name}={}", value.to_string_lossy());
            command.env(name, value);
        }
        command.envs(self.redis.env());
    }
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
