//! `InitProducerId` (key 22): a producer id and epoch for an idempotent
//! (here: never transactional) producer.

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};

/// Asks for a producer id. Without a transactional id any broker answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// Always `None` here: idempotence without transactions.
    pub transactional_id: Option<String>,
    /// Ignored by the broker without a transactional id.
    pub transaction_timeout_ms: i32,
}

/// A producer id and epoch, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    /// How long the broker throttled the request.
    pub throttle_time_ms: i32,
    /// 0, or why not.
    pub error_code: i16,
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
}

impl Request for InitProducerIdRequest {
    const API_KEY: i16 = 22;
    const NAME: &'static str = "InitProducerId";
    // v2 is the first flexible version; v3 the first with the producer id
    // and epoch (-1 for a new producer), which tansu insists on.
    const VERSIONS: RangeInclusive<i16> = 0..=4;
    type Response = InitProducerIdResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        if Self::is_flexible(version) {
            buf.put_compact_nullable_str(self.transactional_id.as_deref());
        } else {
            buf.put_nullable_str(self.transactional_id.as_deref());
        }
        buf.put_i32(self.transaction_timeout_ms);
        if version >= 3 {
            buf.put_i64(-1); // producer id: a new producer
            buf.put_i16(-1); // producer epoch
        }
        if Self::is_flexible(version) {
            buf.put_unsigned_varint(0); // no tagged fields
        }
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let response = InitProducerIdResponse {
            throttle_time_ms: r.i32()?,
            error_code: r.i16()?,
            producer_id: r.i64()?,
            producer_epoch: r.i16()?,
        };
        if Self::is_flexible(version) {
            r.skip_tagged_fields()?;
        }
        Ok(response)
    }

    fn is_flexible(version: i16) -> bool {
        version >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_answer() {
        let mut buf = Vec::new();
        InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        }
        .encode(0, &mut buf);
        assert_eq!(buf, [0xff, 0xff, 0, 0, 0xea, 0x60]);
        let mut answer = Vec::new();
        answer.put_i32(0);
        answer.put_i16(0);
        answer.put_i64(4000);
        answer.put_i16(3);
        let id = InitProducerIdRequest::decode_response(1, &answer).unwrap();
        assert_eq!((id.producer_id, id.producer_epoch), (4000, 3));
        for end in 0..answer.len() {
            assert!(InitProducerIdRequest::decode_response(1, &answer[..end]).is_err());
        }
        // v4, flexible: compact null string, the producer id and epoch of a
        // new producer, no tagged fields; the answer ends with its own.
        buf.clear();
        InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
        }
        .encode(4, &mut buf);
        let mut expected = vec![0, 0, 0, 0xea, 0x60];
        expected.put_i64(-1);
        expected.put_i16(-1);
        expected.push(0);
        assert_eq!(buf, expected);
        answer.push(0);
        let id = InitProducerIdRequest::decode_response(4, &answer).unwrap();
        assert_eq!(id.producer_id, 4000);
        assert!(InitProducerIdRequest::decode_response(4, &answer[..answer.len() - 1]).is_err());
    }
}
