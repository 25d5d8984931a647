//! Dead-letter replay: put chosen records of `{topic}.dlq` back on their
//! topic, once whatever made them fail is fixed.

use std::time::{SystemTime, UNIX_EPOCH};

use mes_events_types::{EventType, KafkaRecord, decode};
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
    fn matches(&self, letter: &KafkaRecord, timestamp_ms: i64) -> bool {
        let header = |name: &str| letter.header(name).map(String::from_utf8_lossy);
        if header("mes-dlq-group").as_deref() != Some(self.config.group_id.as_str()) {
            return false;
        }
        if let Some(text) = &self.reason_contains
            && !header("mes-dlq-reason").is_some_and(|reason| reason.contains(text.as_str()))
        {
            return false;
        }
        if self.dead_lettered_from_ms.is_some_and(|from| timestamp_ms < from)
            || self
                .dead_lettered_until_ms
                .is_some_and(|until| timestamp_ms >= until)
        {
            return false;
        }
        if self.event_type.is_none() && self.entity_id.is_none() {
            return true;
        }
        let Ok(event) = decode(&original(letter)) else {
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
        let dead_letters = format!("{}.dlq", self.topic);
        let client = KafkaClient::connect(self.config.kafka.clone())
            .await
            .map_err(kafka_error("connect"))?;
        let mut report = ReplayReport {
            dry_run: self.dry_run,
            ..ReplayReport::default()
        };
        let partitions = match client.topic(&dead_letters).await {
            Ok(metadata) => metadata
                .partitions
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            Err(KafkaError::UnknownTopic { .. }) => return Ok(report),
            Err(e) => return Err(kafka_error("read the dead-letter topic's metadata")(e)),
        };
        let mut chosen = Vec::new();
        for partition in partitions {
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
                    // A dead letter we cannot read is not ours to replay.
                    let Ok(record) = record else { continue };
                    if record.offset >= end {
                        break;
                    }
                    report.examined += 1;
                    let at = record.offset;
                    let timestamp_ms = record.timestamp_ms;
                    let letter = KafkaRecord {
                        key: record.key,
                        headers: headers(record.headers),
                        value: record.value,
                    };
                    if self.matches(&letter, timestamp_ms) {
                        chosen.push((partition, at, letter));
                    }
                }
                offset = offset.max(fetched.next_offset);
            }
        }

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
        for (partition, at, letter) in chosen {
            if letter.value.is_none() {
                report.unreplayable += 1;
                continue;
            }
            let header = |name: &str| {
                letter
                    .header(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            let replayed = ReplayedLetter {
                event_id: decode(&original(&letter)).ok().map(|e| e.id().to_string()),
                source: TopicPartition {
                    topic: self.topic.clone(),
                    partition: header("mes-dlq-source-partition").parse().unwrap_or(-1),
                },
                source_offset: header("mes-dlq-source-offset").parse().unwrap_or(-1),
                reason: header("mes-dlq-reason"),
                dead_letter: TopicPartition {
                    topic: dead_letters.clone(),
                    partition,
                },
                dead_letter_offset: at,
            };
            if let (Some(state), Some(publisher)) = (&state, &publisher) {
                if let Some(id) = &replayed.event_id {
                    state.unmark(id).await?;
                }
                publisher
                    .publish_record(&self.topic, original(&letter))
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
