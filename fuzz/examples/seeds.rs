//! Writes the seed inputs of every fuzz target into `<corpus root>/<target>/seed-<name>`
//! (`cargo xtask fuzz` runs it before fuzzing): `cargo run --example seeds -- fuzz/corpus`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "corpus".into()));
    let seeds = mes_kafka_fuzz::seeds();
    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    eprintln!("wrote {} seed inputs under {}", seeds.len(), root.display());
    Ok(())
}
