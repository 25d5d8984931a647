//! Dead-letter replay: put chosen records of `{topic}.dlq` back on their
//! topic, once whatever made them fail is fixed.

use std::time::{SystemTime, UNIX_EPOCH};

use mes_events_types::{EventType, KafkaRecord, decode};
use mes_kafka::protocol::record_batch::Record;
use mes_kafka::{Error as KafkaError, KafkaClient, OffsetSpec, PartitionFetcher};
use mes_publisher::{EventPublisher, PublisherConfig};

use crate::config::ConsumerConfig;
use crate::error::{BoxError, Error};
use crate::state::{GroupState, TopicPartition};
use crate::worker::{DLQ_HEADER_PREFIX, headers};

/// A dead letter that was (or, in a dry run, would be) published again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayedLetter {
    /// The event's id; `None` when the record is not an event (it failed
    /// to decode): it is replayed as it was.
    pub event_id: Option<String>,
    /// Where the record was when it failed.
    pub source: TopicPartition,
    /// Its offset there.
    pub source_offset: i64,
    /// Why it was dead-lettered (`mes-dlq-reason`).
    pub reason: String,
    /// The dead letter's own position in `{topic}.dlq`.
    pub dead_letter: TopicPartition,
    /// Its offset there.
    pub dead_letter_offset: i64,
}

/// What a replay read and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Dead letters read from `{topic}.dlq` (of every group).
    pub examined: u64,
    /// Those that matched and were published again, in the order of the
    /// dead-letter topic's partitions and offsets.
    pub replayed: Vec<ReplayedLetter>,
    /// Matching letters with no value left to replay (a record batch that
    /// could not be read at all is dead-lettered as offsets only).
    pub unreplayable: u64,
    /// Whether this was a dry run: nothing was published or changed.
    pub dry_run: bool,
}

/// Publishes chosen dead letters of one topic again, to the topic they came
/// from, with their original key and headers, for the group of a
/// [`ConsumerConfig`].
///
/// Only the letters of that group (`mes-dlq-group`) are candidates; the
/// other conditions narrow them further. Dead-lettered event ids are marked
/// as seen, so a redelivery does not fail again; the replay removes the
/// group's marks of the ids it republishes on purpose, so the group handles
/// them once more. Groups that handled those events fine still have them
/// marked and skip the copies (within their de-duplication window).
///
/// ```no_run
/// # async fn run(config: mes_sync::ConsumerConfig) -> Result<(), mes_sync::Error> {
/// use mes_sync::DeadLetterReplay;
///
/// // What failed because the material service was down, first without
/// // publishing anything:
/// let replay = DeadLetterReplay::new(config, "mes.material.events").reason_contains("connection refused");
/// let planned = replay.clone().dry_run(true).run().await?;
/// println!("would replay {} of {}", planned.replayed.len(), planned.examined);
/// let done = replay.run().await?;
/// assert_eq!(done.replayed.len(), planned.replayed.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetterReplay {
    config: ConsumerConfig,
    topic: String,
    reason_contains: Option<String>,
    event_type: Option<EventType>,
    entity_id: Option<String>,
    dead_lettered_from_ms: Option<i64>,
    dead_lettered_until_ms: Option<i64>,
    dry_run: bool,
}

fn unix_ms(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn kafka_error(what: &str) -> impl FnOnce(KafkaError) -> Error + '_ {
    move |e| Error::Kafka {
        what: what.to_owned(),
        source: Box::new(e) as BoxError,
    }
}

impl DeadLetterReplay {
    /// Every dead letter of `config`'s group in `{topic}.dlq`.
    pub fn new(config: ConsumerConfig, topic: impl Into<String>) -> Self {
        Self {
            config,
            topic: topic.into(),
            reason_contains: None,
            event_type: None,
            entity_id: None,
            dead_lettered_from_ms: None,
            dead_lettered_until_ms: None,
            dry_run: false,
        }
    }

    /// Only letters whose reason contains `text`.
    #[must_use]
    pub fn reason_contains(mut self, text: impl Into<String>) -> Self {
        self.reason_contains = Some(text.into());
        self
    }

    /// Only events of this type.
    #[must_use]
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Only events of this entity.
    #[must_use]
    pub fn entity_id(mut self, entity_id: impl Into<String>) -> Self {
        self.entity_id = Some(entity_id.into());
        self
    }

