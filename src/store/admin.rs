//! The operator's queries: list agents and keys, revoke an account's keys,
//! rename an agent, delete a thread with everything that hangs off it (its
//! rows of the event log included, a `thread.deleted` event written in
//! their stead), and
//! prune what is kept only for a while. The command-line tools run them on
//! their own connection; a running server notices the change before its next
//! write (`identities::check_outside_changes`), and its watcher closes the
//! sockets on a deleted thread (`thread_deletions`, `deleted_since`,
//! `created_at_of`).

use rusqlite::{params, Connection};
use serde::Serialize;

use super::row::optional;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// An agent as `agent list` and `GET /api/acsp/me` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentRow {
    pub aid: String,
    pub name: String,
    pub user_id: String,
    #[schema(value_type = Vec<String>)]
    pub capabilities: Box<serde_json::value::RawValue>,
    pub description: Option<String>,
    pub created_at: String,
}

/// Agents, oldest first: every agent, or one account's.
pub fn agents(conn: &Connection, account_id: Option<i64>) -> ApiResult<Vec<AgentRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.aid, g.name, a.user_id, g.capabilities, g.description, g.created_at
         FROM agents g JOIN accounts a ON a.id = g.account_id
         WHERE ?1 IS NULL OR g.account_id = ?1
         ORDER BY g.id",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        let capabilities: String = r.get(3)?;
        Ok(AgentRow {
            aid: r.get(0)?,
            name: r.get(1)?,
            user_id: r.get(2)?,
            capabilities: serde_json::value::RawValue::from_string(capabilities)
                .unwrap_or_else(|_| empty_array()),
            description: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn empty_array() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("[]".into()).expect("expect: [] is JSON")
}

/// A login key as `key list` shows it: never the key, which is not stored,
/// and only a prefix of its hash (enough to tell keys apart).
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub id: i64,
    pub hash_prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Hex characters of a key's SHA-256 that `key list` shows.
const HASH_PREFIX_LEN: usize = 8;

/// An account's keys, oldest first.
pub fn keys(conn: &Connection, account_id: i64) -> ApiResult<Vec<KeyRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, key_hash, created_at, revoked_at FROM login_keys
         WHERE account_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        let hash: Vec<u8> = r.get(1)?;
        let mut hash_prefix = hex::encode(hash);
        hash_prefix.truncate(HASH_PREFIX_LEN);
        Ok(KeyRow {
            id: r.get(0)?,
            hash_prefix,
            created_at: r.get(2)?,
            revoked_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes every live key of an account; returns how many.
pub fn revoke_all_keys(conn: &Connection, account_id: i64) -> ApiResult<usize> {
    Ok(conn.execute(
        "UPDATE login_keys SET revoked_at = ?2 WHERE account_id = ?1 AND revoked_at IS NULL",
        params![account_id, crate::domain::now()],
    )?)
}

/// Renames an agent; returns false when no agent has this AID.
pub fn rename_agent(conn: &Connection, aid: &Aid, name: &str) -> ApiResult<bool> {
    let n = conn.execute(
        "UPDATE agents SET name = ?2 WHERE aid = ?1",
        params![aid.as_str(), name],
    )?;
    Ok(n == 1)
}

/// What deleting threads removed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Deleted {
    pub threads: usize,
    pub messages: usize,
    /// Rows of the event log (each deleted thread's `thread.deleted`
    /// event is written in their stead, not counted).
    pub events: usize,
}

/// Deletes a thread and every row that refers to it; `None` when no thread
/// has this id. Run it in a transaction: it is several statements.
pub fn delete_thread(conn: &Connection, id: ThreadId) -> ApiResult<Option<Deleted>> {
    let row: Option<i64> = optional(conn.query_row(
        "SELECT id FROM threads WHERE uuid = ?1",
        [id.to_text()],
        |r| r.get(0),
    ))?;
    let Some(row) = row else {
        return Ok(None);
    };
    forget_old_deletions(conn)?;
    delete_thread_row(conn, row, Reason::Deleted).map(Some)
}

/// How long a deletion stays in `thread_deletions`: the watchers look back
/// a minute; a day is ample and keeps the table tiny.
const DELETIONS_KEPT: chrono::Duration = chrono::Duration::days(1);

/// The time before which a recorded deletion is forgotten (both backends).
pub(crate) fn deletions_forgotten_before() -> String {
    crate::domain::format_time(chrono::Utc::now() - DELETIONS_KEPT)
}

/// Removes deletions older than [`DELETIONS_KEPT`] (each delete and prune
/// does, so nothing else has to).
fn forget_old_deletions(conn: &Connection) -> ApiResult<()> {
    conn.execute(
        "DELETE FROM thread_deletions WHERE deleted_at < ?1",
        [deletions_forgotten_before()],
    )?;
    Ok(())
}

/// Threads deleted at or after `since` (an RFC 3339 time), with when: the
/// watcher's question.
pub fn deleted_since(conn: &Connection, since: &str) -> ApiResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT thread_uuid, deleted_at FROM thread_deletions WHERE deleted_at >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the thread that has this id now was created, if one has: which of
/// the threads that had the id lives (`open_thread` may create a thread
/// under a deleted one's id). The watcher's second question, about each
/// deletion it found.
pub fn created_at_of(conn: &Connection, uuid: &str) -> ApiResult<Option<String>> {
    optional(conn.query_row(
        "SELECT created_at FROM threads WHERE uuid = ?1",
        [uuid],
        |r| r.get(0),
    ))
}

/// Why a thread went: `thread.deleted`'s `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `threadline thread delete`.
    Deleted,
    /// `threadline prune --threads-older-than-days`.
    Pruned,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deleted => "deleted",
            Reason::Pruned => "pruned",
        }
    }
}

