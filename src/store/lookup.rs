//! Looking a thread up by its public id or row id: one query and one row
//! mapper, shared by `threads` (which re-exports them) and the writer's cache
//! of identities, which must not depend on `threads` (that depends on the
//! writer).

use rusqlite::Connection;

use super::model::{raw_json, Participant, Thread, ThreadKind, ThreadRecord};
use super::row::{optional, stored};
use crate::domain::{ThreadId, ThreadStatus};
use crate::error::ApiResult;

const THREAD_SELECT: &str = "
    SELECT t.id, t.uuid, t.kind, t.owner_account_id,
           t.creator_agent_id, ca.account_id, ca.aid,
           t.target_agent_id, ta.account_id, ta.aid,
           t.subject, t.status, t.last_seq, t.metadata, t.created_at, t.updated_at,
           t.integrations, t.turn_epoch
    FROM threads t
    LEFT JOIN agents ca ON ca.id = t.creator_agent_id
    LEFT JOIN agents ta ON ta.id = t.target_agent_id";

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
    let mut stmt = conn.prepare_cached(&format!("{THREAD_SELECT} WHERE t.uuid = ?1"))?;
    optional(stmt.query_row([id.to_text()], thread_record))
}

/// Looks a thread up by its row id.
pub fn by_row_id(conn: &Connection, row_id: i64) -> ApiResult<Option<ThreadRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{THREAD_SELECT} WHERE t.id = ?1"))?;
    optional(stmt.query_row([row_id], thread_record))
}
