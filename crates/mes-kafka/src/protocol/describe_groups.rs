//! `DescribeGroups` (API key 15), versions 0-4: the state, protocol and
//! members of consumer groups.

use std::ops::RangeInclusive;

use super::primitives::{Reader, Writer};
use super::{DecodeError, Request};

/// Asks about groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    /// The groups to describe.
    pub groups: Vec<String>,
    /// Whether to include each group's authorized operations; written from
    /// v3 on.
    pub include_authorized_operations: bool,
}

/// A member of a described group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedGroupMember {
    /// The member id.
    pub member_id: String,
    /// Its static member id (v4+; `None` before).
    pub group_instance_id: Option<String>,
    /// The client id it connects with.
    pub client_id: String,
    /// The host it connects from.
    pub client_host: String,
    /// Its metadata for the group's protocol (only while the group is
    /// `Stable`).
    pub member_metadata: Vec<u8>,
    /// Its assignment (only while the group is `Stable`).
    pub member_assignment: Vec<u8>,
}

/// One described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// The error code, 0 for none.
    pub error_code: i16,
    /// The group.
    pub group_id: String,
    /// Its state (`Stable`, `PreparingRebalance`, `Empty`, `Dead`, ...).
    pub group_state: String,
    /// Its protocol type (`consumer`), empty if it has no members.
    pub protocol_type: String,
    /// The protocol chosen for its current generation (only while `Stable`).
    pub protocol_data: String,
    /// Its members.
    pub members: Vec<DescribedGroupMember>,
    /// A bit field of the operations the client may do on the group (v3+,
    /// and only if asked); `i32::MIN` when not given.
    pub authorized_operations: i32,
}

impl Default for DescribedGroup {
    fn default() -> Self {
        Self {
            error_code: 0,
            group_id: String::new(),
            group_state: String::new(),
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
            authorized_operations: i32::MIN,
        }
    }
}

/// The broker's answer: each group asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    /// How long the request was throttled for a quota, in milliseconds
    /// (v1+; 0 before).
    pub throttle_time_ms: i32,
    /// The groups.
    pub groups: Vec<DescribedGroup>,
}

impl Request for DescribeGroupsRequest {
    const API_KEY: i16 = 15;
    const NAME: &'static str = "DescribeGroups";
    const VERSIONS: RangeInclusive<i16> = 0..=4;
    type Response = DescribeGroupsResponse;

    fn encode(&self, version: i16, buf: &mut Vec<u8>) {
        buf.put_len(self.groups.len());
        for group in &self.groups {
            buf.put_str(group);
        }
        if version >= 3 {
            buf.put_bool(self.include_authorized_operations);
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
        let throttle_time_ms = if version >= 1 { r.i32()? } else { 0 };
        let count = r.array_len(if version >= 3 { 18 } else { 14 })?;
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            let error_code = r.i16()?;
            let group_id = r.string()?;
            let group_state = r.string()?;
            let protocol_type = r.string()?;
            let protocol_data = r.string()?;
            let n = r.array_len(if version >= 4 { 16 } else { 14 })?;
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                members.push(DescribedGroupMember {
                    member_id: r.string()?,
                    group_instance_id: if version >= 4 { r.nullable_string()? } else { None },
                    client_id: r.string()?,
                    client_host: r.string()?,
                    member_metadata: r.bytes()?.to_vec(),
                    member_assignment: r.bytes()?.to_vec(),
                });
            }
            let authorized_operations = if version >= 3 { r.i32()? } else { i32::MIN };
            groups.push(DescribedGroup {
                error_code,
                group_id,
                group_state,
                protocol_type,
                protocol_data,
                members,
                authorized_operations,
            });
        }
        Ok(DescribeGroupsResponse {
            throttle_time_ms,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_written_field_by_field_in_every_version() {
        let req = DescribeGroupsRequest {
            groups: vec!["a".into(), "bc".into()],
            include_authorized_operations: true,
        };
        for version in DescribeGroupsRequest::VERSIONS {
            let mut buf = Vec::new();
            req.encode(version, &mut buf);
            let mut want = vec![0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
            if version >= 3 {
                want.push(1);
            }
            assert_eq!(buf, want, "v{version}");
        }
    }

    fn answer(version: i16) -> Vec<u8> {
        let mut buf = Vec::new();
        if version >= 1 {
            buf.put_i32(2);
        }
        buf.put_len(2);
        buf.put_i16(0);
        buf.put_str("g");
        buf.put_str("Stable");
        buf.put_str("consumer");
        buf.put_str("rr");
        buf.put_len(1);
        buf.put_str("m");
        if version >= 4 {
            buf.put_nullable_str(Some("i"));
        }
        buf.put_str("cid");
        buf.put_str("/10.0.0.1");
        buf.put_bytes(b"meta");
        buf.put_bytes(b"asg");
        if version >= 3 {
            buf.put_i32(0x0f);
        }
        buf.put_i16(69);
        buf.put_str("h");
        buf.put_str("Dead");
        buf.put_str("");
        buf.put_str("");
        buf.put_len(0);
        if version >= 3 {
            buf.put_i32(i32::MIN);
        }
        buf
    }

    #[test]
    fn response_is_read_in_every_version_and_truncations_are_errors() {
        for version in DescribeGroupsRequest::VERSIONS {
            let bytes = answer(version);
            assert_eq!(
                DescribeGroupsRequest::decode_response(version, &bytes).unwrap(),
                DescribeGroupsResponse {
                    throttle_time_ms: if version >= 1 { 2 } else { 0 },
                    groups: vec![
                        DescribedGroup {
                            error_code: 0,
                            group_id: "g".into(),
                            group_state: "Stable".into(),
                            protocol_type: "consumer".into(),
                            protocol_data: "rr".into(),
                            members: vec![DescribedGroupMember {
                                member_id: "m".into(),
                                group_instance_id: (version >= 4).then(|| "i".into()),
                                client_id: "cid".into(),
                                client_host: "/10.0.0.1".into(),
                                member_metadata: b"meta".to_vec(),
                                member_assignment: b"asg".to_vec(),
                            }],
                            authorized_operations: if version >= 3 { 0x0f } else { i32::MIN },
                        },
                        DescribedGroup {
                            error_code: 69,
                            group_id: "h".into(),
                            group_state: "Dead".into(),
                            ..Default::default()
                        },
                    ],
                },
                "v{version}"
            );
            for n in 0..bytes.len() {
                assert!(
                    DescribeGroupsRequest::decode_response(version, &bytes[..n]).is_err(),
                    "v{version} {n}"
                );
            }
        }
        assert!(DescribeGroupsRequest::decode_response(5, &answer(4)).is_err());
    }
}
