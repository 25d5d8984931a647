//! `cargo xtask fuzz [SECONDS] [TARGET...]`: coverage-guided fuzzing of
//! mes-kafka's decoders with libFuzzer (cargo-fuzz), on the stable toolchain.
//!
//! The fuzz crate is `fuzz/`, a workspace of its own built into
//! `fuzz/target`. cargo-fuzz passes `-Zsanitizer=address` and other `-Z`
//! flags to rustc; `RUSTC_BOOTSTRAP=1` lets the pinned stable compiler
//! take them (its standard library ships the ASan runtime). Each target runs
//! for SECONDS (60 by default) from its corpus `fuzz/corpus/<target>`
//! (gitignored, seeded first by `fuzz/examples/seeds.rs`), with
//! `-malloc_limit_mb=64` (any single larger allocation is a crash: a
//! length used before it was checked) and `-rss_limit_mb=512`. The
//! harness's allocator also fails an input whose peak heap is not
//! proportional to its size (see `fuzz/src/lib.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tools::{CargoTool, cargo};
use crate::{Result, run, workspace_root};

/// cargo-fuzz, the libFuzzer driver.
pub(crate) const CARGO_FUZZ: CargoTool = CargoTool {
    krate: "cargo-fuzz",
    version: "0.13.2",
    features: &[],
    binary: "cargo-fuzz",
    build_note: "about a minute, once per machine",
};

/// The fuzz targets of `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["answers", "record_batches", "consumer_protocol"];

const DEFAULT_SECONDS: u64 = 60;

/// libFuzzer's options for every run.
const LIBFUZZER_OPTIONS: &[&str] = &[
    "-rss_limit_mb=512",
    "-malloc_limit_mb=64",
    "-max_len=65536",
    "-timeout=10",
    "-print_final_stats=1",
];

/// What one target's run came to.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    coverage: Option<u64>,
    corpus: Option<u64>,
    peak_rss_mb: Option<u64>,
    heap_peak: Option<String>,
    crash: Option<String>,
    log: PathBuf,
}

pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    for arg in args.iter().filter(|arg| *arg != "--") {
        if let Ok(n) = arg.parse::<u64>() {
            seconds = n.max(1);
        } else if let Some(target) = TARGETS.iter().find(|t| **t == arg) {
            targets.push(*target);
        } else {
            return Err(format!(
                "unknown argument {arg:?}: `cargo xtask fuzz [SECONDS] [TARGET...]`, targets {TARGETS:?}"
            )
            .into());
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let cargo_fuzz = CARGO_FUZZ.ensure()?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");

    eprintln!("xtask: building the fuzz targets (ASan, coverage; stable rustc with RUSTC_BOOTSTRAP=1)");
    run(cargo_fuzz_command(&cargo_fuzz, &root).args(["build", "--fuzz-dir", "fuzz"]))?;
    // Each corpus starts from valid inputs (written again each time; the
    // file names are fixed, so this adds nothing after the first run).
    run(Command::new(cargo())
        .current_dir(&fuzz_dir)
        .args(["run", "--quiet", "--example", "seeds", "--"])
        .arg(fuzz_dir.join("corpus")))?;

    let logs = fuzz_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let mut outcomes = Vec::new();
    for target in targets {
        eprintln!("xtask: fuzzing `{target}` for {seconds} s");
        outcomes.push(fuzz_target(&cargo_fuzz, &root, &logs, target, seconds)?);
    }

    let mut report = String::from("\nxtask fuzz: results\n");
    report.push_str(&format!(
        "  {:<18} {:>12} {:>8} {:>8} {:>13}  {}\n",
        "target", "executions", "cov", "corpus", "peak RSS MB", "crashes"
    ));
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    for outcome in &outcomes {
        report.push_str(&format!(
            "  {:<18} {:>12} {:>8} {:>8} {:>13}  {}\n",
            outcome.target,
            show(outcome.executions),
            show(outcome.coverage),
            show(outcome.corpus),
            show(outcome.peak_rss_mb),
            if outcome.crash.is_some() { "1" } else { "0" },
        ));
    }
    for outcome in &outcomes {
        if let Some(heap) = &outcome.heap_peak {
            report.push_str(&format!(
                "  {}: largest heap peak of one input: {heap}\n",
                outcome.target
            ));
        }
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    for outcome in &crashed {
        report.push_str(&format!(
            "  {} CRASHED: {}\n    log: {}\n    reproduce (from the workspace root): RUSTC_BOOTSTRAP=1 {} run --fuzz-dir fuzz {} {}\n    \
             minimise: RUSTC_BOOTSTRAP=1 {} tmin --fuzz-dir fuzz {} {}\n",
            outcome.target,
            outcome.crash.as_deref().unwrap_or_default(),
            outcome.log.display(),
            cargo_fuzz.display(),
            outcome.target,
            outcome.crash.as_deref().unwrap_or_default(),
            cargo_fuzz.display(),
            outcome.target,
            outcome.crash.as_deref().unwrap_or_default(),
        ));
    }
    eprint!("{report}");
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} target(s) crashed", crashed.len()).into())
    }
}

