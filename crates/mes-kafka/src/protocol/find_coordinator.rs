//! `FindCoordinator` (API key 10), versions 1-2: which broker coordinates a
//! consumer group (or a transactional id).

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// Asks which broker coordinates `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// The group id (or transactional id) to find the coordinator of.
    pub key: String,
    /// What `key` is: [`FindCoordinatorRequest::KEY_TYPE_GROUP`] or
    /// [`FindCoordinatorRequest::KEY_TYPE_TRANSACTION`].
    pub key_type: i8,
}

impl FindCoordinatorRequest {
    /// `key_type` of a consumer group id.
    pub const KEY_TYPE_GROUP: i8 = 0;
    /// `key_type` of a transactional id.
    pub const KEY_TYPE_TRANSACTION: i8 = 1;

    /// Asks for the coordinator of the consumer group `group_id`.
    pub fn group(group_id: impl Into<String>) -> Self {
        Self {
            key: group_id.into(),
            key_type: Self::KEY_TYPE_GROUP,
        }
    }
}

/// The coordinator of the key asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// How long the request was throttled for a quota, in milliseconds.
    pub throttle_time_ms: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The error message, if the broker sent one.
    pub error_message: Option<String>,
    /// The coordinator's broker id.
    pub node_id: i32,
    /// The coordinator's host.
    pub host: String,
    /// The coordinator's port.
    pub port: i32,
}

impl Request for FindCoordinatorRequest {
    const API_KEY: i16 = 10;
    const NAME: &'static str = "FindCoordinator";
    const VERSIONS: RangeInclusive<i16> = 1..=2;
    type Response = FindCoordinatorResponse;

    fn encode(&self, _version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.key);
        buf.put_i8(self.key_type);
    }

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        if !Self::VERSIONS.contains(&version) {
            return Err(DecodeError::new(format!(
                "{} v{version} is not spoken",
                Self::NAME
            )));
        }
        let mut r = Reader::new(body);
        Ok(FindCoordinatorResponse {
            throttle_time_ms: r.i32()?,
            error_code: r.i16()?,
            error_message: r.nullable_string()?,
            node_id: r.i32()?,
            host: r.string()?,
            port: r.i32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_key_then_key_type_in_every_version() {
        for version in FindCoordinatorRequest::VERSIONS {
            let mut buf = Vec::new();
            FindCoordinatorRequest::group("grp").encode(version, &mut buf);
            assert_eq!(buf, [0, 3, b'g', b'r', b'p', 0]);
            let mut buf = Vec::new();
            FindCoordinatorRequest {
                key: "tx".into(),
                key_type: FindCoordinatorRequest::KEY_TYPE_TRANSACTION,
            }
            .encode(version, &mut buf);
            assert_eq!(buf, [0, 2, b't', b'x', 1]);
        }
    }

    fn answer(error_message: Option<&str>) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_i32(7);
        buf.put_i16(15);
        buf.put_nullable_str(error_message);
        buf.put_i32(3);
        buf.put_str("broker-3");
        buf.put_i32(9092);
        buf
    }

    #[test]
    fn response_is_read_in_every_version() {
        for version in FindCoordinatorRequest::VERSIONS {
            for message in [None, Some("not yet")] {
                let got = FindCoordinatorRequest::decode_response(version, &answer(message)).unwrap();
                assert_eq!(
                    got,
                    FindCoordinatorResponse {
                        throttle_time_ms: 7,
                        error_code: 15,
                        error_message: message.map(str::to_owned),
                        node_id: 3,
                        host: "broker-3".into(),
                        port: 9092,
                    }
                );
            }
        }
    }

    #[test]
    fn every_truncation_and_other_versions_are_errors() {
        let bytes = answer(Some("m"));
        for version in FindCoordinatorRequest::VERSIONS {
            for n in 0..bytes.len() {
                assert!(
                    FindCoordinatorRequest::decode_response(version, &bytes[..n]).is_err(),
                    "{n}"
                );
            }
        }
        assert!(FindCoordinatorRequest::decode_response(0, &bytes).is_err());
        assert!(FindCoordinatorRequest::decode_response(3, &bytes).is_err());
    }
}
