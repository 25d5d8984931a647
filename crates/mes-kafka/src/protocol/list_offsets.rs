//! `ListOffsets` (API key 2), versions 1 to 5: a partition's earliest or
//! latest offset, or the first offset at or after a timestamp.
//!
//! Version 1 answers one offset per partition, 2 adds the isolation level
//! and the throttle time, 4 the leader epochs; 3 and 5 only change how the
//! broker behaves. All are answered by every Kafka since 1.0 (4.0
//! included) and none is flexible.

use super::Request;
use super::fetch::IsolationLevel;
use super::primitives::{DecodeError, Reader, Writer};

/// The timestamp that asks for a partition's earliest offset (its log start).
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// The timestamp that asks for a partition's latest offset (the high
/// watermark, or the last stable offset when reading committed).
pub const LATEST_TIMESTAMP: i64 = -1;

/// A `ListOffsets` request, from a consumer (replica id -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// Which latest offset is meant (v2+; v1 always reads uncommitted).
    pub isolation_level: IsolationLevel,
    /// The partitions asked about, by topic.
    pub topics: Vec<ListOffsetsTopic>,
}

/// The partitions of one topic asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    /// The topic's name.
    pub name: String,
    /// Its partitions asked about.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// One partition asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// The partition's index.
    pub partition_index: i32,
    /// The leader epoch the asker knows (v4+), for fencing; -1 for none.
    pub current_leader_epoch: i32,
    /// [`EARLIEST_TIMESTAMP`], [`LATEST_TIMESTAMP`], or milliseconds since
    /// the epoch for the first offset at or after that time.
    pub timestamp: i64,
}

impl ListOffsetsPartition {
    /// Asks for `partition_index`'s offset at `timestamp`, knowing no
    /// leader epoch.
    pub fn new(partition_index: i32, timestamp: i64) -> Self {
        Self {
            partition_index,
            current_leader_epoch: -1,
            timestamp,
        }
    }
}

/// What a `ListOffsets` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// How long the broker throttled the request (v2+; 0 before).
    pub throttle_time_ms: i32,
    /// The answers, by topic.
    pub topics: Vec<ListOffsetsTopicResponse>,
}

/// The answers about one topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResponse {
    /// The topic's name.
    pub name: String,
    /// Its partitions' answers.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// The answer about one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// The partition's index.
    pub partition_index: i32,
    /// The error code, or 0.
    pub error_code: i16,
    /// The timestamp of the offset found, or -1.
    pub timestamp: i64,
    /// The offset found, or -1 (no record at or after the timestamp).
    pub offset: i64,
    /// The leader epoch of the offset found (v4+; -1 before or unknown).
    pub leader_epoch: i32,
}

