//! The operator's commands on PostgreSQL (mirrors `store::admin`).

use super::conn::{get, PgConn};
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;
use crate::store::admin::{deletions_forgotten_before, AgentRow, Deleted, KeyRow, Pruned};

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
            delete_thread_row(c, get(&r, 0)?).map(Some)
        }
        None => Ok(None),
    }
}

fn delete_thread_row(c: &PgConn, row: i64) -> ApiResult<Deleted> {
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
    c.exec(
        "INSERT INTO thread_deletions (thread_uuid, deleted_at)
         SELECT uuid, $2 FROM threads WHERE id = $1",
        &[&row, &crate::domain::now()],
    )?;
    let threads = c.exec("DELETE FROM threads WHERE id = $1", &[&row])? as usize;
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
            let d = delete_thread_row(c, get(r, 0)?)?;
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
