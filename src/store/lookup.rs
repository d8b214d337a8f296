//! Looking a thread up by its public id or row id: one query and one row
//! mapper, shared by `threads` (which re-exports them) and the writer's cache
//! of identities, which must not depend on `threads` (that depends on the
//! writer).

use std::sync::OnceLock;

use rusqlite::{params, Connection};

use super::accounts::{Account, AgentRef};
use super::model::{raw_json, Participant, ReaderView, Thread, ThreadKind, ThreadRecord};
use super::row::{optional, stored};
use crate::domain::{Aid, ThreadId, ThreadStatus};
use crate::error::ApiResult;

/// The columns [`thread_record`] maps, in its order (`t` the thread, `ca`
/// and `ta` its two agents).
const THREAD_COLUMNS: &str = "
    t.id, t.uuid, t.kind, t.owner_account_id,
    t.creator_agent_id, ca.account_id, ca.aid,
    t.target_agent_id, ta.account_id, ta.aid,
    t.subject, t.status, t.last_seq, t.metadata, t.created_at, t.updated_at,
    t.integrations, t.turn_epoch";
/// How many they are: the columns after them start here.
const THREAD_COLUMN_COUNT: usize = 18;

const THREAD_JOINS: &str = "
    LEFT JOIN agents ca ON ca.id = t.creator_agent_id
    LEFT JOIN agents ta ON ta.id = t.target_agent_id";

// Each statement's text is built once: the statement cache is keyed by
// the text, and formatting it on every call cost an allocation and a copy.

fn by_uuid_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT {THREAD_COLUMNS} FROM threads t {THREAD_JOINS} WHERE t.uuid = ?1")
    })
}

fn by_row_id_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT {THREAD_COLUMNS} FROM threads t {THREAD_JOINS} WHERE t.id = ?1")
    })
}

/// The reader lookup's statement: the key (live only) and its account,
/// the agent named by the AID (if any), the thread with its two agents,
/// and that agent's read mark there. Every join is by a unique key, so it
/// yields at most one row, and none for an unknown or revoked key.
fn reader_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {THREAD_COLUMNS},
                    a.id, a.user_id, g.id, g.account_id, g.aid, g.name,
                    (SELECT m.last_read_seq FROM read_marks m
                     WHERE m.agent_id = g.id AND m.thread_id = t.id)
             FROM login_keys k
             JOIN accounts a ON a.id = k.account_id
             LEFT JOIN agents g ON g.aid = ?2
             LEFT JOIN threads t ON t.uuid = ?3 {THREAD_JOINS}
             WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
        )
    })
}

fn thread_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ThreadRecord> {
    let kind: String = r.get(2)?;
    let creator: Option<i64> = r.get(4)?;
    let target: Option<i64> = r.get(7)?;
    let creator_aid: Option<String> = r.get(6)?;
    let target_aid: Option<String> = r.get(9)?;
    let participants = match (creator, target, &creator_aid, &target_aid) {
        (Some(c), Some(t), Some(ca), Some(ta)) => Some((
            Participant {
                agent_id: c,
                account_id: r.get(5)?,
                aid: ca.clone(),
            },
            Participant {
                agent_id: t,
                account_id: r.get(8)?,
                aid: ta.clone(),
            },
        )),
        _ => None,
    };
    let status: String = r.get(11)?;
    Ok(ThreadRecord {
        row_id: r.get(0)?,
        kind: stored(&kind, ThreadKind::from_name)?,
        owner_account_id: r.get(3)?,
        participants,
        integrations: r.get(16)?,
        turn_epoch: r.get(17)?,
        view: Thread {
            id: r.get(1)?,
            creator_aid,
            target_aid,
            subject: r.get(10)?,
            status: stored(&status, ThreadStatus::from_name)?.as_str(),
            message_count: r.get(12)?,
            metadata: raw_json(r.get(13)?),
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
        },
    })
}

/// Looks a thread up by its public id.
pub fn by_id(conn: &Connection, id: ThreadId) -> ApiResult<Option<ThreadRecord>> {
    let mut stmt = conn.prepare_cached(by_uuid_sql())?;
    optional(stmt.query_row([id.to_text()], thread_record))
}

/// Looks a thread up by its row id.
pub fn by_row_id(conn: &Connection, row_id: i64) -> ApiResult<Option<ThreadRecord>> {
    let mut stmt = conn.prepare_cached(by_row_id_sql())?;
    optional(stmt.query_row([row_id], thread_record))
}

/// Everything a read of one thread checks, looked up in one statement
/// (one snapshot of its own, so it needs no transaction around it): the
/// account of a live login key, the agent `aid` (whoever owns it), the
/// thread `id` and that agent's read mark in it. `None` when the key is
/// unknown or revoked. The rules (who may read what) are applied by the
/// caller, in `access`.
pub fn reader_view(
    conn: &Connection,
    key_hash: &[u8; 32],
    aid: Option<&Aid>,
    id: ThreadId,
) -> ApiResult<Option<(Account, ReaderView)>> {
    let mut stmt = conn.prepare_cached(reader_sql())?;
    let params = params![&key_hash[..], aid.map(Aid::as_str), id.to_text()];
    optional(stmt.query_row(params, |r| {
        let at = THREAD_COLUMN_COUNT;
        let thread = match r.get::<_, Option<i64>>(0)? {
            Some(_) => Some(thread_record(r)?),
            None => None,
        };
        let agent = match r.get::<_, Option<i64>>(at + 2)? {
            Some(agent_id) => Some(AgentRef {
                id: agent_id,
                account_id: r.get(at + 3)?,
                aid: r.get(at + 4)?,
                name: r.get(at + 5)?,
            }),
            None => None,
        };
        let account = Account {
            id: r.get(at)?,
            user_id: r.get(at + 1)?,
        };
        let read_mark = r.get::<_, Option<i64>>(at + 6)?.unwrap_or(0);
        Ok((
            account,
            ReaderView {
                agent,
                thread,
                read_mark,
                page_head: OnceLock::new(),
            },
        ))
    }))
}
