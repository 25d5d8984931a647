//! `mes tail`: a topic's records as CloudEvents.

use std::time::Duration;

use mes_events_types::{ContentMode, DomainEvent, EncodeOptions, KafkaRecord, RecordFormat};
use mes_kafka::protocol::record_batch::{Record, RecordError};
use mes_kafka::{KafkaClient, PartitionFetcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cli::{Global, TailArgs};
use crate::connect;
use crate::error::Error;
use crate::output::{Output, shown_bytes, time_text};
use crate::topics;

/// Retriable fetch errors in a row (a leader moving, a broken connection)
/// before a partition gives up.
const FETCH_ATTEMPTS: u32 = 5;

/// What a partition's reader sends the printer.
enum Fetched {
    Entry(i32, Result<Record, RecordError>),
    Failed(Error),
}

pub(crate) async fn run(args: &TailArgs, global: &Global, out: &Output) -> Result<(), Error> {
    let client = connect::kafka(global).await?;
    let partitions = topics::partitions(&client, &args.topic).await?;
    // From the end there is nothing to print but what comes next.
    let follow = args.follow || !args.from_beginning;
    let (sender, mut received) = mpsc::channel(1024);
    let mut readers = JoinSet::new();
    for partition in partitions {
        let (start, end) = topics::bounds(&client, &args.topic, partition).await?;
        let from = if args.from_beginning { start } else { end };
        let until = (!follow).then_some(end);
        readers.spawn(read_partition(
            client.clone(),
            args.topic.clone(),
            partition,
            from,
            until,
            sender.clone(),
        ));
    }
    // The readers hold the only senders: the channel ends when they do.
    drop(sender);
    let mut printed = 0u64;
    while args.max.is_none_or(|max| printed < max) {
        let Some(fetched) = received.recv().await else {
            break;
        };
        match fetched {
            Fetched::Failed(error) => return Err(error),
            Fetched::Entry(partition, entry) => {
                if show(partition, entry, args, out)? {
                    printed += 1;
                }
            }
        }
    }
    readers.abort_all();
    Ok(())
}

/// Reads one partition from `from` (up to `until`, or on and on), handing
/// every record and every unreadable range to the printer in order.
async fn read_partition(
    client: KafkaClient,
    topic: String,
    partition: i32,
    from: i64,
    until: Option<i64>,
    sender: mpsc::Sender<Fetched>,
) {
    let mut fetcher = PartitionFetcher::new(client, &topic, partition).max_wait(Duration::from_millis(500));
    let mut offset = from;
    let mut failures = 0;
    while until.is_none_or(|end| offset < end) {
        let fetched = match fetcher.fetch(offset).await {
            Ok(fetched) => fetched,
            Err(error) if error.is_retriable() && failures + 1 < FETCH_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                continue;
            }
            Err(error) => {
                let what = format!("fetch {topic}/{partition} at offset {offset}");
                let _ = sender.send(Fetched::Failed(Error::kafka(what)(error))).await;
                return;
            }
        };
        failures = 0;
        for entry in fetched.records {
            let first = match &entry {
                Ok(record) => record.offset,
                Err(unreadable) => unreadable.first_offset,
            };
            if until.is_some_and(|end| first >= end) {
                return;
            }
            if sender.send(Fetched::Entry(partition, entry)).await.is_err() {
                return; // the printer has what it wanted
            }
        }
        offset = offset.max(fetched.next_offset);
    }
}

