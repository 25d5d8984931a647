//! `mes groups` and `mes lag`: Kafka's consumer groups, kafkajs's and the
//! Rust consumers' alike.

use std::collections::{BTreeMap, BTreeSet};

use mes_kafka::KafkaClient;
use mes_kafka::protocol::consumer_protocol::{Assignment, Subscription};
use mes_kafka::protocol::describe_groups::{DescribedGroup, DescribedGroupMember};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::connect;
use crate::error::Error;
use crate::output::{Output, table};

/// A member as the consumer protocol describes it.
struct Member {
    member_id: String,
    client_id: String,
    client_host: String,
    /// The topics it subscribes to (empty when its metadata is not the
    /// consumer protocol's).
    subscribed: Vec<String>,
    /// Its partitions, topic by topic.
    assigned: Vec<(String, Vec<i32>)>,
}

impl Member {
    fn from_described(member: &DescribedGroupMember) -> Self {
        let subscribed = Subscription::decode(&member.member_metadata)
            .map(|s| s.topics)
            .unwrap_or_default();
        let assigned = Assignment::decode_sync(&member.member_assignment)
            .ok()
            .flatten()
            .map(|a| a.assigned.into_iter().map(|t| (t.topic, t.partitions)).collect())
            .unwrap_or_default();
        Self {
            member_id: member.member_id.clone(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
            subscribed,
            assigned,
        }
    }

    fn to_json(&self) -> Value {
        let assigned: BTreeMap<&str, &Vec<i32>> =
            self.assigned.iter().map(|(t, p)| (t.as_str(), p)).collect();
        json!({
            "member_id": self.member_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "subscribed": self.subscribed,
            "assigned": assigned,
        })
    }

    fn assignment_text(&self) -> String {
        if self.assigned.is_empty() {
            return "(nothing assigned)".to_owned();
        }
        self.assigned
            .iter()
            .map(|(topic, partitions)| {
                let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
                format!("{topic}:{}", partitions.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn describe(client: &KafkaClient, group: &str) -> Result<(DescribedGroup, Vec<Member>), Error> {
    let described = client
        .describe_group(group)
        .await
        .map_err(Error::kafka(format!("describe group {group}")))?;
    let members = described.members.iter().map(Member::from_described).collect();
    Ok((described, members))
}

pub(crate) async fn list(global: &Global, out: &Output) -> Result<(), Error> {
    let client = connect::kafka(global).await?;
    let groups = client
        .list_groups()
        .await
        .map_err(Error::kafka("list the consumer groups"))?;
    let mut listed = Vec::new();
    let mut rows = Vec::new();
    let mut member_lines = Vec::new();
    for group in groups {
        let (described, members) = describe(&client, &group.group_id).await?;
        rows.push(vec![
            group.group_id.clone(),
            described.group_state.clone(),
            described.protocol_data.clone(),
            members.len().to_string(),
        ]);
        for member in &members {
            member_lines.push(format!(
                "  {} {} ({} from {}): {}",
                group.group_id,
                member.member_id,
                member.client_id,
                member.client_host,
                member.assignment_text()
            ));
        }
        listed.push(json!({
            "group": group.group_id,
            "protocol_type": group.protocol_type,
            "state": described.group_state,
            "protocol": described.protocol_data,
            "members": members.iter().map(Member::to_json).collect::<Vec<_>>(),
        }));
    }
    out.result(&Value::Array(listed), || {
        if rows.is_empty() {
            return vec!["no consumer group".to_owned()];
        }
        let mut lines = table(&["GROUP", "STATE", "ASSIGNOR", "MEMBERS"], &rows);
        if !member_lines.is_empty() {
            lines.push(String::new());
            lines.push("members:".to_owned());
            lines.extend(member_lines);
        }
        lines
    })
}

pub(crate) async fn lag(group: &str, global: &Global, out: &Output) -> Result<(), Error> {
    let client = connect::kafka(global).await?;
    let (described, members) = describe(&client, group).await?;
    // Every partition the group reads or has read: what its members are
    // assigned and subscribe to, and whatever it committed, found by asking
    // for its offsets of every partition of the cluster (one OffsetFetch).
    let topics = client
        .list_topics()
        .await
        .map_err(Error::kafka("list the topics"))?;
    let every: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(topic, count)| (0..i32::try_from(*count).unwrap_or(i32::MAX)).map(|p| (topic.clone(), p)))
        .collect();
    let committed: BTreeMap<(String, i32), i64> = client
        .group_offsets(group, &every)
        .await
        .map_err(Error::kafka(format!("committed offsets of group {group}")))?
        .into_iter()
        .filter_map(|(at, offset)| offset.map(|offset| (at, offset)))
        .collect();
    if members.is_empty()
        && committed.is_empty()
        && matches!(described.group_state.as_str(), "Dead" | "Empty" | "")
    {
        return Err(Error::NotFound(format!(
            "no consumer group {group:?}: no member and no committed offset (`mes groups` lists them)"
        )));
    }
    let mut owners: BTreeMap<(String, i32), &str> = BTreeMap::new();
    let mut partitions: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
    for member in &members {
        for (topic, assigned) in &member.assigned {
            for partition in assigned {
                owners.insert((topic.clone(), *partition), member.member_id.as_str());
                partitions.insert((topic.clone(), *partition));
            }
        }
    }
    let subscribed: BTreeSet<&String> = members.iter().flat_map(|m| &m.subscribed).collect();
    partitions.extend(
        every
            .iter()
            .filter(|(topic, _)| subscribed.contains(topic))
            .cloned(),
    );
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    let mut total = 0i64;
    for (topic, partition) in partitions {
        let (_, end) = crate::topics::bounds(&client, &topic, partition).await?;
        let at = (topic.clone(), partition);
        let offset = committed.get(&at).copied();
        let lag = offset.map(|offset| (end - offset).max(0));
        total += lag.unwrap_or(0);
        let member = owners.get(&at).copied();
        rows.push(vec![
            topic.clone(),
            partition.to_string(),
            offset.map_or_else(|| "-".to_owned(), |o| o.to_string()),
            end.to_string(),
            lag.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            member.unwrap_or("-").to_owned(),
        ]);
        listed.push(json!({
            "topic": topic,
            "partition": partition,
            "committed": offset,
            "end": end,
            "lag": lag,
            "member": member,
        }));
    }
    let value = json!({
        "group": group,
        "state": described.group_state,
        "protocol": described.protocol_data,
        "members": members.iter().map(Member::to_json).collect::<Vec<_>>(),
        "partitions": listed,
        "total_lag": total,
    });
    out.result(&value, || {
        let mut lines = vec![format!(
            "group {group}: {}, {} member(s), assignor {}",
            described.group_state,
            members.len(),
            if described.protocol_data.is_empty() {
                "-"
            } else {
                described.protocol_data.as_str()
            }
        )];
        for member in &members {
            lines.push(format!(
                "  {} ({} from {}): {}",
                member.member_id,
                member.client_id,
                member.client_host,
                member.assignment_text()
            ));
        }
        lines.push(String::new());
        lines.extend(table(
            &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
            &rows,
        ));
        lines.push(format!("total lag {total}"));
        lines
    })
}

#[cfg(test)]
mod tests {
    use mes_kafka::protocol::consumer_protocol::TopicPartitions;

    use super::*;

    fn described(metadata: Vec<u8>, assignment: Vec<u8>) -> DescribedGroupMember {
        DescribedGroupMember {
            member_id: "kafkajs-1".into(),
            group_instance_id: None,
            client_id: "work-order-service".into(),
            client_host: "/10.0.3.9".into(),
            member_metadata: metadata,
            member_assignment: assignment,
        }
    }

    /// What Kafka sends for a kafkajs or Java member: the consumer
    /// protocol's subscription and assignment, decoded.
    #[test]
    fn members_are_read_through_the_consumer_protocol() {
        let subscription = Subscription::new(vec!["mes.material.events".into()]).encode();
        let assignment = Assignment::new(vec![TopicPartitions {
            topic: "mes.material.events".into(),
            partitions: vec![0, 2],
        }])
        .encode();
        let member = Member::from_described(&described(subscription, assignment));
        assert_eq!(member.subscribed, ["mes.material.events"]);
        assert_eq!(member.assigned, [("mes.material.events".to_owned(), vec![0, 2])]);
        assert_eq!(member.assignment_text(), "mes.material.events:0,2");
        assert_eq!(
            member.to_json(),
            json!({"member_id": "kafkajs-1", "client_id": "work-order-service", "client_host": "/10.0.3.9",
                   "subscribed": ["mes.material.events"], "assigned": {"mes.material.events": [0, 2]}})
        );
    }

    /// A member between a join and its assignment, or a broker that says
    /// nothing of it (tansu 0.6): no partitions, no failure.
    #[test]
    fn a_member_without_metadata_has_nothing_assigned() {
        let member = Member::from_described(&described(Vec::new(), Vec::new()));
        assert!(member.subscribed.is_empty() && member.assigned.is_empty());
        assert_eq!(member.assignment_text(), "(nothing assigned)");
        let garbage = Member::from_described(&described(vec![0xff; 3], vec![0xff; 3]));
        assert!(garbage.assigned.is_empty());
    }
}
