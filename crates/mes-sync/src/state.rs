//! The group's state in Redis: committed offsets, partition leases with
//! fencing tokens, live members, and de-duplication marks.
//!
//! Every key of a group starts with `mes:sync:{<group>}`: the braces make
//! the group a Redis Cluster hash tag, so one script can touch all of them.

use std::time::Duration;

use fred::prelude::*;
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

/// A lease this member holds: `member/token`. The token grows every time
/// the partition changes hands, so a stale holder's value never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease(pub(crate) String);

pub(crate) struct GroupState {
    client: Client,
    base: String,
    member: String,
    lease_ttl_ms: u64,
    dedup_window_ms: u64,
}

fn state_error(what: &str) -> impl FnOnce(fred::error::Error) -> Error + '_ {
    move |e| Error::State {
        what: what.to_owned(),
        source: Box::new(e) as BoxError,
    }
}

const JOIN: &str = r"
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

const LEAVE: &str = r"return redis.call('ZREM', KEYS[1], ARGV[1])";

const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '/' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return current
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '/' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS: lease, offsets hash, seen mark (or the lease again), then one key
/// per effect. ARGV: lease value, offsets field, next offset, dedup window
/// ms, 1/0 whether to mark, then per effect: op, arg, arg.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[4]) end
local k = 4
local a = 6
while ARGV[a] do
  local op = ARGV[a]
  if op == 'hincrby' then redis.call('HINCRBY', KEYS[k], ARGV[a + 1], ARGV[a + 2])
  elseif op == 'set' then redis.call('SET', KEYS[k], ARGV[a + 1])
  elseif op == 'del' then redis.call('DEL', KEYS[k])
  elseif op == 'rpush' then redis.call('RPUSH', KEYS[k], ARGV[a + 1])
  end
  k = k + 1
  a = a + 3
end
return 1
";

