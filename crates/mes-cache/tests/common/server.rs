//! A `redis-server` of a test's own (the binary `cargo xtask test` names in
//! `MES_TEST_REDIS_SERVER_BIN`), for tests that stop, kill or flush it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A standalone server without persistence on 127.0.0.1, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// On a spare port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// On `port` (again, after [`stop`](Self::stop)); returns once it
    /// answers `PING` (bounded: 200 attempts).
    pub fn start_on(port: u16) -> Self {
        let binary = mes_testkit::required_env("MES_TEST_REDIS_SERVER_BIN", "redis-server binary");
        let server = Self {
            port,
            child: Command::new(binary)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        for _ in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }

    /// `redis-cli -p PORT args...`.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-p".to_owned(), self.port.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        super::near::cli(&all)
    }

    /// Kills it (SIGKILL) and waits.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
