//! The group's state in Redis: committed offsets (the truth for effects),
//! the offsets last mirrored to Kafka, a fenced owner per partition, and
//! de-duplication marks.
//!
//! Every key of a group starts with `mes:sync:{<group>}`: the braces make
//! the group a Redis Cluster hash tag, so one script can touch all of them.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use mes_cache::SentinelWatch;
use mes_redact::redact_url;
use tracing::warn;

use crate::error::{BoxError, Error};
use crate::handler::{Effect, Effects};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Who may commit a partition: a member in one generation of the Kafka
/// group. Stored as `generation:member`; a claim of a newer generation
/// replaces an older one, never the other way round, so a member that
/// missed a rebalance cannot commit over its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) generation: i32,
    pub(crate) member: String,
}

impl Owner {
    fn value(&self) -> String {
        format!("{}:{}", self.generation, self.member)
    }
}

/// An event whose handling a commit records: its id is marked seen and
/// its effects applied, unless the id was marked already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handled<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) effects: &'a Effects,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Written; this many of its events were marked already (handled
    /// meanwhile elsewhere): their effects were not applied again.
    Written { already_marked: u64 },
    /// The stored offset already was the new one: an earlier attempt of
    /// this commit landed and only its reply was lost. Nothing written.
    Landed,
    /// Another owner holds the partition (or the claim lapsed). Nothing
    /// written.
    NotOwner,
    /// The stored offset is not the one this commit continues from: Redis
    /// lost writes it had acknowledged (a failover promoted a replica that
    /// had not received them yet) or someone moved the offset. Nothing
    /// written; the caller starts again from what is stored.
    Diverged,
}

/// Where a partition stands in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StoredPosition {
    /// The next offset to read, as the last commit left it.
    pub(crate) committed: Option<i64>,
    /// The offset last committed to Kafka by a Rust member.
    pub(crate) mirrored: Option<i64>,
}

impl StoredPosition {
    /// Where to start, given the group's offset in Kafka: Kafka's when it
    /// is not the one a Rust member mirrored there (a kafkajs member moved
    /// it, or an operator reset it), else Redis's, which may be ahead of
    /// the last mirror. `None`: nobody ever committed.
    pub(crate) fn start(self, kafka: Option<i64>) -> Option<i64> {
        match kafka {
            Some(kafka) if Some(kafka) != self.mirrored => Some(kafka),
            _ => self.committed.or(kafka),
        }
    }
}

pub(crate) struct GroupState {
    client: Client,
    /// A connection of its own for the mirror records, whose `WAIT` blocks
    /// it (never the commits).
    mirror_client: Client,
    /// Behind a Sentinel: keeps `client` on the master the Sentinels name,
    /// so that commits do not go on to an old master a switchover left up
    /// (lost when it is demoted).
    sentinel: Option<SentinelWatch>,
    base: String,
    dedup_window_ms: u64,
}

/// How many replicas a master's `ROLE` answer lists (none from anything
/// else).
fn replicas(role: &Value) -> usize {
    match role {
        Value::Array(fields) => match fields.get(2) {
            Some(Value::Array(replicas)) => replicas.len(),
            _ => 0,
        },
        _ => 0,
    }
}

/// `op` with its cluster redirections followed (see
/// [`mes_cache::follow_redirections`]), for as long as a command may take.
async fn redirected<T, F, Fut>(op: F) -> Result<T, fred::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fred::error::Error>>,
{
    mes_cache::follow_redirections(COMMAND_TIMEOUT, op).await
}

fn state_error(what: &str) -> impl FnOnce(fred::error::Error) -> Error + '_ {
    move |e| Error::State {
        what: what.to_owned(),
        source: Box::new(e) as BoxError,
    }
}

/// KEYS: owner. ARGV: generation, owner value, ttl ms. Claims the
/// partition unless a member of the same or a newer generation holds it.
const CLAIM: &str = r"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then
  local generation = tonumber(string.match(current, '^(-?%d+):'))
  if generation and generation >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// KEYS: owners. ARGV: owner value, ttl ms. Extends the claims still
