//! Our codecs against the `kafka-protocol` crate's, generated from Kafka's
//! own message specs: every request we write, it reads back to the same
//! values (and to its end); every response it writes, we read to the same
//! values. Likewise for the consumer protocol's payloads.
// Test code fails loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// In mes-kafka, drop this line: the paths below are already right there.

use bytes::Bytes;
use kafka_protocol::messages::{
    self as kp, BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use mes_kafka::protocol::Request;
use mes_kafka::protocol::consumer_protocol::{Assignment, Subscription, TopicPartitions};
use mes_kafka::protocol::{
    describe_groups, find_coordinator, heartbeat, join_group, leave_group, list_groups, offset_commit,
    offset_fetch, sync_group,
};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn os(text: Option<&str>) -> Option<StrBytes> {
    text.map(s)
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// Writes `request` with our encoder and reads it with kafka-protocol's,
/// which must take every byte.
fn theirs<R: Request, T: Decodable>(request: &R, version: i16) -> T {
    let mut buf = Vec::new();
    request.encode(version, &mut buf);
    let mut bytes = Bytes::from(buf);
    let decoded = T::decode(&mut bytes, version).unwrap_or_else(|e| panic!("{} v{version}: {e}", R::NAME));
    assert!(
        bytes.is_empty(),
        "{} v{version}: {} bytes left",
        R::NAME,
        bytes.len()
    );
    decoded
}

/// Writes `response` with kafka-protocol's encoder and reads it with ours.
fn ours<R: Request, T: Encodable>(response: &T, version: i16) -> R::Response {
    let mut buf = Vec::new();
    response
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{} v{version}: {e}", R::NAME));
    let decoded = R::decode_response(version, &buf).unwrap_or_else(|e| panic!("{} v{version}: {e}", R::NAME));
    mangle::<R>(version, &buf);
    decoded
}

/// Decodes `bytes` cut short anywhere (an error every time) and with any
/// one byte replaced by a few telling values (an answer or an error, never
/// a panic or a huge allocation).
fn mangle<R: Request>(version: i16, bytes: &[u8]) {
    for n in 0..bytes.len() {
        assert!(
            R::decode_response(version, &bytes[..n]).is_err(),
            "{} v{version}: cut at {n}",
            R::NAME
        );
        for value in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
            let mut mangled = bytes.to_vec();
            mangled[n] = value;
            let _ = R::decode_response(version, &mangled);
        }
    }
}

#[test]
fn find_coordinator() {
    use find_coordinator::FindCoordinatorRequest as Req;
    for version in Req::VERSIONS {
        for key_type in [Req::KEY_TYPE_GROUP, Req::KEY_TYPE_TRANSACTION] {
            let req = Req {
                key: "group-α".into(),
                key_type,
            };
            let kp: kp::FindCoordinatorRequest = theirs(&req, version);
            assert_eq!(kp.key.as_str(), req.key);
            assert_eq!(kp.key_type, key_type);
        }
        for message in [None, Some("coordinator not available")] {
            let resp = kp::FindCoordinatorResponse::default()
                .with_throttle_time_ms(12)
                .with_error_code(if message.is_some() { 15 } else { 0 })
                .with_error_message(os(message))
                .with_node_id(BrokerId(3))
                .with_host(s("kafka-3.local"))
                .with_port(9093);
            let got = ours::<Req, _>(&resp, version);
            assert_eq!(
                got,
                find_coordinator::FindCoordinatorResponse {
                    throttle_time_ms: 12,
                    error_code: resp.error_code,
                    error_message: message.map(str::to_owned),
                    node_id: 3,
                    host: "kafka-3.local".into(),
                    port: 9093,
                }
            );
        }
    }
}

#[test]
fn join_group() {
    use join_group::{JoinGroupMember, JoinGroupProtocol, JoinGroupRequest as Req, JoinGroupResponse};
    for version in Req::VERSIONS {
        for instance in [None, Some("instance-1")] {
            let req = Req {
                group_id: "g".into(),
                session_timeout_ms: 45_000,
                rebalance_timeout_ms: 300_000,
                member_id: "member-1".into(),
                group_instance_id: instance.map(str::to_owned),
                protocol_type: "consumer".into(),
                protocols: vec![
                    JoinGroupProtocol {
                        name: "RoundRobinAssigner".into(),
                        metadata: vec![0, 1, 2],
                    },
                    JoinGroupProtocol {
                        name: "range".into(),
                        metadata: vec![],
                    },
                ],
            };
            let kp: kp::JoinGroupRequest = theirs(&req, version);
            assert_eq!(kp.group_id.as_str(), "g");
            assert_eq!(kp.session_timeout_ms, 45_000);
            assert_eq!(kp.rebalance_timeout_ms, 300_000);
            assert_eq!(kp.member_id.as_str(), "member-1");
            let want_instance = if version >= 5 { instance } else { None };
            assert_eq!(kp.group_instance_id.as_deref(), want_instance);
            assert_eq!(kp.protocol_type.as_str(), "consumer");
            let protocols: Vec<_> = kp
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.to_vec()))
                .collect();
            assert_eq!(
                protocols,
                vec![
                    ("RoundRobinAssigner".to_owned(), vec![0, 1, 2]),
                    ("range".to_owned(), vec![])
                ]
            );
        }
        let resp = kp::JoinGroupResponse::default()
            .with_throttle_time_ms(5)
            .with_error_code(0)
            .with_generation_id(7)
            .with_protocol_name(Some(s("RoundRobinAssigner")))
            .with_leader(s("m1"))
            .with_member_id(s("m2"))
            .with_members(vec![
                kp::join_group_response::JoinGroupResponseMember::default()
                    .with_member_id(s("m1"))
                    .with_group_instance_id(if version >= 5 { Some(s("i1")) } else { None })
                    .with_metadata(b(b"sub-1")),
                kp::join_group_response::JoinGroupResponseMember::default()
                    .with_member_id(s("m2"))
                    .with_metadata(b(b"")),
            ]);
        assert_eq!(
            ours::<Req, _>(&resp, version),
            JoinGroupResponse {
                throttle_time_ms: 5,
                error_code: 0,
                generation_id: 7,
                protocol_name: "RoundRobinAssigner".into(),
                leader: "m1".into(),
                member_id: "m2".into(),
                members: vec![
                    JoinGroupMember {
                        member_id: "m1".into(),
                        group_instance_id: (version >= 5).then(|| "i1".into()),
                        metadata: b"sub-1".to_vec(),
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
    }
}

#[test]
fn sync_group() {
    use sync_group::{SyncGroupAssignment, SyncGroupRequest as Req, SyncGroupResponse};
    for version in Req::VERSIONS {
        for instance in [None, Some("i")] {
            let req = Req {
                group_id: "g".into(),
                generation_id: 9,
                member_id: "m".into(),
                group_instance_id: instance.map(str::to_owned),
                assignments: vec![
                    SyncGroupAssignment {
                        member_id: "m".into(),
                        assignment: vec![1, 2, 3],
                    },
                    SyncGroupAssignment {
                        member_id: "n".into(),
                        assignment: vec![],
                    },
                ],
            };
            let kp: kp::SyncGroupRequest = theirs(&req, version);
            assert_eq!(kp.group_id.as_str(), "g");
            assert_eq!(kp.generation_id, 9);
            assert_eq!(kp.member_id.as_str(), "m");
            assert_eq!(
                kp.group_instance_id.as_deref(),
                if version >= 3 { instance } else { None }
            );
            let assignments: Vec<_> = kp
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
                .collect();
            assert_eq!(
                assignments,
                vec![("m".to_owned(), vec![1, 2, 3]), ("n".to_owned(), vec![])]
            );
        }
        let resp = kp::SyncGroupResponse::default()
            .with_throttle_time_ms(1)
            .with_error_code(27)
            .with_assignment(b(&[0, 0, 0, 0]));
        assert_eq!(
            ours::<Req, _>(&resp, version),
            SyncGroupResponse {
                throttle_time_ms: 1,
                error_code: 27,
                assignment: vec![0, 0, 0, 0]
            }
        );
    }
}

#[test]
fn heartbeat() {
    use heartbeat::{HeartbeatRequest as Req, HeartbeatResponse};
    for version in Req::VERSIONS {
        for instance in [None, Some("i")] {
            let req = Req {
                group_id: "g".into(),
                generation_id: -1,
                member_id: "m".into(),
                group_instance_id: instance.map(str::to_owned),
            };
            let kp: kp::HeartbeatRequest = theirs(&req, version);
            assert_eq!(kp.group_id.as_str(), "g");
            assert_eq!(kp.generation_id, -1);
            assert_eq!(kp.member_id.as_str(), "m");
            assert_eq!(
                kp.group_instance_id.as_deref(),
                if version >= 3 { instance } else { None }
            );
        }
        let resp = kp::HeartbeatResponse::default()
            .with_throttle_time_ms(3)
            .with_error_code(25);
        assert_eq!(
            ours::<Req, _>(&resp, version),
            HeartbeatResponse {
                throttle_time_ms: 3,
                error_code: 25
            }
        );
    }
}

#[test]
fn leave_group() {
    use leave_group::{
        LeaveGroupMember, LeaveGroupMemberResponse, LeaveGroupRequest as Req, LeaveGroupResponse,
    };
    for version in Req::VERSIONS {
        let req = Req {
            group_id: "g".into(),
            members: vec![
                LeaveGroupMember {
                    member_id: "a".into(),
                    group_instance_id: Some("ia".into()),
                },
                LeaveGroupMember {
                    member_id: "b".into(),
                    group_instance_id: None,
                },
            ],
        };
        let kp: kp::LeaveGroupRequest = theirs(&req, version);
        assert_eq!(kp.group_id.as_str(), "g");
        if version >= 3 {
            let members: Vec<_> = kp
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_deref().map(str::to_owned),
                    )
                })
                .collect();
            assert_eq!(
                members,
                vec![("a".to_owned(), Some("ia".to_owned())), ("b".to_owned(), None)]
            );
        } else {
            assert_eq!(kp.member_id.as_str(), "a");
            assert!(kp.members.is_empty());
        }
        let kp_members = vec![
            kp::leave_group_response::MemberResponse::default()
                .with_member_id(s("a"))
                .with_group_instance_id(Some(s("ia"))),
            kp::leave_group_response::MemberResponse::default()
                .with_member_id(s("b"))
                // Its default is "", not null: the spec gives this field no default.
                .with_group_instance_id(None)
                .with_error_code(25),
        ];
        let resp = kp::LeaveGroupResponse::default()
            .with_throttle_time_ms(2)
            .with_error_code(0)
            .with_members(if version >= 3 { kp_members } else { vec![] });
        let members = if version >= 3 {
            vec![
                LeaveGroupMemberResponse {
                    member_id: "a".into(),
                    group_instance_id: Some("ia".into()),
                    error_code: 0,
                },
                LeaveGroupMemberResponse {
                    member_id: "b".into(),
                    group_instance_id: None,
                    error_code: 25,
                },
            ]
        } else {
            vec![]
        };
        assert_eq!(
            ours::<Req, _>(&resp, version),
            LeaveGroupResponse {
                throttle_time_ms: if version >= 1 { 2 } else { 0 },
                error_code: 0,
                members
            }
        );
    }
}

