//! `JoinGroup` (API key 11), versions 2-5: a member joins (or rejoins) a
//! group and, once the coordinator has everyone, learns the generation,
//! the chosen protocol and, if it leads, every member's metadata.
//!
//! From v4 a member without an id is first answered `MEMBER_ID_REQUIRED`
//! (79) with the id to join again with.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// One protocol (assignor) the member supports, with its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupProtocol {
    /// The protocol name (the assignor, e.g. `RoundRobinAssigner`).
    pub name: String,
    /// The protocol metadata: for the "consumer" protocol type, a
    /// [`Subscription`](super::consumer_protocol::Subscription).
    pub metadata: Vec<u8>,
}

/// A member's request to join a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// The group.
    pub group_id: String,
    /// How long the coordinator waits for a heartbeat before it considers
    /// the member dead, in milliseconds.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for every member to rejoin in a
    /// rebalance, in milliseconds.
    pub rebalance_timeout_ms: i32,
    /// The member id the coordinator gave, empty on the first join.
    pub member_id: String,
    /// The static member id (`group.instance.id`); written from v5 on,
    /// dropped before.
    pub group_instance_id: Option<String>,
    /// The protocol type, `consumer` for consumers.
    pub protocol_type: String,
    /// The protocols the member supports, most preferred first.
    pub protocols: Vec<JoinGroupProtocol>,
}

/// A member of the group as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupMember {
    /// The member id.
    pub member_id: String,
    /// Its static member id (v5+; `None` before).
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// The coordinator's answer to a join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// How long the request was throttled for a quota, in milliseconds.
    pub throttle_time_ms: i32,
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The protocol the coordinator chose.
    pub protocol_name: String,
    /// The member id of the leader.
    pub leader: String,
    /// The member's own id.
    pub member_id: String,
    /// Every member with its metadata if this member leads; empty if not.
    pub members: Vec<JoinGroupMember>,
}

impl Request for JoinGroupRequest {
    const API_KEY: i16 = 11;
    const NAME: &'static str = "JoinGroup";
    const VERSIONS: RangeInclusive<i16> = 2..=5;
    type Response = JoinGroupResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_str(&self.group_id);
        buf.put_i32(self.session_timeout_ms);
        buf.put_i32(self.rebalance_timeout_ms);
        buf.put_str(&self.member_id);
        if version >= 5 {
            buf.put_nullable_str(self.group_instance_id.as_deref());
        }
        buf.put_str(&self.protocol_type);
        buf.put_len(self.protocols.len());
        for protocol in &self.protocols {
            buf.put_str(&protocol.name);
            buf.put_bytes(&protocol.metadata);
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
        let generation_id = r.i32()?;
        let protocol_name = r.string()?;
        let leader = r.string()?;
        let member_id = r.string()?;
        let count = r.array_len(if version >= 5 { 8 } else { 6 })?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let member_id = r.string()?;
            let group_instance_id = if version >= 5 { r.nullable_string()? } else { None };
            let metadata = r.bytes()?.to_vec();
            members.push(JoinGroupMember {
                member_id,
                group_instance_id,
                metadata,
            });
        }
        Ok(JoinGroupResponse {
            throttle_time_ms,
            error_code,
            generation_id,
            protocol_name,
            leader,
            member_id,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: "g".into(),
            session_timeout_ms: 30_000,
            rebalance_timeout_ms: 60_000,
            member_id: String::new(),
            group_instance_id: Some("i".into()),
            protocol_type: "consumer".into(),
            protocols: vec![JoinGroupProtocol {
                name: "rr".into(),
                metadata: vec![1, 2],
            }],
        }
    }

    #[test]
    fn request_is_written_field_by_field() {
        for version in JoinGroupRequest::VERSIONS {
            let mut buf = Vec::new();
            request().encode(version, &mut buf);
            let mut want = vec![0, 1, b'g'];
            want.extend(30_000_i32.to_be_bytes());
            want.extend(60_000_i32.to_be_bytes());
            want.extend([0, 0]);
            if version >= 5 {
                want.extend([0, 1, b'i']);
            }
            want.extend([0, 8]);
            want.extend(b"consumer");
            want.extend([0, 0, 0, 1, 0, 2, b'r', b'r', 0, 0, 0, 2, 1, 2]);
            assert_eq!(buf, want, "v{version}");
        }
        let mut buf = Vec::new();
        JoinGroupRequest {
            group_instance_id: None,
            ..request()
        }
        .encode(5, &mut buf);
        assert_eq!(buf[13..15], [0xff, 0xff]);
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_i32(1);
        buf.put_i16(0);
        buf.put_i32(4);
        buf.put_str("rr");
        buf.put_str("m1");
        buf.put_str("m2");
        buf.put_len(2);
        for (id, instance, meta) in [("m1", Some("i1"), &b"a"[..]), ("m2", None, &b""[..])] {
            buf.put_str(id);
            if version >= 5 {
                buf.put_nullable_str(instance);
            }
            buf.put_bytes(meta);
        }
        buf
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        for version in JoinGroupRequest::VERSIONS {
            let bytes = answer(version);
            let got = JoinGroupRequest::decode_response(version, &bytes).unwrap();
            let v5 = version >= 5;
            assert_eq!(
                got,
                JoinGroupResponse {
                    throttle_time_ms: 1,
                    error_code: 0,
                    generation_id: 4,
                    protocol_name: "rr".into(),
                    leader: "m1".into(),
                    member_id: "m2".into(),
                    members: vec![
                        JoinGroupMember {
                            member_id: "m1".into(),
                            group_instance_id: v5.then(|| "i1".into()),
                            metadata: b"a".to_vec()
                        },
                        JoinGroupMember {
                            member_id: "m2".into(),
                            group_instance_id: None,
                            metadata: vec![]
                        },
                    ],
                },
                "v{version}"
            );
            for n in 0..bytes.len() {
                assert!(
                    JoinGroupRequest::decode_response(version, &bytes[..n]).is_err(),
                    "v{version} {n}"
                );
            }
        }
        assert!(JoinGroupRequest::decode_response(1, &answer(1)).is_err());
        assert!(JoinGroupRequest::decode_response(6, &answer(5)).is_err());
    }

    #[test]
    fn a_huge_member_count_is_an_error_not_an_allocation() {
        let mut bytes = answer(5);
        let at = 4 + 2 + 4 + 4 + 4 + 4;
        bytes[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(JoinGroupRequest::decode_response(5, &bytes).is_err());
    }
}
