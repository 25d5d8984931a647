//! `cargo xtask test --containers`: a Docker engine, and the images of the
//! suites' containers built here from this machine's Debian binaries (no
//! image registry is reachable from these machines).
//!
//! The engine is the one `docker version` reaches (`DOCKER_HOST`, else the
//! default socket) when there is one. Else a private `dockerd` (Debian's
//! `docker.io`, installed with apt when missing) is started as root with
//! its own sockets and state under `/tmp/mes-docker-PID`, no iptables rules
//! and the `vfs` storage driver, and ports published on 127.0.0.1 only. Its
//! data root, which holds the images, is kept in the tools cache
//! (`~/.cache/mes-tools/docker`) so the next run finds them; its pid file
//! there keeps a second run from starting another engine on it.
//!
//! The private engine runs under a shell of its own (own process group, so a
//! Ctrl-C in the terminal reaches only xtask) that waits on a pipe from
//! xtask: when the run ends, however it ends (an error, a panic, SIGINT,
//! SIGKILL), the pipe closes, and the shell removes every container,
//! network and volume of the engine, stops it and removes its run folder
//! and the `docker0` bridge when it made it.
//! Containers a crashed run left in the data root are removed at the next
//! start.
//!
//! Each image is a root file system made here (binaries, the shared
//! libraries `ldd` lists for them, a few generated files) and brought in
//! with `docker import`, tagged `mes-test/NAME:HASH` where HASH is a content
//! hash of everything that goes in: a later run with the same binaries finds
//! the image and builds nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, tools};

/// How long a starting private engine may take to answer.
const ENGINE_START_BOUND: Duration = Duration::from_secs(90);

/// The user the images' services run as (uid and gid).
const SERVICE_UID: u32 = 999;

/// A Docker engine for one run: an existing one, or a private one stopped
/// (and its containers removed) when this is dropped.
pub(crate) struct DockerEngine {
    /// `DOCKER_HOST` for the engine: set for a private engine, else the
    /// caller's own (if any).
    host: Option<String>,
    private: Option<PrivateEngine>,
}

struct PrivateEngine {
    supervisor: Child,
    /// Closing it (dropping it) tells the supervisor the run is over.
    lifeline: Option<ChildStdin>,
    run_dir: PathBuf,
}

/// The supervising shell: `$1` is the engine's `DOCKER_HOST`, `$2` its run
/// folder, the rest dockerd's arguments.
const SUPERVISOR: &str = r#"
host=$1 run_dir=$2
shift 2
# The default bridge dockerd creates (and leaves behind when it stops).
had_bridge=0
[ ! -e /sys/class/net/docker0 ] || had_bridge=1
dockerd "$@" >"$run_dir/dockerd.log" 2>&1 &
engine=$!
# Until the run ends: its end, however it comes, closes this standard input.
while read -r _; do :; done
docker -H "$host" ps -aq | xargs -r docker -H "$host" rm -f >/dev/null 2>&1
docker -H "$host" network prune -f >/dev/null 2>&1
docker -H "$host" volume prune -f >/dev/null 2>&1
kill -TERM "$engine" 2>/dev/null
wait "$engine"
[ "$had_bridge" = 1 ] || ip link delete docker0 2>/dev/null
rm -rf "$run_dir"
"#;

