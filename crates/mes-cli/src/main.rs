//! `mes`: the operator's command line of the MES fleet.
//!
//! The legacy runbooks troubleshoot with `redis-cli` and Kafka's shell
//! tools, which show raw bytes. `mes` reads the same things through the MES
//! crates, so what it shows is decoded: the cache envelope (mes-cache),
//! CloudEvents in all three record formats (mes-events-types), consumer
//! groups (mes-kafka) and dead letters with their `mes-dlq-*` headers
//! (mes-sync), and a replay goes through mes-sync's `DeadLetterReplay`.
//!
//! | command | what it shows or does | replaces |
//! |---|---|---|
//! | `mes cache get PREFIX ID` | the decoded envelope: data, version, age, TTL left (legacy rule and Redis's) | `redis-cli GET` |
//! | `mes cache stats` | keys per prefix, Redis memory, hit rate (`INFO`) | `redis-cli INFO`, `--scan` |
//! | `mes cache invalidate PREFIX ID` / `--all` | removes one entry or a whole prefix (`SCAN` + `UNLINK`), after a confirmation, with a progress bar | `redis-cli DEL`, `--scan \| xargs` |
//! | `mes topics` | MES topics, partitions, start and end offsets | `kafka-topics.sh`, `kafka-get-offsets.sh` |
//! | `mes tail TOPIC` | records as CloudEvents (structured, binary, legacy), filtered by type or entity; an undecodable record is shown with why | `kafka-console-consumer.sh` |
//! | `mes groups` | consumer groups (kafkajs ones too): state, members, assignments | `kafka-consumer-groups.sh --list` |
//! | `mes lag GROUP` | committed offset, end and lag per partition, and who owns it | `kafka-consumer-groups.sh --describe` |
//! | `mes dlq list TOPIC` | the dead letters of `TOPIC.dlq`: group, reason, attempts, source offset | `kafka-console-consumer.sh --property print.headers=true` |
//! | `mes dlq replay TOPIC --group G` | republishes a group's dead letters (filters, `--dry-run`) | a hand-written script |
//! | `mes completions SHELL` | a completion script for bash, zsh, fish, elvish, PowerShell | |
//!
//! Every command prints text for a person, or JSON with `--json` (one
//! object per line for `tail`). Settings come from the variables the
//! libraries read (`REDIS_URL`, `KAFKA_BROKERS`, `KAFKA_SASL_*`,
//! `KAFKA_TLS*`), overridden by `--redis-url` and `--brokers`; connecting
//! is bounded by `--connect-timeout` (5 s). Exit codes: 0 done, 1 a
//! service failed or could not be reached, 2 bad usage or configuration,
//! 3 not found (topic, prefix, group, entry), 4 a declined confirmation.
//!
//! # Example
//!
//! ```text
//! $ export REDIS_URL=redis://redis:6379 KAFKA_BROKERS=kafka:9092
//! $ mes cache get part P-12345
//! key        mes:cache:part:P-12345
//! version    (none)
//! cached at  2026-12-02T12:51:07.118Z (42.0s ago)
//! ttl        300s, 4m 18s left; Redis TTL 4m 18s
//! data       {
//!              "partName": "Landing Gear Strut",
//!              "partNumber": "P-12345"
//!            }
//! $ mes tail mes.material.events --from-beginning --entity P-12345 --max 1
//! 0/17 2026-12-02T12:51:07.101Z structured material.part.updated entity=P-12345 id=01JE… {"partName":"Landing Gear Strut"}
//! $ mes lag work-order-service
//! $ mes cache invalidate part --all
//! Remove every entry of prefix part (1204 keys) in namespace mes:cache from redis://redis:6379? [y/N] y
//! removed 1204 entries of prefix part (namespace mes:cache)
//! ```

#![allow(
    clippy::print_stderr,
    reason = "a command-line tool: errors go to stderr, the rest through output::Output"
)]

mod cache;
mod cli;
mod connect;
mod dlq;
mod error;
mod groups;
mod output;
mod tail;
mod topics;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mes: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mes: {}", error::chain(&error));
            error.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let out = Output::new(cli.global.json);
    let global = &cli.global;
    match &cli.command {
        Command::Cache(command) => cache::run(command, global, &out).await,
        Command::Topics { prefix, all } => topics::run(prefix.as_deref(), *all, global, &out).await,
        Command::Tail(args) => tail::run(args, global, &out).await,
        Command::Groups => groups::list(global, &out).await,
        Command::Lag { group } => groups::lag(group, global, &out).await,
        Command::Dlq(command) => dlq::run(command, global, &out).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "mes", &mut script);
            out.line(String::from_utf8_lossy(&script).trim_end())
        }
    }
}
