//! Threads: creation, lookup, status and the per-agent list.

use rusqlite::{params, Connection, OptionalExtension};

pub use super::lookup::{by_id, by_row_id, reader_view};

use super::accounts::AgentRef;
use super::messages;
use super::model::{Thread, ThreadKind, ThreadRecord, ThreadSummary};
use super::row::stored;
use super::writer::{Refs, WriteCtx};
use crate::domain::text::{Content, Subject};
use crate::domain::{self, Metadata, MsgType, StatusFilter, ThreadId, ThreadStatus};
use crate::error::{ApiError, ApiResult};
use crate::events::{self, new_event_id, Event, Kind};

/// What a new ACSP thread is made of.
pub struct NewAcspThread {
    pub creator: AgentRef,
    pub target: AgentRef,
    pub subject: Option<Subject>,
    pub metadata: Metadata,
    pub first_message: Option<Content>,
}

/// Creates an ACSP thread (and its first message, when given). Logs
/// `thread.created`, then the first message.
pub fn create_acsp(ctx: &mut WriteCtx<'_>, new: NewAcspThread) -> ApiResult<Thread> {
    let id = ThreadId::new();
    let now = domain::now();
    ctx.conn
        .prepare_cached(
            "INSERT INTO threads (uuid, kind, owner_account_id, creator_agent_id, target_agent_id,
                                  subject, metadata, activity_at, created_at, updated_at)
             VALUES (?1, ?8, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)",
        )?
        .execute(params![
            id.to_text(),
            new.creator.account_id,
            new.creator.id,
            new.target.id,
            new.subject.as_ref().map(|s| s.as_str()),
            new.metadata.as_json_text(),
            now,
            ThreadKind::Acsp.as_str()
        ])?;
    let mut record = by_id(ctx.conn, id)?
        .ok_or_else(|| ApiError::Internal("thread vanished after insert".into()))?;
    log_created(ctx, &record)?;
    if let Some(content) = new.first_message {
        let sender = messages::Sender::Agent(&new.creator);
        let posted = messages::post(
            ctx,
            &record,
            sender,
            content.as_str(),
            MsgType::Text,
            &Metadata::parse("metadata", None)?,
        )?;
        record.view.message_count = posted.message.seq;
        record.view.updated_at = posted.message.created_at.clone();
    }
    Ok(record.view)
}

