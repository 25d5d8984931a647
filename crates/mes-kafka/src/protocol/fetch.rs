//! `Fetch` (API key 1), versions 4 to 6: read records from partitions.
//!
//! Version 4 brought isolation levels and the last stable offset, 5 the log
//! start offset, 6 only a new error code; all three are answered by every
//! Kafka since 1.0 (4.0 included) and none is flexible. Later versions add
//! fetch sessions (7), leader epochs (9) and tagged fields (12), which a
//! consumer that fetches a few partitions does not need.
//!
//! Each partition's record set is kept as bytes ([`RecordSet`]): the
//! answer is copied once, the partitions share that copy, and the caller
//! walks the batches with [`RecordSet::batches`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};
use super::record_batch::{RecordBatches, read_record_batches};

/// Which records a fetch (or a `ListOffsets` of the latest offset) sees in a
/// partition with transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record, committed or not (0, the default).
    #[default]
    ReadUncommitted,
    /// Only up to the last stable offset, with the aborted transactions
    /// listed so the consumer can drop their records (1).
    ReadCommitted,
}

impl IsolationLevel {
    /// Its number on the wire.
    pub fn id(self) -> i8 {
        match self {
            Self::ReadUncommitted => 0,
            Self::ReadCommitted => 1,
        }
    }
}

/// A `Fetch` request, from a consumer (replica id -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// How long the broker may wait for `min_bytes` to gather.
    pub max_wait_ms: i32,
    /// How many bytes the broker waits for (at most `max_wait_ms`).
    pub min_bytes: i32,
    /// How many bytes the whole answer may carry (the first batch is sent
    /// whole even when larger, so a consumer always moves on).
    pub max_bytes: i32,
    /// Which records are seen.
    pub isolation_level: IsolationLevel,
    /// The partitions to fetch, by topic.
    pub topics: Vec<FetchTopic>,
}

/// The partitions of one topic to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    /// The topic's name.
    pub topic: String,
    /// Its partitions to fetch, in the order the broker serves them.
    pub partitions: Vec<FetchPartition>,
}

/// One partition to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition's index.
    pub partition: i32,
    /// The offset to fetch from.
    pub fetch_offset: i64,
    /// Only for followers (v5+); a consumer sends -1.
    pub log_start_offset: i64,
    /// How many bytes this partition may carry in the answer.
    pub partition_max_bytes: i32,
}

impl FetchPartition {
    /// A consumer's fetch of `partition` from `fetch_offset`, at most
    /// `partition_max_bytes`.
    pub fn new(partition: i32, fetch_offset: i64, partition_max_bytes: i32) -> Self {
        Self {
            partition,
            fetch_offset,
            log_start_offset: -1,
            partition_max_bytes,
        }
    }
}

/// What a `Fetch` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// How long the broker throttled the request, or 0.
    pub throttle_time_ms: i32,
    /// The answers, by topic.
    pub topics: Vec<FetchTopicResponse>,
}

/// The answers about one topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResponse {
    /// The topic's name.
    pub topic: String,
    /// Its partitions' answers.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// The answer about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// The partition's index.
    pub partition_index: i32,
    /// The error code, or 0.
    pub error_code: i16,
    /// The offset after the last committed (replicated) record.
    pub high_watermark: i64,
    /// The offset below which every transaction is decided, or -1.
    pub last_stable_offset: i64,
    /// The partition's first offset (v5+; -1 before).
    pub log_start_offset: i64,
    /// The aborted transactions in the fetched range (`ReadCommitted`);
    /// `None` when the broker sent null.
    pub aborted_transactions: Option<Vec<AbortedTransaction>>,
    /// The records; `None` when the broker sent null.
    pub records: Option<RecordSet>,
}

/// A transaction aborted in the fetched range: its producer's records from
/// `first_offset` on are to be dropped until its abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// The transaction's first offset.
    pub first_offset: i64,
}

/// The record set of one partition in a fetch answer: bytes shared with the
/// other partitions of the same answer (copied once from it), read with
/// [`RecordSet::batches`].
#[derive(Clone)]
pub struct RecordSet {
    answer: Arc<[u8]>,
    range: Range<usize>,
}

impl RecordSet {
    /// The record set's bytes: concatenated record batches, the last one
    /// possibly cut off.
    pub fn as_bytes(&self) -> &[u8] {
        self.answer.get(self.range.clone()).unwrap_or_default()
    }

    /// How many bytes it has.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether it has no bytes (no records at the fetch offset yet).
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Walks its batches ([`read_record_batches`]).
    pub fn batches(&self) -> RecordBatches<'_> {
        read_record_batches(self.as_bytes())
    }
}

impl AsRef<[u8]> for RecordSet {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for RecordSet {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RecordSet {}

impl fmt::Debug for RecordSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordSet({} bytes)", self.len())
    }
}

