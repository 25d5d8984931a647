//! The Redis backend on fred: standalone, Cluster and Sentinel.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use fred::clients::Pool;
use fred::prelude::{ClientLike, ClusterInterface, KeysInterface};
use fred::types::scan::{ScanResult, Scanner};
use fred::types::{ClusterHash, CustomCommand, FromValue, Key, Value};
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tracing::debug;

use super::redirect::{follow_redirections, is_redirection, unless_redirected};
use super::sentinel::{Master, SentinelWatch};
use super::{Raw, ServerStats, server_stats_from_info};
use crate::config::{CacheConfig, ReconnectPolicy};
use crate::error::{BoxError, Error, Result, ShortReply, SlotsKeptMoving};

pub(crate) struct RedisBackend {
    pool: Pool,
    clustered: bool,
    /// Set for a Sentinel-managed pool.
    master: Option<SentinelWatch>,
    /// How long a command may wait for its slot's migration to end.
    redirect_budget: Duration,
}

fn raw(value: Value) -> Raw {
    match value {
        Value::Null => None,
        // Anything that is not a bulk string decodes as an empty value: a
        // counted decode failure, never a panic.
        other => Some(other.into_bytes().unwrap_or_default()),
    }
}

fn setex() -> CustomCommand {
    CustomCommand::new_static("SETEX", ClusterHash::FirstKey, false)
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A fred builder for `fred_config` with the cache's timeouts and
/// reconnect policy: the pool's, and the near cache's listeners'.
pub(crate) fn builder(
    config: &CacheConfig,
    fred_config: fred::types::config::Config,
) -> fred::types::Builder {
    let mut builder = fred::types::Builder::from_config(fred_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
            c.internal_command_timeout = config.command_timeout;
            // Followed by `redirect::follow_redirections` (fred's own ASK
            // handling can answer a command with another's reply).
            c.max_redirections = 0;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = config.command_timeout;
        });
    match config.reconnect {
        ReconnectPolicy::Never => {}
        ReconnectPolicy::Constant { delay, max_attempts } => {
            builder.set_policy(fred::types::config::ReconnectPolicy::new_constant(
                max_attempts,
                millis(delay),
            ));
        }
        ReconnectPolicy::Exponential {
            min_delay,
            max_delay,
            max_attempts,
        } => {
            builder.set_policy(fred::types::config::ReconnectPolicy::new_exponential(
                max_attempts,
                millis(min_delay),
                millis(max_delay),
                2,
            ));
        }
    }
    builder
}

impl RedisBackend {
    pub(crate) async fn connect(config: &CacheConfig) -> Result<Self> {
        let builder = builder(config, config.fred_config()?);
        let pool = builder
            .build_pool(config.pool_size)
            .map_err(|e| Error::Connect { source: Box::new(e) })?;
        Self::from_pool(pool, config).await
    }

