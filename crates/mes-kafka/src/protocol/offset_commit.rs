//! `OffsetCommit` (API key 8), versions 2-7: a group member commits the
//! offsets it has consumed up to.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// The offset to commit for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// The partition.
    pub partition_index: i32,
    /// The offset of the next record to consume.
    pub committed_offset: i64,
    /// The leader epoch of the last consumed record, -1 if unknown;
    /// written from v6 on.
    pub committed_leader_epoch: i32,
    /// Metadata to keep with the offset.
    pub committed_metadata: Option<String>,
}

impl Default for OffsetCommitPartition {
    fn default() -> Self {
        Self {
            partition_index: 0,
            committed_offset: 0,
            committed_leader_epoch: -1,
            committed_metadata: None,
        }
    }
}

/// The offsets to commit in one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    /// The topic.
    pub name: String,
    /// Its partitions' offsets.
    pub partitions: Vec<OffsetCommitPartition>,
}

/// Offsets a group member commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined (-1 to commit outside a group
    /// generation, as a simple consumer).
    pub generation_id: i32,
    /// The member's id (empty outside a group generation).
    pub member_id: String,
    /// How long the broker keeps the offsets, in milliseconds, -1 for its
    /// `offsets.retention.minutes`; written in v2-4 only.
    pub retention_time_ms: i64,
    /// The static member id (`group.instance.id`); written in v7 only.
    pub group_instance_id: Option<String>,
    /// The offsets, topic by topic.
    pub topics: Vec<OffsetCommitTopic>,
}

impl Default for OffsetCommitRequest {
    fn default() -> Self {
        Self {
            group_id: String::new(),
            generation_id: -1,
            member_id: String::new(),
            retention_time_ms: -1,
            group_instance_id: None,
            topics: Vec::new(),
        }
    }
}

/// The result of one partition's commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitPartitionResponse {
    /// The partition.
    pub partition_index: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
}

/// The results in one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitTopicResponse {
    /// The topic.
    pub name: String,
    /// Its partitions' results.
    pub partitions: Vec<OffsetCommitPartitionResponse>,
}

/// The coordinator's answer to a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// How long the request was throttled for a quota, in milliseconds
    /// (v3+; 0 before).
    pub throttle_time_ms: i32,
    /// The results, topic by topic.
    pub topics: Vec<OffsetCommitTopicResponse>,
}

impl Request for OffsetCommitRequest {
    const API_KEY: i16 = 8;
    const NAME: &'static str = "OffsetCommit";
    const VERSIONS: RangeInclusive<i16> = 2..=7;
    type Response = OffsetCommitResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        buf.put_i32(self.generation_id);
        buf.put_str(&self.member_id);
        if version >= 7 {
            buf.put_nullable_str(self.group_instance_id.as_deref());
        }
        if version <= 4 {
            buf.put_i64(self.retention_time_ms);
        }
        buf.put_len(self.topics.len());
        for topic in &self.topics {
            buf.put_str(&topic.name);
            buf.put_len(topic.partitions.len());
            for partition in &topic.partitions {
                buf.put_i32(partition.partition_index);
                buf.put_i64(partition.committed_offset);
                if version >= 6 {
                    buf.put_i32(partition.committed_leader_epoch);
                }
                buf.put_nullable_str(partition.committed_metadata.as_deref());
            }
        }
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        if !Self::VERSIONS.contains(&version) {
            return Err(DecodeError::new(format!(
                "{} v{version} is not spoken",
                Self::NAME
            )));
        }
        let mut r = Reader::new(body);
        let throttle_time_ms = if version >= 3 { r.i32()? } else { 0 };
        let count = r.array_len(6)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string()?;
            let n = r.array_len(6)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push(OffsetCommitPartitionResponse {
                    partition_index: r.i32()?,
                    error_code: r.i16()?,
                });
            }
            topics.push(OffsetCommitTopicResponse { name, partitions });
        }
        Ok(OffsetCommitResponse {
            throttle_time_ms,
            topics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: 3,
            member_id: "m".into(),
            retention_time_ms: -1,
            group_instance_id: Some("i".into()),
            topics: vec![OffsetCommitTopic {
                name: "t".into(),
                partitions: vec![
                    OffsetCommitPartition {
                        partition_index: 1,
                        committed_offset: 42,
                        committed_leader_epoch: 5,
                        committed_metadata: None,
                    },
                    OffsetCommitPartition {
                        partition_index: 2,
                        committed_offset: 7,
                        committed_leader_epoch: -1,
                        committed_metadata: Some("x".into()),
                    },
                ],
            }],
        }
    }

    #[test]
    fn request_is_written_field_by_field_in_every_version() {
        for version in OffsetCommitRequest::VERSIONS {
            let mut buf = Vec::new();
            request().encode(version, &mut buf);
            let mut want = vec![0, 1, b'g', 0, 0, 0, 3, 0, 1, b'm'];
            if version >= 7 {
                want.extend([0, 1, b'i']);
            }
            if version <= 4 {
                want.extend((-1_i64).to_be_bytes());
            }
            want.extend([0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2]);
            want.extend([0, 0, 0, 1]);
            want.extend(42_i64.to_be_bytes());
            if version >= 6 {
                want.extend([0, 0, 0, 5]);
            }
            want.extend([0xff, 0xff]);
            want.extend([0, 0, 0, 2]);
            want.extend(7_i64.to_be_bytes());
            if version >= 6 {
                want.extend([0xff; 4]);
            }
            want.extend([0, 1, b'x']);
            assert_eq!(buf, want, "v{version}");
        }
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        if version >= 3 {
            buf.put_i32(10);
        }
        buf.put_len(2);
        buf.put_str("t");
        buf.put_len(2);
        buf.put_i32(0);
        buf.put_i16(0);
        buf.put_i32(1);
        buf.put_i16(22);
        buf.put_str("u");
        buf.put_len(0);
        buf
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        for version in OffsetCommitRequest::VERSIONS {
            let bytes = answer(version);
            assert_eq!(
                OffsetCommitRequest::decode_response(version, &bytes).unwrap(),
                OffsetCommitResponse {
                    throttle_time_ms: if version >= 3 { 10 } else { 0 },
                    topics: vec![
                        OffsetCommitTopicResponse {
                            name: "t".into(),
                            partitions: vec![
                                OffsetCommitPartitionResponse {
                                    partition_index: 0,
                                    error_code: 0
                                },
                                OffsetCommitPartitionResponse {
                                    partition_index: 1,
                                    error_code: 22
                                },
                            ],
                        },
                        OffsetCommitTopicResponse {
                            name: "u".into(),
                            partitions: vec![]
                        },
                    ],
                },
                "v{version}"
            );
            for n in 0..bytes.len() {
                assert!(
                    OffsetCommitRequest::decode_response(version, &bytes[..n]).is_err(),
                    "v{version} {n}"
                );
            }
        }
        assert!(OffsetCommitRequest::decode_response(1, &answer(1)).is_err());
        assert!(OffsetCommitRequest::decode_response(8, &answer(8)).is_err());
    }
}
