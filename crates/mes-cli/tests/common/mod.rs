//! Running the built `mes` against the services of the run
//! (`MES_TEST_REDIS_URL`, `MES_TEST_KAFKA_BROKERS`).
#![allow(dead_code, reason = "each suite uses its part")]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a command may run before the test calls it hung: a guard
/// against a test that never ends, not a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// What a run of `mes` left.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Stdout as one JSON document.
    pub(crate) fn json(&self) -> Value {
        assert_eq!(self.code, 0, "mes failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Stdout as JSON lines.
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        assert_eq!(self.code, 0, "mes failed: {self:?}");
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }

    /// Asserts a failure with this exit code and a message on stderr
    /// containing `text`, and nothing of a panic.
    pub(crate) fn assert_fails(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.starts_with("mes: "), "{self:?}");
        assert!(self.stderr.contains(text), "expected {text:?} in {self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
    }
}

/// `mes` with the test services as its environment, stdin not a terminal.
pub(crate) fn mes() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mes"));
    command
        .env("REDIS_URL", mes_testkit::redis_url())
        .env_remove("KAFKA_SASL_USERNAME")
        .env_remove("KAFKA_TLS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The same with `KAFKA_BROKERS` set too.
pub(crate) fn mes_kafka() -> Command {
    let mut command = mes();
    command.env("KAFKA_BROKERS", mes_testkit::kafka_brokers());
    command
}

/// Runs to the end (within the hang guard).
pub(crate) fn run(command: &mut Command) -> Run {
    let child = command.spawn().expect("the mes binary runs");
    finish(child)
}

/// Waits for a started `mes` (within the hang guard) and collects its
/// output, read as it comes so that a full pipe never blocks it.
pub(crate) fn finish(mut child: Child) -> Run {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_string(&mut text).unwrap();
            }
            text
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("mes did not end within {HANG_GUARD:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A name no other test or run uses.
pub(crate) fn unique(name: &str) -> String {
    format!("{name}{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A local port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}