fn cargo_fuzz_command(cargo_fuzz: &Path, root: &Path) -> Command {
    let mut command = Command::new(cargo_fuzz);
    command
        .current_dir(root)
        // cargo-fuzz's `-Z` flags (sanitizer, coverage) on stable rustc.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO", cargo());
    command
}

fn fuzz_target(
    cargo_fuzz: &Path,
    root: &Path,
    logs: &Path,
    target: &'static str,
    seconds: u64,
) -> Result<Outcome> {
    let log_path = logs.join(format!("{target}.log"));
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
    let status = cargo_fuzz_command(cargo_fuzz, root)
        .args(["run", "--fuzz-dir", "fuzz", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_OPTIONS)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", cargo_fuzz.display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut outcome = parse_log(target, &text, log_path);
    // libFuzzer names the input relative to the workspace root.
    outcome.crash = outcome.crash.map(|path| root.join(path).display().to_string());
    if !status.success() && outcome.crash.is_none() {
        outcome.crash = Some(format!(
            "cargo fuzz failed ({status}) without saving an input; see the log"
        ));
    }
    if let Some(crash) = &outcome.crash {
        eprintln!("xtask: `{target}` crashed: {crash}");
        // The crash's own report: the panic or sanitizer message.
        for line in text.lines().filter(|line| {
            line.contains("panicked at")
                || line.contains("==mes-fuzz==") && !line.contains("new heap peak")
                || line.starts_with("==") && line.contains("ERROR")
                || line.contains("libFuzzer: ")
        }) {
            eprintln!("    {line}");
        }
    }
    Ok(outcome)
}

/// Reads a libFuzzer log: the final stats, the last status line and a
/// saved crash input.
fn parse_log(target: &'static str, text: &str, log: PathBuf) -> Outcome {
    let stat = |name: &str| {
        text.lines()
            .rev()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    // `#123456	DONE   cov: 1400 ft: 2000 corp: 300/20Kb ...` (or the last pulse).
    let status = text
        .lines()
        .rev()
        .find(|line| line.starts_with('#') && line.contains(" cov: "));
    let field = |line: &str, name: &str| {
        let after = line.split(name).nth(1)?;
        let number: String = after
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        number.parse::<u64>().ok()
    };
    let executions = stat("stat::number_of_executed_units:").or_else(|| {
        status.and_then(|line| {
            line.trim_start_matches('#')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    });
    let crash = text.lines().find_map(|line| {
        let path = line.split("Test unit written to ").nth(1)?;
        Some(path.trim().to_owned())
    });
    Outcome {
        target,
        executions,
        coverage: status.and_then(|line| field(line, " cov:")),
        corpus: status.and_then(|line| field(line, " corp:")),
        peak_rss_mb: stat("stat::peak_rss_mb:"),
        heap_peak: text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("==mes-fuzz== new heap peak: "))
            .map(str::to_owned),
        crash,
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_gives_its_stats_and_crash() {
        let log = "\
INFO: Seed: 1
==mes-fuzz== new heap peak: 100 bytes for a 46-byte input
#73\tINITED cov: 1336 ft: 1390 corp: 33/3894b exec/s: 0 rss: 44Mb
==mes-fuzz== new heap peak: 78153 bytes for a 1163-byte input
#958713\tDONE   cov: 1400 ft: 2000 corp: 300/20Kb lim: 4096 exec/s: 87155 rss: 303Mb
artifact_prefix='fuzz/artifacts/answers/'; Test unit written to fuzz/artifacts/answers/crash-abc
stat::number_of_executed_units: 958713
stat::peak_rss_mb:              303
";
        let outcome = parse_log("answers", log, PathBuf::from("x.log"));
        assert_eq!(outcome.executions, Some(958_713));
        assert_eq!(outcome.coverage, Some(1400));
        assert_eq!(outcome.corpus, Some(300));
        assert_eq!(outcome.peak_rss_mb, Some(303));
        assert_eq!(
            outcome.heap_peak.as_deref(),
            Some("78153 bytes for a 1163-byte input")
        );
        assert_eq!(outcome.crash.as_deref(), Some("fuzz/artifacts/answers/crash-abc"));
    }
}