/// held; returns 1/0 per key.
const RENEW: &str = r"
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS: owner, offsets hash, then per event: its seen mark, then one key
/// per effect. ARGV: owner value, offsets field, next offset, dedup window
/// ms, event count, the offset this commit continues from ('' for none),
/// then per event: effect count, then per effect: op, arg, arg. Applies an
/// event's effects only if its mark was not set yet (a redelivery, or the
/// same event on another partition, changes nothing). Returns -1 when the
/// owner is not this one, -3 when the stored offset already is the next
/// one (an earlier attempt landed), -2 when it is neither that nor the one
/// continued from (nothing written in those three cases); else how many
/// events were already marked.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local stored = redis.call('HGET', KEYS[2], ARGV[2])
if (stored or '') ~= ARGV[6] then
  if stored == ARGV[3] then return -3 end
  return -2
end
local k = 3
local a = 7
local marked = 0
for e = 1, tonumber(ARGV[5]) do
  local effects = tonumber(ARGV[a])
  a = a + 1
  local new = redis.call('SET', KEYS[k], '1', 'NX', 'PX', ARGV[4])
  if not new then marked = marked + 1 end
  k = k + 1
  for i = 1, effects do
    if new then
      local op = ARGV[a]
      if op == 'hincrby' then redis.call('HINCRBY', KEYS[k], ARGV[a + 1], ARGV[a + 2])
      elseif op == 'set' then redis.call('SET', KEYS[k], ARGV[a + 1])
      elseif op == 'del' then redis.call('DEL', KEYS[k])
      elseif op == 'rpush' then redis.call('RPUSH', KEYS[k], ARGV[a + 1])
      end
    end
    k = k + 1
    a = a + 3
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return marked
";

/// KEYS: offsets hash, mirrored hash. ARGV: partition field.
const POSITION: &str = r"
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
";

/// How long one Redis command or connection attempt may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How often, behind a Sentinel, the Sentinels are asked for the master.
const MASTER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