#[test]
fn offset_commit() {
    use offset_commit::{
        OffsetCommitPartition, OffsetCommitPartitionResponse, OffsetCommitRequest as Req,
        OffsetCommitResponse, OffsetCommitTopic, OffsetCommitTopicResponse,
    };
    for version in Req::VERSIONS {
        let req = Req {
            group_id: "g".into(),
            generation_id: 4,
            member_id: "m".into(),
            retention_time_ms: 86_400_000,
            group_instance_id: Some("i".into()),
            topics: vec![
                OffsetCommitTopic {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetCommitPartition {
                            partition_index: 0,
                            committed_offset: 1234,
                            committed_leader_epoch: 6,
                            committed_metadata: Some("meta".into()),
                        },
                        OffsetCommitPartition {
                            partition_index: 5,
                            committed_offset: i64::MAX,
                            committed_leader_epoch: -1,
                            committed_metadata: None,
                        },
                    ],
                },
                OffsetCommitTopic {
                    name: "empty".into(),
                    partitions: vec![],
                },
            ],
        };
        let kp: kp::OffsetCommitRequest = theirs(&req, version);
        assert_eq!(kp.group_id.as_str(), "g");
        assert_eq!(kp.generation_id_or_member_epoch, 4);
        assert_eq!(kp.member_id.as_str(), "m");
        assert_eq!(
            kp.group_instance_id.as_deref(),
            if version >= 7 { Some("i") } else { None }
        );
        assert_eq!(kp.retention_time_ms, if version <= 4 { 86_400_000 } else { -1 });
        let topics: Vec<_> = kp
            .topics
            .iter()
            .map(|t| {
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitPartition {
                        partition_index: p.partition_index,
                        committed_offset: p.committed_offset,
                        committed_leader_epoch: p.committed_leader_epoch,
                        committed_metadata: p.committed_metadata.as_deref().map(str::to_owned),
                    })
                    .collect();
                OffsetCommitTopic {
                    name: t.name.to_string(),
                    partitions,
                }
            })
            .collect();
        let mut want = req.topics.clone();
        if version < 6 {
            for p in want.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.committed_leader_epoch = -1;
            }
        }
        assert_eq!(topics, want, "v{version}");

        let resp = kp::OffsetCommitResponse::default()
            .with_throttle_time_ms(8)
            .with_topics(vec![
                kp::offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![
                        kp::offset_commit_response::OffsetCommitResponsePartition::default()
                            .with_partition_index(0),
                        kp::offset_commit_response::OffsetCommitResponsePartition::default()
                            .with_partition_index(5)
                            .with_error_code(22),
                    ]),
                kp::offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(TopicName(s("empty"))),
            ]);
        assert_eq!(
            ours::<Req, _>(&resp, version),
            OffsetCommitResponse {
                throttle_time_ms: if version >= 3 { 8 } else { 0 },
                topics: vec![
                    OffsetCommitTopicResponse {
                        name: "orders".into(),
                        partitions: vec![
                            OffsetCommitPartitionResponse {
                                partition_index: 0,
                                error_code: 0
                            },
                            OffsetCommitPartitionResponse {
                                partition_index: 5,
                                error_code: 22
                            },
                        ],
                    },
                    OffsetCommitTopicResponse {
                        name: "empty".into(),
                        partitions: vec![]
                    },
                ],
            },
            "v{version}"
        );
    }
}