    /// Only letters dead-lettered at or after `from` and before `until`.
    #[must_use]
    pub fn dead_lettered_between(mut self, from: SystemTime, until: SystemTime) -> Self {
        self.dead_lettered_from_ms = Some(unix_ms(from));
        self.dead_lettered_until_ms = Some(unix_ms(until));
        self
    }

    /// Reports what would be replayed, and publishes and changes nothing.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Whether a dead letter is one to replay.
    fn matches(&self, letter: &DeadLetter) -> bool {
        if letter.group.as_deref() != Some(self.config.group_id.as_str()) {
            return false;
        }
        if let Some(text) = &self.reason_contains
            && !letter
                .reason
                .as_deref()
                .is_some_and(|reason| reason.contains(text.as_str()))
        {
            return false;
        }
        let at = letter.dead_lettered_at_ms;
        if self.dead_lettered_from_ms.is_some_and(|from| at < from)
            || self.dead_lettered_until_ms.is_some_and(|until| at >= until)
        {
            return false;
        }
        if self.event_type.is_none() && self.entity_id.is_none() {
            return true;
        }
        let Ok(event) = decode(&letter.record) else {
            return false;
        };
        self.event_type.as_ref().is_none_or(|t| event.event_type() == t)
            && self
                .entity_id
                .as_deref()
                .is_none_or(|id| event.entity_id() == Some(id))
    }

    /// Reads the whole dead-letter topic as it is now, and republishes the
    /// matching letters (unless this is a dry run).
    pub async fn run(self) -> Result<ReplayReport, Error> {
        let client = KafkaClient::connect(self.config.kafka.clone())
            .await
            .map_err(kafka_error("connect"))?;
        let mut report = ReplayReport {
            dry_run: self.dry_run,
            ..ReplayReport::default()
        };
        let mut chosen = Vec::new();
        read_dead_letters(&client, &self.topic, |letter| {
            // A dead letter we cannot read is not ours to replay.
            let Ok(letter) = letter else { return };
            report.examined += 1;
            if self.matches(&letter) {
                chosen.push(letter);
            }
        })
        .await?;

        let state = if self.dry_run {
            None
        } else {
            Some(
                GroupState::connect(
                    &self.config.redis_url,
                    &self.config.group_id,
                    self.config.dedup_window,
                )
                .await?,
            )
        };
        let publisher = if self.dry_run {
            None
        } else {
            let config = PublisherConfig::with_kafka(self.config.kafka.clone());
            Some(EventPublisher::connect(config).await.map_err(Error::DeadLetter)?)
        };
        for letter in chosen {
            if letter.record.value.is_none() {
                report.unreplayable += 1;
                continue;
            }
            let replayed = ReplayedLetter {
                event_id: decode(&letter.record).ok().map(|e| e.id().to_string()),
                source: TopicPartition {
                    topic: self.topic.clone(),
                    partition: letter.source_partition.unwrap_or(-1),
                },
                source_offset: letter.source_offset.unwrap_or(-1),
                reason: letter.reason.clone().unwrap_or_default(),
                dead_letter: letter.dead_letter.clone(),
                dead_letter_offset: letter.dead_letter_offset,
            };
            if let (Some(state), Some(publisher)) = (&state, &publisher) {
                if let Some(id) = &replayed.event_id {
                    state.unmark(id).await?;
                }
                publisher
                    .publish_record(&self.topic, letter.record)
                    .await
                    .map_err(Error::DeadLetter)?;
            }
            report.replayed.push(replayed);
        }
        if let Some(publisher) = publisher {
            publisher.disconnect().await;
        }
        if let Some(state) = state {
            state.close().await;
        }
        Ok(report)
    }
}

/// One record of a dead-letter topic `{topic}.dlq`, as a consumer wrote it:
/// the record that failed, and why, from its `mes-dlq-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Where the dead letter is (`{topic}.dlq` and its partition).
    pub dead_letter: TopicPartition,
    /// Its offset there.
    pub dead_letter_offset: i64,
    /// When it was dead-lettered (the dead letter's timestamp, ms since the
    /// epoch).
    pub dead_lettered_at_ms: i64,
    /// The group whose handler gave up on it (`mes-dlq-group`).
    pub group: Option<String>,
    /// Why (`mes-dlq-reason`): the handler's error, or why the record could
    /// not be decoded or read.
    pub reason: Option<String>,
    /// Handler attempts made (`mes-dlq-attempts`; 0 for a record that was
    /// never handled: undecodable or unreadable).
    pub attempts: Option<u32>,
    /// The partition of the topic it failed in (`mes-dlq-source-partition`).
    pub source_partition: Option<i32>,
    /// Its offset there (`mes-dlq-source-offset`).
    pub source_offset: Option<i64>,
    /// The record as it was before it was dead-lettered: the `mes-dlq-*`
    /// headers removed, key, value and the other headers (order kept) as
    /// they were. No value: a record that could not be read at all, known
    /// by its offsets only.
    pub record: KafkaRecord,
}

