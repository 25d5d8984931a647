//! The outbox table's name and the SQL that uses it.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The outbox table, optionally in a schema: `mes_outbox` by default.
///
/// Names are restricted to lower-case SQL identifiers (`[a-z_][a-z0-9_]*`,
/// at most 40 bytes so the derived index and channel names fit PostgreSQL's
/// 63-byte limit), which is what makes it safe to put them in SQL text.
///
/// ```
/// use mes_publisher::OutboxTable;
///
/// let table: OutboxTable = "material.outbox".parse()?;
/// assert_eq!(table.qualified_name(), "material.outbox");
/// assert!("outbox; DROP TABLE parts".parse::<OutboxTable>().is_err());
/// # Ok::<(), mes_publisher::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboxTable {
    schema: Option<String>,
    name: String,
}

impl Default for OutboxTable {
    fn default() -> Self {
        Self {
            schema: None,
            name: "mes_outbox".to_owned(),
        }
    }
}

impl OutboxTable {
    /// A table on the connection's search path.
    pub fn new(name: &str) -> Result<Self, Error> {
        Ok(Self {
            schema: None,
            name: identifier(name)?,
        })
    }

    /// A table in `schema`.
    pub fn in_schema(schema: &str, name: &str) -> Result<Self, Error> {
        Ok(Self {
            schema: Some(identifier(schema)?),
            name: identifier(name)?,
        })
    }

    /// `schema.name`, or `name` alone.
    pub fn qualified_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The `LISTEN`/`NOTIFY` channel that wakes relays: `schema_name_ready`.
    pub fn channel(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}_{}_ready", self.name),
            None => format!("{}_ready", self.name),
        }
    }

    /// The SQL that creates the table and its indexes; idempotent. Services
    /// with their own migrations can run this text; [`Outbox::migrate`]
    /// runs it too.
    ///
    /// [`Outbox::migrate`]: crate::Outbox::migrate
    pub fn migration_sql(&self) -> String {
        let table = self.qualified_name();
        let name = &self.name;
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
    seq             bigserial   PRIMARY KEY,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    topic           text        NOT NULL,
    partition_key   text        NOT NULL,
    event           jsonb       NOT NULL,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error      text,
    parked_at       timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS {name}_event_id ON {table} (event_id);
CREATE INDEX IF NOT EXISTS {name}_entity_seq ON {table} (partition_key, seq);
"
        )
    }
}

impl fmt::Display for OutboxTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified_name())
    }
}

impl FromStr for OutboxTable {
    type Err = Error;

    /// `name` or `schema.name`.
    fn from_str(text: &str) -> Result<Self, Error> {
        match text.split_once('.') {
            Some((schema, name)) => Self::in_schema(schema, name),
            None => Self::new(text),
        }
    }
}

fn identifier(text: &str) -> Result<String, Error> {
    let mut chars = text.chars();
    let valid = text.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(Error::Config {
            reason: format!(
                "outbox table or schema name {text:?} is not a lower-case SQL identifier of at most 40 bytes"
            ),
        })
    }
}

/// The statements the outbox and its relays run, with the table name in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) lock_and_notify: String,
    pub(crate) insert: String,
    pub(crate) claim_heads: String,
    pub(crate) claim_rows: String,
    pub(crate) delete: String,
    pub(crate) record_failure: String,
    pub(crate) stats: String,
    pub(crate) parked: String,
    pub(crate) requeue_all: String,
    pub(crate) requeue_ids: String,
}

impl Statements {
    pub(crate) fn new(table: &OutboxTable) -> Self {
        let t = table.qualified_name();
        Self {
            // Locks are taken in key order so two transactions enqueueing the
            // same entities cannot deadlock on them; the notification is
            // delivered at commit, once per transaction and channel.
            lock_and_notify:
                "SELECT pg_notify($3, ''), count(pg_advisory_xact_lock(hashtext($2), hashtext(k))) \
                 FROM (SELECT DISTINCT unnest($1::text[]) AS k ORDER BY k) AS keys"
                    .to_owned(),
            insert: format!(
                "INSERT INTO {t} (event_id, event_type, topic, partition_key, event) \
                 SELECT id, ty, tp, k, ev::jsonb \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                   WITH ORDINALITY AS u(id, ty, tp, k, ev, n) \
                 ORDER BY n"
            ),
            // The head of an entity is its oldest row. Holding a head's row
            // lock gives a relay the entity: other relays see the head still
            // there and skip the entity's later rows.
            claim_heads: format!(
                "SELECT o.partition_key FROM {t} o \
                 WHERE o.parked_at IS NULL AND o.next_attempt_at <= now() \
                   AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.partition_key = o.partition_key AND p.seq < o.seq) \
                 ORDER BY o.seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            // Per entity an index range scan of its oldest rows: a backlog
            // (after an outage, say) costs what the batch reads, not a sort
            // of every pending row of the claimed entities.
            claim_rows: format!(
                "SELECT r.seq, r.partition_key, r.event::text, r.attempts \
                 FROM unnest($1::text[]) AS k(key) \
                 CROSS JOIN LATERAL (SELECT seq, partition_key, event, attempts FROM {t} \
                   WHERE partition_key = k.key AND parked_at IS NULL \
                   ORDER BY seq LIMIT $2 FOR UPDATE) AS r \
                 ORDER BY r.seq"
            ),
            delete: format!("DELETE FROM {t} WHERE seq = ANY($1)"),
            record_failure: format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = $2, \
                   next_attempt_at = now() + $3 * interval '1 millisecond', \
                   parked_at = CASE WHEN $4 THEN now() END \
                 WHERE seq = $1"
            ),
            stats: format!(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL), \
                   count(*) FILTER (WHERE parked_at IS NOT NULL), \
                   (extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE parked_at IS NULL)) * 1000)::int8 \
                 FROM {t}"
            ),
            parked: format!(
                "SELECT event_id, event_type, partition_key, attempts, coalesce(last_error, ''), \
                   (extract(epoch FROM enqueued_at) * 1000)::int8, (extract(epoch FROM parked_at) * 1000)::int8 \
                 FROM {t} WHERE parked_at IS NOT NULL ORDER BY seq LIMIT $1"
            ),
            requeue_all: format!(
                "UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = '-infinity' \
                 WHERE parked_at IS NOT NULL"
            ),
            requeue_ids: format!(
                "UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = '-infinity' \
                 WHERE parked_at IS NOT NULL AND event_id = ANY($1)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_identifiers() {
        assert_eq!(OutboxTable::default().qualified_name(), "mes_outbox");
        assert_eq!(OutboxTable::default().channel(), "mes_outbox_ready");
        let table: OutboxTable = "svc.outbox_2".parse().unwrap();
        assert_eq!(table.to_string(), "svc.outbox_2");
        assert_eq!(table.channel(), "svc_outbox_2_ready");
        for bad in [
            "",
            "Outbox",
            "1abc",
            "a-b",
            "a.b.c",
            "x\"y",
            "a b",
            &"a".repeat(41),
            "s.",
            ".t",
        ] {
            assert!(bad.parse::<OutboxTable>().is_err(), "{bad:?} accepted");
        }
    }
}