impl GroupState {
    pub(crate) async fn connect(
        redis_url: &str,
        group: &str,
        member: &str,
        lease_ttl: Duration,
        dedup_window: Duration,
    ) -> Result<Self, Error> {
        let config = Config::from_url(redis_url).map_err(|e| Error::Config {
            reason: format!("Redis URL {}: {e}", redact_url(redis_url)),
        })?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(5);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .map_err(state_error("build the Redis client"))?;
        client.init().await.map_err(state_error("connect to Redis"))?;
        Ok(Self {
            client,
            base: format!("mes:sync:{{{group}}}"),
            member: member.to_owned(),
            lease_ttl_ms: u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX),
            dedup_window_ms: u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn members_key(&self) -> String {
        format!("{}:members", self.base)
    }

    fn lease_key(&self, tp: &TopicPartition) -> String {
        format!("{}:lease:{tp}", self.base)
    }

    fn epoch_key(&self, tp: &TopicPartition) -> String {
        format!("{}:epoch:{tp}", self.base)
    }

    fn offsets_key(&self) -> String {
        format!("{}:offsets", self.base)
    }

    /// The key of the de-duplication mark of an event id.
    pub(crate) fn seen_key(&self, event_id: &str) -> String {
        format!("{}:seen:{event_id}", self.base)
    }

    /// Announces this member as alive for a lease TTL; returns every live
    /// member, sorted.
    pub(crate) async fn heartbeat(&self) -> Result<Vec<String>, Error> {
        self.client
            .eval(
                JOIN,
                vec![self.members_key()],
                vec![self.member.clone(), self.lease_ttl_ms.to_string()],
            )
            .await
            .map_err(state_error("heartbeat"))
    }

    pub(crate) async fn leave(&self) -> Result<(), Error> {
        let _: i64 = self
            .client
            .eval(LEAVE, vec![self.members_key()], vec![self.member.clone()])
            .await
            .map_err(state_error("leave the group"))?;
        Ok(())
    }

    /// Takes the partition's lease if it is free (or already ours).
    pub(crate) async fn acquire(&self, tp: &TopicPartition) -> Result<Option<Lease>, Error> {
        let value: Option<String> = self
            .client
            .eval(
                ACQUIRE,
                vec![self.lease_key(tp), self.epoch_key(tp)],
                vec![self.member.clone(), self.lease_ttl_ms.to_string()],
            )
            .await
            .map_err(state_error("acquire a lease"))?;
        Ok(value.map(Lease))
    }

    /// Extends a lease; `false` when it is no longer ours.
    pub(crate) async fn renew(&self, tp: &TopicPartition, lease: &Lease) -> Result<bool, Error> {
        let renewed: i64 = self
            .client
            .eval(
                RENEW,
                vec![self.lease_key(tp)],
                vec![lease.0.clone(), self.lease_ttl_ms.to_string()],
            )
            .await
            .map_err(state_error("renew a lease"))?;
        Ok(renewed == 1)
    }

    pub(crate) async fn release(&self, tp: &TopicPartition, lease: &Lease) {
        let released: Result<i64, _> = self
            .client
            .eval(RELEASE, vec![self.lease_key(tp)], vec![lease.0.clone()])
            .await;
        if let Err(e) = released {
            // It expires by itself within the lease TTL.
            warn!(partition = %tp, error = %e, "could not release a lease");
        }
    }

    /// The next offset to read of a partition, if the group committed one.
    pub(crate) async fn committed(&self, tp: &TopicPartition) -> Result<Option<i64>, Error> {
        let value: Option<String> = self
            .client
            .hget(self.offsets_key(), tp.to_string())
            .await
            .map_err(state_error("read a committed offset"))?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// Whether an event id was handled within the dedup window.
    pub(crate) async fn seen(&self, event_id: &str) -> Result<bool, Error> {
        let exists: i64 = self
            .client
            .exists(self.seen_key(event_id))
            .await
            .map_err(state_error("check an event id"))?;
        Ok(exists > 0)
    }

    /// Commits `next_offset` for the partition, marks `event_id` as handled
    /// and applies `effects`, all at once and only while `lease` is the
    /// partition's lease. `false`: the lease was lost, nothing was written.
    pub(crate) async fn commit(
        &self,
        tp: &TopicPartition,
        lease: &Lease,
        next_offset: i64,
        event_id: Option<&str>,
        effects: &Effects,
    ) -> Result<bool, Error> {
        let lease_key = self.lease_key(tp);
        let mut keys = vec![
            lease_key.clone(),
            self.offsets_key(),
            event_id.map_or(lease_key, |id| self.seen_key(id)),
        ];
        let mut args = vec![
            lease.0.clone(),
            tp.to_string(),
            next_offset.to_string(),
            self.dedup_window_ms.to_string(),
            if event_id.is_some() { "1" } else { "0" }.to_owned(),
        ];
        for effect in &effects.ops {
            let (key, op, a, b) = match effect {
                Effect::HashIncrement { key, field, by } => (key, "hincrby", field.clone(), by.to_string()),
                Effect::Set { key, value } => (key, "set", value.clone(), String::new()),
                Effect::Delete { key } => (key, "del", String::new(), String::new()),
                Effect::ListPush { key, value } => (key, "rpush", value.clone(), String::new()),
            };
            keys.push(key.clone());
            args.extend([op.to_owned(), a, b]);
        }
        let committed: i64 = self
            .client
            .eval(COMMIT, keys, args)
            .await
            .map_err(state_error("commit an offset"))?;
        Ok(committed == 1)
    }

    pub(crate) async fn close(&self) {
        let _ = self.client.quit().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn member(group: &str, name: &str) -> GroupState {
        let url = mes_testkit::redis_url();
        GroupState::connect(
            &url,
            group,
            name,
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    }

    /// The fencing guarantee: once a partition changed hands, the previous
    /// holder's commits are refused and change nothing.
    #[tokio::test]
    async fn a_stale_holders_commit_is_refused() {
        let group = format!("fencing-{}", ulid::Ulid::new());
        let (a, b) = (member(&group, "a").await, member(&group, "b").await);
        let tp = TopicPartition {
            topic: "mes.x.events".into(),
            partition: 0,
        };
        let lease_a = a.acquire(&tp).await.unwrap().unwrap();
        assert_eq!(b.acquire(&tp).await.unwrap(), None, "held by a");
        assert!(
            a.commit(&tp, &lease_a, 10, Some("e-1"), &Effects::none())
                .await
                .unwrap()
        );

        // a stalls past its lease (here: the lease expires at once) and b takes over.
        let _: i64 = a.client.del(a.lease_key(&tp)).await.unwrap();
        let lease_b = b.acquire(&tp).await.unwrap().unwrap();
        assert_ne!(lease_a, lease_b, "a new fencing token");

        // a wakes up and tries to commit what it was doing: refused, nothing written.
        let stale = Effects::none().hash_increment(format!("{}:effects", a.base), "e-2", 1);
        assert!(!a.commit(&tp, &lease_a, 11, Some("e-2"), &stale).await.unwrap());
        assert!(!a.renew(&tp, &lease_a).await.unwrap());
        assert_eq!(b.committed(&tp).await.unwrap(), Some(10));
        assert!(!b.seen("e-2").await.unwrap());
        let effects: Option<i64> = b.client.hget(format!("{}:effects", b.base), "e-2").await.unwrap();
        assert_eq!(effects, None);

        assert!(
            b.commit(&tp, &lease_b, 11, Some("e-2"), &Effects::none())
                .await
                .unwrap()
        );
        assert_eq!(a.committed(&tp).await.unwrap(), Some(11));
        // A stale release does not free b's lease either.
        a.release(&tp, &lease_a).await;
        assert!(b.renew(&tp, &lease_b).await.unwrap());
        let _: i64 = b
            .client
            .del(vec![
                b.lease_key(&tp),
                b.epoch_key(&tp),
                b.offsets_key(),
                b.seen_key("e-1"),
                b.seen_key("e-2"),
                b.members_key(),
            ])
            .await
            .unwrap();
    }
}
