//! One partition: fetch in offset order, de-duplicate, handle with retries,
//! dead-letter what cannot be handled, commit, under the partition's lease.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mes_events_types::{KafkaRecord, decode};
use mes_kafka::protocol::record_batch::{Record, RecordError};
use mes_kafka::{ErrorCode, KafkaClient, OffsetSpec, PartitionFetcher};
use mes_publisher::EventPublisher;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::config::{ConsumerConfig, StartPosition};
use crate::handler::{AttemptError, Effects, Handlers};
use crate::state::{GroupState, Lease, TopicPartition};
use crate::stats::{PartitionCounters, StatsRegistry};

/// Back-off of retried infrastructure calls (Redis, Kafka, dead letters).
const INFRA_BACKOFF: Duration = Duration::from_millis(200);
const INFRA_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) struct PartitionWorker {
    pub(crate) tp: TopicPartition,
    pub(crate) lease: Lease,
    /// The cluster client; the worker fetches on its own, so a slow broker
    /// never holds up the coordinator's lease renewals.
    pub(crate) client: KafkaClient,
    pub(crate) state: Arc<GroupState>,
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) dead_letters: EventPublisher,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) counters: Arc<PartitionCounters>,
    pub(crate) stats: StatsRegistry,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// Why a record's processing ended early.
enum Interrupted {
    /// Shutdown or hand-over was asked for; the record stays uncommitted.
    Stopped,
    /// A commit was refused: another instance holds the partition now.
    LeaseLost,
}

impl PartitionWorker {
    pub(crate) async fn run(mut self) {
        let span = info_span!("partition", topic = %self.tp.topic, partition = self.tp.partition);
        async {
            match self.consume().await {
                Interrupted::Stopped => {
                    self.state.release(&self.tp, &self.lease).await;
                    info!("stopped and released the partition");
                }
                Interrupted::LeaseLost => warn!("lease lost to another instance; stopped"),
            }
            self.counters.owned.store(false, Ordering::Relaxed);
            self.stats.changed();
        }
        .instrument(span)
        .await;
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn consume(&mut self) -> Interrupted {
        let mut fetcher = PartitionFetcher::new(self.client.clone(), &self.tp.topic, self.tp.partition)
            .max_wait(self.config.fetch_max_wait)
            .max_bytes(usize::try_from(self.config.fetch_max_bytes).unwrap_or(1024 * 1024));
        let Some(mut offset) = self.start_offset().await else {
            return Interrupted::Stopped;
        };
        self.counters.committed.store(offset, Ordering::Relaxed);
        // Owned from here: the lease is held and the position is known, so
        // anything published from now on will be read.
        self.counters.owned.store(true, Ordering::Relaxed);
        self.stats.changed();
        let mut backoff = INFRA_BACKOFF;
        while !self.stopping() {
            let fetched = tokio::select! {
                fetched = fetcher.fetch(offset) => fetched,
                _ = self.stop.changed() => return Interrupted::Stopped,
            };
            let fetched = match fetched {
                Ok(fetched) => {
                    backoff = INFRA_BACKOFF;
                    self.counters
                        .high_watermark
                        .store(fetched.high_watermark, Ordering::Relaxed);
                    self.stats.changed();
                    fetched
                }
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    // Retention removed what the group had not read yet.
                    let Some(earliest) = self.offset_at(OffsetSpec::Earliest).await else {
                        return Interrupted::Stopped;
                    };
                    warn!(
                        offset,
                        earliest, "committed offset is out of range; going on from the earliest"
                    );
                    offset = earliest;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    if !self.pause(&mut backoff).await {
                        return Interrupted::Stopped;
                    }
                    continue;
                }
            };
            if let Some(first) = fetched.records.first().map(starting_offset)
                && first > offset
            {
                // Kafka leaves gaps only for compaction and transaction
                // markers; anything else means records the broker skipped.
                warn!(requested = offset, first, "fetch skipped offsets");
            }
            let permits = Arc::clone(&self.permits);
            let Ok(_permit) = permits.acquire().await else {
                return Interrupted::Stopped;
            };
            for record in fetched.records {
                if self.stopping() {
                    return Interrupted::Stopped;
                }
                let processed = match record {
                    Ok(record) => {
                        let next = record.offset + 1;
                        self.process(record).await.map(|()| next)
                    }
                    Err(unreadable) => {
                        let next = unreadable.last_offset + 1;
                        self.unreadable(&unreadable).await.map(|()| next)
                    }
                };
                match processed {
                    Ok(next) => offset = next,
                    Err(interrupted) => return interrupted,
                }
                self.counters.committed.store(offset, Ordering::Relaxed);
                self.stats.changed();
            }
            // Past control batches and compacted-away offsets too.
            offset = offset.max(fetched.next_offset);
        }
        Interrupted::Stopped
    }