impl Request for ListOffsetsRequest {
    const API_KEY: i16 = 2;
    const NAME: &'static str = "ListOffsets";
    const VERSIONS: std::ops::RangeInclusive<i16> = 1..=5;
    type Response = ListOffsetsResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_i32(-1); // replica id: a consumer
        if version >= 2 {
            buf.put_i8(self.isolation_level.id());
        }
        buf.put_len(self.topics.len());
        for topic in &self.topics {
            buf.put_str(&topic.name);
            buf.put_len(topic.partitions.len());
            for partition in &topic.partitions {
                buf.put_i32(partition.partition_index);
                if version >= 4 {
                    buf.put_i32(partition.current_leader_epoch);
                }
                buf.put_i64(partition.timestamp);
            }
        }
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<ListOffsetsResponse, DecodeError> {
        if !Self::VERSIONS.contains(&version) {
            return Err(DecodeError::new(format!("ListOffsets v{version} is not spoken")));
        }
        let in_answer = |e: DecodeError| DecodeError::new(format!("ListOffsets v{version} answer: {e}"));
        let mut r = Reader::new(body);
        let throttle_time_ms = if version >= 2 {
            r.i32().map_err(in_answer)?
        } else {
            0
        };
        let partition_bytes = 4 + 2 + 8 + 8 + if version >= 4 { 4 } else { 0 };
        let count = r.array_len(2 + 4).map_err(in_answer)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string().map_err(in_answer)?;
            let count = r.array_len(partition_bytes).map_err(in_answer)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push(ListOffsetsPartitionResponse {
                    partition_index: r.i32().map_err(in_answer)?,
                    error_code: r.i16().map_err(in_answer)?,
                    timestamp: r.i64().map_err(in_answer)?,
                    offset: r.i64().map_err(in_answer)?,
                    leader_epoch: if version >= 4 {
                        r.i32().map_err(in_answer)?
                    } else {
                        -1
                    },
                });
            }
            topics.push(ListOffsetsTopicResponse { name, partitions });
        }
        Ok(ListOffsetsResponse {
            throttle_time_ms,
            topics,
        })
    }
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

    #[test]
    fn the_request_is_laid_out_per_version() {
        let request = ListOffsetsRequest {
            isolation_level: IsolationLevel::ReadCommitted,
            topics: vec![ListOffsetsTopic {
                name: "t".to_owned(),
                partitions: vec![
                    ListOffsetsPartition::new(0, EARLIEST_TIMESTAMP),
                    ListOffsetsPartition {
                        partition_index: 1,
                        current_leader_epoch: 9,
                        timestamp: LATEST_TIMESTAMP,
                    },
                ],
            }],
        };
        for version in ListOffsetsRequest::VERSIONS {
            let mut buf = Vec::new();
            request.encode(version, &mut buf);
            let mut r = Reader::new(&buf);
            assert_eq!(r.i32().unwrap(), -1);
            if version >= 2 {
                assert_eq!(r.i8().unwrap(), 1);
            }
            assert_eq!(r.array_len(1).unwrap(), 1);
            assert_eq!(r.str().unwrap(), "t");
            assert_eq!(r.array_len(1).unwrap(), 2);
            for (index, epoch, timestamp) in [(0, -1, -2), (1, 9, -1)] {
                assert_eq!(r.i32().unwrap(), index);
                if version >= 4 {
                    assert_eq!(r.i32().unwrap(), epoch);
                }
                assert_eq!(r.i64().unwrap(), timestamp);
            }
            assert!(r.is_empty(), "v{version}");
        }
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        if version >= 2 {
            buf.put_i32(25);
        }
        buf.put_len(1);
        buf.put_str("t");
        buf.put_len(2);
        for (index, error, timestamp, offset) in [(0, 0_i16, -1_i64, 42_i64), (1, 3, -1, -1)] {
            buf.put_i32(index);
            buf.put_i16(error);
            buf.put_i64(timestamp);
            buf.put_i64(offset);
            if version >= 4 {
                buf.put_i32(7);
            }
        }
        buf
    }

    #[test]
    fn the_answer_is_read_per_version() {
        for version in ListOffsetsRequest::VERSIONS {
            let bytes = answer(version);
            let response = ListOffsetsRequest::decode_response(version, &bytes).unwrap();
            let epoch = if version >= 4 { 7 } else { -1 };
            assert_eq!(
                response,
                ListOffsetsResponse {
                    throttle_time_ms: if version >= 2 { 25 } else { 0 },
                    topics: vec![ListOffsetsTopicResponse {
                        name: "t".to_owned(),
                        partitions: vec![
                            ListOffsetsPartitionResponse {
                                partition_index: 0,
                                error_code: 0,
                                timestamp: -1,
                                offset: 42,
                                leader_epoch: epoch,
                            },
                            ListOffsetsPartitionResponse {
                                partition_index: 1,
                                error_code: 3,
                                timestamp: -1,
                                offset: -1,
                                leader_epoch: epoch,
                            },
                        ],
                    }],
                }
            );
            for end in 0..bytes.len() {
                assert!(
                    ListOffsetsRequest::decode_response(version, &bytes[..end]).is_err(),
                    "v{version} {end}"
                );
            }
        }
        assert!(ListOffsetsRequest::decode_response(0, &answer(1)).is_err());
        assert!(ListOffsetsRequest::decode_response(6, &answer(5)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_answers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), version in 1_i16..=5) {
            let _ = ListOffsetsRequest::decode_response(version, &bytes);
        }
    }
}
