//! `OffsetFetch` (API key 9), versions 1-5: the offsets a group has
//! committed.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// The partitions of one topic to fetch the offsets of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchTopic {
    /// The topic.
    pub name: String,
    /// Its partitions.
    pub partition_indexes: Vec<i32>,
}

/// Asks for a group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// The group.
    pub group_id: String,
    /// The partitions to fetch the offsets of; `None` for every partition
    /// the group has committed an offset for, which v2 and later can ask
    /// (a null array). v1 cannot: there `None` is written as an empty
    /// array, which asks for nothing.
    pub topics: Option<Vec<OffsetFetchTopic>>,
}

/// The committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchPartition {
    /// The partition.
    pub partition_index: i32,
    /// The committed offset, -1 if there is none.
    pub committed_offset: i64,
    /// The leader epoch committed with it (v5+), -1 if none or before v5.
    pub committed_leader_epoch: i32,
    /// The metadata committed with it.
    pub metadata: Option<String>,
    /// The error code, 0 for none.
    pub error_code: i16,
}

impl Default for OffsetFetchPartition {
    fn default() -> Self {
        Self {
            partition_index: 0,
            committed_offset: -1,
            committed_leader_epoch: -1,
            metadata: None,
            error_code: 0,
        }
    }
}

/// The committed offsets in one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchTopicResponse {
    /// The topic.
    pub name: String,
    /// Its partitions' offsets.
    pub partitions: Vec<OffsetFetchPartition>,
}

/// The coordinator's answer: the committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// How long the request was throttled for a quota, in milliseconds
    /// (v3+; 0 before).
    pub throttle_time_ms: i32,
    /// The offsets, topic by topic.
    pub topics: Vec<OffsetFetchTopicResponse>,
    /// The group-level error code (v2+; 0 before, where such errors come
    /// in every partition's code).
    pub error_code: i16,
}

impl Request for OffsetFetchRequest {
    const API_KEY: i16 = 9;
    const NAME: &'static str = "OffsetFetch";
    const VERSIONS: RangeInclusive<i16> = 1..=5;
    type Response = OffsetFetchResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        match &self.topics {
            None if version >= 2 => buf.put_i32(-1),
            None => buf.put_len(0),
            Some(topics) => {
                buf.put_len(topics.len());
                for topic in topics {
                    buf.put_str(&topic.name);
                    buf.put_len(topic.partition_indexes.len());
                    for &partition in &topic.partition_indexes {
                        buf.put_i32(partition);
                    }
                }
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
            let n = r.array_len(if version >= 5 { 20 } else { 16 })?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push(OffsetFetchPartition {
                    partition_index: r.i32()?,
                    committed_offset: r.i64()?,
                    committed_leader_epoch: if version >= 5 { r.i32()? } else { -1 },
                    metadata: r.nullable_string()?,
                    error_code: r.i16()?,
                });
            }
            topics.push(OffsetFetchTopicResponse { name, partitions });
        }
        let error_code = if version >= 2 { r.i16()? } else { 0 };
        Ok(OffsetFetchResponse {
            throttle_time_ms,
            topics,
            error_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_written_field_by_field_in_every_version() {
        let req = OffsetFetchRequest {
            group_id: "g".into(),
            topics: Some(vec![OffsetFetchTopic {
                name: "t".into(),
                partition_indexes: vec![0, 3],
            }]),
        };
        let all = OffsetFetchRequest {
            group_id: "g".into(),
            topics: None,
        };
        for version in OffsetFetchRequest::VERSIONS {
            let mut buf = Vec::new();
            req.encode(version, &mut buf);
            assert_eq!(
                buf,
                [
                    0, 1, b'g', 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3
                ]
            );
            let mut buf = Vec::new();
            all.encode(version, &mut buf);
            let count: [u8; 4] = if version >= 2 { [0xff; 4] } else { [0; 4] };
            assert_eq!(buf[..3], [0, 1, b'g']);
            assert_eq!(buf[3..], count, "v{version}");
        }
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        if version >= 3 {
            buf.put_i32(4);
        }
        buf.put_len(1);
        buf.put_str("t");
        buf.put_len(2);
        for (partition, offset, epoch, metadata, error) in
            [(0, 100_i64, 3, Some("md"), 0_i16), (1, -1, -1, None, 3)]
        {
            buf.put_i32(partition);
            buf.put_i64(offset);
            if version >= 5 {
                buf.put_i32(epoch);
            }
            buf.put_nullable_str(metadata);
            buf.put_i16(error);
        }
        if version >= 2 {
            buf.put_i16(16);
        }
        buf
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        for version in OffsetFetchRequest::VERSIONS {
            let bytes = answer(version);
            assert_eq!(
                OffsetFetchRequest::decode_response(version, &bytes).unwrap(),
                OffsetFetchResponse {
                    throttle_time_ms: if version >= 3 { 4 } else { 0 },
                    topics: vec![OffsetFetchTopicResponse {
                        name: "t".into(),
                        partitions: vec![
                            OffsetFetchPartition {
                                partition_index: 0,
                                committed_offset: 100,
                                committed_leader_epoch: if version >= 5 { 3 } else { -1 },
                                metadata: Some("md".into()),
                                error_code: 0,
                            },
                            OffsetFetchPartition {
                                partition_index: 1,
                                error_code: 3,
                                ..Default::default()
                            },
                        ],
                    }],
                    error_code: if version >= 2 { 16 } else { 0 },
                },
                "v{version}"
            );
            for n in 0..bytes.len() {
                assert!(
                    OffsetFetchRequest::decode_response(version, &bytes[..n]).is_err(),
                    "v{version} {n}"
                );
            }
        }
        assert!(OffsetFetchRequest::decode_response(0, &answer(1)).is_err());
        assert!(OffsetFetchRequest::decode_response(6, &answer(5)).is_err());
    }
}