    /// Where to start: the committed offset, else the configured position.
    async fn start_offset(&mut self) -> Option<i64> {
        let mut backoff = INFRA_BACKOFF;
        loop {
            match self.state.committed(&self.tp).await {
                Ok(Some(offset)) => return Some(offset),
                Ok(None) => {
                    let at = match self.config.start {
                        StartPosition::Earliest => OffsetSpec::Earliest,
                        StartPosition::Latest => OffsetSpec::Latest,
                    };
                    return self.offset_at(at).await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the committed offset; retrying");
                    if !self.pause(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn offset_at(&mut self, at: OffsetSpec) -> Option<i64> {
        let mut backoff = INFRA_BACKOFF;
        loop {
            let listed = tokio::select! {
                listed = self.client.list_offset(&self.tp.topic, self.tp.partition, at) => listed,
                _ = self.stop.changed() => return None,
            };
            match listed {
                Ok(offset) => return Some(offset),
                Err(e) => {
                    warn!(error = %e, "cannot read the partition's offsets; retrying");
                    if !self.pause(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits a back-off (doubling it for next time), or less if asked to
    /// stop; `false` when stopping.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(INFRA_BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => !self.stopping(),
            _ = self.stop.changed() => false,
        }
    }

    /// Offsets whose records cannot be read at all (a batch with a bad
    /// checksum, a record whose framing is broken): a dead letter saying so,
    /// with the offsets, then the partition moves on.
    async fn unreadable(&mut self, unreadable: &RecordError) -> Result<(), Interrupted> {
        warn!(
            first = unreadable.first_offset,
            last = unreadable.last_offset,
            error = %unreadable.error,
            "unreadable records; dead-lettering what is known of them"
        );
        let letter = KafkaRecord {
            key: None,
            headers: vec![(
                "mes-dlq-source-last-offset".to_owned(),
                unreadable.last_offset.to_string().into_bytes(),
            )],
            value: None,
        };
        self.dead_letter(
            &letter,
            unreadable.first_offset,
            &format!("unreadable: {unreadable}"),
            0,
        )
        .await?;
        self.commit(unreadable.last_offset + 1, None, &Effects::none())
            .await
    }

    async fn process(&mut self, record: Record) -> Result<(), Interrupted> {
        let offset = record.offset;
        let (kafka_record, bad_header) = kafka_record(record);
        if let Some(bad_header) = bad_header {
            warn!(offset, "a header name is not UTF-8; dead-lettering the record");
            let reason = format!("undecodable: header name {bad_header:?} is not UTF-8");
            self.dead_letter(&kafka_record, offset, &reason, 0).await?;
            return self.commit(offset + 1, None, &Effects::none()).await;
        }
        let event = match decode(&kafka_record) {
            Ok(event) => event,
            Err(e) => {
                warn!(offset, error = %e, "undecodable record; dead-lettering it");
                self.dead_letter(&kafka_record, offset, &format!("undecodable: {e}"), 0)
                    .await?;
                return self.commit(offset + 1, None, &Effects::none()).await;
            }
        };
        let span = info_span!(
            "event",
            offset,
            event_id = %event.id(),
            event_type = %event.event_type(),
            correlation_id = event.correlation_id(),
        );
        let id = event.id().as_str().to_owned();
        async {
            if self
                .retry_state(|state| {
                    let id = id.clone();
                    async move { state.seen(&id).await }
                })
                .await?
            {
                PartitionCounters::add(&self.counters.duplicates);
                return self.commit(offset + 1, None, &Effects::none()).await;
            }
            let plan = match self.handlers.plan(&event) {
                Ok(Some(plan)) => plan,
                Ok(None) => {
                    PartitionCounters::add(&self.counters.ignored);
                    return self.commit(offset + 1, None, &Effects::none()).await;
                }
                Err(reason) => {
                    warn!(%reason, "dead-lettering the event");
                    self.dead_letter(&kafka_record, offset, &reason, 1).await?;
                    return self.commit(offset + 1, Some(&id), &Effects::none()).await;
                }
            };
            let max_attempts = self.config.retry.max_attempts;
            let mut attempt = 1;
            loop {
                let outcome = self.handlers.attempt(&plan, &event).await.map_err(|e| match e {
                    AttemptError::Failed(e) => (e.to_string(), true),
                    AttemptError::Rejected(reason) => (reason, false),
                });
                match outcome {
                    Ok(effects) => {
                        PartitionCounters::add(&self.counters.handled);
                        return self.commit(offset + 1, Some(&id), &effects).await;
                    }
                    Err((reason, retryable)) if retryable && attempt < max_attempts => {
                        PartitionCounters::add(&self.counters.retried);
                        warn!(attempt, %reason, "handler failed; retrying");
                        attempt += 1;
                        let wait = self.config.retry.backoff_before(attempt);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = self.stop.changed() => return Err(Interrupted::Stopped),
                        }
                    }
                    Err((reason, _)) => {
                        warn!(attempt, %reason, "handler gave up; dead-lettering the event");
                        self.dead_letter(&kafka_record, offset, &reason, attempt).await?;
                        return self.commit(offset + 1, Some(&id), &Effects::none()).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Runs a state call until it succeeds (Redis may be down for a while);
    /// gives up only when asked to stop.
    async fn retry_state<T, F, Fut>(&mut self, call: F) -> Result<T, Interrupted>
    where
        F: Fn(Arc<GroupState>) -> Fut,
        Fut: Future<Output = Result<T, crate::Error>>,
    {
        let mut backoff = INFRA_BACKOFF;
        loop {
            match call(Arc::clone(&self.state)).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    warn!(error = %e, "consumer state unavailable; retrying");
                    if !self.pause(&mut backoff).await {
                        return Err(Interrupted::Stopped);
                    }
                }
            }
        }
    }

    async fn commit(
        &mut self,
        next: i64,
        event_id: Option<&str>,
        effects: &Effects,
    ) -> Result<(), Interrupted> {
        let (tp, lease) = (self.tp.clone(), self.lease.clone());
        let committed = self
            .retry_state(|state| {
                let (tp, lease) = (tp.clone(), lease.clone());
                async move { state.commit(&tp, &lease, next, event_id, effects).await }
            })
            .await?;
        if committed {
            Ok(())
        } else {
            Err(Interrupted::LeaseLost)
        }
    }

    /// Publishes the record to `{topic}.dlq` with why, and retries until the
    /// broker has it: a record is never dropped.
    async fn dead_letter(
        &mut self,
        record: &KafkaRecord,
        offset: i64,
        reason: &str,
        attempts: u32,
    ) -> Result<(), Interrupted> {
        let mut letter = record.clone();
        let headers = [
            ("mes-dlq-reason", reason.to_owned()),
            ("mes-dlq-attempts", attempts.to_string()),
            ("mes-dlq-group", self.config.group_id.clone()),
            ("mes-dlq-source-topic", self.tp.topic.clone()),
            ("mes-dlq-source-partition", self.tp.partition.to_string()),
            ("mes-dlq-source-offset", offset.to_string()),
        ];
        letter
            .headers
            .extend(headers.into_iter().map(|(k, v)| (k.to_owned(), v.into_bytes())));
        let topic = format!("{}.dlq", self.tp.topic);
        let mut backoff = INFRA_BACKOFF;
        loop {
            match self.dead_letters.publish_record(&topic, letter.clone()).await {
                Ok(_) => {
                    PartitionCounters::add(&self.counters.dead_lettered);
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, topic, "dead-letter topic unavailable; the partition waits");
                    if !self.pause(&mut backoff).await {
                        return Err(Interrupted::Stopped);
                    }
                }
            }
        }
    }
}

/// The first offset a fetched entry covers.
fn starting_offset(entry: &Result<Record, RecordError>) -> i64 {
    match entry {
        Ok(record) => record.offset,
        Err(unreadable) => unreadable.first_offset,
    }
}

/// The record as the event codec reads it, and the first header name that
/// is not UTF-8 (that record cannot be an event; its names are kept lossily
/// in the dead letter).
fn kafka_record(record: Record) -> (KafkaRecord, Option<String>) {
    let mut bad = None;
    let headers = record
        .headers
        .into_iter()
        .map(|(name, value)| {
            let name = String::from_utf8(name).unwrap_or_else(|e| {
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                bad.get_or_insert_with(|| lossy.clone());
                lossy
            });
            (name, value)
        })
        .collect();
    let record = KafkaRecord {
        key: record.key,
        headers,
        value: record.value,
    };
    (record, bad)
}