impl GroupState {
    pub(crate) async fn connect(redis_url: &str, group: &str, dedup_window: Duration) -> Result<Self, Error> {
        let config = Config::from_url(redis_url).map_err(|e| Error::Config {
            reason: format!("Redis URL {}: {e}", redact_url(redis_url)),
        })?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                // Followed by `redirected` (fred's own ASK handling can
                // answer a command with another's reply).
                c.max_redirections = 0;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .map_err(state_error("build the Redis client"))?;
        client.init().await.map_err(state_error("connect to Redis"))?;
        let mirror_client = client.clone_new();
        if let Err(e) = mirror_client.init().await {
            let _ = client.quit().await;
            return Err(state_error("connect to Redis")(e));
        }
        let sentinel = SentinelWatch::start(
            &[client.clone(), mirror_client.clone()],
            MASTER_CHECK_INTERVAL,
            COMMAND_TIMEOUT,
        );
        Ok(Self {
            client,
            mirror_client,
            sentinel,
            base: format!("mes:sync:{{{group}}}"),
            dedup_window_ms: u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn owner_key(&self, tp: &TopicPartition) -> String {
        format!("{}:owner:{tp}", self.base)
    }

    fn offsets_key(&self) -> String {
        format!("{}:offsets", self.base)
    }

    fn mirrored_key(&self) -> String {
        format!("{}:mirrored", self.base)
    }

    /// The key of the de-duplication mark of an event id.
    pub(crate) fn seen_key(&self, event_id: &str) -> String {
        format!("{}:seen:{event_id}", self.base)
    }

    /// Claims the partition for `owner` for `ttl`; `false` when a member of
    /// the same or a newer generation holds it.
    pub(crate) async fn claim(
        &self,
        tp: &TopicPartition,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let (keys, args) = (
            vec![self.owner_key(tp)],
            vec![owner.generation.to_string(), owner.value(), millis(ttl)],
        );
        let claimed: i64 = redirected(|| self.client.eval(CLAIM, keys.clone(), args.clone()))
            .await
            .map_err(state_error("claim a partition"))?;
        Ok(claimed == 1)
    }

    /// Extends `owner`'s claims on `partitions` to `ttl` from now; returns
    /// the partitions it no longer holds.
    pub(crate) async fn renew(
        &self,
        partitions: &[TopicPartition],
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Vec<TopicPartition>, Error> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let keys = partitions.iter().map(|tp| self.owner_key(tp)).collect::<Vec<_>>();
        let args = vec![owner.value(), millis(ttl)];
        let held: Vec<i64> = redirected(|| self.client.eval(RENEW, keys.clone(), args.clone()))
            .await
            .map_err(state_error("renew partition claims"))?;
        Ok(partitions
            .iter()
            .zip(held.into_iter().chain(std::iter::repeat(0)))
            .filter(|(_, held)| *held != 1)
            .map(|(tp, _)| tp.clone())
            .collect())
    }

    /// Gives up a claim, if it is still `owner`'s.
    pub(crate) async fn release(&self, tp: &TopicPartition, owner: &Owner) {
        let (key, value) = (self.owner_key(tp), owner.value());
        let released: Result<i64, _> =
            redirected(|| self.client.eval(RELEASE, vec![key.clone()], vec![value.clone()])).await;
        if let Err(e) = released {
            // It lapses by itself within the session timeout.
            warn!(partition = %tp, error = %e, "could not release a partition claim");
        }
    }

    /// The partition's committed and mirrored offsets.
    pub(crate) async fn position(&self, tp: &TopicPartition) -> Result<StoredPosition, Error> {
        let (keys, field) = (vec![self.offsets_key(), self.mirrored_key()], tp.to_string());
        let (committed, mirrored): (Option<String>, Option<String>) =
            redirected(|| self.client.eval(POSITION, keys.clone(), vec![field.clone()]))
                .await
                .map_err(state_error("read a partition's position"))?;
        let parse = |value: Option<String>| value.and_then(|v| v.parse().ok());
        Ok(StoredPosition {
            committed: parse(committed),
            mirrored: parse(mirrored),
        })
    }

    /// Records that Kafka is about to hold `offsets` for the group, and
    /// whether the record reached a replica within `wait` (always, for a
    /// server without replicas). The caller commits to Kafka only then: a
    /// failover that loses the record must not leave Kafka holding an
    /// offset that looks like someone else's (it would win over Redis's on
    /// the next assignment, and the events between would keep the effects
    /// the failover lost). The commits the offsets come from were written
    /// before, so a replica that has the record has them too.
    pub(crate) async fn mirroring(
        &self,
        offsets: &[(TopicPartition, i64)],
        wait: Duration,
    ) -> Result<bool, Error> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let key = self.mirrored_key();
        let fields: Vec<(String, String)> = offsets
            .iter()
            .map(|(tp, offset)| (tp.to_string(), offset.to_string()))
            .collect();
        let _: i64 = redirected(|| self.mirror_client.hset(key.as_str(), fields.clone()))
            .await
            .map_err(state_error("record mirrored offsets"))?;
        // ROLE and WAIT have no key: sent to the node of the key (Cluster).
        let node = ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()));
        let role: Value = redirected(|| {
            self.mirror_client.custom(
                CustomCommand::new_static("ROLE", node.clone(), false),
                Vec::<Value>::new(),
            )
        })
        .await
        .map_err(state_error("read the server's replicas"))?;
        if replicas(&role) == 0 {
            return Ok(true);
        }
        let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1);
        let acked: i64 = self
            .mirror_client
            .custom(CustomCommand::new_static("WAIT", node, true), vec![1, millis])
            .await
            .map_err(state_error("wait for a replica"))?;
        Ok(acked >= 1)
    }

    /// Which of `event_ids` were handled within the dedup window: one
    /// round trip for a fetched batch.
    pub(crate) async fn seen(&self, event_ids: &[&str]) -> Result<Vec<bool>, Error> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = event_ids.iter().map(|id| self.seen_key(id)).collect();
        let marks: Vec<Option<String>> = redirected(|| self.client.mget(keys.clone()))
            .await
            .map_err(state_error("check event ids"))?;
        Ok(marks.iter().map(Option::is_some).collect())
    }

    /// Forgets that an event id was handled, so its next delivery runs the
    /// handler again (a dead letter replayed on purpose).
    pub(crate) async fn unmark(&self, event_id: &str) -> Result<(), Error> {
        let key = self.seen_key(event_id);
        let _: i64 = redirected(|| self.client.del(key.as_str()))
            .await
            .map_err(state_error("remove an event's seen mark"))?;
        Ok(())
    }

    /// Commits `next_offset` for the partition and, for each of `events`
    /// not marked yet, marks it and applies its effects: all at once, only
    /// while `owner` holds the partition, and only if the stored offset is
    /// still `from` (what this owner read or last committed; `None`:
    /// nothing stored).
    pub(crate) async fn commit(
        &self,
        tp: &TopicPartition,
        owner: &Owner,
        from: Option<i64>,
        next_offset: i64,
        events: &[Handled<'_>],
    ) -> Result<Committed, Error> {
        let mut keys = vec![self.owner_key(tp), self.offsets_key()];
        let mut args = vec![
            owner.value(),
            tp.to_string(),
            next_offset.to_string(),
            self.dedup_window_ms.to_string(),
            events.len().to_string(),
            from.map(|offset| offset.to_string()).unwrap_or_default(),
        ];
        for handled in events {
            keys.push(self.seen_key(handled.event_id));
            args.push(handled.effects.ops.len().to_string());
            for effect in &handled.effects.ops {
                let (key, op, a, b) = match effect {
                    Effect::HashIncrement { key, field, by } => {
                        (key, "hincrby", field.clone(), by.to_string())
                    }
                    Effect::Set { key, value } => (key, "set", value.clone(), String::new()),
                    Effect::Delete { key } => (key, "del", String::new(), String::new()),
                    Effect::ListPush { key, value } => (key, "rpush", value.clone(), String::new()),
                };
                keys.push(key.clone());
                args.extend([op.to_owned(), a, b]);
            }
        }
        let outcome: i64 = redirected(|| self.client.eval(COMMIT, keys.clone(), args.clone()))
            .await
            .map_err(state_error("commit an offset"))?;
        Ok(match outcome {
            -1 => Committed::NotOwner,
            -2 => Committed::Diverged,
            -3 => Committed::Landed,
            marked => Committed::Written {
                already_marked: u64::try_from(marked).unwrap_or_default(),
            },
        })
    }

    pub(crate) async fn close(&self) {
        if let Some(sentinel) = &self.sentinel {
            sentinel.stop().await;
        }
        let _ = self.mirror_client.quit().await;
        let _ = self.client.quit().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(30);
    const NONE: Effects = Effects::none();

    fn handled<'a>(event_id: &'a str, effects: &'a Effects) -> Handled<'a> {
        Handled { event_id, effects }
    }

    async fn state(group: &str) -> GroupState {
        GroupState::connect(&mes_testkit::redis_url(), group, Duration::from_secs(60))
            .await
            .unwrap()
    }

    fn written(already_marked: u64) -> Committed {
        Committed::Written { already_marked }
    }

    fn owner(generation: i32, member: &str) -> Owner {
        Owner {
            generation,
            member: member.to_owned(),
        }
    }

    #[test]
    fn kafka_wins_only_when_someone_else_moved_it() {
        let stored = |committed, mirrored| StoredPosition { committed, mirrored };
        // Never committed anywhere.
        assert_eq!(stored(None, None).start(None), None);
        // Only kafkajs ever committed: take over from there.
        assert_eq!(stored(None, None).start(Some(40)), Some(40));
        // Redis ran ahead of the last mirror: Redis is the truth.
        assert_eq!(stored(Some(57), Some(50)).start(Some(50)), Some(57));
        // A kafkajs member (or an operator's reset) moved it since.
        assert_eq!(stored(Some(57), Some(50)).start(Some(80)), Some(80));
        assert_eq!(stored(Some(57), Some(50)).start(Some(10)), Some(10));
        // The group's Kafka offsets were deleted: Redis still knows.
        assert_eq!(stored(Some(57), Some(50)).start(None), Some(57));
    }

    /// A switchover that leaves the old master up and never demoted (its
    /// `REPLICAOF` renamed away, so the Sentinel cannot): nothing breaks
    /// the connection, yet commits must go to the master the Sentinels
    /// name, not on to the old one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn behind_a_sentinel_commits_follow_a_switchover_to_the_new_master() {
        use mes_testkit::redis::{RedisBinaries, RedisServer};
        let binaries = RedisBinaries::for_tests();
        let (master, replica, sentinel) = tokio::task::block_in_place(|| {
            let master = RedisServer::start(
                &binaries,
                &[
                    "--rename-command",
                    "REPLICAOF",
                    "",
                    "--rename-command",
                    "SLAVEOF",
                    "",
                ],
            )
            .unwrap();
            let replica = RedisServer::start_replica_of(&master, &[]).unwrap();
            let sentinel =
                RedisServer::start_sentinel(&master, "mymaster", Duration::from_secs(5), 1).unwrap();
            (master, replica, sentinel)
        });
        let url = format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName=mymaster",
            sentinel.port()
        );
        let group = format!("switchover-{}", ulid::Ulid::new());
        let state = GroupState::connect(&url, &group, Duration::from_secs(60))
            .await
            .unwrap();
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 0,
        };
        let a1 = owner(1, "a");
        assert!(state.claim(&tp, &a1, SESSION).await.unwrap());
        assert_eq!(
            state
                .commit(&tp, &a1, None, 10, &[handled("e-1", &NONE)])
                .await
                .unwrap(),
            written(0)
        );

        tokio::task::block_in_place(|| sentinel.switch_over("mymaster", &replica).unwrap());
        assert!(master.cli(&["ROLE"]).unwrap().starts_with("master"));

        // Commits until one lands on the new master (errors while the
        // client moves count as not yet); what went to the old one meanwhile
        // diverges from the new master's offset and is refused there.
        let offsets = format!("mes:sync:{{{group}}}:offsets");
        let on_new = || replica.cli(&["HGET", &offsets, &tp.to_string()]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut next = 10;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no commit reached the new master"
            );
            let _ = state.claim(&tp, &a1, SESSION).await;
            match state.commit(&tp, &a1, Some(next), next + 1, &[]).await {
                Ok(Committed::Written { .. }) => next += 1,
                // Back to what the new master holds, as a worker does.
                Ok(Committed::Diverged) => next = state.position(&tp).await.unwrap().committed.unwrap(),
                Ok(other) => panic!("{other:?}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            if on_new().trim() == next.to_string() && next > 10 {
                break;
            }
        }
        // From now on every commit is on the new master.
        for _ in 0..5 {
            assert_eq!(
                state.commit(&tp, &a1, Some(next), next + 1, &[]).await.unwrap(),
                written(0)
            );
            next += 1;
            assert_eq!(on_new().trim(), next.to_string());
        }
        state.close().await;
    }

    /// The fencing guarantee: once a newer generation claimed a partition,
    /// the previous owner's commits are refused and change nothing.
    #[tokio::test]
    async fn a_stale_owners_commit_is_refused() {
        let group = format!("fencing-{}", ulid::Ulid::new());
        let (a, b) = (state(&group).await, state(&group).await);
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 0,
        };
        let (a1, b2) = (owner(1, "a"), owner(2, "b"));
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap());
        assert!(
            !b.claim(&tp, &owner(1, "b"), SESSION).await.unwrap(),
            "same generation: held by a"
        );
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap(), "a claim is renewable");
        assert_eq!(
            a.commit(&tp, &a1, None, 10, &[handled("e-1", &NONE)])
                .await
                .unwrap(),
            written(0)
        );

        // A rebalance a missed: generation 2 gives the partition to b.
        assert!(b.claim(&tp, &b2, SESSION).await.unwrap());
        assert!(
            !a.claim(&tp, &a1, SESSION).await.unwrap(),
            "an older generation never wins back"
        );

        // a wakes up and tries to commit what it was doing: refused, nothing written.
        let stale = Effects::none().hash_increment(format!("{}:effects", a.base), "e-2", 1);
        assert_eq!(
            a.commit(&tp, &a1, Some(10), 11, &[handled("e-2", &stale)])
                .await
                .unwrap(),
            Committed::NotOwner
        );
        assert_eq!(
            a.renew(std::slice::from_ref(&tp), &a1, SESSION).await.unwrap(),
            vec![tp.clone()]
        );
        assert_eq!(b.position(&tp).await.unwrap().committed, Some(10));
        assert_eq!(b.seen(&["e-2"]).await.unwrap(), [false]);
        let effects: Option<i64> = b.client.hget(format!("{}:effects", b.base), "e-2").await.unwrap();
        assert_eq!(effects, None);

        assert_eq!(
            b.commit(&tp, &b2, Some(10), 11, &[handled("e-2", &NONE)])
                .await
                .unwrap(),
            written(0)
        );
        assert_eq!(a.position(&tp).await.unwrap().committed, Some(11));
        // A stale release does not free b's claim either.
        a.release(&tp, &a1).await;
        assert!(
            b.renew(std::slice::from_ref(&tp), &b2, SESSION)
                .await
                .unwrap()
                .is_empty()
        );
        let _: i64 = b
            .client
            .del(vec![
                b.owner_key(&tp),
                b.offsets_key(),
                b.seen_key("e-1"),
                b.seen_key("e-2"),
            ])
            .await
            .unwrap();
    }

    /// A member that stops renewing (it cannot heartbeat) loses its claim
    /// when the ttl runs out, and then commits nothing.
    #[tokio::test]
    async fn a_lapsed_claim_refuses_commits() {
        let group = format!("lapse-{}", ulid::Ulid::new());
        let a = state(&group).await;
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 3,
        };
        let a1 = owner(1, "a");
        assert!(a.claim(&tp, &a1, Duration::from_millis(1)).await.unwrap());
        // PX 1: gone once Redis's clock moved a millisecond; wait for that
        // by watching the key, not by sleeping.
        let key = a.owner_key(&tp);
        loop {
            let exists: i64 = a.client.exists(&key).await.unwrap();
            if exists == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.commit(&tp, &a1, None, 5, &[handled("e-1", &NONE)])
                .await
                .unwrap(),
            Committed::NotOwner
        );
        assert_eq!(a.position(&tp).await.unwrap(), StoredPosition::default());
        assert_eq!(a.seen(&["e-1"]).await.unwrap(), [false]);
    }

    #[tokio::test]
    async fn mirrored_offsets_are_read_back_with_the_committed_ones() {
        let group = format!("mirror-{}", ulid::Ulid::new());
        let a = state(&group).await;
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 1,
        };
        let a1 = owner(4, "a");
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap());
        assert_eq!(a.commit(&tp, &a1, None, 9, &[]).await.unwrap(), written(0));
        // No replica: nothing to wait for.
        assert!(
            a.mirroring(&[(tp.clone(), 7)], Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(
            a.position(&tp).await.unwrap(),
            StoredPosition {
                committed: Some(9),
                mirrored: Some(7)
            }
        );
        let _: i64 = a
            .client
            .del(vec![a.owner_key(&tp), a.offsets_key(), a.mirrored_key()])
            .await
            .unwrap();
    }

    /// On a Cluster, `ROLE` and `WAIT` go to the node of the group's keys.
    #[tokio::test]
    async fn a_mirror_record_is_written_and_waited_for_on_a_cluster() {
        let group = format!("mirror-cluster-{}", ulid::Ulid::new());
        let url = mes_testkit::required_env(
            "MES_TEST_REDIS_CLUSTER_URL",
            "Redis Cluster of three masters (redis-cluster://host:port?node=...)",
        );
        let state = GroupState::connect(&url, &group, Duration::from_secs(60))
            .await
            .unwrap();
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 3,
        };
        assert!(
            state
                .mirroring(&[(tp.clone(), 4)], Duration::from_secs(5))
                .await
                .unwrap()
        );
        let recorded: Option<String> = state
            .client
            .hget(state.mirrored_key(), tp.to_string())
            .await
            .unwrap();
        assert_eq!(recorded.as_deref(), Some("4"));
        let _: i64 = state.client.del(state.mirrored_key()).await.unwrap();
        state.close().await;
    }

    /// A mirror record counts only once a replica has it: with the
    /// replica's link blackholed the record is written but reported not
    /// replicated (the consumer then leaves Kafka's offsets as they are),
    /// and once the link is back it is replicated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_record_counts_once_a_replica_has_it() {
        use mes_testkit::fault_proxy::{Fault, FaultProxy};
        use mes_testkit::redis::{RedisBinaries, RedisServer};
        let binaries = RedisBinaries::for_tests();
        let (master, link, replica) = tokio::task::block_in_place(|| {
            let master = RedisServer::start(&binaries, &[]).unwrap();
            let (link, _) = FaultProxy::in_front_of(&master.url()).unwrap();
            let replica =
                RedisServer::start(&binaries, &["--replicaof", "127.0.0.1", &link.port().to_string()])
                    .unwrap();
            replica
                .wait_for(&["INFO", "replication"], "master_link_status:up")
                .unwrap();
            (master, link, replica)
        });
        let group = format!("mirror-wait-{}", ulid::Ulid::new());
        let state = GroupState::connect(&master.url(), &group, Duration::from_secs(60))
            .await
            .unwrap();
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 0,
        };
        let field = tp.to_string();
        let on_replica = || replica.cli(&["HGET", &state.mirrored_key(), &field]).unwrap();

        assert!(
            state
                .mirroring(&[(tp.clone(), 5)], Duration::from_secs(10))
                .await
                .unwrap()
        );
        assert_eq!(on_replica().trim(), "5");

        link.set(Fault::Blackhole);
        assert!(
            !state
                .mirroring(&[(tp.clone(), 9)], Duration::from_millis(200))
                .await
                .unwrap()
        );
        assert_eq!(on_replica().trim(), "5");
        assert_eq!(
            master
                .cli(&["HGET", &state.mirrored_key(), &field])
                .unwrap()
                .trim(),
            "9"
        );

        link.heal();
        assert!(
            state
                .mirroring(&[(tp.clone(), 12)], Duration::from_secs(10))
                .await
                .unwrap()
        );
        assert_eq!(on_replica().trim(), "12");
        state.close().await;
    }

    /// A commit continues from the offset its owner read or last wrote. If
    /// Redis no longer holds that offset (a failover lost acknowledged
    /// writes: the commit, its marks and its effects together, since a
    /// replica receives a script's writes as one transaction), nothing is
    /// written and the owner is told; if it already holds the new offset,
    /// an earlier attempt landed and nothing is written twice.
    #[tokio::test]
    async fn a_commit_that_does_not_continue_the_stored_offset_writes_nothing() {
        let group = format!("diverged-{}", ulid::Ulid::new());
        let a = state(&group).await;
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 1,
        };
        let a1 = owner(1, "a");
        let effects_key = format!("{}:effects", a.base);
        let count = |id: &str| Effects::none().hash_increment(effects_key.clone(), id, 1);
        let (e1, e2) = (count("e-1"), count("e-2"));
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap());
        assert_eq!(
            a.commit(&tp, &a1, None, 8, &[handled("e-1", &e1)]).await.unwrap(),
            written(0)
        );
        // The same commit again (its reply was lost, the caller retried).
        assert_eq!(
            a.commit(&tp, &a1, None, 8, &[handled("e-1", &e1)]).await.unwrap(),
            Committed::Landed
        );
        // What a failover to a replica that missed the last writes leaves:
        // an older offset.
        let _: i64 = a
            .client
            .hset(a.offsets_key(), (tp.to_string(), "5"))
            .await
            .unwrap();
        assert_eq!(
            a.commit(&tp, &a1, Some(8), 9, &[handled("e-2", &e2)])
                .await
                .unwrap(),
            Committed::Diverged
        );
        assert_eq!(a.position(&tp).await.unwrap().committed, Some(5));
        assert_eq!(a.seen(&["e-2"]).await.unwrap(), [false]);
        // Or nothing at all.
        let _: i64 = a.client.hdel(a.offsets_key(), tp.to_string()).await.unwrap();
        assert_eq!(
            a.commit(&tp, &a1, Some(8), 9, &[handled("e-2", &e2)])
                .await
                .unwrap(),
            Committed::Diverged
        );
        let applied: std::collections::HashMap<String, i64> = a.client.hgetall(&effects_key).await.unwrap();
        assert_eq!(applied, [("e-1".to_owned(), 1)].into_iter().collect());
        let _: i64 = a
            .client
            .del(vec![
                a.owner_key(&tp),
                a.offsets_key(),
                effects_key,
                a.seen_key("e-1"),
            ])
            .await
            .unwrap();
    }

    /// A commit while the group's slot migrates, its keys split between two
    /// masters (the source answers `TRYAGAIN`), waits for the migration and
    /// lands once it has moved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_during_a_migration_of_the_groups_slot_lands_once_it_has_moved() {
        use mes_testkit::redis::{RedisBinaries, RedisCluster};
        let cluster =
            tokio::task::block_in_place(|| RedisCluster::start(&RedisBinaries::for_tests(), 3).unwrap());
        let a = GroupState::connect(&cluster.url(), "migrating", Duration::from_secs(60))
            .await
            .unwrap();
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 0,
        };
        let a1 = owner(1, "a");
        let effects_key = format!("{}:effects", a.base);
        let count = |id: &str| Effects::none().hash_increment(effects_key.clone(), id, 1);
        let (e1, e2) = (count("e-1"), count("e-2"));
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap());
        assert_eq!(
            a.commit(&tp, &a1, None, 1, &[handled("e-1", &e1)]).await.unwrap(),
            written(0)
        );

        // The offsets key moved, the owner and seen keys not yet.
        let slot = fred::util::redis_keyslot(a.offsets_key().as_bytes());
        let from = cluster.first_owner(slot);
        let slot_move = tokio::task::block_in_place(|| {
            let slot_move = cluster.begin_move(slot, from, (from + 1) % 3).unwrap();
            slot_move.migrate(&[&a.offsets_key()]).unwrap();
            slot_move
        });

        // In this order: the commit is sent before the migration ends.
        let batch = [handled("e-2", &e2)];
        let (committed, ()) = tokio::join!(
            biased;
            a.commit(&tp, &a1, Some(1), 2, &batch),
            async { tokio::task::block_in_place(|| slot_move.finish().unwrap()) }
        );
        assert_eq!(committed.unwrap(), written(0));
        assert_eq!(a.position(&tp).await.unwrap().committed, Some(2));
        assert_eq!(a.seen(&["e-1", "e-2"]).await.unwrap(), [true, true]);
        let applied: std::collections::HashMap<String, i64> = a.client.hgetall(&effects_key).await.unwrap();
        assert_eq!(
            applied,
            [("e-1".to_owned(), 1), ("e-2".to_owned(), 1)]
                .into_iter()
                .collect()
        );
        a.close().await;
    }

    /// One commit for a fetched batch: each event's effects once, even when
    /// its id was marked by an earlier commit or comes twice in the batch
    /// (one event published twice, or read on two partitions).
    #[tokio::test]
    async fn a_batch_commit_applies_each_event_id_once() {
        let group = format!("batch-{}", ulid::Ulid::new());
        let a = state(&group).await;
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 2,
        };
        let a1 = owner(1, "a");
        let effects_key = format!("{}:effects", a.base);
        let count = |id: &str| Effects::none().hash_increment(effects_key.clone(), id, 1);
        assert!(a.claim(&tp, &a1, SESSION).await.unwrap());
        let (e1, e2, e3) = (count("e-1"), count("e-2"), count("e-3"));
        assert_eq!(
            a.commit(&tp, &a1, None, 1, &[handled("e-1", &e1)]).await.unwrap(),
            written(0)
        );
        assert_eq!(a.seen(&["e-1", "e-2"]).await.unwrap(), [true, false]);

        let batch = [
            handled("e-1", &e1),
            handled("e-2", &e2),
            handled("e-3", &e3),
            handled("e-2", &e2),
        ];
        assert_eq!(
            a.commit(&tp, &a1, Some(1), 5, &batch).await.unwrap(),
            written(2),
            "e-1 and the second e-2"
        );
        let applied: std::collections::HashMap<String, i64> = a.client.hgetall(&effects_key).await.unwrap();
        assert_eq!(
            applied,
            [("e-1", 1), ("e-2", 1), ("e-3", 1)]
                .map(|(id, n)| (id.to_owned(), n))
                .into_iter()
                .collect()
        );
        assert_eq!(a.position(&tp).await.unwrap().committed, Some(5));
        let _: i64 = a
            .client
            .del(vec![
                a.owner_key(&tp),
                a.offsets_key(),
                effects_key,
                a.seen_key("e-1"),
                a.seen_key("e-2"),
                a.seen_key("e-3"),
            ])
            .await
            .unwrap();
    }
}
