//! `SyncGroup` (API key 14), versions 1-3: after a join, the leader hands
//! in every member's assignment and every member gets its own back.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// One member's assignment, as the leader sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupAssignment {
    /// The member.
    pub member_id: String,
    /// Its assignment: for the "consumer" protocol type, an
    /// [`Assignment`](super::consumer_protocol::Assignment).
    pub assignment: Vec<u8>,
}

/// A member's sync: the leader's carries the assignments, the others' none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member's id.
    pub member_id: String,
    /// The static member id (`group.instance.id`); written from v3 on,
    /// dropped before.
    pub group_instance_id: Option<String>,
    /// Every member's assignment if this member leads; empty if not.
    pub assignments: Vec<SyncGroupAssignment>,
}

/// The coordinator's answer to a sync: this member's assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupResponse {
    /// How long the request was throttled for a quota, in milliseconds.
    pub throttle_time_ms: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The member's assignment (empty if the leader gave it none; see
    /// [`Assignment::decode_sync`](super::consumer_protocol::Assignment::decode_sync)).
    pub assignment: Vec<u8>,
}

impl Request for SyncGroupRequest {
    const API_KEY: i16 = 14;
    const NAME: &'static str = "SyncGroup";
    const VERSIONS: RangeInclusive<i16> = 1..=3;
    type Response = SyncGroupResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        buf.put_i32(self.generation_id);
        buf.put_str(&self.member_id);
        if version >= 3 {
            buf.put_nullable_str(self.group_instance_id.as_deref());
        }
        buf.put_len(self.assignments.len());
        for assignment in &self.assignments {
            buf.put_str(&assignment.member_id);
            buf.put_bytes(&assignment.assignment);
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
        Ok(SyncGroupResponse {
            throttle_time_ms: r.i32()?,
            error_code: r.i16()?,
            assignment: r.bytes()?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_written_field_by_field() {
        let req = SyncGroupRequest {
            group_id: "g".into(),
            generation_id: 2,
            member_id: "m".into(),
            group_instance_id: Some("i".into()),
            assignments: vec![SyncGroupAssignment {
                member_id: "m".into(),
                assignment: vec![9],
            }],
        };
        for version in SyncGroupRequest::VERSIONS {
            let mut buf = Vec::new();
            req.encode(version, &mut buf);
            let mut want = vec![0, 1, b'g', 0, 0, 0, 2, 0, 1, b'm'];
            if version >= 3 {
                want.extend([0, 1, b'i']);
            }
            want.extend([0, 0, 0, 1, 0, 1, b'm', 0, 0, 0, 1, 9]);
            assert_eq!(buf, want, "v{version}");
        }
        let mut buf = Vec::new();
        SyncGroupRequest {
            group_instance_id: None,
            assignments: vec![],
            ..req
        }
        .encode(3, &mut buf);
        assert_eq!(buf, [0, 1, b'g', 0, 0, 0, 2, 0, 1, b'm', 0xff, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn response_is_read_and_every_truncation_is_an_error() {
        let bytes = [0, 0, 0, 3, 0, 0, 0, 0, 0, 2, 7, 8];
        for version in SyncGroupRequest::VERSIONS {
            assert_eq!(
                SyncGroupRequest::decode_response(version, &bytes).unwrap(),
                SyncGroupResponse {
                    throttle_time_ms: 3,
                    error_code: 0,
                    assignment: vec![7, 8]
                }
            );
            for n in 0..bytes.len() {
                assert!(
                    SyncGroupRequest::decode_response(version, &bytes[..n]).is_err(),
                    "{n}"
                );
            }
        }
        assert!(SyncGroupRequest::decode_response(0, &bytes).is_err());
        assert!(SyncGroupRequest::decode_response(4, &bytes).is_err());
    }
}
