//! `CreateTopics` (key 19).

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Number of partitions.
    pub num_partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// Topic configs (`retention.ms`, `cleanup.policy`, ...).
    pub configs: Vec<(String, String)>,
}

/// Creates topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    /// The topics.
    pub topics: Vec<NewTopic>,
    /// How long the broker may take.
    pub timeout_ms: i32,
    /// Only check, create nothing.
    pub validate_only: bool,
}

/// What became of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// The topic.
    pub name: String,
    /// 0, `TOPIC_ALREADY_EXISTS` (36), ...
    pub error_code: i16,
    /// The broker's explanation, if any.
    pub error_message: Option<String>,
}

/// The broker's answer to a [`CreateTopicsRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsResponse {
    /// How long the broker throttled the request.
    pub throttle_time_ms: i32,
    /// One entry per topic.
    pub topics: Vec<CreatedTopic>,
}

impl Request for CreateTopicsRequest {
    const API_KEY: i16 = 19;
    const NAME: &'static str = "CreateTopics";
    // v5 is the first flexible version.
    const VERSIONS: RangeInclusive<i16> = 2..=4;
    type Response = CreateTopicsResponse;

    fn encode(&self, _version: i16, buf: &mut Vec<u8>) {
        buf.put_len(self.topics.len());
        for topic in &self.topics {
            buf.put_str(&topic.name);
            buf.put_i32(topic.num_partitions);
            buf.put_i16(topic.replication_factor);
            buf.put_i32(0); // no manual assignment
            buf.put_len(topic.configs.len());
            for (name, value) in &topic.configs {
                buf.put_str(name);
                buf.put_str(value);
            }
        }
        buf.put_i32(self.timeout_ms);
        buf.put_bool(self.validate_only);
    }

    fn decode_response(_version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let throttle_time_ms = r.i32()?;
        let count = r.array_len(6)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push(CreatedTopic {
                name: r.string()?,
                error_code: r.i16()?,
                error_message: r.nullable_string()?,
            });
        }
        Ok(CreateTopicsResponse {
            throttle_time_ms,
            topics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_answer() {
        let mut buf = Vec::new();
        CreateTopicsRequest {
            topics: vec![NewTopic {
                name: "t".into(),
                num_partitions: 6,
                replication_factor: 1,
                configs: vec![("retention.ms".into(), "1000".into())],
            }],
            timeout_ms: 5000,
            validate_only: false,
        }
        .encode(2, &mut buf);
        let mut expected = Vec::new();
        expected.put_i32(1);
        expected.put_str("t");
        expected.put_i32(6);
        expected.put_i16(1);
        expected.put_i32(0);
        expected.put_i32(1);
        expected.put_str("retention.ms");
        expected.put_str("1000");
        expected.put_i32(5000);
        expected.put_bool(false);
        assert_eq!(buf, expected);

        let mut answer = Vec::new();
        answer.put_i32(0);
        answer.put_i32(1);
        answer.put_str("t");
        answer.put_i16(36);
        answer.put_nullable_str(Some("exists"));
        let created = CreateTopicsRequest::decode_response(2, &answer).unwrap();
        assert_eq!(created.topics[0].error_code, 36);
        for end in 0..answer.len() {
            assert!(CreateTopicsRequest::decode_response(2, &answer[..end]).is_err());
        }
    }
}
