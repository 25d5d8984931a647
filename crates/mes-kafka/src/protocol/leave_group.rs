//! `LeaveGroup` (API key 13), versions 1-3: members leave a group so that
//! it rebalances at once instead of after their session timeout.
//!
//! v1-2 take one member id; v3 takes a batch of members, each with its
//! static member id, and answers for each.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// A member that leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupMember {
    /// The member id.
    pub member_id: String,
    /// Its static member id (`group.instance.id`); written in v3 only.
    pub group_instance_id: Option<String>,
}

/// Members leaving a group.
///
/// v1-2 carry exactly one member id: they write the first member's (an
/// empty id if `members` is empty, which the coordinator answers with
/// `UNKNOWN_MEMBER_ID`) and drop the rest, so send one request per member
/// there. v3 writes them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// The group.
    pub group_id: String,
    /// The leaving members.
    pub members: Vec<LeaveGroupMember>,
}

impl LeaveGroupRequest {
    /// `member_id` leaves `group_id` (a dynamic member: no static id).
    pub fn one(group_id: impl Into<String>, member_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            members: vec![LeaveGroupMember {
                member_id: member_id.into(),
                group_instance_id: None,
            }],
        }
    }
}

/// The answer for one member that left (v3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupMemberResponse {
    /// The member id.
    pub member_id: String,
    /// Its static member id.
    pub group_instance_id: Option<String>,
    /// The error code for this member, 0 for none.
    pub error_code: i16,
}

/// The coordinator's answer to a leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    /// How long the request was throttled for a quota, in milliseconds.
    pub throttle_time_ms: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The answer for each member (v3; empty before).
    pub members: Vec<LeaveGroupMemberResponse>,
}

impl Request for LeaveGroupRequest {
    const API_KEY: i16 = 13;
    const NAME: &'static str = "LeaveGroup";
    const VERSIONS: RangeInclusive<i16> = 1..=3;
    type Response = LeaveGroupResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        if version >= 3 {
            buf.put_len(self.members.len());
            for member in &self.members {
                buf.put_str(&member.member_id);
                buf.put_nullable_str(member.group_instance_id.as_deref());
            }
        } else {
            buf.put_str(self.members.first().map_or("", |m| m.member_id.as_str()));
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
        let throttle_time_ms = r.i32()?;
        let error_code = r.i16()?;
        let mut members = Vec::new();
        if version >= 3 {
            let count = r.array_len(6)?;
            members.reserve_exact(count);
            for _ in 0..count {
                members.push(LeaveGroupMemberResponse {
                    member_id: r.string()?,
                    group_instance_id: r.nullable_string()?,
                    error_code: r.i16()?,
                });
            }
        }
        Ok(LeaveGroupResponse {
            throttle_time_ms,
            error_code,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> LeaveGroupRequest {
        LeaveGroupRequest {
            group_id: "g".into(),
            members: vec![
                LeaveGroupMember {
                    member_id: "a".into(),
                    group_instance_id: Some("i".into()),
                },
                LeaveGroupMember {
                    member_id: "b".into(),
                    group_instance_id: None,
                },
            ],
        }
    }

    #[test]
    fn v1_and_v2_write_the_first_member_only() {
        for version in 1..=2 {
            let mut buf = Vec::new();
            two().encode(version, &mut buf);
            assert_eq!(buf, [0, 1, b'g', 0, 1, b'a']);
            let mut buf = Vec::new();
            LeaveGroupRequest {
                group_id: "g".into(),
                members: vec![],
            }
            .encode(version, &mut buf);
            assert_eq!(buf, [0, 1, b'g', 0, 0]);
        }
    }

    #[test]
    fn v3_writes_every_member() {
        let mut buf = Vec::new();
        two().encode(3, &mut buf);
        assert_eq!(
            buf,
            [
                0, 1, b'g', 0, 0, 0, 2, 0, 1, b'a', 0, 1, b'i', 0, 1, b'b', 0xff, 0xff
            ]
        );
        let mut buf = Vec::new();
        LeaveGroupRequest::one("g", "m").encode(3, &mut buf);
        assert_eq!(buf, [0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm', 0xff, 0xff]);
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        let old = [0, 0, 0, 1, 0, 25];
        for version in 1..=2 {
            assert_eq!(
                LeaveGroupRequest::decode_response(version, &old).unwrap(),
                LeaveGroupResponse {
                    throttle_time_ms: 1,
                    error_code: 25,
                    members: vec![]
                }
            );
            for n in 0..old.len() {
                assert!(
                    LeaveGroupRequest::decode_response(version, &old[..n]).is_err(),
                    "{n}"
                );
            }
        }
        let v3 = [
            0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 1, b'a', 0, 1, b'i', 0, 0, 0, 1, b'b', 0xff, 0xff, 0, 25,
        ];
        assert_eq!(
            LeaveGroupRequest::decode_response(3, &v3).unwrap(),
            LeaveGroupResponse {
                throttle_time_ms: 1,
                error_code: 0,
                members: vec![
                    LeaveGroupMemberResponse {
                        member_id: "a".into(),
                        group_instance_id: Some("i".into()),
                        error_code: 0
                    },
                    LeaveGroupMemberResponse {
                        member_id: "b".into(),
                        group_instance_id: None,
                        error_code: 25
                    },
                ],
            }
        );
        for n in 0..v3.len() {
            assert!(LeaveGroupRequest::decode_response(3, &v3[..n]).is_err(), "{n}");
        }
        assert!(LeaveGroupRequest::decode_response(0, &old).is_err());
        assert!(LeaveGroupRequest::decode_response(4, &v3).is_err());
    }
}