impl Request for FetchRequest {
    const API_KEY: i16 = 1;
    const NAME: &'static str = "Fetch";
    const VERSIONS: std::ops::RangeInclusive<i16> = 4..=6;
    type Response = FetchResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_i32(-1); // replica id: a consumer
        buf.put_i32(self.max_wait_ms);
        buf.put_i32(self.min_bytes);
        buf.put_i32(self.max_bytes);
        buf.put_i8(self.isolation_level.id());
        buf.put_len(self.topics.len());
        for topic in &self.topics {
            buf.put_str(&topic.topic);
            buf.put_len(topic.partitions.len());
            for partition in &topic.partitions {
                buf.put_i32(partition.partition);
                buf.put_i64(partition.fetch_offset);
                if version >= 5 {
                    buf.put_i64(partition.log_start_offset);
                }
                buf.put_i32(partition.partition_max_bytes);
            }
        }
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<FetchResponse, DecodeError> {
        if !Self::VERSIONS.contains(&version) {
            return Err(DecodeError::new(format!("Fetch v{version} is not spoken")));
        }
        let in_answer = |e: DecodeError| DecodeError::new(format!("Fetch v{version} answer: {e}"));
        // Copied once, at the first non-empty record set, and shared.
        let mut shared: Option<Arc<[u8]>> = None;
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32().map_err(in_answer)?;
        // A topic is at least a name length and a partition count; a
        // partition at least its fixed fields and two lengths.
        let partition_bytes = 4 + 2 + 8 + 8 + if version >= 5 { 8 } else { 0 } + 4 + 4;
        let count = r.array_len(2 + 4).map_err(in_answer)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let topic = r.string().map_err(in_answer)?;
            let count = r.array_len(partition_bytes).map_err(in_answer)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                let partition_index = r.i32().map_err(in_answer)?;
                let error_code = r.i16().map_err(in_answer)?;
                let high_watermark = r.i64().map_err(in_answer)?;
                let last_stable_offset = r.i64().map_err(in_answer)?;
                let log_start_offset = if version >= 5 {
                    r.i64().map_err(in_answer)?
                } else {
                    -1
                };
                let aborted_transactions = aborted(&mut r).map_err(in_answer)?;
                let len = r.i32().map_err(in_answer)?;
                let records = match usize::try_from(len) {
                    Err(_) => None,
                    Ok(0) => Some(RecordSet {
                        answer: Arc::from(&[][..]),
                        range: 0..0,
                    }),
                    Ok(len) => {
                        let start = body.len() - r.remaining();
                        r.take(len).map_err(in_answer)?;
                        let answer = shared.get_or_insert_with(|| Arc::from(body)).clone();
                        Some(RecordSet {
                            answer,
                            range: start..start + len,
                        })
                    }
                };
                partitions.push(FetchPartitionResponse {
                    partition_index,
                    error_code,
                    high_watermark,
                    last_stable_offset,
                    log_start_offset,
                    aborted_transactions,
                    records,
                });
            }
            topics.push(FetchTopicResponse { topic, partitions });
        }
        Ok(FetchResponse {
            throttle_time_ms,
            topics,
        })
    }
}

