//! `ListGroups` (API key 16), versions 0-2: the groups a broker
//! coordinates.

use std::ops::RangeInclusive;

use super::primitives::Reader;
use super::{DecodeError, Request};

/// Asks a broker for the groups it coordinates (ask every broker for all
/// of a cluster's). The request has no fields in these versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListGroupsRequest;

/// A group the broker coordinates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group.
    pub group_id: String,
    /// Its protocol type (`consumer`), empty if it has none.
    pub protocol_type: String,
}

/// The broker's answer: its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// How long the request was throttled for a quota, in milliseconds
    /// (v1+; 0 before).
    pub throttle_time_ms: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The groups.
    pub groups: Vec<ListedGroup>,
}

impl Request for ListGroupsRequest {
    const API_KEY: i16 = 16;
    const NAME: &'static str = "ListGroups";
    const VERSIONS: RangeInclusive<i16> = 0..=2;
    type Response = ListGroupsResponse;

    fn encode(&self, _version: i16, _buf: &mut Vec<u8>) {}

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        if !Self::VERSIONS.contains(&version) {
            return Err(DecodeError::new(format!(
                "{} v{version} is not spoken",
                Self::NAME
            )));
        }
        let mut r = Reader::new(body);
        let throttle_time_ms = if version >= 1 { r.i32()? } else { 0 };
        let error_code = r.i16()?;
        let count = r.array_len(4)?;
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            groups.push(ListedGroup {
                group_id: r.string()?,
                protocol_type: r.string()?,
            });
        }
        Ok(ListGroupsResponse {
            throttle_time_ms,
            error_code,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::primitives::Writer;
    use super::*;

    #[test]
    fn request_is_empty_in_every_version() {
        for version in ListGroupsRequest::VERSIONS {
            let mut buf = Vec::new();
            ListGroupsRequest.encode(version, &mut buf);
            assert!(buf.is_empty());
        }
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        if version >= 1 {
            buf.put_i32(6);
        }
        buf.put_i16(0);
        buf.put_len(2);
        buf.put_str("g");
        buf.put_str("consumer");
        buf.put_str("connect-x");
        buf.put_str("");
        buf
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        for version in ListGroupsRequest::VERSIONS {
            let bytes = answer(version);
            assert_eq!(
                ListGroupsRequest::decode_response(version, &bytes).unwrap(),
                ListGroupsResponse {
                    throttle_time_ms: if version >= 1 { 6 } else { 0 },
                    error_code: 0,
                    groups: vec![
                        ListedGroup {
                            group_id: "g".into(),
                            protocol_type: "consumer".into()
                        },
                        ListedGroup {
                            group_id: "connect-x".into(),
                            protocol_type: String::new()
                        },
                    ],
                },
                "v{version}"
            );
            for n in 0..bytes.len() {
                assert!(
                    ListGroupsRequest::decode_response(version, &bytes[..n]).is_err(),
                    "v{version} {n}"
                );
            }
        }
        assert!(ListGroupsRequest::decode_response(3, &answer(2)).is_err());
    }
}
