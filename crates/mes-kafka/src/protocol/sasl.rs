//! `SaslHandshake` (key 17) and `SaslAuthenticate` (key 36): the SASL
//! exchange in Kafka frames (Kafka 1.0+).

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader, Writer};

/// Names the SASL mechanism the client will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    /// `PLAIN`, `SCRAM-SHA-256`, ...
    pub mechanism: String,
}

/// The broker's answer to a [`SaslHandshakeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    /// 0, or `UNSUPPORTED_SASL_MECHANISM` (33).
    pub error_code: i16,
    /// The mechanisms the broker offers.
    pub mechanisms: Vec<String>,
}

impl Request for SaslHandshakeRequest {
    const API_KEY: i16 = 17;
    const NAME: &'static str = "SaslHandshake";
    // v1: the exchange that follows is in SaslAuthenticate frames.
    const VERSIONS: RangeInclusive<i16> = 1..=1;
    type Response = SaslHandshakeResponse;

    fn encode(&self, _version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.mechanism);
    }

    fn decode_response(_version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let error_code = r.i16()?;
        let count = r.array_len(2)?;
        let mut mechanisms = Vec::with_capacity(count);
        for _ in 0..count {
            mechanisms.push(r.string()?);
        }
        Ok(SaslHandshakeResponse {
            error_code,
            mechanisms,
        })
    }
}

/// One SASL message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    /// The mechanism's bytes.
    pub auth_bytes: Vec<u8>,
}

/// The broker's SASL message, or why it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    /// 0, or `SASL_AUTHENTICATION_FAILED` (58), ...
    pub error_code: i16,
    /// The broker's explanation, if any.
    pub error_message: Option<String>,
    /// The mechanism's bytes.
    pub auth_bytes: Vec<u8>,
    /// How long the session lasts before re-authentication (v1+; 0: no limit).
    pub session_lifetime_ms: i64,
}

impl Request for SaslAuthenticateRequest {
    const API_KEY: i16 = 36;
    const NAME: &'static str = "SaslAuthenticate";
    const VERSIONS: RangeInclusive<i16> = 0..=1;
    type Response = SaslAuthenticateResponse;

    fn encode(&self, _version: i16, buf: &mut Vec<u8>) {
        buf.put_bytes(&self.auth_bytes);
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let error_code = r.i16()?;
        let error_message = r.nullable_string()?;
        let auth_bytes = r.bytes()?.to_vec();
        let session_lifetime_ms = if version >= 1 { r.i64()? } else { 0 };
        Ok(SaslAuthenticateResponse {
            error_code,
            error_message,
            auth_bytes,
            session_lifetime_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_is_written_and_read_as_kafka_does() {
        let mut buf = Vec::new();
        SaslHandshakeRequest {
            mechanism: "SCRAM-SHA-256".into(),
        }
        .encode(1, &mut buf);
        assert_eq!(buf, b"\x00\x0dSCRAM-SHA-256");

        let mut answer = Vec::new();
        answer.put_i16(33);
        answer.put_i32(1);
        answer.put_str("PLAIN");
        let handshake = SaslHandshakeRequest::decode_response(1, &answer).unwrap();
        assert_eq!(
            (handshake.error_code, handshake.mechanisms),
            (33, vec!["PLAIN".to_owned()])
        );

        let mut answer = Vec::new();
        answer.put_i16(0);
        answer.put_nullable_str(None);
        answer.put_bytes(b"server-first");
        answer.put_i64(0);
        let auth = SaslAuthenticateRequest::decode_response(1, &answer).unwrap();
        assert_eq!(auth.auth_bytes, b"server-first");
        for end in 0..answer.len() {
            assert!(
                SaslAuthenticateRequest::decode_response(1, &answer[..end]).is_err(),
                "{end}"
            );
        }
    }
}