/// What a deleted thread's `thread.deleted` row keeps, read from the thread
/// before it goes (both backends).
pub(crate) struct Gone {
    pub uuid: String,
    pub owner_account_id: i64,
    pub creator_agent_id: Option<i64>,
    pub target_agent_id: Option<i64>,
    pub creator_aid: Option<String>,
    pub target_aid: Option<String>,
    pub last_seq: i64,
}

impl Gone {
    /// The event's id, time and data (`events::ThreadGone`).
    pub(crate) fn event(&self, reason: Reason) -> (String, String, String) {
        let at = crate::domain::now();
        let data = crate::events::data(&crate::events::ThreadGone {
            thread_id: &self.uuid,
            creator_aid: self.creator_aid.as_deref(),
            target_aid: self.target_aid.as_deref(),
            deleted_at: &at,
            reason: reason.as_str(),
        });
        (crate::events::new_event_id(), at, data.get().to_owned())
    }
}

/// The thread columns [`Gone`] is read from (`?1`/`$1`: the thread's row id).
macro_rules! gone_select {
    ($row:literal) => {
        concat!(
            "SELECT t.uuid, t.owner_account_id, t.creator_agent_id, t.target_agent_id,
                    ca.aid, ta.aid, t.last_seq
             FROM threads t
             LEFT JOIN agents ca ON ca.id = t.creator_agent_id
             LEFT JOIN agents ta ON ta.id = t.target_agent_id
             WHERE t.id = ",
            $row
        )
    };
}
pub(crate) use gone_select;

/// Deletes the thread with this row id and what refers to it, children
/// first (the foreign keys are enforced), its event-log rows included, and
/// logs its `thread.deleted` event in their stead.
fn delete_thread_row(conn: &Connection, row: i64, reason: Reason) -> ApiResult<Deleted> {
    let gone = conn.query_row(gone_select!("?1"), [row], |r| {
        Ok(Gone {
            uuid: r.get(0)?,
            owner_account_id: r.get(1)?,
            creator_agent_id: r.get(2)?,
            target_agent_id: r.get(3)?,
            creator_aid: r.get(4)?,
            target_aid: r.get(5)?,
            last_seq: r.get(6)?,
        })
    })?;
    // First, so it is the log's newest row: a position is the newest + 1,
    // and deleting the thread's events below then never hands a position a
    // consumer has read to a later event.
    let (id, at, data) = gone.event(reason);
    conn.execute(
        "INSERT INTO events (kind, thread_id, seq, uuid, data, created_at,
                             owner_account_id, creator_agent_id, target_agent_id)
         VALUES ('thread.deleted', 0, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            gone.last_seq,
            id,
            data,
            at,
            gone.owner_account_id,
            gone.creator_agent_id,
            gone.target_agent_id
        ],
    )?;
    let events = conn.execute("DELETE FROM events WHERE thread_id = ?1", [row])?;
    for table in [
        "idempotency_keys",
        "scheduled_replies",
        "read_marks",
        "turn_senders",
        "turn_decisions",
    ] {
        // The table name is one of the constants above, never input.
        conn.execute(&format!("DELETE FROM {table} WHERE thread_id = ?1"), [row])?;
    }
    let messages = conn.execute("DELETE FROM messages WHERE thread_id = ?1", [row])?;
    conn.execute(
        "INSERT INTO thread_deletions (thread_uuid, deleted_at) VALUES (?1, ?2)",
        params![gone.uuid, at],
    )?;
    let threads = conn.execute("DELETE FROM threads WHERE id = ?1", [row])?;
    Ok(Deleted {
        threads,
        messages,
        events,
    })
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Pruned {
    pub idempotency_keys: usize,
    pub threads: usize,
    pub messages: usize,
    pub events: usize,
}

/// Deletes idempotency keys created before `keys_before` and, when
/// `threads_before` is given, closed or archived threads last updated before
/// it (RFC 3339 times, which sort as text).
pub fn prune(
    conn: &Connection,
    keys_before: &str,
    threads_before: Option<&str>,
) -> ApiResult<Pruned> {
    let mut pruned = Pruned {
        idempotency_keys: conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ?1",
            [keys_before],
        )?,
        ..Pruned::default()
    };
    if let Some(before) = threads_before {
        forget_old_deletions(conn)?;
        let rows: Vec<i64> = conn
            .prepare(
                "SELECT id FROM threads
                 WHERE status IN ('closed', 'archived') AND updated_at < ?1",
            )?
            .query_map([before], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for row in rows {
            let d = delete_thread_row(conn, row, Reason::Pruned)?;
            pruned.threads += d.threads;
            pruned.messages += d.messages;
            pruned.events += d.events;
        }
    }
    Ok(pruned)
}
