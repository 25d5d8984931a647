//! The payloads of the "consumer" protocol type: what a member puts in
//! `JoinGroup`'s protocol metadata ([`Subscription`]) and what the leader
//! hands out through `SyncGroup` ([`Assignment`]).
//!
//! Both are written as version 0, byte for byte as kafkajs 2.2 writes them
//! (`src/consumer/assignerProtocol.js`): an `int16` version, then the v0
//! fields. Reading takes the v0 fields of any version and ignores whatever
//! follows them, so the v1-v3 payloads of the Java client (owned
//! partitions, generation id, rack id) read fine, and so do kafkajs's
//! "version 1" payloads that carry only the v0 fields.

use super::DecodeError;
use super::primitives::{Reader, Writer};

/// A member's subscription: the topics it wants and opaque user data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The version written before the fields. Only the v0 fields are ever
    /// written, whatever this says (as kafkajs does: its round-robin
    /// assigner writes 1); keep it 0 where Java members have to read it,
    /// since they read a version's later fields and fail when they are
    /// missing. When read, the version that was on the wire.
    pub version: i16,
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// Opaque data for the assignor. kafkajs writes an empty array when it
    /// has none, the Java client null (`None`).
    pub user_data: Option<Vec<u8>>,
}

impl Subscription {
    /// A version-0 subscription to `topics`, with empty user data (as
    /// kafkajs writes it).
    pub fn new(topics: Vec<String>) -> Self {
        Self {
            version: 0,
            topics,
            user_data: Some(Vec::new()),
        }
    }

    /// Writes the subscription: `version`, then the v0 fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_i16(self.version);
        buf.put_len(self.topics.len());
        for topic in &self.topics {
            buf.put_str(topic);
        }
        buf.put_nullable_bytes(self.user_data.as_deref());
        buf
    }

    /// Reads a subscription of any version: the v0 fields, ignoring what
    /// follows them. A negative version is an error (as for the Java
    /// client).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = read_version(&mut r, "subscription")?;
        let count = r.array_len(2)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push(r.string()?);
        }
        let user_data = r.nullable_bytes()?.map(<[u8]>::to_vec);
        Ok(Self {
            version,
            topics,
            user_data,
        })
    }
}

/// The partitions of one topic in an [`Assignment`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The topic.
    pub topic: String,
    /// Its partitions assigned to the member.
    pub partitions: Vec<i32>,
}

/// What the leader assigns to one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The version written before the fields; as for
    /// [`Subscription::version`], only the v0 fields are written, which is
    /// all an assignment has up to v3 anyway. When read, the version that
    /// was on the wire.
    pub version: i16,
    /// The assigned partitions, topic by topic.
    pub assigned: Vec<TopicPartitions>,
    /// Opaque data from the assignor. kafkajs writes an empty array when it
    /// has none, the Java client null (`None`).
    pub user_data: Option<Vec<u8>>,
}

impl Assignment {
    /// A version-0 assignment of `assigned`, with empty user data (as
    /// kafkajs writes it).
    pub fn new(assigned: Vec<TopicPartitions>) -> Self {
        Self {
            version: 0,
            assigned,
            user_data: Some(Vec::new()),
        }
    }

    /// Writes the assignment: `version`, then the v0 fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.put_i16(self.version);
        buf.put_len(self.assigned.len());
        for topic in &self.assigned {
            buf.put_str(&topic.topic);
            buf.put_len(topic.partitions.len());
            for &partition in &topic.partitions {
                buf.put_i32(partition);
            }
        }
        buf.put_nullable_bytes(self.user_data.as_deref());
        buf
    }

    /// Reads an assignment of any version: the v0 fields, ignoring what
    /// follows them. A negative version is an error, and so is an empty
    /// payload: see [`Assignment::decode_sync`] for that.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = read_version(&mut r, "assignment")?;
        let count = r.array_len(6)?;
        let mut assigned = Vec::with_capacity(count);
        for _ in 0..count {
            let topic = r.string()?;
            let n = r.array_len(4)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push(r.i32()?);
            }
            assigned.push(TopicPartitions { topic, partitions });
        }
        let user_data = r.nullable_bytes()?.map(<[u8]>::to_vec);
        Ok(Self {
            version,
            assigned,
            user_data,
        })
    }

    /// Reads the assignment a `SyncGroup` answer carries: `None` if it is
    /// empty, which is what the coordinator sends a member the leader left
    /// out (kafkajs 2.2 likewise reads a payload too short for the version
    /// as no assignment), else [`Assignment::decode`].
    pub fn decode_sync(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        if bytes.is_empty() {
            Ok(None)
        } else {
            Self::decode(bytes).map(Some)
        }
    }
}

