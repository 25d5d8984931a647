//! `Produce` (key 0): record batches to partitions.

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};

/// Sends one record set (already written as record batches) to one
/// partition. The publisher's hot path writes the same request straight
/// into its buffer (`write_produce_body`), without this struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest<'a> {
    /// -1: leader only, 1: leader, -1 (all): every in-sync replica.
    pub acks: i16,
    /// How long the broker may wait for the replicas.
    pub timeout_ms: i32,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record batches.
    pub records: &'a [u8],
}

/// Writes a `Produce` body (v3-v8, which do not differ) for one partition;
/// `records` appends the record batches.
pub(crate) fn write_produce_body<E>(
    buf: &mut Vec<u8>,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    partition: i32,
    records: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    buf.put_nullable_str(None); // no transactional id
    buf.put_i16(acks);
    buf.put_i32(timeout_ms);
    buf.put_i32(1);
    buf.put_str(topic);
    buf.put_i32(1);
    buf.put_i32(partition);
    let size_at = buf.reserve_at(4);
    records(buf)?;
    buf.patch_size(size_at, size_at + 4);
    Ok(())
}

/// What the broker says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// The partition.
    pub partition_index: i32,
    /// 0, or why the batch was not written (or, for
    /// `DUPLICATE_SEQUENCE_NUMBER`, written before).
    pub error_code: i16,
    /// The offset of the batch's first record.
    pub base_offset: i64,
    /// The broker's append time, or -1 with create time.
    pub log_append_time_ms: i64,
    /// The partition's log start offset (v5+, else -1).
    pub log_start_offset: i64,
    /// The broker's message (v8+).
    pub error_message: Option<String>,
}

/// The broker's answer to a produce request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceResponse {
    /// `(topic, partitions)`.
    pub topics: Vec<(String, Vec<ProducePartitionResponse>)>,
    /// How long the broker throttled the request.
    pub throttle_time_ms: i32,
}

impl ProduceResponse {
    /// The answer about `partition` of `topic`, if the broker gave one.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&ProducePartitionResponse> {
        self.topics
            .iter()
            .filter(|(name, _)| name == topic)
            .flat_map(|(_, partitions)| partitions)
            .find(|p| p.partition_index == partition)
    }
}

impl Request for ProduceRequest<'_> {
    const API_KEY: i16 = 0;
    const NAME: &'static str = "Produce";
    // v3 is the first with record batches v2; v9 is flexible.
    const VERSIONS: RangeInclusive<i16> = 3..=8;
    type Response = ProduceResponse;

    fn encode(&self, _version: i16, buf: &mut Vec<u8>) {
        let records = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(self.records);
            Ok::<_, std::convert::Infallible>(())
        };
        let Ok(()) = write_produce_body(
            buf,
            self.acks,
            self.timeout_ms,
            self.topic,
            self.partition,
            records,
        );
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let count = r.array_len(6)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string()?;
            let count = r.array_len(22)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                let partition_index = r.i32()?;
                let error_code = r.i16()?;
                let base_offset = r.i64()?;
                let log_append_time_ms = r.i64()?;
                let log_start_offset = if version >= 5 { r.i64()? } else { -1 };
                let mut error_message = None;
                if version >= 8 {
                    let errors = r.array_len(6)?;
                    for _ in 0..errors {
                        r.i32()?; // batch index
                        r.nullable_str()?; // its message
                    }
                    error_message = r.nullable_string()?;
                }
                partitions.push(ProducePartitionResponse {
                    partition_index,
                    error_code,
                    base_offset,
                    log_append_time_ms,
                    log_start_offset,
                    error_message,
                });
            }
            topics.push((name, partitions));
        }
        let throttle_time_ms = r.i32()?;
        Ok(ProduceResponse {
            topics,
            throttle_time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: i16) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_i32(1);
        b.put_str("t");
        b.put_i32(1);
        b.put_i32(2);
        b.put_i16(0);
        b.put_i64(42);
        b.put_i64(-1);
        if version >= 5 {
            b.put_i64(0);
        }
        if version >= 8 {
            b.put_i32(0);
            b.put_nullable_str(None);
        }
        b.put_i32(0);
        b
    }

    #[test]
    fn answers_are_read_in_every_version_and_truncation_is_an_error() {
        for version in ProduceRequest::VERSIONS {
            let bytes = answer(version);
            let read = ProduceRequest::decode_response(version, &bytes).unwrap();
            assert_eq!(read.partition("t", 2).map(|p| p.base_offset), Some(42));
            assert!(read.partition("t", 3).is_none());
            for end in 0..bytes.len() {
                assert!(ProduceRequest::decode_response(version, &bytes[..end]).is_err());
            }
        }
    }

    #[test]
    fn the_request_carries_the_record_set_with_its_size() {
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topic: "t",
            partition: 2,
            records: b"batch",
        };
        let mut buf = Vec::new();
        request.encode(3, &mut buf);
        let mut expected = Vec::new();
        expected.put_i16(-1);
        expected.put_i16(-1);
        expected.put_i32(30_000);
        expected.put_i32(1);
        expected.put_str("t");
        expected.put_i32(1);
        expected.put_i32(2);
        expected.put_bytes(b"batch");
        assert_eq!(buf, expected);
    }
}
