//! `cargo xtask package`: the crates as services will get them. Starts a
//! real cargo registry (ferro-cargo-registry-server: sparse index and the
//! publish API) on a spare port, publishes the publishable crates to it in
//! dependency order with `cargo publish` (verified: each packaged crate is
//! built against what the registry holds), then builds and runs two sample
//! services outside the workspace that take one crate each and checks their
//! dependency trees, and a third that takes the crates from the checkout by
//! path with the README's `[registries.mes]` entry. What it started and
//! wrote is removed at the end, also on failure.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::crates::{PUBLISH_ORDER, does_io};
use crate::{Result, cargo_in_workspace, run, tools, workspace_root};

/// cargo needs a token to publish; the local registry takes any.
const TOKEN: &str = "local-registry-token";

/// Nobody debugs these builds: without debug info they take less than half
/// the disk and link faster. (The workspace's profile, which does this for
/// dependencies, does not apply to the build that verifies a packaged crate.)
const NO_DEBUG_INFO: &str = "false";

/// A service template under `xtask/samples/` that takes a crate, where it
/// takes it from, and what it must not get with it.
struct Sample {
    name: &'static str,
    takes: &'static str,
    from: Source,
    forbidden: fn(&str) -> bool,
    rule: &'static str,
}

/// Where a sample takes the mes crates from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The registry the run started.
    Registry,
    /// The checkout, by `path = "../mes-shared-rs/crates/..."`: the sample
    /// is copied beside a link of that name to the workspace, and gets the
    /// README's `[registries.mes]` entry (the company's address, which the
    /// build must never contact).
    Checkout,
}

/// The folder name the checkout sample's paths go through, as in the README.
const CHECKOUT_LINK: &str = "mes-shared-rs";

const SAMPLES: &[Sample] = &[
    Sample {
        name: "events-only-service",
        takes: "mes-events-types",
        from: Source::Registry,
        forbidden: |name| does_io(name) || (name.starts_with("mes-") && name != "mes-events-types"),
        rule: "a service taking the event schemas alone must get no async runtime, \
               no networking or client crate and no other mes crate",
    },
    Sample {
        name: "cache-only-service",
        takes: "mes-cache",
        from: Source::Registry,
        forbidden: |name| {
            matches!(
                name,
                "rskafka" | "rdkafka" | "mes-kafka" | "mes-events-types" | "mes-publisher" | "mes-sync"
            )
        },
        rule: "a service taking the cache alone must get no Kafka client and no event crate",
    },
    Sample {
        name: "path-dependency-service",
        takes: "mes-sync",
        from: Source::Checkout,
        forbidden: |name| matches!(name, "rskafka" | "rdkafka"),
        rule: "production code talks to Kafka through mes-kafka only",
    },
];

pub(crate) fn package(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    let server = tools::CARGO_REGISTRY.ensure()?;
    // Dropped in reverse order: the registry is stopped, then its files go.
    let workdir = Workdir::new()?;
    let registry = LocalRegistry::start(&server, &workdir.dir)?;
    eprintln!(
        "xtask: registry {} started, index {}",
        tools::CARGO_REGISTRY.krate,
        registry.index_url()
    );
    // Kept across runs (apart from the mes crates, see below), so what the
    // crates depend on is built once.
    let target_dir = workspace_root().join("target/xtask-package");
    let outcome = publish_and_try(&registry, &workdir.dir, &target_dir, extra);
    // Every run builds the crates anew (the registry's port is part of their
    // identity); removing them keeps the folder from growing.
    let _ = cargo_in_workspace()
        .args(["clean", "--quiet"])
        .args(PUBLISH_ORDER.iter().flat_map(|krate| ["-p", krate]))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status();
    outcome?;
    let samples: Vec<String> = SAMPLES
        .iter()
        .map(|sample| match sample.from {
            Source::Registry => format!("{} (on the registry)", sample.name),
            Source::Checkout => format!(
                "{} (from the checkout, with the README's registry entry)",
                sample.name
            ),
        })
        .collect();
    println!(
        "\nxtask package: published {} to a local registry, built and ran {}, and none \
         pulls in what it must not ({:.0?}).",
        PUBLISH_ORDER.join(", "),
        samples.join(", "),
        started.elapsed()
    );
    Ok(())
}