fn read_version(r: &mut Reader<'_>, what: &str) -> Result<i16, DecodeError> {
    let version = r.i16()?;
    if version < 0 {
        return Err(DecodeError::new(format!(
            "consumer protocol {what} of version {version}"
        )));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kafkajs's `MemberMetadata.encode({ version: 1, topics: ['topic-test'] })`
    /// (its test fixture `member-metadata.json`).
    const KAFKAJS_METADATA: &[u8] = &[
        0, 1, 0, 0, 0, 1, 0, 10, b't', b'o', b'p', b'i', b'c', b'-', b't', b'e', b's', b't', 0, 0, 0, 0,
    ];

    #[test]
    fn subscription_is_written_like_kafkajs() {
        let sub = Subscription {
            version: 1,
            ..Subscription::new(vec!["topic-test".into()])
        };
        assert_eq!(sub.encode(), KAFKAJS_METADATA);
        assert_eq!(Subscription::decode(KAFKAJS_METADATA).unwrap(), sub);
        let null = Subscription {
            user_data: None,
            ..Subscription::new(vec![])
        };
        assert_eq!(null.encode(), [0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Subscription::decode(&null.encode()).unwrap(), null);
    }

    #[test]
    fn java_v3_subscription_reads_its_v0_prefix() {
        let mut buf = Vec::new();
        buf.put_i16(3);
        buf.put_len(2);
        buf.put_str("a");
        buf.put_str("b");
        buf.put_nullable_bytes(Some(b"ud"));
        // owned partitions [a: [0, 1]], generation id 7, rack "r1"
        buf.put_len(1);
        buf.put_str("a");
        buf.put_len(2);
        buf.put_i32(0);
        buf.put_i32(1);
        buf.put_i32(7);
        buf.put_nullable_str(Some("r1"));
        let sub = Subscription::decode(&buf).unwrap();
        assert_eq!(
            sub,
            Subscription {
                version: 3,
                topics: vec!["a".into(), "b".into()],
                user_data: Some(b"ud".to_vec())
            }
        );
    }

    #[test]
    fn assignment_is_written_field_by_field() {
        let a = Assignment::new(vec![
            TopicPartitions {
                topic: "t".into(),
                partitions: vec![0, 2],
            },
            TopicPartitions {
                topic: "u".into(),
                partitions: vec![],
            },
        ]);
        let bytes = a.encode();
        let mut want = vec![0, 0, 0, 0, 0, 2];
        want.extend([0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend([0, 1, b'u', 0, 0, 0, 0]);
        want.extend([0, 0, 0, 0]);
        assert_eq!(bytes, want);
        assert_eq!(Assignment::decode(&bytes).unwrap(), a);
    }

    /// kafkajs's `MemberAssignment.encode({ version: 1, assignment: { 'topic-test': [2, 5, 4, 1, 3, 0] } })`
    /// (its test fixture `memberAssignment.json`).
    const KAFKAJS_ASSIGNMENT: &[u8] = &[
        0, 1, 0, 0, 0, 1, 0, 10, 116, 111, 112, 105, 99, 45, 116, 101, 115, 116, 0, 0, 0, 6, 0, 0, 0, 2, 0,
        0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn assignment_is_written_like_kafkajs() {
        let a = Assignment {
            version: 1,
            ..Assignment::new(vec![TopicPartitions {
                topic: "topic-test".into(),
                partitions: vec![2, 5, 4, 1, 3, 0],
            }])
        };
        assert_eq!(a.encode(), KAFKAJS_ASSIGNMENT);
        assert_eq!(Assignment::decode(KAFKAJS_ASSIGNMENT).unwrap(), a);
        assert_eq!(Assignment::decode_sync(KAFKAJS_ASSIGNMENT).unwrap(), Some(a));
        assert_eq!(Assignment::decode_sync(&[]).unwrap(), None);
        assert!(Assignment::decode_sync(&[0]).is_err());
    }

    #[test]
    fn java_v3_assignment_and_trailing_bytes_are_read() {
        let mut a = Assignment::new(vec![TopicPartitions {
            topic: "t".into(),
            partitions: vec![5],
        }]);
        a.version = 3;
        a.user_data = None;
        let mut bytes = a.encode();
        bytes.extend([1, 2, 3]);
        assert_eq!(Assignment::decode(&bytes).unwrap(), a);
    }

    #[test]
    fn truncations_negative_versions_and_huge_counts_are_errors() {
        let sub = Subscription::new(vec!["topic".into(), "other".into()]).encode();
        for n in 0..sub.len() {
            assert!(Subscription::decode(&sub[..n]).is_err(), "{n}");
        }
        let a = Assignment::new(vec![TopicPartitions {
            topic: "t".into(),
            partitions: vec![1, 2],
        }])
        .encode();
        for n in 0..a.len() {
            assert!(Assignment::decode(&a[..n]).is_err(), "{n}");
        }
        assert!(Subscription::decode(&[0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Assignment::decode(&[0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Assignment::decode(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
    }
}
