//! Tools the tasks need, installed once per machine into a cache outside
//! the clone (`$MES_TOOLS_CACHE`, else `$XDG_CACHE_HOME/mes-tools`, else
//! `~/.cache/mes-tools`), so a fresh clone on a machine that built them
//! before starts at once.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, run, workspace_root};

/// The cache folder for built tools.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MES_TOOLS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join("cache"));
    base.join("mes-tools")
}

/// A binary from the crate registry, built by `cargo install --locked` into
/// the cache once per version and feature set.
pub(crate) struct CargoTool {
    pub(crate) krate: &'static str,
    pub(crate) version: &'static str,
    pub(crate) features: &'static [&'static str],
    pub(crate) binary: &'static str,
    /// Said before a long first build, so nobody thinks it hangs.
    pub(crate) build_note: &'static str,
}

impl CargoTool {
    fn root(&self) -> PathBuf {
        let mut key = format!("{}-{}", self.krate, self.version);
        for feature in self.features {
            key.push('-');
            key.push_str(feature);
        }
        cache_dir().join(key)
    }

    /// Whether the cache holds the binary already (else `ensure` builds it).
    pub(crate) fn is_built(&self) -> bool {
        self.root().join("bin").join(self.binary).is_file()
    }

    /// The binary's path, building it first if the cache lacks it.
    pub(crate) fn ensure(&self) -> Result<PathBuf> {
        let binary = self.root().join("bin").join(self.binary);
        if binary.is_file() {
            return Ok(binary);
        }
        eprintln!(
            "xtask: building {} {} into {} ({}); cargo's progress follows",
            self.krate,
            self.version,
            self.root().display(),
            self.build_note
        );
        let mut install = Command::new(cargo());
        install
            .args(["install", "--locked", "--version", self.version, "--root"])
            .arg(self.root())
            .arg(self.krate);
        if !self.features.is_empty() {
            install.arg("--features").arg(self.features.join(","));
        }
        // The tool is built with its own lock file, not in this workspace.
        install.current_dir(cache_dir_created()?);
        run(&mut install)?;
        if !binary.is_file() {
            return Err(format!(
                "cargo install {} did not produce {}",
                self.krate,
                binary.display()
            )
            .into());
        }
        Ok(binary)
    }
}

fn cache_dir_created() -> Result<PathBuf> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// cargo-deny, for `cargo xtask ci`.
pub(crate) const CARGO_DENY: CargoTool = CargoTool {
    krate: "cargo-deny",
    version: "0.20.2",
    features: &[],
    binary: "cargo-deny",
    build_note: "a few minutes, once per machine",
};

/// cargo-check-external-types, for `cargo xtask test` and `ci`: which types
/// of other crates the published crates expose. It reads rustdoc's JSON
/// through its `rustdoc-types`, whose format version must be the one the
/// toolchain's rustdoc writes: 0.5.0 reads format 57, rustdoc 1.95's. A
/// toolchain bump that changes the format fails the check with both numbers;
/// then take the tool's release for the new format.
pub(crate) const CARGO_CHECK_EXTERNAL_TYPES: CargoTool = CargoTool {
    krate: "cargo-check-external-types",
    version: "0.5.0",
    features: &[],
    binary: "cargo-check-external-types",
    build_note: "about 2 minutes on 2 cores, once per machine",
};

/// tansu, the Kafka-protocol broker of the suites and benchmarks.
pub(crate) const TANSU: CargoTool = CargoTool {
    krate: "tansu",
    version: "0.6.0",
    features: &["dynostore", "libsql"],
    binary: "tansu",
    build_note: "15-20 minutes on 2 cores, once per machine",
};

/// A cargo registry (sparse index, publish API) for `cargo xtask package`:
/// pure Rust on axum, so its build is short.
pub(crate) const CARGO_REGISTRY: CargoTool = CargoTool {
    krate: "ferro-cargo-registry-server",
    version: "1.0.0",
    features: &[],
    binary: "ferro-cargo-registry-server",
    build_note: "about 2 minutes on 2 cores, once per machine",
};

/// The cargo that runs this xtask.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// A virtualenv with `xtask/python-requirements.txt` installed, cached by the
/// file's content. Returns its interpreter.
pub(crate) fn python_env() -> Result<PathBuf> {
    let requirements = workspace_root().join("xtask/python-requirements.txt");
    let venv = cached_env("python", &requirements, |dir| {
        let base = std::env::var("MES_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(Command::new(&base).args(["-m", "venv"]).arg(dir))?;
        run(Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))
    })?;
    Ok(venv.join("bin/python"))
}

/// The npm packages of `xtask/bench/package.json` (the kafkajs reference
/// producer), cached by the file's content. Returns its `node_modules`.
pub(crate) fn node_env() -> Result<PathBuf> {
    let manifest = workspace_root().join("xtask/bench/package.json");
    let dir = cached_env("node", &manifest, |dir| {
        std::fs::copy(&manifest, dir.join("package.json"))
            .map_err(|e| format!("cannot copy {}: {e}", manifest.display()))?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir))
    })?;
    Ok(dir.join("node_modules"))
}

/// A folder built by `build` from the file `key` describes, cached under
/// the file's content hash; a half-built one (no completion marker) is
/// built again.
fn cached_env(kind: &str, key: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let text = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let dir = cache_dir_created()?.join(format!("{kind}-{:016x}", fnv1a(&text)));
    let complete = dir.join(".complete");
    if complete.is_file() {
        return Ok(dir);
    }
    eprintln!("xtask: preparing {}", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    build(&dir)?;
    write_marker(&complete)?;
    Ok(dir)
}

fn write_marker(path: &Path) -> Result<()> {
    std::fs::write(path, b"").map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// FNV-1a of one byte string.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::new();
    hash.write(bytes);
    hash.finish()
}

/// FNV-1a: a content hash that is stable across Rust releases (unlike
/// `DefaultHasher`), for cache keys; fed piece by piece.
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
