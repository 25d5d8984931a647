//! The in-process test double: records what would have been published.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use mes_events_types::{DomainEvent, KafkaRecord, decode, partition_for_key};
use serde_json::Value;

use crate::{Error, Published};

/// One record the in-memory publisher accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRecord {
    /// Where it would have landed.
    pub published: Published,
    /// The record exactly as it would have been sent.
    pub record: KafkaRecord,
}

#[derive(Default)]
struct Log {
    records: Vec<RecordedRecord>,
    next_offsets: HashMap<(String, i32), i64>,
    disconnected: bool,
}

/// What an [`EventPublisher::in_memory`](crate::EventPublisher::in_memory)
/// publisher accepted, in publish order.
#[derive(Clone)]
pub struct RecordedEvents {
    log: Arc<Mutex<Log>>,
}

impl RecordedEvents {
    /// Every record, as sent.
    pub fn records(&self) -> Vec<RecordedRecord> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .clone()
    }

    /// Every event, decoded back from its record.
    pub fn events(&self) -> Vec<DomainEvent<Value>> {
        self.records()
            .iter()
            .filter_map(|r| decode(&r.record).ok())
            .collect()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .clear();
    }
}

pub(crate) struct MemoryBackend {
    log: Arc<Mutex<Log>>,
    partitions: NonZeroU32,
}

impl MemoryBackend {
    pub(crate) fn new(partitions: u32) -> (Self, RecordedEvents) {
        let log = Arc::new(Mutex::new(Log::default()));
        let backend = Self {
            log: Arc::clone(&log),
            partitions: NonZeroU32::new(partitions).unwrap_or(NonZeroU32::MIN),
        };
        (backend, RecordedEvents { log })
    }

    pub(crate) fn record(&self, topic: String, record: KafkaRecord) -> Result<Published, Error> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.disconnected {
            return Err(Error::Disconnected);
        }
        let key = record.key.as_deref().unwrap_or_default();
        let partition = i32::try_from(partition_for_key(key, self.partitions)).unwrap_or(i32::MAX);
        let next = log.next_offsets.entry((topic.clone(), partition)).or_insert(0);
        let offset = *next;
        *next += 1;
        let published = Published {
            topic,
            partition,
            offset,
        };
        log.records.push(RecordedRecord {
            published: published.clone(),
            record,
        });
        Ok(published)
    }

    pub(crate) fn disconnect(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .disconnected = true;
    }
}
