//! `Heartbeat` (API key 12), versions 1-3: a member tells the coordinator it
//! is alive, and learns whether the group is rebalancing.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// A member's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member id the coordinator gave the member.
    pub member_id: String,
    /// The static member id (`group.instance.id`); written from v3 on,
    /// dropped before.
    pub group_instance_id: Option<String>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// How long the request was throttled for a quota, in milliseconds.
    pub throttle_time_ms: i32,
    /// The error code, 0 for none (`REBALANCE_IN_PROGRESS`, 27, asks the
    /// member to rejoin).
    pub error_code: i16,
}

impl Request for HeartbeatRequest {
    const API_KEY: i16 = 12;
    const NAME: &'static str = "Heartbeat";
    const VERSIONS: RangeInclusive<i16> = 1..=3;
    type Response = HeartbeatResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        buf.put_i32(self.generation_id);
        buf.put_str(&self.member_id);
        if version >= 3 {
            buf.put_nullable_str(self.group_instance_id.as_deref());
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
        Ok(HeartbeatResponse {
            throttle_time_ms: r.i32()?,
            error_code: r.i16()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_adds_the_instance_id_in_v3() {
        let req = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: 5,
            member_id: "m1".into(),
            group_instance_id: Some("i".into()),
        };
        let v1_2 = [0, 1, b'g', 0, 0, 0, 5, 0, 2, b'm', b'1'];
        for version in 1..=2 {
            let mut buf = Vec::new();
            req.encode(version, &mut buf);
            assert_eq!(buf, v1_2, "v{version}");
        }
        let mut buf = Vec::new();
        req.encode(3, &mut buf);
        assert_eq!(buf[..v1_2.len()], v1_2);
        assert_eq!(buf[v1_2.len()..], [0, 1, b'i']);
        let mut buf = Vec::new();
        HeartbeatRequest {
            group_instance_id: None,
            ..req
        }
        .encode(3, &mut buf);
        assert_eq!(buf[v1_2.len()..], [0xff, 0xff]);
    }

    #[test]
    fn response_is_read_and_every_truncation_is_an_error() {
        let bytes = [0, 0, 0, 9, 0, 27];
        for version in HeartbeatRequest::VERSIONS {
            assert_eq!(
                HeartbeatRequest::decode_response(version, &bytes).unwrap(),
                HeartbeatResponse {
                    throttle_time_ms: 9,
                    error_code: 27
                }
            );
            for n in 0..bytes.len() {
                assert!(
                    HeartbeatRequest::decode_response(version, &bytes[..n]).is_err(),
                    "{n}"
                );
            }
        }
        assert!(HeartbeatRequest::decode_response(0, &bytes).is_err());
        assert!(HeartbeatRequest::decode_response(4, &bytes).is_err());
    }
}