/// The nullable array of aborted transactions.
fn aborted(r: &mut Reader<'_>) -> Result<Option<Vec<AbortedTransaction>>, DecodeError> {
    let mut peek = *r;
    if peek.i32()? < 0 {
        *r = peek;
        return Ok(None);
    }
    let count = r.array_len(8 + 8)?;
    let mut aborted = Vec::with_capacity(count);
    for _ in 0..count {
        aborted.push(AbortedTransaction {
            producer_id: r.i64()?,
            first_offset: r.i64()?,
        });
    }
    Ok(Some(aborted))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::record_batch::{Compression, ProducerStamp, WireRecord, write_record_batch};

    fn request() -> FetchRequest {
        FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: IsolationLevel::ReadCommitted,
            topics: vec![FetchTopic {
                topic: "t".to_owned(),
                partitions: vec![FetchPartition::new(3, 42, 65_536)],
            }],
        }
    }

    #[test]
    fn the_request_is_laid_out_per_version() {
        for version in FetchRequest::VERSIONS {
            let mut buf = Vec::new();
            request().encode(version, &mut buf);
            let mut r = Reader::new(&buf);
            assert_eq!(r.i32().unwrap(), -1);
            assert_eq!(
                (r.i32().unwrap(), r.i32().unwrap(), r.i32().unwrap()),
                (500, 1, 1 << 20)
            );
            assert_eq!(r.i8().unwrap(), 1);
            assert_eq!(r.array_len(1).unwrap(), 1);
            assert_eq!(r.str().unwrap(), "t");
            assert_eq!(r.array_len(1).unwrap(), 1);
            assert_eq!((r.i32().unwrap(), r.i64().unwrap()), (3, 42));
            if version >= 5 {
                assert_eq!(r.i64().unwrap(), -1);
            }
            assert_eq!(r.i32().unwrap(), 65_536);
            assert!(r.is_empty(), "v{version}");
        }
    }

    struct Rec(&'static [u8]);

    impl WireRecord for Rec {
        fn key(&self) -> Option<&[u8]> {
            None
        }
        fn value(&self) -> Option<&[u8]> {
            Some(self.0)
        }
        fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
            std::iter::empty()
        }
        fn timestamp_ms(&self) -> i64 {
            7
        }
    }

    /// An answer about two partitions of one topic: the first with records
    /// and an aborted transaction, the second with null records and null
    /// aborted transactions.
    fn answer(version: i16, records: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_i32(15); // throttle
        buf.put_len(1);
        buf.put_str("t");
        buf.put_len(2);
        buf.put_i32(0);
        buf.put_i16(0);
        buf.put_i64(100);
        buf.put_i64(90);
        if version >= 5 {
            buf.put_i64(5);
        }
        buf.put_len(1);
        buf.put_i64(12);
        buf.put_i64(80);
        buf.put_bytes(records);
        buf.put_i32(1);
        buf.put_i16(6);
        buf.put_i64(-1);
        buf.put_i64(-1);
        if version >= 5 {
            buf.put_i64(-1);
        }
        buf.put_i32(-1);
        buf.put_i32(-1);
        buf
    }

    #[test]
    fn the_answer_is_read_per_version_with_its_record_sets() {
        let mut records = Vec::new();
        write_record_batch(&mut records, &[Rec(b"v")], Compression::None, ProducerStamp::NONE).unwrap();
        for version in FetchRequest::VERSIONS {
            let bytes = answer(version, &records);
            let response = FetchRequest::decode_response(version, &bytes).unwrap();
            assert_eq!(response.throttle_time_ms, 15);
            let [topic] = response.topics.as_slice() else {
                panic!("{response:?}")
            };
            assert_eq!(topic.topic, "t");
            let [first, second] = topic.partitions.as_slice() else {
                panic!("{topic:?}")
            };
            assert_eq!(
                (first.partition_index, first.error_code, first.high_watermark),
                (0, 0, 100)
            );
            assert_eq!(first.last_stable_offset, 90);
            assert_eq!(first.log_start_offset, if version >= 5 { 5 } else { -1 });
            assert_eq!(
                first.aborted_transactions,
                Some(vec![AbortedTransaction {
                    producer_id: 12,
                    first_offset: 80
                }])
            );
            let set = first.records.as_ref().unwrap();
            assert_eq!(set.as_bytes(), records);
            let batch = set.batches().next().unwrap().unwrap();
            assert_eq!(
                batch.records[0].as_ref().unwrap().value.as_deref(),
                Some(&b"v"[..])
            );
            assert_eq!((second.partition_index, second.error_code), (1, 6));
            assert_eq!(second.aborted_transactions, None);
            assert_eq!(second.records, None);

            // Every truncation is an error, never a panic.
            for end in 0..bytes.len() {
                assert!(
                    FetchRequest::decode_response(version, &bytes[..end]).is_err(),
                    "v{version} {end}"
                );
            }
        }
        assert!(FetchRequest::decode_response(7, &answer(6, &records)).is_err());
    }

    #[test]
    fn an_empty_record_set_is_empty_not_null() {
        let bytes = answer(6, &[]);
        let response = FetchRequest::decode_response(6, &bytes).unwrap();
        let set = response.topics[0].partitions[0].records.as_ref().unwrap();
        assert!(set.is_empty());
        let mut batches = set.batches();
        assert!(batches.next().is_none());
        assert!(!batches.is_partial());
    }

    #[test]
    fn huge_counts_are_errors_not_allocations() {
        let mut bytes = Vec::new();
        bytes.put_i32(0);
        bytes.put_i32(i32::MAX);
        assert!(FetchRequest::decode_response(4, &bytes).is_err());
        let mut bytes = answer(4, b"");
        // The aborted transactions count of the first partition.
        let at = 4 + 4 + 3 + 4 + 4 + 2 + 8 + 8;
        bytes[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(FetchRequest::decode_response(4, &bytes).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_answers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), version in 4_i16..=6) {
            let _ = FetchRequest::decode_response(version, &bytes);
        }

        #[test]
        fn mangled_answers_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            version in 4_i16..=6,
        ) {
            let mut bytes = answer(version, b"0123456789");
            for (at, byte) in &edits {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            if let Ok(response) = FetchRequest::decode_response(version, &bytes) {
                for topic in &response.topics {
                    for partition in &topic.partitions {
                        if let Some(set) = &partition.records {
                            prop_assert!(set.len() <= bytes.len());
                            for batch in set.batches() {
                                let _ = batch;
                            }
                        }
                    }
                }
            }
        }
    }
}
