//! Repository invariants (see ARCHITECTURE.md), checked as ordinary tests.

#![allow(clippy::unwrap_used, reason = "a test: a failed step fails it")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

// Shared with `cargo xtask package`, so both read the same lists.
#[path = "../src/crates.rs"]
mod crates;

use crates::{PUBLISH_ORDER, does_io};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Names of the crates `package` depends on through normal dependencies,
/// transitively, with every feature on.
fn normal_dependency_closure(package: &str) -> BTreeSet<String> {
    let output = cargo()
        .args([
            "tree",
            "--locked",
            "--offline",
            "--all-features",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
        ])
        .arg(package)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect()
}

#[test]
fn events_types_depends_on_nothing_that_does_io() {
    let offenders: Vec<String> = normal_dependency_closure("mes-events-types")
        .into_iter()
        .filter(|name| does_io(name) || name.starts_with("mes-"))
        .collect();
    assert!(
        offenders.is_empty(),
        "mes-events-types must stay pure (no I/O, no runtime, no other mes crate), but depends on {offenders:?}"
    );
}

#[test]
fn cache_and_publisher_stay_independent_of_each_other() {
    let cache = normal_dependency_closure("mes-cache");
    for forbidden in ["rskafka", "mes-publisher", "mes-events-types", "mes-sync"] {
        assert!(
            !cache.contains(forbidden),
            "mes-cache must not depend on {forbidden}"
        );
    }
    let publisher = normal_dependency_closure("mes-publisher");
    for forbidden in ["fred", "mes-cache", "mes-sync"] {
        assert!(
            !publisher.contains(forbidden),
            "mes-publisher must not depend on {forbidden}"
        );
    }
}

/// rskafka stays in the tests (the independent reader) and the benchmark
/// baseline; production traffic goes through mes-kafka.
#[test]
fn no_published_crate_depends_on_rskafka() {
    for package in PUBLISH_ORDER {
        assert!(
            !normal_dependency_closure(package).contains("rskafka"),
            "{package} must not depend on rskafka: production Kafka traffic goes through mes-kafka"
        );
    }
}

/// mes-kafka knows Kafka, not MES events; the cache knows neither.
#[test]
fn the_kafka_layer_knows_no_mes_crate_and_the_cache_no_kafka_layer() {
    // mes-redact is the one exception: it knows no MES event, no Kafka and
    // no Redis, and depends on nothing at all.
    let kafka = normal_dependency_closure("mes-kafka");
    let mes: Vec<&String> = kafka
        .iter()
        .filter(|name| name.starts_with("mes-") && *name != "mes-redact")
        .collect();
    assert!(mes.is_empty(), "mes-kafka must not depend on {mes:?}");
    let redact = normal_dependency_closure("mes-redact");
    assert!(
        redact.is_empty(),
        "mes-redact must depend on nothing, but depends on {redact:?}"
    );
    assert!(
        !normal_dependency_closure("mes-cache").contains("mes-kafka"),
        "mes-cache must not depend on mes-kafka"
    );
}

/// Every crate of the workspace (the test kit, demo, e2e and xtask too)
/// inherits `[workspace.lints]` and keeps no lint table of its own; a crate
/// that must differ says so in its source, with a reason.
#[test]
fn every_crate_inherits_the_workspace_lints() {
    let metadata = metadata();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let manifest = std::fs::read_to_string(package["manifest_path"].as_str().unwrap()).unwrap();
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{name}: needs `[lints] workspace = true`"
        );
        assert!(
            !manifest.contains("[lints."),
            "{name}: overrides the workspace lints in its manifest"
        );
    }
}

fn metadata() -> Value {
    let output = cargo()
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version",
            "1",
            "--no-deps",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn publishable_crates_carry_registry_metadata_and_versioned_internal_deps() {
    let metadata = metadata();
    let packages = metadata["packages"].as_array().unwrap();
    let mut publishable = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let publish = &package["publish"];
        if publish.as_array().is_some_and(|p| p.is_empty()) {
            continue; // publish = false
        }
        publishable.push(name.to_owned());
        assert_eq!(
            publish,
            &serde_json::json!(["mes"]),
            "{name}: publish only to the internal registry"
        );
        for field in ["description", "license", "repository"] {
            assert!(
                package[field].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {field} missing"
            );
        }
        for dependency in package["dependencies"].as_array().unwrap() {
            let dep = dependency["name"].as_str().unwrap();
            if dep.starts_with("mes-") && dependency["kind"].is_null() {
                assert!(dependency["path"].is_string(), "{name} -> {dep}: needs a path");
                assert_ne!(dependency["req"], "*", "{name} -> {dep}: needs a version");
                assert!(
                    dependency["registry"].as_str().is_some_and(|r| r.contains("mes")),
                    "{name} -> {dep}: needs registry = \"mes\""
                );
                assert_ne!(dep, "mes-testkit", "{name}: the test kit is not published");
            }
        }
    }
    publishable.sort();
    assert_eq!(
        publishable,
        [
            "mes-cache",
            "mes-cli",
            "mes-events-types",
            "mes-kafka",
            "mes-publisher",
            "mes-redact",
            "mes-sync"
        ]
    );
}

#[test]
fn publish_order_lists_the_publishable_crates_after_their_internal_dependencies() {
    let metadata = metadata();
    let packages = metadata["packages"].as_array().unwrap();
    let publishable: BTreeSet<&str> = packages
        .iter()
        .filter(|package| !package["publish"].as_array().is_some_and(|p| p.is_empty()))
        .map(|package| package["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        publishable,
        PUBLISH_ORDER.iter().copied().collect::<BTreeSet<_>>(),
        "PUBLISH_ORDER (xtask/src/crates.rs) must list exactly the publishable crates"
    );
    for (position, name) in PUBLISH_ORDER.iter().enumerate() {
        let package = packages.iter().find(|p| p["name"] == *name).unwrap();
        for dependency in package["dependencies"].as_array().unwrap() {
            let dep = dependency["name"].as_str().unwrap();
            // A path-only dev-dependency is dropped from the published
            // manifest; anything else must already be in the registry.
            let dropped = dependency["kind"] == "dev" && dependency["registry"].is_null();
            if publishable.contains(dep) && !dropped {
                let before = PUBLISH_ORDER.iter().position(|n| *n == dep).unwrap();
                assert!(
                    before < position,
                    "{name} depends on {dep}, so PUBLISH_ORDER must list {dep} first"
                );
            }
        }
    }
}

/// The crates the external types check skips have no library to check.
#[test]
fn binary_only_crates_have_no_library() {
    let metadata = metadata();
    for name in crates::BINARY_ONLY {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *name)
            .unwrap();
        let kinds: Vec<&Value> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["kind"].as_array().unwrap())
            .collect();
        assert!(
            !kinds.iter().any(|k| *k == "lib"),
            "{name} has a library: the external types check must cover it"
        );
        assert!(kinds.iter().any(|k| *k == "bin"), "{name}: {kinds:?}");
    }
}

#[test]
fn wire_fixtures_match_the_shared_originals_when_present() {
    // The fixtures are copied into testdata/ so a clean clone has them; when
    // the shared folder sits beside the checkout, the copy must not drift.
    let shared = root().join("../shared/wire");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let ours = root().join("testdata/wire").join(entry.file_name());
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(&ours).unwrap_or_default(),
            "{} differs from {}",
            ours.display(),
            entry.path().display()
        );
    }
}