/// A record of `{topic}.dlq` that cannot be read itself (a batch with a bad
/// checksum, say): its offsets and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableDeadLetter {
    /// Where it is.
    pub dead_letter: TopicPartition,
    /// The first offset concerned.
    pub first_offset: i64,
    /// The last offset concerned.
    pub last_offset: i64,
    /// What is wrong with it.
    pub error: String,
}

/// Reads every dead letter of `topic` (from `{topic}.dlq`, every partition,
/// from its start to its end as they are now) and hands each to `each`, in
/// partition and offset order; a record that cannot be read is handed over
/// as [`UnreadableDeadLetter`], never skipped. What [`DeadLetterReplay`]
/// reads, and what a tool lists.
///
/// Returns how many records it handed over, or `None` when `{topic}.dlq`
/// does not exist (nothing was ever dead-lettered from `topic`).
///
/// # Errors
/// [`Error::Kafka`] when the dead-letter topic cannot be read.
pub async fn read_dead_letters(
    client: &KafkaClient,
    topic: &str,
    mut each: impl FnMut(Result<DeadLetter, UnreadableDeadLetter>),
) -> Result<Option<u64>, Error> {
    let dead_letters = format!("{topic}.dlq");
    let partitions = match client.topic(&dead_letters).await {
        Ok(metadata) => metadata
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        Err(KafkaError::UnknownTopic { .. }) => return Ok(None),
        Err(e) => return Err(kafka_error("read the dead-letter topic's metadata")(e)),
    };
    let mut read = 0u64;
    for partition in partitions {
        let at = TopicPartition {
            topic: dead_letters.clone(),
            partition,
        };
        let end = client
            .list_offset(&dead_letters, partition, OffsetSpec::Latest)
            .await
            .map_err(kafka_error("read the dead-letter topic's end"))?;
        let mut offset = client
            .list_offset(&dead_letters, partition, OffsetSpec::Earliest)
            .await
            .map_err(kafka_error("read the dead-letter topic's start"))?;
        let mut fetcher = PartitionFetcher::new(client.clone(), &dead_letters, partition);
        while offset < end {
            let fetched = fetcher
                .fetch(offset)
                .await
                .map_err(kafka_error("read the dead-letter topic"))?;
            for record in fetched.records {
                let first = match &record {
                    Ok(record) => record.offset,
                    Err(unreadable) => unreadable.first_offset,
                };
                if first >= end {
                    break;
                }
                read += 1;
                each(match record {
                    Ok(record) => Ok(dead_letter(at.clone(), record)),
                    Err(unreadable) => Err(UnreadableDeadLetter {
                        dead_letter: at.clone(),
                        first_offset: unreadable.first_offset,
                        last_offset: unreadable.last_offset,
                        error: unreadable.error.to_string(),
                    }),
                });
            }
            offset = offset.max(fetched.next_offset);
        }
    }
    Ok(Some(read))
}

/// A dead letter from its record: the `mes-dlq-*` headers read and removed.
fn dead_letter(at: TopicPartition, record: Record) -> DeadLetter {
    let letter = KafkaRecord {
        key: record.key,
        headers: headers(record.headers),
        value: record.value,
    };
    let header = |name: &str| {
        letter
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    DeadLetter {
        dead_letter: at,
        dead_letter_offset: record.offset,
        dead_lettered_at_ms: record.timestamp_ms,
        group: header("mes-dlq-group"),
        reason: header("mes-dlq-reason"),
        attempts: header("mes-dlq-attempts").and_then(|v| v.parse().ok()),
        source_partition: header("mes-dlq-source-partition").and_then(|v| v.parse().ok()),
        source_offset: header("mes-dlq-source-offset").and_then(|v| v.parse().ok()),
        record: original(&letter),
    }
}

/// The record as it was before it was dead-lettered: the `mes-dlq-*`
/// headers removed, key, value and the other headers (order kept) as they
/// were.
fn original(letter: &KafkaRecord) -> KafkaRecord {
    KafkaRecord {
        key: letter.key.clone(),
        headers: letter
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with(DLQ_HEADER_PREFIX))
            .cloned()
            .collect(),
        value: letter.value.clone(),
    }
}
