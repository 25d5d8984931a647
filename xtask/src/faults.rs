//! `cargo xtask faults`: the fault scenarios (`e2e/tests/faults_*.rs`) at
//! full scale, then their table.
//!
//! Each scenario is an ordinary test: `cargo xtask test` runs it at a short
//! scale; here `MES_FAULTS_SCALE=full` makes it longer and heavier, and
//! `MES_FAULTS_REPORT` names the folder where each writes its report (what
//! was promised, what was observed, the figures). The table is printed and
//! written as `target/faults/faults.json` and `target/faults/faults.md`, also
//! when a scenario failed (its broken invariant is in the table).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::{Result, cargo_in_workspace, run, services, workspace_root};

/// Names the e2e crate reads (`mes_e2e::faults`).
const SCALE: &str = "MES_FAULTS_SCALE";
const REPORT_DIR: &str = "MES_FAULTS_REPORT";

pub(crate) fn faults(extra: &[String]) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("target").join("faults");
    let reports = dir.join("reports");
    if reports.exists() {
        std::fs::remove_dir_all(&reports)?;
    }
    std::fs::create_dir_all(&reports)?;
    let mut scenarios: Vec<String> = std::fs::read_dir(root.join("e2e").join("tests"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .filter(|name| name.starts_with("faults_"))
        .collect();
    scenarios.sort();

    let services = services::Services::provide(services::Shared::Native)?;
    let mut command = cargo_in_workspace();
    command.args(["test", "-p", "mes-e2e", "--locked"]);
    for scenario in &scenarios {
        command.args(["--test", scenario]);
    }
    command.args(extra).env(SCALE, "full").env(REPORT_DIR, &reports);
    services.export_to(&mut command);
    let outcome = run(&mut command);
    drop(services);

    let table = table(&reports)?;
    println!("\n{}", table.markdown);
    std::fs::write(dir.join("faults.md"), &table.markdown)?;
    std::fs::write(
        dir.join("faults.json"),
        serde_json::to_string_pretty(&table.json)?,
    )?;
    println!("written: {} and faults.json", dir.join("faults.md").display());
    outcome
}

struct Table {
    markdown: String,
    json: Value,
}

fn table(reports: &Path) -> Result<Table> {
    let mut rows: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(reports)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            rows.push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    rows.sort_by(|a, b| text(&a["scenario"]).cmp(&text(&b["scenario"])));
    let mut markdown = String::from(
        "| scenario | fault | load | invariant | promised | observed | held |\n|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let invariants = row["invariants"].as_array().cloned().unwrap_or_default();
        for (i, invariant) in invariants.iter().enumerate() {
            let (scenario, fault, load) = if i == 0 {
                (text(&row["scenario"]), text(&row["fault"]), text(&row["load"]))
            } else {
                (String::new(), String::new(), String::new())
            };
            let held = if invariant["held"].as_bool() == Some(true) {
                "yes"
            } else {
                "**NO**"
            };
            let _ = writeln!(
                markdown,
                "| {scenario} | {fault} | {load} | {} | {} | {} | {held} |",
                text(&invariant["name"]),
                text(&invariant["promised"]),
                text(&invariant["observed"]),
            );
        }
    }
    markdown.push_str("\nFigures:\n\n");
    for row in &rows {
        let _ = writeln!(markdown, "- {}: `{}`", text(&row["scenario"]), row["figures"]);
    }
    Ok(Table {
        markdown,
        json: Value::Array(rows),
    })
}

/// A JSON value as table text: strings without their quotes.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
