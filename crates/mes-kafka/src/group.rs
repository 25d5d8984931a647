//! Membership of a consumer group by Kafka's classic (eager) protocol, as
//! kafkajs 2 and the Java client speak it, so Rust and TypeScript instances
//! of one service share one group: `FindCoordinator`, `JoinGroup` (with the
//! `MEMBER_ID_REQUIRED` retry), `SyncGroup`, `Heartbeat`, `LeaveGroup`,
//! `OffsetCommit` and `OffsetFetch`.
//!
//! The assignor is kafkajs's `RoundRobinAssigner` (protocol name
//! `RoundRobinAssigner`, version 0): the leader sorts the member ids and
//! deals out the partitions of its own subscribed topics, in subscription
//! order, round robin. A Rust leader assigns exactly as a kafkajs leader
//! would ([`round_robin`]), so it does not matter which one leads.
//!
//! kafkajs drops assigned topics a member did not subscribe to, so members
//! with different subscriptions leave partitions unconsumed, silently.
//! [`Generation::subscription_gaps`] says which topics, from what each
//! member subscribed (the leader sees it in `JoinGroup`, the others ask with
//! `DescribeGroups`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::client::KafkaClient;
use crate::connection::BrokerConnection;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::consumer_protocol::{Assignment, Subscription, TopicPartitions};
use crate::protocol::describe_groups::{DescribeGroupsRequest, DescribedGroup};
use crate::protocol::find_coordinator::FindCoordinatorRequest;
use crate::protocol::heartbeat::HeartbeatRequest;
use crate::protocol::join_group::{JoinGroupMember, JoinGroupProtocol, JoinGroupRequest};
use crate::protocol::leave_group::LeaveGroupRequest;
use crate::protocol::list_groups::{ListGroupsRequest, ListedGroup};
use crate::protocol::offset_commit::{OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic};
use crate::protocol::offset_fetch::{OffsetFetchRequest, OffsetFetchTopic};
use crate::protocol::sync_group::{SyncGroupAssignment, SyncGroupRequest};

/// What a leader dealt out in one generation.
struct Dealt {
    assignments: Vec<SyncGroupAssignment>,
    gaps: Vec<String>,
    topics: Vec<(String, usize)>,
}

/// kafkajs's default assignor, by the name it joins with.
pub const ROUND_ROBIN: &str = "RoundRobinAssigner";

/// The protocol type of consumer groups.
const PROTOCOL_TYPE: &str = "consumer";

/// How a member joins its group. Defaults are kafkajs's: session 30 s,
/// rebalance 60 s, heartbeat every 3 s.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
}

impl GroupOptions {
    /// Membership of `group_id`, subscribed to `topics` (in this order: a
    /// leader deals out partitions topic by topic in it).
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            session_timeout: Duration::from_secs(30),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
        }
    }

    /// How long the coordinator waits for a heartbeat before it drops the
    /// member and gives its partitions to the others.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long the coordinator waits for every member to rejoin.
    #[must_use]
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// How often the member says it is alive (a third of the session
    /// timeout or less).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The session timeout.
    pub fn get_session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The heartbeat interval.
    pub fn get_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }
}

/// One generation of the group, as this member took part in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generation id.
    pub generation_id: i32,
    /// This member's id.
    pub member_id: String,
    /// The leader's member id.
    pub leader_id: String,
    /// The assignor the group chose.
    pub protocol: String,
    /// This member's partitions of its subscribed topics, sorted.
    pub partitions: Vec<(String, i32)>,
    /// Topics assigned to this member that it did not subscribe to: not
    /// consumed (kafkajs drops them too).
    pub unsubscribed: Vec<String>,
    /// Topics some member subscribed to that the leader did not: nobody is
    /// assigned their partitions, so nobody consumes them. Empty when every
    /// subscription is the leader's, or when the members' subscriptions
    /// could not be read.
    pub subscription_gaps: Vec<String>,
    /// The leader's view of what it dealt out: each of its subscribed
    /// topics that existed, with its partition count (empty when this
    /// member does not lead). When the cluster's counts drift from these (a
    /// topic created, partitions added), the leader must rejoin so the new
    /// partitions get an owner.
    pub dealt_topics: Vec<(String, usize)>,
}