    pub(crate) async fn from_pool(pool: Pool, config: &CacheConfig) -> Result<Self> {
        if !pool.is_connected() {
            let init = tokio::time::timeout(config.connect_timeout, pool.init()).await;
            match init {
                Ok(Ok(_connection_task)) => {}
                Ok(Err(e)) => return Err(Error::Connect { source: Box::new(e) }),
                Err(elapsed) => {
                    let _ = pool.quit().await;
                    return Err(Error::Connect {
                        source: Box::new(elapsed),
                    });
                }
            }
        }
        let clustered = pool.is_clustered();
        let master = SentinelWatch::start(
            pool.clients(),
            config.master_check_interval,
            config.command_timeout,
        );
        Ok(Self {
            pool,
            clustered,
            master,
            redirect_budget: config.command_timeout,
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The master the pool is on, as the Sentinels name it; `None` off a
    /// Sentinel.
    pub(crate) fn sentinel_master(&self) -> Option<watch::Receiver<Option<Master>>> {
        self.master.as_ref().map(SentinelWatch::master)
    }

    pub(crate) async fn get(&self, key: String) -> Result<Raw, BoxError> {
        let client = self.pool.next();
        let value: Value = follow_redirections(self.redirect_budget, || client.get(key.as_str())).await?;
        Ok(raw(value))
    }

    /// `GET` and `PTTL` of one key in one round trip (a pipeline on one
    /// connection), for the near cache: the value, and how long Redis keeps
    /// it (-1 for no TTL, -2 when the key is gone).
    pub(crate) async fn get_with_pttl(&self, key: String) -> Result<(Raw, i64), BoxError> {
        let client = self.pool.next();
        let replies = follow_redirections(self.redirect_budget, || async {
            let pipeline = client.pipeline();
            let () = pipeline.get(key.as_str()).await?;
            let () = pipeline.pttl(key.as_str()).await?;
            unless_redirected(pipeline.try_all::<Value>().await)
        })
        .await?;
        let mut replies = replies.into_iter();
        let value = replies.next().ok_or("GET: no reply")??;
        let pttl = replies.next().ok_or("PTTL: no reply")??;
        Ok((raw(value), pttl.as_i64().unwrap_or(-2)))
    }

    /// [`mget`](Self::mget) and the `PTTL` of every key, in one pipeline:
    /// one `MGET` per hash slot and `batch` keys, one `PTTL` per key.
    pub(crate) async fn mget_with_pttl(
        &self,
        keys: Vec<String>,
        batch: usize,
    ) -> Result<Vec<(Raw, i64)>, BoxError> {
        let batch = batch.max(1);
        let total = keys.len();
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (index, key) in keys.iter().enumerate() {
            let slot = if self.clustered {
                fred::util::redis_keyslot(key.as_bytes())
            } else {
                0
            };
            groups.entry(slot).or_default().push(index);
        }
        let chunks: Vec<Vec<usize>> = groups
            .into_values()
            .flat_map(|group| group.chunks(batch).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect();
        let client = self.pool.next();
        let replies = follow_redirections(self.redirect_budget, || async {
            let pipeline = client.pipeline();
            for chunk in &chunks {
                let chunk_keys: Vec<&str> = chunk
                    .iter()
                    .filter_map(|i| keys.get(*i).map(String::as_str))
                    .collect();
                let () = pipeline.mget(chunk_keys).await?;
            }
            for key in &keys {
                let () = pipeline.pttl(key.as_str()).await?;
            }
            unless_redirected(pipeline.try_all::<Value>().await)
        })
        .await?;
        let mut replies = replies.into_iter();
        let mut out: Vec<(Raw, i64)> = vec![(None, -2); total];
        for positions in chunks {
            let values: Vec<Value> = replies.next().ok_or("MGET: no reply")??.convert()?;
            check_answered("MGET", positions.len(), values.len())?;
            for (index, value) in positions.into_iter().zip(values) {
                if let Some(slot) = out.get_mut(index) {
                    slot.0 = raw(value);
                }
            }
        }
        for slot in &mut out {
            slot.1 = replies.next().ok_or("PTTL: no reply")??.as_i64().unwrap_or(-2);
        }
        Ok(out)
    }

    /// One `MGET` per hash slot (one in all in standalone mode) and per
    /// `batch` keys; several are sent as one pipeline, which fred routes per
    /// command, so the slots of a cluster are read concurrently.
    pub(crate) async fn mget(&self, keys: Vec<String>, batch: usize) -> Result<Vec<Raw>, BoxError> {
        let batch = batch.max(1);
        let client = self.pool.next();
        let total = keys.len();
        if !self.clustered && total <= batch {
            let values: Vec<Value> = client.mget(keys).await?;
            check_answered("MGET", total, values.len())?;
            return Ok(values.into_iter().map(raw).collect());
        }
        let mut groups: BTreeMap<u16, Vec<(usize, String)>> = BTreeMap::new();
        for (index, key) in keys.into_iter().enumerate() {
            let slot = if self.clustered {
                fred::util::redis_keyslot(key.as_bytes())
            } else {
                0
            };
            groups.entry(slot).or_default().push((index, key));
        }
        let mut chunks: Vec<(Vec<usize>, Vec<String>)> = Vec::new();
        for group in groups.into_values() {
            let mut group = group.into_iter().peekable();
            while group.peek().is_some() {
                chunks.push(group.by_ref().take(batch).unzip());
            }
        }
        let mut out: Vec<Raw> = vec![None; total];
        let mut indices = Vec::with_capacity(chunks.len());
        let replies: Vec<Vec<Value>> = if chunks.len() == 1 {
            let (positions, keys) = chunks.pop().unwrap_or_default();
            indices.push(positions);
            vec![follow_redirections(self.redirect_budget, || client.mget(keys.clone())).await?]
        } else {
            let mut sent = Vec::with_capacity(chunks.len());
            for (positions, keys) in chunks {
                indices.push(positions);
                sent.push(keys);
            }
            follow_redirections(self.redirect_budget, || async {
                let pipeline = client.pipeline();
                for keys in &sent {
                    let () = pipeline.mget(keys.clone()).await?;
                }
                unless_redirected(pipeline.try_all::<Vec<Value>>().await)
            })
            .await?
            .into_iter()
            .collect::<Result<_, _>>()?
        };
        check_answered("the MGET pipeline", indices.len(), replies.len())?;
        for (positions, values) in indices.iter().zip(replies) {
            check_answered("MGET", positions.len(), values.len())?;
            for (index, value) in positions.iter().zip(values) {
                if let Some(slot) = out.get_mut(*index) {
                    *slot = raw(value);
                }
            }
        }
        Ok(out)
    }

    /// `SETEX` unless the entry holds a version that is not older (a Lua
    /// compare-and-set, see `Backend::setex_if_newer`); whether it wrote.
    pub(crate) async fn setex_if_newer(
        &self,
        key: String,
        ttl: u64,
        value: Vec<u8>,
        version: &str,
    ) -> Result<bool, BoxError> {
        const SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, envelope = pcall(cjson.decode, current)
  if ok and type(envelope) == 'table' and type(envelope.version) == 'string'
     and string.match(envelope.version, '^%d') and envelope.version >= ARGV[3] then
    return 0
  end
end
redis.call('SETEX', KEYS[1], ARGV[1], ARGV[2])
return 1
";
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let eval = CustomCommand::new_static("EVAL", ClusterHash::Custom(slot), false);
        let args: Vec<Value> = vec![
            SCRIPT.into(),
            Value::Integer(1),
            key.into(),
            ttl_value(ttl),
            Value::Bytes(value.into()),
            version.into(),
        ];
        let client = self.pool.next();
        let written: i64 =
            follow_redirections(self.redirect_budget, || client.custom(eval.clone(), args.clone())).await?;
        Ok(written == 1)
    }

    pub(crate) async fn setex_many(
        &self,
        items: Vec<(String, u64, Vec<u8>)>,
        batch: usize,
    ) -> Result<(), BoxError> {
        let client = self.pool.next();
        if let [(key, ttl, value)] = items.as_slice() {
            let args: Vec<Value> = vec![key.as_str().into(), ttl_value(*ttl), value.as_slice().into()];
            let _: Value =
                follow_redirections(self.redirect_budget, || client.custom(setex(), args.clone())).await?;
            return Ok(());
        }
        let mut items = items.into_iter().peekable();
        let mut chunks = Vec::new();
        while items.peek().is_some() {
            chunks.push(items.by_ref().take(batch.max(1)).collect::<Vec<_>>());
        }
        if !self.clustered {
            return self.setex_chunks_by_script(chunks).await;
        }
        // Chunks of `batch` commands, one pipeline each, up to four in
        // flight: the client encodes the next while Redis runs the last.
        // (Keys of one script must share a hash slot, and a batch spreads
        // over thousands: per-key commands it is.)
        // A chunk redirected is sent again whole: `SETEX` may run twice.
        let mut sends = futures::stream::iter(chunks.into_iter().map(|chunk| {
            let client = self.pool.next();
            let chunk: Vec<[Value; 3]> = chunk
                .into_iter()
                .map(|(key, ttl, value)| [key.into(), ttl_value(ttl), Value::Bytes(value.into())])
                .collect();
            follow_redirections(self.redirect_budget, move || {
                let (pipeline, chunk) = (client.pipeline(), chunk.clone());
                async move {
                    for args in chunk {
                        let () = pipeline.custom(setex(), args.to_vec()).await?;
                    }
                    for reply in unless_redirected(pipeline.try_all::<Value>().await)? {
                        reply?;
                    }
                    Ok::<(), fred::error::Error>(())
                }
            })
        }))
        .buffer_unordered(4);
        while let Some(sent) = sends.next().await {
            sent?;
        }
        Ok(())
    }

    /// One `EVAL` per chunk running its `SETEX`es, up to four chunks in
    /// flight over the pool. The client's cost per command (fred builds,
    /// routes and answers each command of a pipeline on its own) was what
    /// held bulk writes to a fraction of `redis-benchmark -P`; in a script
    /// it is paid once per chunk. Same commands, same effects (replicated
    /// and tracked as `SETEX`); a chunk failing midway keeps its earlier
    /// writes, as a pipeline would.
    async fn setex_chunks_by_script(&self, chunks: Vec<Vec<(String, u64, Vec<u8>)>>) -> Result<(), BoxError> {
        const SCRIPT: &str =
            "for i = 1, #KEYS do redis.call('SETEX', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]) end return #KEYS";
        let mut sends = futures::stream::iter(chunks.into_iter().map(|chunk| {
            let client = self.pool.next();
            async move {
                let mut args: Vec<Value> = Vec::with_capacity(2 + 3 * chunk.len());
                args.push(SCRIPT.into());
                args.push(Value::Integer(i64::try_from(chunk.len()).unwrap_or(i64::MAX)));
                let mut values = Vec::with_capacity(2 * chunk.len());
                for (key, ttl, value) in chunk {
                    args.push(key.into());
                    values.push(ttl_value(ttl));
                    values.push(Value::Bytes(value.into()));
                }
                args.extend(values);
                let eval = CustomCommand::new_static("EVAL", ClusterHash::FirstKey, false);
                let _: Value = client.custom(eval, args).await?;
                Ok::<(), fred::error::Error>(())
            }
        }))
        .buffer_unordered(4);
        while let Some(sent) = sends.next().await {
            sent?;
        }
        Ok(())
    }

    pub(crate) async fn unlink(&self, keys: Vec<String>) -> Result<u64, BoxError> {
        let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
        self.unlink_keys(keys).await
    }

    /// Compare-and-delete per key (`EVAL`, routed by the key's slot),
    /// pipelined.
    pub(crate) async fn unlink_if_unchanged(
        &self,
        stale: Vec<(String, fred::bytes::Bytes)>,
    ) -> Result<u64, BoxError> {
        const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) else return 0 end";
        let commands = stale
            .into_iter()
            .map(|(key, value)| {
                let slot = fred::util::redis_keyslot(key.as_bytes());
                let eval = CustomCommand::new_static("EVAL", ClusterHash::Custom(slot), false);
                (
                    eval,
                    vec![SCRIPT.into(), Value::Integer(1), key.into(), Value::Bytes(value)],
                )
            })
            .collect();
        Ok(self.pipelined::<u64>(commands).await?.into_iter().sum())
    }

    /// `UNLINK`, one command per hash slot in Cluster mode (multi-key
    /// commands must not cross slots), pipelined.
    async fn unlink_keys(&self, keys: Vec<Key>) -> Result<u64, BoxError> {
        if keys.is_empty() {
            return Ok(0);
        }
        if !self.clustered {
            return Ok(self.pool.next().unlink(keys).await?);
        }
        let commands = fred::util::group_by_hash_slot(keys)?
            .into_values()
            .map(|keys| {
                let unlink = CustomCommand::new_static("UNLINK", ClusterHash::FirstKey, false);
                (unlink, keys.into_iter().map(Value::from).collect())
            })
            .collect();
        Ok(self.pipelined::<u64>(commands).await?.into_iter().sum())
    }

    /// Sends `commands` as one pipeline; those the cluster redirected are
    /// sent again on their own (see `redirect`), so each runs once.
    async fn pipelined<T: FromValue>(
        &self,
        commands: Vec<(CustomCommand, Vec<Value>)>,
    ) -> Result<Vec<T>, fred::error::Error> {
        let client = self.pool.next();
        let replies = if let [(command, args)] = commands.as_slice() {
            vec![client.custom::<Value, _>(command.clone(), args.clone()).await]
        } else {
            let pipeline = client.pipeline();
            for (command, args) in &commands {
                let () = pipeline.custom(command.clone(), args.clone()).await?;
            }
            pipeline.try_all::<Value>().await
        };
        let mut answers = Vec::with_capacity(commands.len());
        for ((command, args), reply) in commands.into_iter().zip(replies) {
            let reply = match reply {
                Err(e) if is_redirection(&e) => {
                    follow_redirections(self.redirect_budget, || {
                        client.custom::<Value, _>(command.clone(), args.clone())
                    })
                    .await
                }
                other => other,
            };
            answers.push(reply?.convert()?);
        }
        Ok(answers)
    }

    fn scan_stream(
        &self,
        pattern: &str,
        page: u32,
    ) -> Pin<Box<dyn Stream<Item = Result<ScanResult, fred::error::Error>> + Send>> {
        let client = self.pool.next();
        if self.clustered {
            Box::pin(client.scan_cluster(pattern.to_owned(), Some(page), None))
        } else {
            Box::pin(client.scan(pattern.to_owned(), Some(page), None))
        }
    }

    /// Each `SCAN` page (on every primary in Cluster mode) is unlinked
    /// before the next one is asked for: the client never holds more than
    /// one page per node.
    ///
    /// In Cluster mode a key whose slot moves during the scan can leave a
    /// node not scanned yet for one already scanned, and be missed. So a
    /// pass counts only if no slot was migrating when it began or ended and
    /// the slots' owners did not change meanwhile; else it is done again
    /// (with the owners refreshed) until one does: during a reshard the
    /// call lasts until the moves pause or end, [`SCAN_PASSES`] passes at
    /// most (about half a minute), then fails with [`SlotsKeptMoving`].
    pub(crate) async fn scan_unlink(
        &self,
        pattern: &str,
        page: u32,
        on_page: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, BoxError> {
        let mut removed = 0;
        let mut wait = Duration::from_millis(20);
        for _ in 0..SCAN_PASSES {
            let before = self.slot_layout().await?;
            removed += self.scan_unlink_pass(pattern, page, on_page).await?;
            let after = self.slot_layout().await?;
            if before == after && !after.migrating() {
                return Ok(removed);
            }
            debug!(pattern, "slots moved during the scan; scanning again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        Err(Box::new(SlotsKeptMoving { passes: SCAN_PASSES }))
    }

    async fn scan_unlink_pass(
        &self,
        pattern: &str,
        page: u32,
        on_page: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, BoxError> {
        let mut pages = self.scan_stream(pattern, page);
        let mut removed = 0;
        while let Some(result) = pages.next().await {
            let mut result = result?;
            if let Some(keys) = result.take_results() {
                let unlinked = self.unlink_keys(keys).await?;
                removed += unlinked;
                on_page(unlinked);
            }
            result.next();
        }
        Ok(removed)
    }

    /// Which slots each primary serves, as each says of itself (`CLUSTER
    /// NODES`, its `myself` line: ranges, and `[slot->-node]` markers while
    /// a slot migrates), after refreshing the client's view of the
    /// primaries. Empty when not clustered.
    async fn slot_layout(&self) -> Result<SlotLayout, BoxError> {
        if !self.clustered {
            return Ok(SlotLayout::default());
        }
        let client = self.pool.next();
        client.sync_cluster().await?;
        let mut owners = Vec::new();
        for server in self.primaries() {
            let nodes: String = client.with_cluster_node(server.clone()).cluster_nodes().await?;
            let slots = nodes
                .lines()
                .find(|line| {
                    line.split(' ')
                        .nth(2)
                        .is_some_and(|flags| flags.contains("myself"))
                })
                .map(|line| line.split(' ').skip(8).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            owners.push((server.to_string(), slots));
        }
        owners.sort();
        Ok(SlotLayout(owners))
    }

    pub(crate) async fn scan_keys(
        &self,
        pattern: &str,
        page: u32,
        on_key: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), BoxError> {
        let mut pages = self.scan_stream(pattern, page);
        while let Some(result) = pages.next().await {
            let mut result = result?;
            for key in result.take_results().unwrap_or_default() {
                on_key(key.as_bytes());
            }
            result.next();
        }
        Ok(())
    }

    fn primaries(&self) -> Vec<fred::types::config::Server> {
        if !self.clustered {
            return Vec::new();
        }
        self.pool
            .next()
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default()
    }

    /// `INFO` (its default sections: memory and stats among them) of the
    /// server, or of every primary in Cluster mode.
    pub(crate) async fn server_stats(&self) -> Result<ServerStats, BoxError> {
        let client = self.pool.next();
        let mut infos: Vec<String> = Vec::new();
        let primaries = self.primaries();
        if primaries.is_empty() {
            infos.push(client.info(None).await?);
        } else {
            for server in primaries {
                infos.push(client.with_cluster_node(server).info(None).await?);
            }
        }
        Ok(server_stats_from_info(&infos))
    }

    /// `PING` on the server, or on every primary in Cluster mode.
    pub(crate) async fn ping(&self) -> Result<(), BoxError> {
        let client = self.pool.next();
        let primaries = self.primaries();
        let replies: Vec<String> = if primaries.is_empty() {
            vec![client.ping(None).await?]
        } else {
            let mut replies = Vec::with_capacity(primaries.len());
            for server in primaries {
                replies.push(client.with_cluster_node(server).ping(None).await?);
            }
            replies
        };
        match replies.iter().find(|r| r.as_str() != "PONG") {
            Some(other) => Err(format!("PING answered {other:?}").into()),
            None => Ok(()),
        }
    }

    pub(crate) async fn quit(&self) -> Result<(), BoxError> {
        if let Some(master) = &self.master {
            master.stop().await;
        }
        Ok(self.pool.quit().await?)
    }
}

/// A [`ShortReply`] unless `answered` is `asked`.
fn check_answered(command: &'static str, asked: usize, answered: usize) -> Result<(), BoxError> {
    if asked == answered {
        Ok(())
    } else {
        Err(Box::new(ShortReply {
            command,
            asked,
            answered,
        }))
    }
}

/// Most scans of a Cluster an invalidation makes while slots move.
const SCAN_PASSES: u32 = 30;

/// Each primary's own account of its slots (see
/// [`RedisBackend::slot_layout`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct SlotLayout(Vec<(String, String)>);

impl SlotLayout {
    /// Whether a slot is being moved to or from one of the primaries.
    fn migrating(&self) -> bool {
        self.0.iter().any(|(_, slots)| slots.contains('['))
    }
}

fn ttl_value(ttl: u64) -> Value {
    Value::Integer(i64::try_from(ttl).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_read_answered_short_is_an_error_not_misses() {
        assert!(check_answered("MGET", 3, 3).is_ok());
        let error = check_answered("MGET", 3, 1).unwrap_err();
        let short = error.downcast_ref::<ShortReply>().unwrap();
        assert_eq!((short.command, short.asked, short.answered), ("MGET", 3, 1));
        assert_eq!(error.to_string(), "MGET of 3 keys answered 1 values");
    }
}
