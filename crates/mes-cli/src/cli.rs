//! The command line, as clap reads it.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// What `mes --help` ends with: the exit codes and where settings come from.
const EXIT_CODES: &str = "\
Settings: REDIS_URL (default redis://localhost:6379) and KAFKA_BROKERS (default
localhost:9092), with KAFKA_CLIENT_ID, KAFKA_SASL_* and KAFKA_TLS*, read as the
libraries read them; --redis-url and --brokers override the two addresses.

Exit codes:
  0  done
  1  Redis or Kafka failed or could not be reached (refused, timed out)
  2  bad usage or configuration (arguments, a malformed URL, a confirmation
     that cannot be asked for)
  3  not found: an unknown topic, cache prefix or consumer group, or no entry
     under the key
  4  declined at the confirmation prompt: nothing was changed

Examples:
  mes cache get part P-12345
  mes cache stats --json
  mes cache invalidate part --all --yes
  mes topics
  mes tail mes.material.events --from-beginning --type material.part.updated --max 10
  mes lag work-order-service
  mes dlq list mes.material.events
  mes dlq replay mes.material.events --group work-order-service --reason timeout --dry-run
  mes completions bash > /etc/bash_completion.d/mes";

/// The MES operator tool: the reference data cache, the event topics, the
/// consumer groups and the dead letters, read through the MES crates (the
/// cache envelope, CloudEvents and the mes-dlq-* headers decoded).
#[derive(Debug, Parser)]
#[command(name = "mes", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Settings every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Print JSON instead of text (one JSON object per record for `tail`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The Redis URL (else REDIS_URL, else redis://localhost:6379).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) redis_url: Option<String>,
    /// The cache's key namespace.
    #[arg(long, global = true, default_value = mes_cache::DEFAULT_NAMESPACE)]
    pub(crate) namespace: String,
    /// Bootstrap brokers, host:port[,host:port...] (else KAFKA_BROKERS).
    #[arg(long, global = true, value_name = "BROKERS")]
    pub(crate) brokers: Option<String>,
    /// How long connecting to Redis or Kafka may take, e.g. 5s, 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The reference data cache in Redis.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The MES topics (mes.*), their partitions and end offsets.
    #[command(
        after_help = "Replaces `kafka-topics.sh --list` and `kafka-get-offsets.sh`.\n\nExamples:\n  mes topics\n  mes topics --all --json"
    )]
    Topics {
        /// Only topics whose name starts with this.
        prefix: Option<String>,
        /// Every topic, not only mes.* ones.
        #[arg(long)]
        all: bool,
    },
    /// Prints a topic's records as decoded CloudEvents (structured, binary
    /// and legacy); a record that does not decode is printed with why.
    #[command(after_help = "\
From the end (following new records) unless --from-beginning; --from-beginning
alone stops at the end as it was when the command started, with --follow it
goes on. Replaces `kafka-console-consumer.sh`.

Examples:
  mes tail mes.material.events
  mes tail mes.material.events --from-beginning --entity P-12345
  mes tail mes.workorder.events --from-beginning --follow --type workorder.status.changed --json")]
    Tail(TailArgs),
    /// The consumer groups, their state and members (kafkajs groups too).
    #[command(
        after_help = "Replaces `kafka-consumer-groups.sh --list --describe --members`.\n\nExample:\n  mes groups --json"
    )]
    Groups,
    /// A consumer group's members, assignments and lag per partition.
    #[command(
        after_help = "Replaces `kafka-consumer-groups.sh --describe --group`.\n\nExample:\n  mes lag work-order-service"
    )]
    Lag {
        /// The group id.
        group: String,
    },
    /// Dead letters: what the consumers gave up on, and replaying it.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Prints a shell completion script.
    #[command(after_help = "Example:\n  mes completions bash > /etc/bash_completion.d/mes")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// One entry: its data, age, TTL left and version.
    #[command(
        after_help = "Replaces `redis-cli GET mes:cache:PREFIX:ID`.\n\nExample:\n  mes cache get part P-12345"
    )]
    Get {
        /// The prefix (part, user, work_center, ...).
        prefix: String,
        /// The entity id.
        id: String,
    },
    /// Key counts per prefix, Redis memory and its hit rate (INFO).
    #[command(
        after_help = "Replaces `redis-cli INFO` and `redis-cli --scan`.\n\nExample:\n  mes cache stats"
    )]
    Stats,
    /// Removes one entry, or every entry of a prefix.
    #[command(after_help = "\
Asks for confirmation on the terminal unless --yes; without a terminal it
refuses unless --yes. A large prefix shows a progress bar.

Examples:
  mes cache invalidate part P-12345
  mes cache invalidate work_center --all --yes")]
    Invalidate(InvalidateArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "all"])))]
pub(crate) struct InvalidateArgs {
    /// The prefix.
    pub(crate) prefix: String,
    /// The entity id to remove.
    pub(crate) id: Option<String>,
    /// Every entry of the prefix.
    #[arg(long)]
    pub(crate) all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The topic.
    pub(crate) topic: String,
    /// Start at each partition's first record instead of its end.
    #[arg(long)]
    pub(crate) from_beginning: bool,
    /// Keep reading new records (implied when starting from the end).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Only events of this type (records that do not decode are still shown).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only events of this entity id.
    #[arg(long, value_name = "ID")]
    pub(crate) entity: Option<String>,
    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    pub(crate) max: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// The dead letters of a topic (from TOPIC.dlq) and why each was
    /// dead-lettered.
    #[command(after_help = "Example:\n  mes dlq list mes.material.events --group work-order-service")]
    List {
        /// The topic the records failed in.
        topic: String,
        /// Only the letters of this consumer group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Publishes a group's dead letters back to their topic, through
    /// mes-sync's DeadLetterReplay (the group's seen marks of those events
    /// are removed, so it handles them again).
    #[command(
        after_help = "Example:\n  mes dlq replay mes.material.events --group work-order-service --reason 'connection refused' --dry-run"
    )]
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The topic the records failed in.
    pub(crate) topic: String,
    /// The consumer group whose letters are replayed (its state is in the
    /// Redis of --redis-url / REDIS_URL).
    #[arg(long)]
    pub(crate) group: String,
    /// Only letters whose reason contains this text.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    /// Only events of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only events of this entity id.
    #[arg(long, value_name = "ID")]
    pub(crate) entity: Option<String>,
    /// Show what would be replayed; publish and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `5s`, `500ms`, `2m`, or whole seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 5s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