/// Sets a thread's status. Setting the current status again changes nothing
/// (no event, same `updated_at`). Returns the thread's `updated_at`.
pub fn set_status(
    ctx: &mut WriteCtx<'_>,
    record: &ThreadRecord,
    status: ThreadStatus,
) -> ApiResult<String> {
    let current: Option<(String, String)> = ctx
        .conn
        .prepare_cached("SELECT status, updated_at FROM threads WHERE id = ?1")?
        .query_row([record.row_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((current, updated_at)) = current else {
        return Err(ApiError::thread_not_found());
    };
    if current == status.as_str() {
        return Ok(updated_at);
    }
    let now = domain::now();
    ctx.conn
        .prepare_cached("UPDATE threads SET status = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![record.row_id, status.as_str(), now])?;
    let event = Event {
        position: None,
        id: new_event_id(),
        kind: Kind::ThreadStatus,
        thread_id: record.view.id.clone(),
        seq: record.view.message_count,
        participants: record.participant_aids(),
        data: events::data(&events::StatusChanged {
            thread_id: &record.view.id,
            status: status.as_str(),
            updated_at: &now,
        }),
        created_at: now.clone(),
    };
    ctx.log(event, Refs::thread(record.row_id));
    Ok(now)
}

/// Logs `thread.created` for a thread just inserted (its data: the thread
/// as it then stood).
fn log_created(ctx: &mut WriteCtx<'_>, record: &ThreadRecord) -> ApiResult<()> {
    let event = Event {
        position: None,
        id: new_event_id(),
        kind: Kind::ThreadCreated,
        thread_id: record.view.id.clone(),
        seq: 0,
        participants: record.participant_aids(),
        data: serde_json::value::to_raw_value(&record.view)
            .map_err(|e| ApiError::Internal(format!("thread event: {e}")))?,
        created_at: record.view.created_at.clone(),
    };
    ctx.log(event, Refs::thread(record.row_id));
    Ok(())
}

/// A page of the threads an agent takes part in, newest activity first, and
/// the total count that matches the filter.
pub fn list_for_agent(
    conn: &Connection,
    agent_id: i64,
    filter: StatusFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<ThreadSummary>, i64)> {
    let status: Option<&str> = match filter {
        StatusFilter::All => None,
        StatusFilter::Only(s) => Some(s.as_str()),
    };
    let total: i64 = conn
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM threads WHERE creator_agent_id = ?1 AND (?2 IS NULL OR status = ?2))
                  + (SELECT COUNT(*) FROM threads WHERE target_agent_id = ?1 AND (?2 IS NULL OR status = ?2))",
        )?
        .query_row(params![agent_id, status], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT t.uuid,
                CASE WHEN t.creator_agent_id = ?1 THEN ta.aid ELSE ca.aid END,
                CASE WHEN t.creator_agent_id = ?1 THEN ta.name ELSE ca.name END,
                t.subject, t.status, t.last_seq, t.last_message_at,
                (SELECT COUNT(*) FROM messages m
                  WHERE m.thread_id = t.id
                    AND m.seq > COALESCE(rm.last_read_seq, 0)
                    AND m.sender_agent_id IS NOT ?1),
                t.created_at, t.updated_at
         FROM threads t
         JOIN agents ca ON ca.id = t.creator_agent_id
         JOIN agents ta ON ta.id = t.target_agent_id
         LEFT JOIN read_marks rm ON rm.agent_id = ?1 AND rm.thread_id = t.id
         WHERE (t.creator_agent_id = ?1 OR t.target_agent_id = ?1)
           AND (?2 IS NULL OR t.status = ?2)
         ORDER BY t.activity_at DESC, t.uuid DESC
         LIMIT ?3 OFFSET ?4",
    )?;
    let rows = stmt.query_map(params![agent_id, status, limit, offset], |r| {
        let status: String = r.get(4)?;
        Ok(ThreadSummary {
            id: r.get(0)?,
            peer_aid: r.get(1)?,
            peer_name: r.get(2)?,
            subject: r.get(3)?,
            status: stored(&status, ThreadStatus::from_name)?.as_str(),
            message_count: r.get(5)?,
            last_message_at: r.get(6)?,
            unread_count: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        })
    })?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

/// Creates a turn-taking thread (no agents) owned by an account, and logs
/// `thread.created`.
pub fn create_turn(
    ctx: &mut WriteCtx<'_>,
    account_id: i64,
    id: ThreadId,
    integrations: Option<&str>,
) -> ApiResult<ThreadRecord> {
    let now = domain::now();
    ctx.conn.prepare_cached(
        "INSERT INTO threads (uuid, kind, owner_account_id, integrations, activity_at, created_at, updated_at)
         VALUES (?1, ?5, ?2, ?3, ?4, ?4, ?4)",
    )?
    .execute(params![
        id.to_text(),
        account_id,
        integrations,
        now,
        ThreadKind::Turn.as_str()
    ])?;
    let record = by_id(ctx.conn, id)?
        .ok_or_else(|| ApiError::Internal("thread vanished after insert".into()))?;
    log_created(ctx, &record)?;
    Ok(record)
}

/// Replaces a thread's turn-taking integrations.
pub fn set_integrations(
    conn: &Connection,
    thread: &ThreadRecord,
    integrations: &str,
) -> ApiResult<()> {
    conn.prepare_cached("UPDATE threads SET integrations = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![thread.row_id, integrations, domain::now()])?;
    Ok(())
}