#[test]
fn offset_fetch() {
    use offset_fetch::{
        OffsetFetchPartition, OffsetFetchRequest as Req, OffsetFetchResponse, OffsetFetchTopic,
        OffsetFetchTopicResponse,
    };
    for version in Req::VERSIONS {
        let req = Req {
            group_id: "g".into(),
            topics: Some(vec![
                OffsetFetchTopic {
                    name: "orders".into(),
                    partition_indexes: vec![0, 1, 7],
                },
                OffsetFetchTopic {
                    name: "none".into(),
                    partition_indexes: vec![],
                },
            ]),
        };
        let kp: kp::OffsetFetchRequest = theirs(&req, version);
        assert_eq!(kp.group_id.as_str(), "g");
        let topics: Option<Vec<_>> = kp.topics.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| OffsetFetchTopic {
                    name: t.name.to_string(),
                    partition_indexes: t.partition_indexes.clone(),
                })
                .collect()
        });
        assert_eq!(topics, req.topics);

        let all = Req {
            group_id: "g".into(),
            topics: None,
        };
        let kp: kp::OffsetFetchRequest = theirs(&all, version);
        if version >= 2 {
            assert_eq!(kp.topics, None);
        } else {
            assert_eq!(kp.topics, Some(vec![]));
        }

        let resp = kp::OffsetFetchResponse::default()
            .with_throttle_time_ms(11)
            .with_topics(vec![
                kp::offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![
                        kp::offset_fetch_response::OffsetFetchResponsePartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(99)
                            .with_committed_leader_epoch(if version >= 5 { 4 } else { -1 })
                            .with_metadata(Some(s("m"))),
                        kp::offset_fetch_response::OffsetFetchResponsePartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(-1)
                            .with_metadata(None)
                            .with_error_code(3),
                    ]),
            ])
            .with_error_code(if version >= 2 { 16 } else { 0 });
        assert_eq!(
            ours::<Req, _>(&resp, version),
            OffsetFetchResponse {
                throttle_time_ms: if version >= 3 { 11 } else { 0 },
                topics: vec![OffsetFetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetFetchPartition {
                            partition_index: 0,
                            committed_offset: 99,
                            committed_leader_epoch: if version >= 5 { 4 } else { -1 },
                            metadata: Some("m".into()),
                            error_code: 0,
                        },
                        OffsetFetchPartition {
                            partition_index: 1,
                            committed_offset: -1,
                            committed_leader_epoch: -1,
                            metadata: None,
                            error_code: 3,
                        },
                    ],
                }],
                error_code: if version >= 2 { 16 } else { 0 },
            },
            "v{version}"
        );
    }
}

