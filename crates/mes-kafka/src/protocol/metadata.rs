//! `Metadata` (key 3): brokers, topics, partitions and their leaders.

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};

/// Asks for the brokers and the metadata of some topics (or all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataRequest {
    /// The topics; `None` for every topic.
    pub topics: Option<Vec<String>>,
    /// Whether the broker may create a topic asked for (never by this crate).
    pub allow_auto_topic_creation: bool,
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataBroker {
    /// Its node id.
    pub node_id: i32,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: i32,
    /// Its rack, if any.
    pub rack: Option<String>,
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPartition {
    /// 0, or why the partition has no usable leader.
    pub error_code: i16,
    /// The partition.
    pub partition_index: i32,
    /// The leader's node id (-1: none).
    pub leader_id: i32,
    /// The leader epoch (v7+, else -1).
    pub leader_epoch: i32,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataTopic {
    /// 0, or why not (`UNKNOWN_TOPIC_OR_PARTITION`, ...).
    pub error_code: i16,
    /// The topic.
    pub name: String,
    /// Whether it is internal (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// Its partitions, as the broker lists them.
    pub partitions: Vec<MetadataPartition>,
}

/// The cluster as one broker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataResponse {
    /// How long the broker throttled the request.
    pub throttle_time_ms: i32,
    /// The brokers.
    pub brokers: Vec<MetadataBroker>,
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The controller's node id.
    pub controller_id: i32,
    /// The topics asked for (or all).
    pub topics: Vec<MetadataTopic>,
}

impl Request for MetadataRequest {
    const API_KEY: i16 = 3;
    const NAME: &'static str = "Metadata";
    // v9 is the first flexible version.
    const VERSIONS: RangeInclusive<i16> = 4..=8;
    type Response = MetadataResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        match &self.topics {
            Some(topics) => {
                buf.put_len(topics.len());
                for topic in topics {
                    buf.put_str(topic);
                }
            }
            None => buf.put_i32(-1),
        }
        buf.put_bool(self.allow_auto_topic_creation);
        if version >= 8 {
            buf.put_bool(false); // include_cluster_authorized_operations
            buf.put_bool(false); // include_topic_authorized_operations
        }
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32()?;
        let count = r.array_len(12)?;
        let mut brokers = Vec::with_capacity(count);
        for _ in 0..count {
            brokers.push(MetadataBroker {
                node_id: r.i32()?,
                host: r.string()?,
                port: r.i32()?,
                rack: r.nullable_string()?,
            });
        }
        let cluster_id = r.nullable_string()?;
        let controller_id = r.i32()?;
        let count = r.array_len(9)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let error_code = r.i16()?;
            let name = r.string()?;
            let is_internal = r.bool()?;
            let count = r.array_len(18)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                let error_code = r.i16()?;
                let partition_index = r.i32()?;
                let leader_id = r.i32()?;
                let leader_epoch = if version >= 7 { r.i32()? } else { -1 };
                // replicas, in-sync replicas, offline replicas (v5+)
                let lists = if version >= 5 { 3 } else { 2 };
                for _ in 0..lists {
                    let nodes = r.array_len(4)?;
                    r.take(nodes * 4)?;
                }
                partitions.push(MetadataPartition {
                    error_code,
                    partition_index,
                    leader_id,
                    leader_epoch,
                });
            }
            if version >= 8 {
                r.i32()?; // topic authorized operations
            }
            topics.push(MetadataTopic {
                error_code,
                name,
                is_internal,
                partitions,
            });
        }
        if version >= 8 {
            r.i32()?; // cluster authorized operations
        }
        Ok(MetadataResponse {
            throttle_time_ms,
            brokers,
            cluster_id,
            controller_id,
            topics,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Metadata answer in `version`, as a broker writes it.
    pub(crate) fn encode_response(version: i16, response: &MetadataResponse) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_i32(response.throttle_time_ms);
        b.put_len(response.brokers.len());
        for broker in &response.brokers {
            b.put_i32(broker.node_id);
            b.put_str(&broker.host);
            b.put_i32(broker.port);
            b.put_nullable_str(broker.rack.as_deref());
        }
        b.put_nullable_str(response.cluster_id.as_deref());
        b.put_i32(response.controller_id);
        b.put_len(response.topics.len());
        for topic in &response.topics {
            b.put_i16(topic.error_code);
            b.put_str(&topic.name);
            b.put_bool(topic.is_internal);
            b.put_len(topic.partitions.len());
            for p in &topic.partitions {
                b.put_i16(p.error_code);
                b.put_i32(p.partition_index);
                b.put_i32(p.leader_id);
                if version >= 7 {
                    b.put_i32(p.leader_epoch);
                }
                b.put_i32(1);
                b.put_i32(p.leader_id);
                b.put_i32(1);
                b.put_i32(p.leader_id);
                if version >= 5 {
                    b.put_i32(0);
                }
            }
            if version >= 8 {
                b.put_i32(0);
            }
        }
        if version >= 8 {
            b.put_i32(0);
        }
        b
    }

    pub(crate) fn sample() -> MetadataResponse {
        MetadataResponse {
            throttle_time_ms: 0,
            brokers: vec![MetadataBroker {
                node_id: 1,
                host: "kafka-1".into(),
                port: 9092,
                rack: None,
            }],
            cluster_id: Some("c".into()),
            controller_id: 1,
            topics: vec![MetadataTopic {
                error_code: 0,
                name: "t".into(),
                is_internal: false,
                partitions: vec![
                    MetadataPartition {
                        error_code: 0,
                        partition_index: 0,
                        leader_id: 1,
                        leader_epoch: 0,
                    },
                    MetadataPartition {
                        error_code: 5,
                        partition_index: 1,
                        leader_id: -1,
                        leader_epoch: 0,
                    },
                ],
            }],
        }
    }

    #[test]
    fn answers_round_trip_in_every_version_and_truncation_is_an_error() {
        for version in MetadataRequest::VERSIONS {
            let mut expected = sample();
            if version < 7 {
                for p in &mut expected.topics[0].partitions {
                    p.leader_epoch = -1;
                }
            }
            let bytes = encode_response(version, &sample());
            assert_eq!(
                MetadataRequest::decode_response(version, &bytes).unwrap(),
                expected
            );
            for end in 0..bytes.len() {
                assert!(MetadataRequest::decode_response(version, &bytes[..end]).is_err());
            }
        }
    }

    #[test]
    fn a_request_for_one_topic_never_creates_it() {
        let mut buf = Vec::new();
        MetadataRequest {
            topics: Some(vec!["t".into()]),
            allow_auto_topic_creation: false,
        }
        .encode(4, &mut buf);
        assert_eq!(buf, [0, 0, 0, 1, 0, 1, b't', 0]);
        buf.clear();
        MetadataRequest::default().encode(8, &mut buf);
        assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
    }
}