impl Generation {
    /// Whether this member leads the group (it assigned the partitions).
    pub fn is_leader(&self) -> bool {
        self.member_id == self.leader_id
    }
}

/// A member of a consumer group.
pub struct GroupMember {
    client: KafkaClient,
    options: GroupOptions,
    coordinator: Option<Arc<BrokerConnection>>,
    member_id: String,
    generation_id: i32,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("group", &self.options.group_id)
            .field("member_id", &self.member_id)
            .field("generation_id", &self.generation_id)
            .finish_non_exhaustive()
    }
}

/// kafkajs's `RoundRobinAssigner`: member ids sorted, then the partitions
/// of `topics` (each with its partitions, in this order) dealt out one by
/// one. A member dealt nothing gets no entry, as kafkajs does.
pub fn round_robin(member_ids: &[String], topics: &[(String, Vec<i32>)]) -> BTreeMap<String, Assignment> {
    let mut members: Vec<&String> = member_ids.iter().collect();
    members.sort();
    let mut dealt: BTreeMap<String, Vec<TopicPartitions>> = BTreeMap::new();
    let partitions = topics
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic, *p)));
    for ((topic, partition), member) in partitions.zip(members.iter().cycle()) {
        let assigned = dealt.entry((*member).clone()).or_default();
        match assigned.iter_mut().find(|t| &t.topic == topic) {
            Some(entry) => entry.partitions.push(partition),
            None => assigned.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![partition],
            }),
        }
    }
    dealt
        .into_iter()
        .map(|(member, assigned)| (member, Assignment::new(assigned)))
        .collect()
}

/// Topics some member subscribed to that the leader did not.
fn gaps<'a>(leader: &[String], subscriptions: impl Iterator<Item = &'a Subscription>) -> Vec<String> {
    let leader: BTreeSet<&String> = leader.iter().collect();
    let mut gaps: BTreeSet<String> = BTreeSet::new();
    for subscription in subscriptions {
        gaps.extend(
            subscription
                .topics
                .iter()
                .filter(|t| !leader.contains(t))
                .cloned(),
        );
    }
    gaps.into_iter().collect()
}

impl GroupMember {
    /// A member that joins on [`join`](Self::join).
    pub fn new(client: KafkaClient, options: GroupOptions) -> Self {
        Self {
            client,
            options,
            coordinator: None,
            member_id: String::new(),
            generation_id: -1,
        }
    }

    /// This member's id (empty before it first joined).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation it last joined (-1 before).
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// The options it joins with.
    pub fn options(&self) -> &GroupOptions {
        &self.options
    }

    async fn coordinator(&mut self) -> Result<Arc<BrokerConnection>> {
        if let Some(coordinator) = self.coordinator.as_ref().filter(|c| !c.is_broken()) {
            return Ok(Arc::clone(coordinator));
        }
        let coordinator = self.client.group_coordinator(&self.options.group_id).await?;
        self.coordinator = Some(Arc::clone(&coordinator));
        Ok(coordinator)
    }

    /// Forgets the coordinator after an answer saying it moved.
    fn on_error(&mut self, code: ErrorCode) {
        if matches!(
            code,
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE
        ) {
            self.coordinator = None;
        }
        if code == ErrorCode::UNKNOWN_MEMBER_ID {
            self.member_id.clear();
        }
    }

    fn what(&self, api: &str) -> String {
        format!("{api} of group {}", self.options.group_id)
    }