#[test]
fn describe_groups() {
    use describe_groups::{
        DescribeGroupsRequest as Req, DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
    };
    for version in Req::VERSIONS {
        for include in [false, true] {
            let req = Req {
                groups: vec!["a".into(), "b".into()],
                include_authorized_operations: include,
            };
            let kp: kp::DescribeGroupsRequest = theirs(&req, version);
            let groups: Vec<_> = kp.groups.iter().map(|g| g.to_string()).collect();
            assert_eq!(groups, req.groups);
            assert_eq!(kp.include_authorized_operations, include && version >= 3);
        }
        let resp = kp::DescribeGroupsResponse::default()
            .with_throttle_time_ms(4)
            .with_groups(vec![
                kp::describe_groups_response::DescribedGroup::default()
                    .with_group_id(GroupId(s("a")))
                    .with_group_state(s("Stable"))
                    .with_protocol_type(s("consumer"))
                    .with_protocol_data(s("RoundRobinAssigner"))
                    .with_members(vec![
                        kp::describe_groups_response::DescribedGroupMember::default()
                            .with_member_id(s("m1"))
                            .with_group_instance_id(if version >= 4 { Some(s("i1")) } else { None })
                            .with_client_id(s("client"))
                            .with_client_host(s("/127.0.0.1"))
                            .with_member_metadata(b(b"md"))
                            .with_member_assignment(b(b"as")),
                    ])
                    .with_authorized_operations(if version >= 3 { 0b1010 } else { i32::MIN }),
                kp::describe_groups_response::DescribedGroup::default()
                    .with_error_code(69)
                    .with_group_id(GroupId(s("b")))
                    .with_group_state(s("Dead"))
                    .with_authorized_operations(i32::MIN),
            ]);
        assert_eq!(
            ours::<Req, _>(&resp, version),
            DescribeGroupsResponse {
                throttle_time_ms: if version >= 1 { 4 } else { 0 },
                groups: vec![
                    DescribedGroup {
                        error_code: 0,
                        group_id: "a".into(),
                        group_state: "Stable".into(),
                        protocol_type: "consumer".into(),
                        protocol_data: "RoundRobinAssigner".into(),
                        members: vec![DescribedGroupMember {
                            member_id: "m1".into(),
                            group_instance_id: (version >= 4).then(|| "i1".into()),
                            client_id: "client".into(),
                            client_host: "/127.0.0.1".into(),
                            member_metadata: b"md".to_vec(),
                            member_assignment: b"as".to_vec(),
                        }],
                        authorized_operations: if version >= 3 { 0b1010 } else { i32::MIN },
                    },
                    DescribedGroup {
                        error_code: 69,
                        group_id: "b".into(),
                        group_state: "Dead".into(),
                        ..DescribedGroup::default()
                    },
                ],
            },
            "v{version}"
        );
    }
}