fn publish_and_try(
    registry: &LocalRegistry,
    workdir: &Path,
    target_dir: &Path,
    extra: &[String],
) -> Result<()> {
    publish(registry, target_dir, extra).inspect_err(|_| registry.print_log())?;
    for sample in SAMPLES {
        try_sample(sample, registry, workdir, target_dir)?;
    }
    Ok(())
}

/// Publishes the crates in dependency order, each indexed before the next.
fn publish(registry: &LocalRegistry, target_dir: &Path, extra: &[String]) -> Result<()> {
    for krate in PUBLISH_ORDER {
        eprintln!("xtask: cargo publish --registry mes -p {krate}");
        // The workspace's own registry entry, only redirected: the published
        // manifests name `registry = "mes"` exactly as for the real one.
        run(cargo_in_workspace()
            .args(["publish", "--registry", "mes", "--locked", "-p", krate])
            .args(extra)
            .env("CARGO_REGISTRIES_MES_INDEX", registry.index_url())
            .env("CARGO_REGISTRIES_MES_TOKEN", TOKEN)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_PROFILE_DEV_DEBUG", NO_DEBUG_INFO))?;
        // cargo waits for the index itself but only warns when that times
        // out; the next crate's verification would then fail obscurely.
        registry.wait_until_indexed(krate)?;
    }
    Ok(())
}

/// Builds and runs a sample service against the registry, prints its
/// dependency tree and fails when the tree holds a forbidden crate.
fn try_sample(sample: &Sample, registry: &LocalRegistry, workdir: &Path, target_dir: &Path) -> Result<()> {
    let dir = workdir.join(sample.name);
    copy_dir(&workspace_root().join("xtask/samples").join(sample.name), &dir)?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let cargo_config = match sample.from {
        Source::Registry => format!(
            "# The registry `cargo xtask package` started for this run.\n\
             [registries.mes]\nindex = \"{}\"\n",
            registry.index_url()
        ),
        Source::Checkout => {
            let link = workdir.join(CHECKOUT_LINK);
            if !link.exists() {
                std::os::unix::fs::symlink(workspace_root(), &link)
                    .map_err(|e| format!("cannot link {} to the checkout: {e}", link.display()))?;
            }
            format!(
                "# The README's entry (\"Depending on a crate\"), as a service has it.\n{}",
                readme_registry_entry()?
            )
        }
    };
    std::fs::write(dir.join(".cargo/config.toml"), cargo_config)?;
    let cargo = || {
        let mut command = Command::new(tools::cargo());
        command
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_PROFILE_DEV_DEBUG", NO_DEBUG_INFO);
        command
    };
    match sample.from {
        Source::Registry => println!("\n== {}: takes {} alone ==\n", sample.name, sample.takes),
        Source::Checkout => println!(
            "\n== {}: takes {} from the checkout by path ==\n",
            sample.name, sample.takes
        ),
    }
    eprintln!("xtask: {}: cargo build, cargo run", sample.name);
    run(cargo().arg("build"))?;
    run(cargo().args(["run", "--quiet"]))?;
    // Shown without proc-macros (compile-time only, and mostly syn and
    // quote) to stay readable; the check below covers them too.
    let tree = capture(cargo().args(["tree", "-e", "normal,no-proc-macro"]))?;
    println!("\n`cargo tree -e normal,no-proc-macro`:\n\n{tree}");
    let all = capture(cargo().args(["tree", "-e", "normal", "--prefix", "none"]))?;
    // New for every run, like the mes crates: the sample's folder is part
    // of its identity.
    let _ = cargo().args(["clean", "--quiet", "-p", sample.name]).status();
    let names: BTreeSet<&str> = all
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let taken = format!("{} v", sample.takes);
    match sample.from {
        Source::Registry => {
            if !all
                .lines()
                .any(|line| line.starts_with(&taken) && line.contains("(registry `mes`)"))
            {
                return Err(format!("{} did not get {} from the registry", sample.name, sample.takes).into());
            }
        }
        Source::Checkout => {
            let from_checkout = format!("/{CHECKOUT_LINK}/crates/");
            let mes: Vec<&str> = all.lines().filter(|line| line.starts_with("mes-")).collect();
            if !mes.iter().any(|line| line.starts_with(&taken))
                || mes.iter().any(|line| !line.contains(&from_checkout))
            {
                return Err(format!(
                    "{} must get {} and every mes crate under it from the checkout, got {mes:?}",
                    sample.name, sample.takes
                )
                .into());
            }
        }
    }
    let offenders: Vec<&str> = names.into_iter().filter(|n| (sample.forbidden)(n)).collect();
    if !offenders.is_empty() {
        return Err(format!(
            "{} pulls in {} (see the tree above): {}",
            sample.name,
            offenders.join(", "),
            sample.rule
        )
        .into());
    }
    Ok(())
}

/// The `[registries.mes]` entry the README tells services to add, read
/// from the README so that what is tested is what is documented.
fn readme_registry_entry() -> Result<String> {
    let readme_path = workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .map_err(|e| format!("cannot read {}: {e}", readme_path.display()))?;
    let start = readme
        .find("```toml\n[registries.mes]\n")
        .ok_or("README.md has no ```toml block starting with [registries.mes]")?;
    let block = readme
        .get(start + "```toml\n".len()..)
        .and_then(|rest| rest.split_once("```"))
        .map(|(block, _)| block.to_owned())
        .ok_or("README.md's [registries.mes] block does not end")?;
    Ok(block)
}

/// Runs a command and returns its standard output, failing on a non-zero exit.
fn capture(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    if !output.status.success() {
        return Err(format!("{command:?} failed: {}", output.status).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The registry server, killed on drop.
struct LocalRegistry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LocalRegistry {
    fn start(binary: &Path, workdir: &Path) -> Result<Self> {
        let port = mes_testkit::tansu::spare_port()?;
        let data = workdir.join("registry");
        let log = workdir.join("registry.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(binary)
            .env("FERRO_CARGO_REGISTRY_DATA", &data)
            .env("FERRO_CARGO_REGISTRY_LISTEN", format!("127.0.0.1:{port}"))
            .env("FERRO_CARGO_REGISTRY_API", format!("http://127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut registry = Self { child, port, log };
        registry.wait_until_ready()?;
        Ok(registry)
    }

    fn index_url(&self) -> String {
        format!("sparse+http://127.0.0.1:{}/", self.port)
    }

    /// Polls `config.json`, the first thing cargo reads (20 s at most).
    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = self.get("/config.json")
                && body.contains("\"api\"")
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                self.print_log();
                return Err(format!("the registry exited before it answered: {status}").into());
            }
            if Instant::now() > deadline {
                self.print_log();
                return Err(format!("the registry did not answer on port {} within 20 s", self.port).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the crate's sparse index file until it lists the crate (30 s
    /// at most); the registry was empty, so any entry is this publish.
    fn wait_until_indexed(&self, krate: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = index_path(krate);
        loop {
            if let Ok((200, body)) = self.get(&path)
                && body.contains(&format!("\"name\":\"{krate}\""))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{krate} is not in the registry's index ({path}) 30 s after publishing").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A plain HTTP/1.1 GET: the status and the whole response.
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        Ok((status, response))
    }

    fn print_log(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprintln!("xtask: the registry's log ({}):\n{log}", self.log.display());
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a crate's entry is in a sparse index.
fn index_path(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.len() {
        1 => format!("/1/{name}"),
        2 => format!("/2/{name}"),
        3 => format!("/3/{}/{name}", &name[..1]),
        _ => format!("/{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

/// The run's temporary folder (registry data, samples), and what cargo
/// keeps in `$CARGO_HOME/registry` of a registry it used: a new
/// `127.0.0.1-<hash>` entry per port, useless after the run. Both are
/// removed on drop.
struct Workdir {
    dir: PathBuf,
    cargo_entries_before: BTreeSet<PathBuf>,
}

impl Workdir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mes-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self {
            dir,
            cargo_entries_before: local_registry_entries(),
        })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        for entry in local_registry_entries().difference(&self.cargo_entries_before) {
            let _ = std::fs::remove_dir_all(entry);
        }
    }
}

fn local_registry_entries() -> BTreeSet<PathBuf> {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
    else {
        return BTreeSet::new();
    };
    ["index", "cache", "src"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(home.join("registry").join(kind)).ok())
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("127.0.0.1-"))
        .map(|entry| entry.path())
        .collect()
}