impl DockerEngine {
    /// The engine `docker version` reaches, else a private one started here.
    pub(crate) fn provide() -> Result<Self> {
        let caller_host = std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty());
        let probe = docker_command(caller_host.as_deref())
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output();
        if let Ok(output) = &probe
            && output.status.success()
        {
            eprintln!(
                "xtask: using the Docker engine at {} (version {})",
                caller_host.as_deref().unwrap_or("the default socket"),
                String::from_utf8_lossy(&output.stdout).trim()
            );
            return Ok(Self {
                host: caller_host,
                private: None,
            });
        }
        let why = match probe {
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(e) => format!("cannot run docker: {e}"),
        };
        eprintln!("xtask: no Docker engine is reachable ({why}); starting a private one");
        let private = PrivateEngine::start()?;
        let host = format!("unix://{}", private.run_dir.join("docker.sock").display());
        let engine = Self {
            host: Some(host),
            private: Some(private),
        };
        engine.wait_ready()?;
        engine.remove_leftover_containers()?;
        Ok(engine)
    }

    /// `DOCKER_HOST` for the suites, when it must be set.
    pub(crate) fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Whether the engine was started here (so it runs on this machine).
    pub(crate) fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// A `docker` command talking to this engine.
    pub(crate) fn docker(&self) -> Command {
        docker_command(self.host.as_deref())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + ENGINE_START_BOUND;
        loop {
            let answered = self
                .docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run docker: {e}"))?;
            if answered.status.success() {
                eprintln!(
                    "xtask: private Docker engine {} ready at {} in {:.1}s",
                    String::from_utf8_lossy(&answered.stdout).trim(),
                    self.host.as_deref().unwrap_or_default(),
                    (ENGINE_START_BOUND - deadline.saturating_duration_since(Instant::now())).as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self
                    .private
                    .as_ref()
                    .map(|p| tail(&p.run_dir.join("dockerd.log"), 30))
                    .unwrap_or_default();
                return Err(format!(
                    "the private Docker engine did not answer within {}s; the end of its log:\n{log}",
                    ENGINE_START_BOUND.as_secs()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A private engine's data root outlives its runs: containers a run
    /// that was killed left there are removed before this run starts any.
    fn remove_leftover_containers(&self) -> Result<()> {
        let ids = self.output(&["ps", "-aq"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            eprintln!("xtask: removing {} container(s) an earlier run left", ids.len());
            crate::run(self.docker().args(["rm", "-f"]).args(&ids).stdout(Stdio::null()))?;
        }
        Ok(())
    }

    /// Runs a docker command, returning its standard output.
    pub(crate) fn output(&self, args: &[&str]) -> Result<String> {
        let output = self
            .docker()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker {args:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "docker {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Removes the containers the suites started from `images`, on an
    /// engine that is not private (a private one is removed whole).
    pub(crate) fn remove_containers_of(&self, images: &[&str]) {
        if self.private.is_some() {
            return;
        }
        for image in images {
            let filter = format!("label=mes-testkit.image={image}");
            if let Ok(ids) = self.output(&["ps", "-aq", "--filter", &filter]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = self
                        .docker()
                        .args(["rm", "-f"])
                        .args(&ids)
                        .stdout(Stdio::null())
                        .status();
                }
            }
        }
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Some(private) = &mut self.private {
            eprintln!("xtask: stopping the private Docker engine and removing its containers");
            drop(private.lifeline.take());
            let _ = private.supervisor.wait();
        }
    }
}

impl PrivateEngine {
    fn start() -> Result<Self> {
        if !is_root() {
            return Err(
                "starting a private Docker engine needs root: start Docker (or point \
                        DOCKER_HOST at one) and run again"
                    .into(),
            );
        }
        ensure_debian_packages(&[("dockerd", "docker.io"), ("docker", "docker.io")])?;
        let state = tools::cache_dir().join("docker");
        let data_root = state.join("data-root");
        let run_dir = std::env::temp_dir().join(format!("mes-docker-{}", std::process::id()));
        for dir in [&data_root, &run_dir] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let socket = run_dir.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("mes-docker-supervisor")
            .arg(&host)
            .arg(&run_dir)
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
                // Ports are published on the loopback address only.
                "--ip=127.0.0.1",
            ])
            .arg(format!("--data-root={}", data_root.display()))
            .arg(format!("--exec-root={}", run_dir.join("exec").display()))
            // Held while the engine runs: a second run's engine on the same
            // data root refuses to start.
            .arg(format!("--pidfile={}", state.join("dockerd.pid").display()))
            .arg(format!("--host={host}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the Docker engine's supervisor: {e}"))?;
        let lifeline = supervisor.stdin.take();
        eprintln!(
            "xtask: starting dockerd (data root {}, log {})",
            data_root.display(),
            run_dir.join("dockerd.log").display()
        );
        Ok(Self {
            supervisor,
            lifeline,
            run_dir,
        })
    }
}

fn docker_command(host: Option<&str>) -> Command {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.env("DOCKER_HOST", host);
    }
    command
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The last `lines` lines of a file, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

/// Whether `name` is an executable on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Installs the Debian packages whose command is missing (apt, as root).
fn ensure_debian_packages(needed: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(command, _)| on_path(command).is_none())
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!("the Debian packages {missing:?} are missing; install them as root").into());
    }
    eprintln!("xtask: installing the Debian packages {missing:?}");
    crate::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The local images of the suites' containers, by service.
pub(crate) struct LocalImages {
    pub(crate) redis: String,
    pub(crate) postgres: String,
    pub(crate) kafka: String,
}

impl LocalImages {
    /// Builds what the engine lacks (each once per content) and removes the
    /// older builds of the same images.
    pub(crate) fn provide(engine: &DockerEngine, tansu: &Path) -> Result<Self> {
        ensure_debian_packages(&[
            ("busybox", "busybox-static"),
            ("redis-server", "redis-server"),
            ("pg_ctlcluster", "postgresql"),
        ])?;
        let started = Instant::now();
        let scratch = std::env::temp_dir().join(format!("mes-images-{}", std::process::id()));
        let built = (|| {
            Ok::<_, Box<dyn std::error::Error>>(Self {
                redis: redis_rootfs()?.provide(engine, &scratch)?,
                postgres: postgres_rootfs()?.provide(engine, &scratch)?,
                kafka: tansu_rootfs(tansu)?.provide(engine, &scratch)?,
            })
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        eprintln!("xtask: images ready in {:.1}s", started.elapsed().as_secs_f64());
        built
    }

    /// The image references, for clean-up.
    pub(crate) fn all(&self) -> [&str; 3] {
        [&self.redis, &self.postgres, &self.kafka]
    }
}

/// What an image's root file system holds, by path in the image.
enum Entry {
    /// A copy of a file of this machine (a symbolic link is followed).
    Copy(PathBuf),
    /// A symbolic link.
    Link(String),
    /// A file made here, with its mode.
    Text(String, u32),
    /// A folder with its owner (uid = gid) and mode.
    Dir(u32, u32),
}

/// An image to build: its root file system and its configuration.
struct Rootfs {
    name: &'static str,
    entries: BTreeMap<String, Entry>,
    /// `docker import --change` lines (ENTRYPOINT, CMD, ENV, ...).
    changes: Vec<String>,
}

impl Rootfs {
    fn new(name: &'static str) -> Self {
        let mut rootfs = Self {
            name,
            entries: BTreeMap::new(),
            changes: Vec::new(),
        };
        rootfs.dir("/tmp", 0, 0o1777);
        rootfs.text(
            "/etc/passwd",
            &format!("root:x:0:0:root:/root:/bin/sh\nservice:x:{SERVICE_UID}:{SERVICE_UID}::/tmp:/bin/sh\n"),
            0o644,
        );
        rootfs.text(
            "/etc/group",
            &format!("root:x:0:\nservice:x:{SERVICE_UID}:\n"),
            0o644,
        );
        rootfs
    }

    fn text(&mut self, path: &str, text: &str, mode: u32) {
        self.entries
            .insert(path.to_owned(), Entry::Text(text.to_owned(), mode));
    }

    fn dir(&mut self, path: &str, owner: u32, mode: u32) {
        self.entries.insert(path.to_owned(), Entry::Dir(owner, mode));
    }

    fn change(&mut self, change: &str) {
        self.changes.push(change.to_owned());
    }

    /// A binary of this machine at the same path, with its shared libraries.
    fn binary(&mut self, path: &Path) -> Result<()> {
        self.entries
            .insert(path.display().to_string(), Entry::Copy(path.to_owned()));
        self.libraries_of(path)
    }

    /// The shared libraries `ldd` lists for `path` (nothing for a file that
    /// is not a dynamic executable or library).
    fn libraries_of(&mut self, path: &Path) -> Result<()> {
        let output = Command::new("ldd")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ldd: {e}"))?;
        if !output.status.success() {
            return Ok(());
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
            let library = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(library) = library.filter(|l| l.starts_with('/')) {
                if library.contains("not found") {
                    continue;
                }
                self.entries
                    .insert(library.to_owned(), Entry::Copy(PathBuf::from(library)));
            }
        }
        if String::from_utf8_lossy(&output.stdout).contains("not found") {
            return Err(format!("{} needs a shared library this machine lacks", path.display()).into());
        }
        Ok(())
    }

    /// A folder of this machine at the same path, whole but for the entries
    /// named in `skip`: files, links and folders, and the libraries its
    /// executables and libraries need.
    fn tree(&mut self, root: &Path, skip: &[&str]) -> Result<()> {
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            self.dir(&dir.display().to_string(), 0, 0o755);
            let entries =
                std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| skip.contains(&n))
                {
                    continue;
                }
                let metadata = std::fs::symlink_metadata(&path)?;
                if metadata.file_type().is_symlink() {
                    let target = std::fs::read_link(&path)?;
                    self.entries.insert(
                        path.display().to_string(),
                        Entry::Link(target.display().to_string()),
                    );
                } else if metadata.is_dir() {
                    pending.push(path);
                } else {
                    self.entries
                        .insert(path.display().to_string(), Entry::Copy(path.clone()));
                    if metadata.permissions().mode() & 0o111 != 0
                        || path.extension().is_some_and(|e| e == "so")
                    {
                        self.libraries_of(&path)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// busybox as `/bin/busybox`, `/bin/sh` and every applet it has.
    fn busybox(&mut self) -> Result<()> {
        let busybox = on_path("busybox").ok_or("busybox is not installed")?;
        self.entries
            .insert("/bin/busybox".to_owned(), Entry::Copy(busybox.clone()));
        self.libraries_of(&busybox)?;
        let list = Command::new(&busybox)
            .arg("--list")
            .output()
            .map_err(|e| format!("cannot run busybox: {e}"))?;
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                self.entries
                    .insert(format!("/bin/{applet}"), Entry::Link("busybox".to_owned()));
            }
        }
        Ok(())
    }

    /// A content hash of everything that goes in: paths, kinds, modes,
    /// owners, file contents (their SHA-256, from `sha256sum`: hashing
    /// a few hundred MB here, unoptimised, took seconds) and the
    /// configuration.
    fn content_hash(&self) -> Result<u64> {
        let sources: Vec<&PathBuf> = self
            .entries
            .values()
            .filter_map(|entry| match entry {
                Entry::Copy(source) => Some(source),
                _ => None,
            })
            .collect();
        let digests = sha256(&sources)?;
        let mut hash = tools::Fnv1a::new();
        for (path, entry) in &self.entries {
            hash.write(path.as_bytes());
            match entry {
                Entry::Copy(source) => {
                    let digest = digests
                        .get(source)
                        .ok_or_else(|| format!("sha256sum did not hash {}", source.display()))?;
                    let mode = std::fs::metadata(source)?.mode() & 0o7777;
                    hash.write(b"\0copy\0");
                    hash.write(&mode.to_le_bytes());
                    hash.write(digest.as_bytes());
                }
                Entry::Link(target) => {
                    hash.write(b"\0link\0");
                    hash.write(target.as_bytes());
                }
                Entry::Text(text, mode) => {
                    hash.write(b"\0text\0");
                    hash.write(&mode.to_le_bytes());
                    hash.write(&(text.len() as u64).to_le_bytes());
                    hash.write(text.as_bytes());
                }
                Entry::Dir(owner, mode) => {
                    hash.write(b"\0dir\0");
                    hash.write(&owner.to_le_bytes());
                    hash.write(&mode.to_le_bytes());
                }
            }
        }
        for change in &self.changes {
            hash.write(b"\0change\0");
            hash.write(change.as_bytes());
        }
        Ok(hash.finish())
    }

    /// The image's reference, built first when the engine lacks it.
    fn provide(&self, engine: &DockerEngine, scratch: &Path) -> Result<String> {
        let repository = format!("mes-test/{}", self.name);
        let reference = format!("{repository}:{:016x}", self.content_hash()?);
        let present = engine
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", &reference])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if present {
            eprintln!("xtask: image {reference} is built already");
        } else {
            let started = Instant::now();
            self.build(engine, &reference, &scratch.join(self.name))?;
            eprintln!(
                "xtask: built image {reference} in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        // Older builds (other binaries) are of no more use.
        let tags = engine.output(&["images", &repository, "--format", "{{.Repository}}:{{.Tag}}"])?;
        for old in tags.lines().filter(|t| *t != reference) {
            let _ = engine
                .docker()
                .args(["rmi", old])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(reference)
    }

    /// Lays the root file system out in `stage` and imports it.
    fn build(&self, engine: &DockerEngine, reference: &str, stage: &Path) -> Result<()> {
        if stage.exists() {
            std::fs::remove_dir_all(stage)?;
        }
        std::fs::create_dir_all(stage)?;
        let place = |path: &str| stage.join(path.trim_start_matches('/'));
        for (path, entry) in &self.entries {
            let target = place(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match entry {
                Entry::Copy(source) => {
                    std::fs::copy(source, &target)
                        .map_err(|e| format!("cannot copy {} into the image: {e}", source.display()))?;
                }
                Entry::Link(to) => std::os::unix::fs::symlink(to, &target)?,
                Entry::Text(text, mode) => {
                    std::fs::write(&target, text)?;
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::Dir(..) => std::fs::create_dir_all(&target)?,
            }
        }
        // Owners and modes of folders last: a folder made for its contents
        // first gets the default ones.
        for (path, entry) in &self.entries {
            if let Entry::Dir(owner, mode) = entry {
                let target = place(path);
                std::os::unix::fs::chown(&target, Some(*owner), Some(*owner))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
            }
        }
        let mut tar = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(stage)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        let archive = tar.stdout.take().ok_or("tar has no output")?;
        let mut import = engine.docker();
        import.arg("import");
        for change in &self.changes {
            import.args(["--change", change]);
        }
        let imported = import
            .args(["-", reference])
            .stdin(archive)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run docker import: {e}"));
        let archived = tar.wait();
        let _ = std::fs::remove_dir_all(stage);
        if !imported?.success() || !archived?.success() {
            return Err(format!("docker import of {reference} failed (see above)").into());
        }
        Ok(())
    }
}

/// The SHA-256 of each file (links followed), by path.
fn sha256(files: &[&PathBuf]) -> Result<BTreeMap<PathBuf, String>> {
    let mut digests = BTreeMap::new();
    for chunk in files.chunks(500) {
        let output = Command::new("sha256sum")
            .arg("--")
            .args(chunk)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run sha256sum: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "sha256sum failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        // One `DIGEST  PATH` line per file, in the order given (paths here
        // hold no newline or backslash, which sha256sum would escape).
        let text = String::from_utf8_lossy(&output.stdout);
        for (line, file) in text.lines().zip(chunk) {
            let digest = line.split_whitespace().next().unwrap_or_default();
            digests.insert((*file).clone(), digest.to_owned());
        }
    }
    Ok(digests)
}

/// Redis from Debian's `redis-server`, run as in the official image's
/// default: no configuration file, protected mode off, on port 6379.
fn redis_rootfs() -> Result<Rootfs> {
    let mut rootfs = Rootfs::new("redis");
    // Under its own name (Debian's is a link to redis-check-rdb, and the
    // binary acts by the name it is called by).
    let server = on_path("redis-server").ok_or("redis-server is not installed")?;
    rootfs.binary(&server)?;
    rootfs.dir("/data", SERVICE_UID, 0o755);
    rootfs.change(&format!("USER {SERVICE_UID}:{SERVICE_UID}"));
    rootfs.change("WORKDIR /data");
    rootfs.change("EXPOSE 6379");
    rootfs.change(&format!("ENTRYPOINT [\"{}\"]", server.display()));
    // Nothing is persisted: the suites' data lives as long as the container.
    rootfs.change(r#"CMD ["--protected-mode", "no", "--save", "", "--appendonly", "no"]"#);
    Ok(rootfs)
}

/// The PostgreSQL entrypoint: the official image's contract, in short.
/// `POSTGRES_USER` (default `postgres`), `POSTGRES_PASSWORD`, `POSTGRES_DB`
/// (default the user's name), `POSTGRES_HOST_AUTH_METHOD` (default
/// scram-sha-256, or `trust`), `/docker-entrypoint-initdb.d/*.sql|*.sh`.
/// Like the official image, the setup runs a temporary server through
/// `pg_ctl` (whose log goes to standard output, "database system is ready
/// to accept connections" included) and the final server logs to standard
/// error: testcontainers' postgres module waits for that line on both.
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "Error: the database is uninitialized and superuser password is not specified." >&2
        echo "       Set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust." >&2
        exit 1
    fi
    [ -n "$auth" ] || auth=scram-sha-256
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
        initdb --username="$user" --pwfile=/tmp/pwfile --encoding=UTF8 --locale=C -D "$PGDATA"
        rm -f /tmp/pwfile
    else
        initdb --username="$user" --encoding=UTF8 --locale=C -D "$PGDATA"
    fi
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -c "CREATE DATABASE \"$db\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -f "$f" ;;
            *.sh) . "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
"#;

/// PostgreSQL from Debian's packages (the newest version installed here),
/// with busybox for the entrypoint's shell.
fn postgres_rootfs() -> Result<Rootfs> {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL's server is not installed (/usr/lib/postgresql: {e})"))?;
    let version = versions
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| Path::new(&format!("/usr/lib/postgresql/{v}/bin/postgres")).is_file())
        .max()
        .ok_or("no PostgreSQL server under /usr/lib/postgresql")?;
    let mut rootfs = Rootfs::new("postgres");
    rootfs.busybox()?;
    // Without the JIT, whose LLVM library alone is over 100 MB: PostgreSQL
    // runs without it when its provider is missing.
    rootfs.tree(
        Path::new(&format!("/usr/lib/postgresql/{version}")),
        &["llvmjit.so", "llvmjit_types.bc", "bitcode"],
    )?;
    rootfs.tree(Path::new(&format!("/usr/share/postgresql/{version}")), &[])?;
    // Debian's PostgreSQL reads the system's time zone data.
    rootfs.tree(Path::new("/usr/share/zoneinfo"), &[])?;
    rootfs.text("/usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT, 0o755);
    rootfs.dir("/docker-entrypoint-initdb.d", 0, 0o755);
    rootfs.dir("/var/lib/postgresql", SERVICE_UID, 0o755);
    rootfs.dir("/var/lib/postgresql/data", SERVICE_UID, 0o700);
    // Debian's default socket folder.
    rootfs.dir("/var/run/postgresql", SERVICE_UID, 0o2775);
    rootfs.change(&format!(
        "ENV PATH=/usr/lib/postgresql/{version}/bin:/usr/local/bin:/bin"
    ));
    rootfs.change("ENV PGDATA=/var/lib/postgresql/data");
    rootfs.change("ENV TZ=UTC");
    rootfs.change(&format!("USER {SERVICE_UID}:{SERVICE_UID}"));
    rootfs.change("EXPOSE 5432");
    rootfs.change(r#"ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]"#);
    rootfs.change(r#"CMD ["postgres"]"#);
    Ok(rootfs)
}

/// The tansu broker the testkit builds, with busybox for the shell
/// mes-testkit's tansu module starts it from. Run plainly, it listens on
/// 9092 with in-memory storage and advertises `localhost:9092`.
fn tansu_rootfs(tansu: &Path) -> Result<Rootfs> {
    let mut rootfs = Rootfs::new("tansu");
    rootfs.busybox()?;
    rootfs
        .entries
        .insert("/usr/local/bin/tansu".to_owned(), Entry::Copy(tansu.to_owned()));
    rootfs.libraries_of(tansu)?;
    // Its working folder: `sqlite://` paths are relative to it.
    rootfs.dir("/var/lib/tansu", SERVICE_UID, 0o755);
    rootfs.change("ENV PATH=/usr/local/bin:/bin");
    rootfs.change(&format!("USER {SERVICE_UID}:{SERVICE_UID}"));
    rootfs.change("WORKDIR /var/lib/tansu");
    rootfs.change("EXPOSE 9092");
    rootfs.change(r#"ENTRYPOINT ["/usr/local/bin/tansu"]"#);
    rootfs.change(
        r#"CMD ["broker", "--listener-url", "tcp://0.0.0.0:9092", "--advertised-listener-url", "tcp://localhost:9092", "--storage-engine", "memory://tansu/"]"#,
    );
    Ok(rootfs)
}
