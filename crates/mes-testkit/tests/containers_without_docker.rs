//! Feature `containers`, no `MES_TEST_*` variable and no Docker: each
//! endpoint fails with a message that names the variable to set and the
//! Docker error.
//!
//! The endpoints run in child processes of this binary, the only ones given
//! a `DOCKER_HOST` that leads nowhere (setting it here would reach every
//! check of the process, and a failed endpoint is remembered for the rest of
//! the process). Hence no libtest harness (`harness = false`): `main` either
//! is such a child (the marker variable `CHILD` is set) or runs the
//! scenarios, each in a child of its own, and exits non-zero if one fails.

#![allow(
    clippy::print_stdout,
    clippy::panic,
    unreachable_pub,
    reason = "a test binary without libtest (harness = false): it reports and fails by itself"
)]

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    checks::main()
}

/// The scenarios point `DOCKER_HOST` at Unix sockets.
#[cfg(not(unix))]
fn main() {
    println!("containers_without_docker: Unix only, nothing checked");
}

#[cfg(unix)]
mod checks {
    use std::path::Path;
    use std::process::{Command, ExitCode};

    /// Set for the child: the socket it is given as `DOCKER_HOST`.
    const CHILD: &str = "MES_TESTKIT_DOCKER_SOCKET";

    /// An endpoint, the variable its message must name and the variable that
    /// overrides its image.
    struct Endpoint {
        call: fn() -> String,
        variable: &'static str,
        image_variable: &'static str,
    }

    const ENDPOINTS: [Endpoint; 3] = [
        Endpoint {
            call: mes_testkit::kafka_brokers,
            variable: "MES_TEST_KAFKA_BROKERS",
            image_variable: "MES_TEST_KAFKA_IMAGE",
        },
        Endpoint {
            call: mes_testkit::redis_url,
            variable: "MES_TEST_REDIS_URL",
            image_variable: "MES_TEST_REDIS_IMAGE",
        },
        Endpoint {
            call: mes_testkit::postgres_url,
            variable: "MES_TEST_DATABASE_URL",
            image_variable: "MES_TEST_POSTGRES_IMAGE",
        },
    ];

    /// A scenario: what it checked, or why it failed.
    type Scenario = fn() -> Result<String, String>;

    pub fn main() -> ExitCode {
        if let Some(socket) = std::env::var_os(CHILD) {
            child(Path::new(&socket));
            return ExitCode::SUCCESS;
        }
        let scenarios: [(&str, Scenario); 2] = [
            ("no Docker socket at all", with_no_docker_socket),
            (
                "a Docker socket nobody listens on",
                with_a_socket_nobody_listens_on,
            ),
        ];
        let mut failed = 0;
        for (scenario, check) in scenarios {
            match check() {
                Ok(checked) => println!("ok: {scenario}: {checked}"),
                Err(error) => {
                    failed += 1;
                    println!("FAILED: {scenario}: {error}");
                }
            }
        }
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            println!(
                "containers_without_docker: {failed} of {} scenarios failed",
                scenarios.len()
            );
            ExitCode::FAILURE
        }
    }

    fn with_no_docker_socket() -> Result<String, String> {
        let socket = Path::new("/nonexistent/mes-testkit/docker.sock");
        // The client's own error names the socket it did not find.
        let error = format!(
            "failed to initialize a docker client: Socket not found: {}",
            socket.display()
        );
        run_child(socket, &error)
    }

    fn with_a_socket_nobody_listens_on() -> Result<String, String> {
        // A socket file left by a daemon that is gone: connecting is refused.
        let dir = std::env::temp_dir().join(format!("mes-testkit-stale-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("docker.sock");
        let _ = std::fs::remove_file(&socket);
        let result = match std::os::unix::net::UnixListener::bind(&socket) {
            Ok(listener) => {
                // Dropped, the listener leaves its file behind, unattended.
                drop(listener);
                // The cause, from under the client's "client error (Connect)".
                run_child(&socket, "ConnectionRefused")
            }
            Err(e) => Err(format!("cannot bind {}: {e}", socket.display())),
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Runs this binary as a [`child`] with `DOCKER_HOST` at `socket` and none
    /// of the endpoint variables, and checks that it succeeded and that each
    /// endpoint's message carries `docker_error`. Returns what was checked.
    fn run_child(socket: &Path, docker_error: &str) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut command = Command::new(exe);
        command
            .env(CHILD, socket)
            .env("DOCKER_HOST", format!("unix://{}", socket.display()));
        for endpoint in &ENDPOINTS {
            command.env_remove(endpoint.variable);
        }
        let output = command
            .output()
            .map_err(|e| format!("cannot run the child: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let report = format!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
        if !output.status.success() {
            return Err(format!("the child failed ({}).\n{report}", output.status));
        }
        // The child prints each endpoint's message: one Docker error each, so
        // an endpoint that said nothing, or a child that ran none, fails here.
        let found = stdout.matches(docker_error).count();
        if found != ENDPOINTS.len() {
            return Err(format!(
                "expected {docker_error:?} in each of the {} messages, found it {found} times.\n{report}",
                ENDPOINTS.len()
            ));
        }
        let variables: Vec<&str> = ENDPOINTS.iter().map(|endpoint| endpoint.variable).collect();
        Ok(format!(
            "the endpoints of {} each panic naming their variable, with {docker_error:?}",
            variables.join(", ")
        ))
    }

    /// In the child: calls each endpoint, checks its panic message, and prints
    /// it for the parent. A failed check panics, so the child exits non-zero.
    fn child(socket: &Path) {
        let docker = format!("DOCKER_HOST=unix://{}): ", socket.display());
        for Endpoint {
            call,
            variable,
            image_variable,
        } in ENDPOINTS
        {
            let message = panic_message(call);
            assert!(
                message.starts_with(&format!("{variable} is not set")),
                "{message}"
            );
            assert!(message.contains(&format!("set {variable} to")), "{message}");
            assert!(message.contains("cargo xtask test"), "{message}");
            assert!(message.contains(image_variable), "{message}");
            // The Docker it tried, followed by the error met there.
            let (_, error) = message.split_once(&docker).unwrap_or_else(|| panic!("{message}"));
            assert!(!error.starts_with('.'), "{message}");
            // The failure is kept: the next call fails the same way at once,
            // without trying again.
            assert_eq!(panic_message(call), message);
            println!("{message}");
        }
    }

    /// The message `call` panics with; panics itself if it returns.
    fn panic_message(call: fn() -> String) -> String {
        // Silence the default hook for the expected panic: `child` prints the
        // message once; its own failed checks still show.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = std::panic::catch_unwind(call);
        std::panic::set_hook(hook);
        let payload = match result {
            Ok(value) => panic!("no Docker, no variable, yet an endpoint: {value}"),
            Err(payload) => payload,
        };
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }
}
