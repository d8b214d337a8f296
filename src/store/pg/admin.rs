//! The operator's commands on PostgreSQL (mirrors `store::admin`).

use super::conn::{get, PgConn};
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;
use crate::store::admin::{
    deletions_forgotten_before, gone_select, AgentRow, Deleted, Gone, KeyRow, Pruned, Reason,
};

pub fn agents(c: &PgConn, account_id: Option<i64>) -> ApiResult<Vec<AgentRow>> {
    c.all(
        "SELECT g.aid, g.name, a.user_id, g.capabilities, g.description, g.created_at
         FROM agents g JOIN accounts a ON a.id = g.account_id
         WHERE $1::bigint IS NULL OR g.account_id = $1
         ORDER BY g.id",
        &[&account_id],
    )?
    .iter()
    .map(|r| {
        let capabilities: String = get(r, 3)?;
        Ok(AgentRow {
            aid: get(r, 0)?,
            name: get(r, 1)?,
            user_id: get(r, 2)?,
            capabilities: serde_json::value::RawValue::from_string(capabilities).unwrap_or_else(
                |_| {
                    serde_json::value::RawValue::from_string("[]".into())
                        .expect("expect: [] is JSON")
                },
            ),
            description: get(r, 4)?,
            created_at: get(r, 5)?,
        })
    })
    .collect()
}

pub fn keys(c: &PgConn, account_id: i64) -> ApiResult<Vec<KeyRow>> {
    c.all(
        "SELECT id, key_hash, created_at, revoked_at FROM login_keys
         WHERE account_id = $1 ORDER BY id",
        &[&account_id],
    )?
    .iter()
    .map(|r| {
        let hash: Vec<u8> = get(r, 1)?;
        let mut hash_prefix = hex::encode(hash);
        hash_prefix.truncate(8);
        Ok(KeyRow {
            id: get(r, 0)?,
            hash_prefix,
            created_at: get(r, 2)?,
            revoked_at: get(r, 3)?,
        })
    })
    .collect()
}

pub fn revoke_all_keys(c: &PgConn, account_id: i64) -> ApiResult<usize> {
    Ok(c.exec(
        "UPDATE login_keys SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
        &[&account_id, &crate::domain::now()],
    )? as usize)
}

pub fn rename_agent(c: &PgConn, aid: &Aid, name: &str) -> ApiResult<bool> {
    let n = c.exec(
        "UPDATE agents SET name = $2 WHERE aid = $1",
        &[&aid.as_str(), &name],
    )?;
    Ok(n == 1)
}

pub fn delete_thread(c: &PgConn, id: ThreadId) -> ApiResult<Option<Deleted>> {
    let row = c.opt("SELECT id FROM threads WHERE uuid = $1", &[&id.to_text()])?;
    match row {
        Some(r) => {
            forget_old_deletions(c)?;
            delete_thread_row(c, get(&r, 0)?, Reason::Deleted).map(Some)
        }
        None => Ok(None),
    }
}

fn delete_thread_row(c: &PgConn, row: i64, reason: Reason) -> ApiResult<Deleted> {
    let r = c.one(gone_select!("$1"), &[&row])?;
    let gone = Gone {
        uuid: get(&r, 0)?,
        owner_account_id: get(&r, 1)?,
        creator_agent_id: get(&r, 2)?,
        target_agent_id: get(&r, 3)?,
        creator_aid: get(&r, 4)?,
        target_aid: get(&r, 5)?,
        last_seq: get(&r, 6)?,
    };
    // Positions come from log_head, so any event row may go.
    let events = c.exec("DELETE FROM events WHERE thread_id = $1", &[&row])? as usize;
    c.exec("DELETE FROM idempotency_keys WHERE thread_id = $1", &[&row])?;
    c.exec(
        "DELETE FROM scheduled_replies WHERE thread_id = $1",
        &[&row],
    )?;
    c.exec("DELETE FROM read_marks WHERE thread_id = $1", &[&row])?;
    c.exec("DELETE FROM turn_senders WHERE thread_id = $1", &[&row])?;
    c.exec("DELETE FROM turn_decisions WHERE thread_id = $1", &[&row])?;
    let messages = c.exec("DELETE FROM messages WHERE thread_id = $1", &[&row])? as usize;
    let (id, at, data) = gone.event(reason);
    c.exec(
        "INSERT INTO thread_deletions (thread_uuid, deleted_at) VALUES ($1, $2)",
        &[&gone.uuid, &at],
    )?;
    let threads = c.exec("DELETE FROM threads WHERE id = $1", &[&row])? as usize;
    // Last, as a writer's batch numbers its events: `log_head` stays locked
    // until the commit, and every writer of every node waits for it. The
    // NOTIFY (delivered at the commit) wakes the nodes' log followers,
    // which publish the event to inbox sockets, streams and webhooks.
    c.one(
        "WITH head AS (UPDATE log_head SET position = position + 1 RETURNING position)
         INSERT INTO events (position, kind, thread_id, seq, uuid, data, created_at,
                             owner_account_id, creator_agent_id, target_agent_id)
         SELECT head.position, 'thread.deleted', 0, $1, $2, $3, $4, $5, $6, $7 FROM head
         RETURNING pg_notify('threadline_events', position::text)::text",
        &[
            &gone.last_seq,
            &id,
            &data,
            &at,
            &gone.owner_account_id,
            &gone.creator_agent_id,
            &gone.target_agent_id,
        ],
    )?;
    Ok(Deleted {
        threads,
        messages,
        events,
    })
}

pub fn prune(c: &PgConn, keys_before: &str, threads_before: Option<&str>) -> ApiResult<Pruned> {
    let mut pruned = Pruned {
        idempotency_keys: c.exec(
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&keys_before],
        )? as usize,
        ..Pruned::default()
    };
    if let Some(before) = threads_before {
        forget_old_deletions(c)?;
        let rows = c.all(
            "SELECT id FROM threads WHERE status IN ('closed', 'archived') AND updated_at < $1",
            &[&before],
        )?;
        for r in &rows {
            let d = delete_thread_row(c, get(r, 0)?, Reason::Pruned)?;
            pruned.threads += d.threads;
            pruned.messages += d.messages;
            pruned.events += d.events;
        }
    }
    Ok(pruned)
}

/// Removes deletions the watchers no longer need (see `store::admin`).
fn forget_old_deletions(c: &PgConn) -> ApiResult<()> {
    c.exec(
        "DELETE FROM thread_deletions WHERE deleted_at < $1",
        &[&deletions_forgotten_before()],
    )?;
    Ok(())
}

/// Threads deleted at or after `since` (see `store::admin::deleted_since`).
pub fn deleted_since(c: &PgConn, since: &str) -> ApiResult<Vec<(String, String)>> {
    c.all(
        "SELECT thread_uuid, deleted_at FROM thread_deletions WHERE deleted_at >= $1",
        &[&since],
    )?
    .iter()
    .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
    .collect()
}

/// When the thread that has this id now was created (see
/// `store::admin::created_at_of`).
pub fn created_at_of(c: &PgConn, uuid: &str) -> ApiResult<Option<String>> {
    match c.opt("SELECT created_at FROM threads WHERE uuid = $1", &[&uuid])? {
        Some(r) => Ok(Some(get(&r, 0)?)),
        None => Ok(None),
    }
}
