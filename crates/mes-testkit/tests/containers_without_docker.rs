//! Feature `containers`, no `MES_TEST_*` variable and no Docker: each
//! endpoint fails with a message that names the variable to set and the
//! Docker error. The check runs in child processes of this binary, the only
//! ones given a `DOCKER_HOST` that leads nowhere (setting it here would reach
//! every test of the process).
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set for the child: the socket it is given as `DOCKER_HOST`.
const CHILD: &str = "MES_TESTKIT_DOCKER_SOCKET";

#[test]
fn with_no_docker_socket_each_endpoint_panics_naming_its_variable() {
    let socket = Path::new("/nonexistent/mes-testkit/docker.sock");
    let stderr = check_in_child(socket);
    // The client's own error names the socket it did not find.
    let error = format!(
        "failed to initialize a docker client: Socket not found: {}",
        socket.display()
    );
    assert!(stderr.contains(&error), "{stderr}");
}

#[test]
fn with_a_socket_nobody_listens_on_each_endpoint_panics_naming_its_variable() {
    // A socket file left by a daemon that is gone: connecting is refused.
    let dir = std::env::temp_dir().join(format!("mes-testkit-stale-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let stderr = check_in_child(&socket);
    std::fs::remove_dir_all(&dir).unwrap();
    // The cause, from under the client's "client error (Connect)".
    assert!(stderr.contains("ConnectionRefused"), "{stderr}");
}

/// Runs [`in_a_process_without_docker`] with `DOCKER_HOST` at `socket`;
/// returns its standard error, which shows the panic messages.
fn check_in_child(socket: &Path) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "in_a_process_without_docker",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD, socket)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("MES_TEST_REDIS_URL")
        .env_remove("MES_TEST_KAFKA_BROKERS")
        .env_remove("MES_TEST_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // The filter matched the check, so it ran (a filter matching nothing passes too).
    assert!(
        stdout.contains("test in_a_process_without_docker ... ok"),
        "{stdout}\n{stderr}"
    );
    stderr
}

#[test]
#[ignore = "run by the tests above, in a process of its own with DOCKER_HOST set"]
fn in_a_process_without_docker() {
    // Run directly (`--include-ignored`), it has no DOCKER_HOST of its own to
    // check: the tests above run it, and check that it ran.
    let Some(socket) = std::env::var_os(CHILD).map(PathBuf::from) else {
        return;
    };
    let docker = format!("DOCKER_HOST=unix://{}): ", socket.display());
    let endpoints = [
        (
            mes_testkit::kafka_brokers as fn() -> String,
            "MES_TEST_KAFKA_BROKERS",
            "MES_TEST_KAFKA_IMAGE",
        ),
        (
            mes_testkit::redis_url,
            "MES_TEST_REDIS_URL",
            "MES_TEST_REDIS_IMAGE",
        ),
        (
            mes_testkit::postgres_url,
            "MES_TEST_DATABASE_URL",
            "MES_TEST_POSTGRES_IMAGE",
        ),
    ];
    for (endpoint, variable, image_variable) in endpoints {
        let message = panic_message(endpoint);
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
        // The failure is kept: the next test of the process fails the same way
        // at once, without trying again.
        assert_eq!(panic_message(endpoint), message);
        // For the parent, which checks the Docker error.
        eprintln!("{message}");
    }
}

fn panic_message(endpoint: fn() -> String) -> String {
    let payload = std::panic::catch_unwind(endpoint).expect_err("no Docker, no variable: a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
