//! The operator's queries: list agents and keys, revoke an account's keys,
//! rename an agent, delete a thread with everything that hangs off it (its
//! rows of the event log included), and
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
    /// Rows of the event log (the newest is kept, emptied: see
    /// `delete_thread_events`).
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
    delete_thread_row(conn, row).map(Some)
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

/// Deletes the thread with this row id and what refers to it, children
/// first (the foreign keys are enforced), its event-log rows included.
fn delete_thread_row(conn: &Connection, row: i64) -> ApiResult<Deleted> {
    let events = delete_thread_events(conn, row)?;
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
        "INSERT INTO thread_deletions (thread_uuid, deleted_at)
         SELECT uuid, ?2 FROM threads WHERE id = ?1",
        params![row, crate::domain::now()],
    )?;
    let threads = conn.execute("DELETE FROM threads WHERE id = ?1", [row])?;
    Ok(Deleted {
        threads,
        messages,
        events,
    })
}

/// Deletes a thread's rows of the event log; returns how many.
///
/// A position is the log's newest + 1, so deleting the newest row would hand
/// its position to the next event, and a consumer that had read the deleted
/// one would skip the new one. So when the thread holds the newest row, that
/// row stays, emptied of everything that said anything about the thread and
/// pointed at thread row 0, which SQLite never assigns: `events_after` joins
/// the thread and no longer returns it. The other rows leave holes in the
/// positions, which consumers (reading `position > P`) step over.
fn delete_thread_events(conn: &Connection, row: i64) -> ApiResult<usize> {
    let newest: Option<i64> =
        conn.query_row("SELECT max(position) FROM events", [], |r| r.get(0))?;
    let deleted = conn.execute(
        "DELETE FROM events WHERE thread_id = ?1 AND position IS NOT ?2",
        params![row, newest],
    )?;
    let emptied = conn.execute(
        "UPDATE events SET thread_id = 0, seq = 0, message_id = NULL, reply_id = NULL,
                           uuid = NULL, data = NULL
         WHERE position = ?2 AND thread_id = ?1",
        params![row, newest],
    )?;
    Ok(deleted + emptied)
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
            let d = delete_thread_row(conn, row)?;
            pruned.threads += d.threads;
            pruned.messages += d.messages;
            pruned.events += d.events;
        }
    }
    Ok(pruned)
}