#[test]
fn list_groups() {
    use list_groups::{ListGroupsRequest as Req, ListGroupsResponse, ListedGroup};
    for version in Req::VERSIONS {
        let kp: kp::ListGroupsRequest = theirs(&Req, version);
        assert_eq!(kp, kp::ListGroupsRequest::default());
        let resp = kp::ListGroupsResponse::default()
            .with_throttle_time_ms(3)
            .with_groups(vec![
                kp::list_groups_response::ListedGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_protocol_type(s("consumer")),
                kp::list_groups_response::ListedGroup::default().with_group_id(GroupId(s("h"))),
            ]);
        assert_eq!(
            ours::<Req, _>(&resp, version),
            ListGroupsResponse {
                throttle_time_ms: if version >= 1 { 3 } else { 0 },
                error_code: 0,
                groups: vec![
                    ListedGroup {
                        group_id: "g".into(),
                        protocol_type: "consumer".into()
                    },
                    ListedGroup {
                        group_id: "h".into(),
                        protocol_type: String::new()
                    },
                ],
            }
        );
    }
}

/// Reads kafka-protocol's payload the way it expects: the caller reads the
/// leading version, then hands the rest over.
fn their_payload<T: Decodable>(bytes: &[u8]) -> (i16, T) {
    let (version, rest) = bytes.split_at(2);
    let version = i16::from_be_bytes([version[0], version[1]]);
    let mut rest = Bytes::copy_from_slice(rest);
    let value = T::decode(&mut rest, 0).unwrap();
    assert!(rest.is_empty());
    (version, value)
}