    /// Joins the group (again) and returns this member's share of the
    /// partitions for the new generation. Retries the coordinator's
    /// transient answers (coordinator moved or loading, rebalance under
    /// way) within the retry budget.
    pub async fn join(&mut self) -> Result<Generation> {
        let retry = self.client.config().get_retry();
        let deadline = tokio::time::Instant::now() + retry.retry_budget() + self.options.rebalance_timeout;
        let mut backoff = retry.initial_backoff;
        loop {
            match self.join_once().await {
                Ok(generation) => return Ok(generation),
                Err(e) => {
                    let transient = e.is_retriable()
                        || matches!(
                            e.code(),
                            Some(
                                ErrorCode::REBALANCE_IN_PROGRESS
                                    | ErrorCode::UNKNOWN_MEMBER_ID
                                    | ErrorCode::ILLEGAL_GENERATION
                                    | ErrorCode::MEMBER_ID_REQUIRED
                            )
                        );
                    if !transient || tokio::time::Instant::now() + backoff > deadline {
                        return Err(e);
                    }
                    debug!(error = %e, "joining the group again");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(retry.max_backoff);
                }
            }
        }
    }

    async fn join_once(&mut self) -> Result<Generation> {
        let coordinator = self.coordinator().await?;
        let subscription = Subscription::new(self.options.topics.clone());
        let mut request = JoinGroupRequest {
            group_id: self.options.group_id.clone(),
            session_timeout_ms: millis(self.options.session_timeout),
            rebalance_timeout_ms: millis(self.options.rebalance_timeout),
            member_id: self.member_id.clone(),
            group_instance_id: None,
            protocol_type: PROTOCOL_TYPE.to_owned(),
            protocols: vec![JoinGroupProtocol {
                name: ROUND_ROBIN.to_owned(),
                metadata: subscription.encode(),
            }],
        };
        // The coordinator holds a join until every member rejoined.
        let bound = coordinator.request_timeout() + self.options.rebalance_timeout;
        let mut joined = coordinator.call_within(&request, bound).await?;
        if ErrorCode(joined.error_code) == ErrorCode::MEMBER_ID_REQUIRED {
            // JoinGroup v4+: the coordinator names the member first.
            request.member_id.clone_from(&joined.member_id);
            self.member_id.clone_from(&joined.member_id);
            joined = coordinator.call_within(&request, bound).await?;
        }
        if joined.error_code != 0 {
            self.on_error(ErrorCode(joined.error_code));
            return Err(Error::broker(self.what("JoinGroup"), joined.error_code));
        }
        self.member_id.clone_from(&joined.member_id);
        self.generation_id = joined.generation_id;
        let leader = joined.leader == joined.member_id;
        let mut subscription_gaps = Vec::new();
        let mut dealt_topics = Vec::new();
        let assignments = if leader {
            let dealt = self.assign(&joined.members).await?;
            subscription_gaps = dealt.gaps;
            dealt_topics = dealt.topics;
            dealt.assignments
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest {
            group_id: self.options.group_id.clone(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            assignments,
        };
        let synced = coordinator.call_within(&sync, bound).await?;
        if synced.error_code != 0 {
            self.on_error(ErrorCode(synced.error_code));
            return Err(Error::broker(self.what("SyncGroup"), synced.error_code));
        }
        let assignment = Assignment::decode_sync(&synced.assignment).map_err(|source| Error::Decode {
            address: coordinator.address().to_owned(),
            api: "SyncGroup assignment",
            source,
        })?;
        let mut partitions = Vec::new();
        let mut unsubscribed = Vec::new();
        for topic in assignment.map(|a| a.assigned).unwrap_or_default() {
            if self.options.topics.contains(&topic.topic) {
                partitions.extend(topic.partitions.iter().map(|p| (topic.topic.clone(), *p)));
            } else {
                unsubscribed.push(topic.topic);
            }
        }
        partitions.sort();
        if !leader {
            subscription_gaps = self.gaps_seen_by_member(&joined.leader).await;
        }
        let generation = Generation {
            generation_id: joined.generation_id,
            member_id: joined.member_id,
            leader_id: joined.leader,
            protocol: joined.protocol_name,
            partitions,
            unsubscribed,
            subscription_gaps,
            dealt_topics,
        };
        info!(
            group = %self.options.group_id,
            generation = generation.generation_id,
            member = %generation.member_id,
            leader = generation.is_leader(),
            partitions = ?generation.partitions,
            "joined the group"
        );
        Ok(generation)
    }

    /// The partitions of each subscribed topic that exists, in
    /// subscription order, from fresh metadata. A leader deals these out; it
    /// compares their counts with [`Generation::dealt_topics`] to see when it
    /// must rejoin.
    pub async fn subscribed_partitions(&self) -> Result<Vec<(String, Vec<i32>)>> {
        let mut topics = Vec::new();
        for topic in &self.options.topics {
            self.client.invalidate_topic(topic);
            match self.client.topic(topic).await {
                Ok(metadata) => topics.push((
                    topic.clone(),
                    metadata.partitions.iter().map(|p| p.partition).collect(),
                )),
                // A topic that does not exist yet has no partition to deal.
                Err(Error::UnknownTopic { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(topics)
    }

    /// The leader's work: every member's assignment, by kafkajs's round
    /// robin over the leader's own subscribed topics; and the topics other
    /// members subscribed that nobody will be assigned.
    async fn assign(&self, members: &[JoinGroupMember]) -> Result<Dealt> {
        let topics = self.subscribed_partitions().await?;
        let subscriptions: Vec<Subscription> = members
            .iter()
            .filter_map(|m| Subscription::decode(&m.metadata).ok())
            .collect();
        let gaps = gaps(&self.options.topics, subscriptions.iter());
        let member_ids: Vec<String> = members.iter().map(|m| m.member_id.clone()).collect();
        let assignments = round_robin(&member_ids, &topics)
            .into_iter()
            .map(|(member_id, assignment)| SyncGroupAssignment {
                member_id,
                assignment: assignment.encode(),
            })
            .collect();
        Ok(Dealt {
            assignments,
            gaps,
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| (topic, partitions.len()))
                .collect(),
        })
    }

    /// A member that does not lead reads every member's subscription with
    /// `DescribeGroups`; when that fails it reports no gap rather than
    /// failing the join.
    async fn gaps_seen_by_member(&mut self, leader_id: &str) -> Vec<String> {
        let group = match self.client.describe_group(&self.options.group_id).await {
            Ok(group) => group,
            Err(e) => {
                debug!(error = %e, "cannot read the members' subscriptions");
                return Vec::new();
            }
        };
        let subscriptions: Vec<(String, Subscription)> = group
            .members
            .iter()
            .filter_map(|m| {
                Subscription::decode(&m.member_metadata)
                    .ok()
                    .map(|s| (m.member_id.clone(), s))
            })
            .collect();
        let Some((_, leader)) = subscriptions.iter().find(|(id, _)| id == leader_id) else {
            return Vec::new();
        };
        gaps(&leader.topics, subscriptions.iter().map(|(_, s)| s))
    }

    /// Tells the coordinator this member is alive. `REBALANCE_IN_PROGRESS`,
    /// `ILLEGAL_GENERATION` and `UNKNOWN_MEMBER_ID` come back as
    /// [`Error::Broker`]: the member must stop using its partitions and
    /// [`join`](Self::join) again.
    pub async fn heartbeat(&mut self) -> Result<()> {
        let coordinator = self.coordinator().await?;
        let request = HeartbeatRequest {
            group_id: self.options.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            group_instance_id: None,
        };
        let answer = coordinator.call(&request).await?;
        if answer.error_code != 0 {
            self.on_error(ErrorCode(answer.error_code));
            return Err(Error::broker(self.what("Heartbeat"), answer.error_code));
        }
        Ok(())
    }

    /// Commits `offsets` (`(topic, partition, next offset to read)`) under
    /// this member's generation.
    pub async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<()> {
        let coordinator = self.coordinator().await?;
        let mut topics: BTreeMap<&String, Vec<OffsetCommitPartition>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            topics.entry(topic).or_default().push(OffsetCommitPartition {
                partition_index: *partition,
                committed_offset: *offset,
                committed_leader_epoch: -1,
                committed_metadata: None,
            });
        }
        let request = OffsetCommitRequest {
            group_id: self.options.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            retention_time_ms: -1,
            group_instance_id: None,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| OffsetCommitTopic {
                    name: name.clone(),
                    partitions,
                })
                .collect(),
        };
        let answer = coordinator.call(&request).await?;
        let refused = answer
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.error_code != 0)
            .map(|p| p.error_code);
        if let Some(code) = refused {
            self.on_error(ErrorCode(code));
            return Err(Error::broker(self.what("OffsetCommit"), code));
        }
        Ok(())
    }

    /// The group's committed offsets of `partitions` (`None`: none
    /// committed).
    pub async fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<((String, i32), Option<i64>)>> {
        let coordinator = self.coordinator().await?;
        committed_offsets(&coordinator, &self.options.group_id, partitions).await
    }

    /// Leaves the group, so its partitions go to the others at once rather
    /// than after the session timeout.
    pub async fn leave(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let coordinator = self.coordinator().await?;
        let answer = coordinator
            .call(&LeaveGroupRequest::one(&self.options.group_id, &self.member_id))
            .await?;
        self.member_id.clear();
        self.generation_id = -1;
        if answer.error_code != 0 && ErrorCode(answer.error_code) != ErrorCode::UNKNOWN_MEMBER_ID {
            return Err(Error::broker(self.what("LeaveGroup"), answer.error_code));
        }
        Ok(())
    }
}

/// `OffsetFetch` of `partitions` for `group` on its coordinator.
async fn committed_offsets(
    coordinator: &BrokerConnection,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<Vec<((String, i32), Option<i64>)>> {
    let mut topics: BTreeMap<&String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let request = OffsetFetchRequest {
        group_id: group.to_owned(),
        topics: Some(
            topics
                .into_iter()
                .map(|(name, partition_indexes)| OffsetFetchTopic {
                    name: name.clone(),
                    partition_indexes,
                })
                .collect(),
        ),
    };
    let answer = coordinator.call(&request).await?;
    if answer.error_code != 0 {
        return Err(Error::broker(
            format!("OffsetFetch of group {group}"),
            answer.error_code,
        ));
    }
    let mut found = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let committed = answer
            .topics
            .iter()
            .filter(|t| &t.name == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == *partition);
        match committed {
            Some(p) if p.error_code != 0 => {
                return Err(Error::broker(
                    format!("OffsetFetch of group {group}, {topic}/{partition}"),
                    p.error_code,
                ));
            }
            Some(p) if p.committed_offset >= 0 => {
                found.push(((topic.clone(), *partition), Some(p.committed_offset)));
            }
            _ => found.push(((topic.clone(), *partition), None)),
        }
    }
    Ok(found)
}

impl KafkaClient {
    /// The coordinator of consumer group `group`.
    pub async fn group_coordinator(&self, group: &str) -> Result<Arc<BrokerConnection>> {
        let request = FindCoordinatorRequest::group(group);
        let what = format!("FindCoordinator of group {group}");
        self.retrying(&what, || async {
            let answer = self.any_connection().await?.call(&request).await?;
            if answer.error_code != 0 {
                return Err(Error::broker(what.clone(), answer.error_code));
            }
            self.connection(&format!("{}:{}", answer.host, answer.port)).await
        })
        .await
    }

    /// The consumer groups every broker knows.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>> {
        let answer = self.metadata(Some(Vec::new())).await?;
        let mut groups = Vec::new();
        for broker in &answer.brokers {
            let connection = self.broker_connection(broker.node_id).await?;
            let listed = connection.call(&ListGroupsRequest).await?;
            if listed.error_code != 0 {
                return Err(Error::broker("ListGroups", listed.error_code));
            }
            groups.extend(listed.groups);
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// A group's state, protocol and members (their subscriptions and
    /// assignments as the consumer protocol encodes them).
    pub async fn describe_group(&self, group: &str) -> Result<DescribedGroup> {
        let coordinator = self.group_coordinator(group).await?;
        let answer = coordinator
            .call(&DescribeGroupsRequest {
                groups: vec![group.to_owned()],
                include_authorized_operations: false,
            })
            .await?;
        let found = answer
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| {
                Error::broker(
                    format!("DescribeGroups of {group}"),
                    ErrorCode::UNKNOWN_SERVER_ERROR.0,
                )
            })?;
        if found.error_code != 0 {
            return Err(Error::broker(
                format!("DescribeGroups of {group}"),
                found.error_code,
            ));
        }
        Ok(found)
    }

    /// Removes a member from a group, as Kafka's admin
    /// `removeMembersFromConsumerGroup` does: the coordinator rebalances at
    /// once instead of waiting for the member's session to time out. For an
    /// instance known dead (its host is gone); a live member that is removed
    /// gets `UNKNOWN_MEMBER_ID` at its next heartbeat, stops using its
    /// partitions and joins again. `Ok(false)`: the group had no such member.
    pub async fn remove_group_member(&self, group: &str, member_id: &str) -> Result<bool> {
        let coordinator = self.group_coordinator(group).await?;
        let answer = coordinator
            .call(&LeaveGroupRequest::one(group, member_id))
            .await?;
        // v3 answers per member; earlier versions only for the request.
        let code = if answer.error_code != 0 {
            answer.error_code
        } else {
            answer
                .members
                .iter()
                .find(|m| m.member_id == member_id)
                .map_or(0, |m| m.error_code)
        };
        match ErrorCode(code) {
            ErrorCode::NONE => Ok(true),
            ErrorCode::UNKNOWN_MEMBER_ID => Ok(false),
            _ => Err(Error::broker(
                format!("LeaveGroup of group {group} for {member_id}"),
                code,
            )),
        }
    }

    /// The offsets `group` committed for `partitions` (`None`: none), as
    /// an operator tool or a lag exporter reads them.
    pub async fn group_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<((String, i32), Option<i64>)>> {
        let coordinator = self.group_coordinator(group).await?;
        committed_offsets(&coordinator, group, partitions).await
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn dealt(assignment: &BTreeMap<String, Assignment>, member: &str) -> Vec<(String, Vec<i32>)> {
        assignment
            .get(member)
            .map(|a| {
                a.assigned
                    .iter()
                    .map(|t| (t.topic.clone(), t.partitions.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The deal kafkajs 2.2's RoundRobinAssigner makes (its own test:
    /// sorted member ids, partitions of each topic in turn).
    #[test]
    fn round_robin_deals_like_kafkajs() {
        let topics = vec![
            ("topic-A".to_owned(), vec![0, 1, 2, 3]),
            ("topic-B".to_owned(), vec![0, 1, 2]),
        ];
        let assignment = round_robin(&ids(&["member-3", "member-1", "member-2"]), &topics);
        assert_eq!(
            dealt(&assignment, "member-1"),
            vec![
                ("topic-A".to_owned(), vec![0, 3]),
                ("topic-B".to_owned(), vec![2])
            ]
        );
        assert_eq!(
            dealt(&assignment, "member-2"),
            vec![("topic-A".to_owned(), vec![1]), ("topic-B".to_owned(), vec![0])]
        );
        assert_eq!(
            dealt(&assignment, "member-3"),
            vec![("topic-A".to_owned(), vec![2]), ("topic-B".to_owned(), vec![1])]
        );
        // Six partitions, two members: [0, 2, 4] and [1, 3, 5], as checked on tansu with kafkajs.
        let six = vec![("t".to_owned(), (0..6).collect())];
        let two = round_robin(&ids(&["b", "a"]), &six);
        assert_eq!(dealt(&two, "a"), vec![("t".to_owned(), vec![0, 2, 4])]);
        assert_eq!(dealt(&two, "b"), vec![("t".to_owned(), vec![1, 3, 5])]);
        // More members than partitions: the ones dealt nothing get no entry.
        let few = round_robin(&ids(&["a", "b", "c"]), &[("t".to_owned(), vec![0])]);
        assert_eq!(few.len(), 1);
        assert!(few.contains_key("a"));
    }

    #[test]
    fn gaps_are_topics_the_leader_does_not_subscribe() {
        let leader = ids(&["a"]);
        let subscriptions = [
            Subscription::new(ids(&["a"])),
            Subscription::new(ids(&["a", "b"])),
        ];
        assert_eq!(gaps(&leader, subscriptions.iter()), ids(&["b"]));
        assert!(gaps(&ids(&["a", "b"]), subscriptions.iter()).is_empty());
    }
}