/// Prints one entry if it passes the filters (an entry that is no event
/// always does: it is never skipped). Whether it was printed.
fn show(
    partition: i32,
    entry: Result<Record, RecordError>,
    args: &TailArgs,
    out: &Output,
) -> Result<bool, Error> {
    let record = match entry {
        Ok(record) => record,
        Err(unreadable) => {
            let reason = format!("unreadable: {unreadable}");
            let value = json!({
                "partition": partition,
                "offset": unreadable.first_offset,
                "last_offset": unreadable.last_offset,
                "error": reason,
            });
            print(out, &value, || {
                format!(
                    "{partition}/{}-{} UNREADABLE {reason}",
                    unreadable.first_offset, unreadable.last_offset
                )
            })?;
            return Ok(true);
        }
    };
    match decode(&record) {
        Ok((format, event)) => {
            if args
                .event_type
                .as_deref()
                .is_some_and(|wanted| event.event_type().as_str() != wanted)
                || args
                    .entity
                    .as_deref()
                    .is_some_and(|wanted| event.entity_id() != Some(wanted))
            {
                return Ok(false);
            }
            let cloudevent = as_json(&event);
            let value = json!({
                "partition": partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "format": format_name(format),
                "event": cloudevent,
            });
            print(out, &value, || {
                format!(
                    "{partition}/{} {} {} {} entity={} id={} {}",
                    record.offset,
                    time_text(record.timestamp_ms),
                    format_name(format),
                    event.event_type(),
                    event.entity_id().unwrap_or("-"),
                    event.id(),
                    event.data()
                )
            })?;
        }
        Err(reason) => {
            let headers: Vec<Value> = record
                .headers
                .iter()
                .map(|(name, value)| json!([String::from_utf8_lossy(name), String::from_utf8_lossy(value)]))
                .collect();
            let value = json!({
                "partition": partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "error": reason,
                "key": record.key.as_deref().map(String::from_utf8_lossy),
                "value": record.value.as_deref().map(String::from_utf8_lossy),
                "headers": headers,
            });
            print(out, &value, || {
                format!(
                    "{partition}/{} {} UNDECODABLE {reason}; key={} value={}",
                    record.offset,
                    time_text(record.timestamp_ms),
                    record
                        .key
                        .as_deref()
                        .map_or_else(|| "(null)".to_owned(), |k| shown_bytes(k, 100)),
                    record
                        .value
                        .as_deref()
                        .map_or_else(|| "(null)".to_owned(), |v| shown_bytes(v, 300)),
                )
            })?;
        }
    }
    Ok(true)
}

fn print(out: &Output, value: &Value, text: impl FnOnce() -> String) -> Result<(), Error> {
    if out.json() {
        out.value(value)
    } else {
        out.line(text())
    }
}

/// The record as an event, and its format on the wire; else why it is none.
fn decode(record: &Record) -> Result<(RecordFormat, DomainEvent<Value>), String> {
    // As the consumer reads a record: a header name that is not UTF-8
    // cannot belong to an event.
    let mut headers = Vec::with_capacity(record.headers.len());
    for (name, value) in &record.headers {
        let name = String::from_utf8(name.clone())
            .map_err(|_| format!("header name {:?} is not UTF-8", String::from_utf8_lossy(name)))?;
        headers.push((name, value.clone()));
    }
    let record = KafkaRecord {
        key: record.key.clone(),
        headers,
        value: record.value.clone(),
    };
    let format = mes_events_types::detect_format(&record).map_err(|e| e.to_string())?;
    let event = mes_events_types::decode(&record).map_err(|e| e.to_string())?;
    Ok((format, event))
}

fn format_name(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Structured => "structured",
        RecordFormat::Binary => "binary",
        RecordFormat::Legacy => "legacy",
        _ => "other",
    }
}

/// The event as a structured-mode CloudEvent (the JSON `encode` writes).
fn as_json(event: &DomainEvent<Value>) -> Value {
    let options = EncodeOptions::default()
        .mode(ContentMode::Structured)
        .legacy_headers(false);
    mes_events_types::encode(event, &options)
        .ok()
        .and_then(|record| record.value)
        .and_then(|value| serde_json::from_slice(&value).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_utf8_header_name_is_no_event() {
        let mut record = Record::new(Some(b"k".to_vec()), Some(b"{}".to_vec()));
        record.headers.push((vec![0xff], b"x".to_vec()));
        assert!(decode(&record).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn an_event_is_shown_as_its_structured_cloudevent() {
        let event = DomainEvent::new_raw(
            mes_events_types::EventType::parse("material.part.updated").unwrap(),
            "test",
            json!({"partNumber": "P-1"}),
        )
        .with_entity_id("P-1");
        let shown = as_json(&event);
        assert_eq!(shown["type"], "material.part.updated");
        assert_eq!(shown["entityid"], "P-1");
        assert_eq!(shown["data"], json!({"partNumber": "P-1"}));
    }
}