/// Writes a kafka-protocol payload of `version` behind its version.
fn their_bytes<T: Encodable>(value: &T, version: i16) -> Vec<u8> {
    let mut buf = version.to_be_bytes().to_vec();
    value.encode(&mut buf, version).unwrap();
    buf
}

#[test]
fn consumer_protocol_subscription() {
    for user_data in [None, Some(vec![]), Some(b"ud".to_vec())] {
        let sub = Subscription {
            version: 0,
            topics: vec!["a".into(), "bb".into()],
            user_data: user_data.clone(),
        };
        let (version, kp): (_, ConsumerProtocolSubscription) = their_payload(&sub.encode());
        assert_eq!(version, 0);
        let topics: Vec<_> = kp.topics.iter().map(ToString::to_string).collect();
        assert_eq!(topics, sub.topics);
        assert_eq!(kp.user_data.as_deref(), user_data.as_deref());

        // And the other way round, in every version the Java client writes.
        for version in 0..=3 {
            let kp = ConsumerProtocolSubscription::default()
                .with_topics(vec![s("a"), s("bb")])
                .with_user_data(user_data.as_deref().map(b))
                .with_owned_partitions(if version >= 1 {
                    vec![
                        kp::consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(TopicName(s("a")))
                            .with_partitions(vec![0, 2]),
                    ]
                } else {
                    vec![]
                })
                .with_generation_id(if version >= 2 { 5 } else { -1 })
                .with_rack_id(if version >= 3 { Some(s("rack-1")) } else { None });
            let got = Subscription::decode(&their_bytes(&kp, version)).unwrap();
            assert_eq!(
                got,
                Subscription {
                    version,
                    ..sub.clone()
                },
                "v{version}"
            );
        }
    }
}

#[test]
fn consumer_protocol_assignment() {
    for user_data in [None, Some(vec![]), Some(b"ud".to_vec())] {
        let a = Assignment {
            version: 0,
            assigned: vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![0, 3],
                },
                TopicPartitions {
                    topic: "b".into(),
                    partitions: vec![],
                },
            ],
            user_data: user_data.clone(),
        };
        let (version, kp): (_, ConsumerProtocolAssignment) = their_payload(&a.encode());
        assert_eq!(version, 0);
        let assigned: Vec<_> = kp
            .assigned_partitions
            .iter()
            .map(|t| TopicPartitions {
                topic: t.topic.to_string(),
                partitions: t.partitions.clone(),
            })
            .collect();
        assert_eq!(assigned, a.assigned);
        assert_eq!(kp.user_data.as_deref(), user_data.as_deref());

        for version in 0..=3 {
            let kp = ConsumerProtocolAssignment::default()
                .with_assigned_partitions(vec![
                    kp::consumer_protocol_assignment::TopicPartition::default()
                        .with_topic(TopicName(s("a")))
                        .with_partitions(vec![0, 3]),
                    kp::consumer_protocol_assignment::TopicPartition::default().with_topic(TopicName(s("b"))),
                ])
                .with_user_data(user_data.as_deref().map(b));
            let got = Assignment::decode(&their_bytes(&kp, version)).unwrap();
            assert_eq!(got, Assignment { version, ..a.clone() }, "v{version}");
        }
    }
}
