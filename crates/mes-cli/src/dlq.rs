//! `mes dlq`: what the consumers dead-lettered, and replaying it.

use mes_events_types::EventType;
use mes_sync::{ConsumerConfig, DeadLetter, DeadLetterReplay, UnreadableDeadLetter, read_dead_letters};
use serde_json::{Value, json};

use crate::cli::{DlqCommand, Global, ReplayArgs};
use crate::connect;
use crate::error::Error;
use crate::output::{Output, table, time_text};
use crate::topics;

pub(crate) async fn run(command: &DlqCommand, global: &Global, out: &Output) -> Result<(), Error> {
    match command {
        DlqCommand::List { topic, group } => list(topic, group.as_deref(), global, out).await,
        DlqCommand::Replay(args) => replay(args, global, out).await,
    }
}

async fn list(topic: &str, group: Option<&str>, global: &Global, out: &Output) -> Result<(), Error> {
    let client = connect::kafka(global).await?;
    // The topic itself must exist: a typo is no "nothing dead-lettered".
    topics::partitions(&client, topic).await?;
    let mut letters: Vec<Result<DeadLetter, UnreadableDeadLetter>> = Vec::new();
    let found = read_dead_letters(&client, topic, |letter| {
        let ours = match &letter {
            Ok(letter) => group.is_none_or(|group| letter.group.as_deref() == Some(group)),
            // Whose it is cannot be read: shown whatever the filter.
            Err(_) => true,
        };
        if ours {
            letters.push(letter);
        }
    })
    .await
    .map_err(|source| Error::DeadLetters {
        topic: topic.to_owned(),
        source,
    })?;
    let listed: Vec<Value> = letters.iter().map(letter_json).collect();
    let value = json!({
        "topic": topic,
        "dead_letter_topic": found.map(|_| format!("{topic}.dlq")),
        "letters": listed,
    });
    out.result(&value, || {
        if found.is_none() {
            return vec![format!("no dead letters: {topic}.dlq does not exist")];
        }
        if letters.is_empty() {
            return vec![format!("no dead letters in {topic}.dlq")];
        }
        let rows: Vec<Vec<String>> = letters.iter().map(letter_row).collect();
        table(
            &[
                "DLQ OFFSET",
                "DEAD-LETTERED AT",
                "GROUP",
                "SOURCE",
                "ATTEMPTS",
                "EVENT",
                "REASON",
            ],
            &rows,
        )
    })
}

fn letter_json(letter: &Result<DeadLetter, UnreadableDeadLetter>) -> Value {
    match letter {
        Ok(letter) => {
            let event = mes_events_types::decode(&letter.record).ok();
            json!({
                "partition": letter.dead_letter.partition,
                "offset": letter.dead_letter_offset,
                "dead_lettered_at_ms": letter.dead_lettered_at_ms,
                "group": letter.group,
                "reason": letter.reason,
                "attempts": letter.attempts,
                "source_partition": letter.source_partition,
                "source_offset": letter.source_offset,
                "event_id": event.as_ref().map(|e| e.id().to_string()),
                "event_type": event.as_ref().map(|e| e.event_type().to_string()),
                "entity_id": event.as_ref().and_then(|e| e.entity_id().map(str::to_owned)),
            })
        }
        Err(unreadable) => json!({
            "partition": unreadable.dead_letter.partition,
            "offset": unreadable.first_offset,
            "last_offset": unreadable.last_offset,
            "error": format!("unreadable: {}", unreadable.error),
        }),
    }
}

fn letter_row(letter: &Result<DeadLetter, UnreadableDeadLetter>) -> Vec<String> {
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    match letter {
        Ok(letter) => {
            let event = mes_events_types::decode(&letter.record)
                .ok()
                .map(|e| format!("{} {}", e.event_type(), e.entity_id().unwrap_or("-")));
            vec![
                format!("{}/{}", letter.dead_letter.partition, letter.dead_letter_offset),
                time_text(letter.dead_lettered_at_ms),
                or_dash(letter.group.clone()),
                format!(
                    "{}/{}",
                    or_dash(letter.source_partition.map(|p| p.to_string())),
                    or_dash(letter.source_offset.map(|o| o.to_string()))
                ),
                or_dash(letter.attempts.map(|a| a.to_string())),
                event.unwrap_or_else(|| "(not an event)".to_owned()),
                or_dash(letter.reason.clone()),
            ]
        }
        Err(unreadable) => vec![
            format!(
                "{}/{}-{}",
                unreadable.dead_letter.partition, unreadable.first_offset, unreadable.last_offset
            ),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "(unreadable)".to_owned(),
            unreadable.error.clone(),
        ],
    }
}

async fn replay(args: &ReplayArgs, global: &Global, out: &Output) -> Result<(), Error> {
    let kafka = connect::kafka_config(global)?;
    // The topic must exist (and the brokers answer) before anything else.
    let client = connect::kafka(global).await?;
    topics::partitions(&client, &args.topic).await?;
    let config = ConsumerConfig::new(args.group.clone(), kafka, connect::state_redis_url(global));
    let mut replay = DeadLetterReplay::new(config, args.topic.clone()).dry_run(args.dry_run);
    if let Some(reason) = &args.reason {
        replay = replay.reason_contains(reason.clone());
    }
    if let Some(event_type) = &args.event_type {
        let parsed =
            EventType::parse(event_type).map_err(|e| Error::Usage(format!("--type {event_type:?}: {e}")))?;
        replay = replay.event_type(parsed);
    }
    if let Some(entity) = &args.entity {
        replay = replay.entity_id(entity.clone());
    }
    let report = replay.run().await.map_err(|source| Error::DeadLetters {
        topic: args.topic.clone(),
        source,
    })?;
    let replayed: Vec<Value> = report
        .replayed
        .iter()
        .map(|letter| {
            json!({
                "event_id": letter.event_id,
                "source_partition": letter.source.partition,
                "source_offset": letter.source_offset,
                "reason": letter.reason,
                "dead_letter_partition": letter.dead_letter.partition,
                "dead_letter_offset": letter.dead_letter_offset,
            })
        })
        .collect();
    let value = json!({
        "topic": args.topic,
        "group": args.group,
        "dry_run": report.dry_run,
        "examined": report.examined,
        "replayed": replayed,
        "unreplayable": report.unreplayable,
    });
    out.result(&value, || {
        let verb = if report.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        let mut lines = vec![format!(
            "{verb} {} of {} dead letters of {} (group {}){}",
            report.replayed.len(),
            report.examined,
            args.topic,
            args.group,
            if report.unreplayable > 0 {
                format!(
                    "; {} matching ones have no record left to replay",
                    report.unreplayable
                )
            } else {
                String::new()
            }
        )];
        for letter in &report.replayed {
            lines.push(format!(
                "  {}/{} from {}/{} event {}: {}",
                letter.dead_letter.topic,
                letter.dead_letter_offset,
                letter.source.topic,
                letter.source_offset,
                letter.event_id.as_deref().unwrap_or("(not an event)"),
                letter.reason
            ));
        }
        lines
    })
}
