//! Turn-taking state: turn epochs, batch timing for tags, and the schedule of
//! paced replies (stored before `respond` answers, delivered by the
//! scheduler, cancelled by a newer turn).

use rusqlite::{params, Connection, OptionalExtension};

use super::messages::{self, Sender};
use super::model::ThreadRecord;
use super::threads;
use super::writer::{Refs, WriteCtx};
use crate::domain::{self, BatchTiming, Metadata, MsgType};
use crate::error::{ApiError, ApiResult};
use crate::events::{self, new_event_id, reply_part_json, Event, Kind, ReplyPart};

/// One inbound message of a batch.
pub struct Inbound {
    pub sender: String,
    pub content: String,
    /// Its `client_ts` in Unix ms, or the server's receipt time.
    pub at_ms: i64,
}

/// One scheduled part of a reply, as `respond` returns it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Scheduled {
    pub id: String,
    pub index: i64,
    pub content: String,
    pub deliver_at: String,
}

/// The sender name of delivered replies.
pub const AGENT_SENDER: &str = "agent";

/// The typing indicator (a signal: not logged).
fn typing(thread: &ThreadRecord, seq: i64, state: &str, epoch: i64) -> Event {
    Event {
        position: None,
        id: new_event_id(),
        kind: Kind::Typing,
        thread_id: thread.view.id.clone(),
        seq,
        participants: thread.participant_aids(),
        data: events::data(&events::Typing {
            state,
            turn_epoch: epoch,
        }),
        created_at: domain::now(),
    }
}

/// Logs what became of a reply part (`seq`: the thread's, or the delivered
/// message's).
fn log_part(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    kind: Kind,
    seq: i64,
    refs: Refs,
    part: &ReplyPart<'_>,
) {
    let delivered = (kind == Kind::ReplyDelivered).then_some(seq);
    let event = Event {
        position: None,
        id: new_event_id(),
        kind,
        thread_id: thread.view.id.clone(),
        seq,
        participants: thread.participant_aids(),
        data: reply_part_json(part, delivered),
        created_at: domain::now(),
    };
    ctx.log(event, refs);
}

fn last_seq(conn: &Connection, thread_row: i64) -> ApiResult<i64> {
    Ok(conn
        .prepare_cached("SELECT last_seq FROM threads WHERE id = ?1")?
        .query_row([thread_row], |r| r.get(0))?)
}

/// Starts a new turn with `batch`: bumps the epoch, cancels the undelivered
/// parts of older turns (logging each, and stopping the typing indicator),
/// stores and logs the messages. Returns the new epoch and the timing the
/// tags look at.
pub fn submit(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    batch: &[Inbound],
    now_ms: i64,
) -> ApiResult<(i64, BatchTiming)> {
    let (epoch, previous_batch_ms): (i64, Option<i64>) = ctx
        .conn
        .prepare_cached(
            "UPDATE threads SET turn_epoch = turn_epoch + 1 WHERE id = ?1
             RETURNING turn_epoch, last_batch_ms",
        )?
        .query_row([thread.row_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    struct Cancelled {
        row_id: i64,
        uuid: String,
        idx: i64,
        count: i64,
        content: String,
        epoch: i64,
        deliver_at: String,
    }
    let mut cancelled: Vec<Cancelled> = ctx
        .conn
        .prepare_cached(
            "UPDATE scheduled_replies SET state = 'cancelled'
             WHERE thread_id = ?1 AND state = 'pending' AND turn_epoch < ?2
             RETURNING id, uuid, idx, count, content, turn_epoch, deliver_at",
        )?
        .query_map(params![thread.row_id, epoch], |r| {
            Ok(Cancelled {
                row_id: r.get(0)?,
                uuid: r.get(1)?,
                idx: r.get(2)?,
                count: r.get(3)?,
                content: r.get(4)?,
                epoch: r.get(5)?,
                deliver_at: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if !cancelled.is_empty() {
        // RETURNING has no order; the log lists parts as they were scheduled.
        cancelled.sort_by_key(|c| c.row_id);
        let seq = last_seq(ctx.conn, thread.row_id)?;
        for c in &cancelled {
            let part = ReplyPart {
                id: &c.uuid,
                index: c.idx,
                count: c.count,
                content: &c.content,
                turn_epoch: c.epoch,
                deliver_at: &c.deliver_at,
            };
            let refs = Refs {
                reply_row: Some(c.row_id),
                ..Refs::thread(thread.row_id)
            };
            log_part(ctx, thread, Kind::ReplyCancelled, seq, refs, &part);
        }
        ctx.signal(typing(thread, seq, "stop", epoch - 1));
    }
    let empty = Metadata::parse("metadata", None)?;
    let mut senders = Vec::with_capacity(batch.len());
    for m in batch {
        let last: Option<i64> = ctx
            .conn
            .prepare_cached(
                "SELECT last_ms FROM turn_senders WHERE thread_id = ?1 AND sender = ?2",
            )?
            .query_row(params![thread.row_id, m.sender], |r| r.get(0))
            .optional()?;
        // A sender speaking twice in one batch is not a comeback from itself.
        let before_batch = senders
            .iter()
            .zip(batch)
            .rev()
            .find(|(_, b)| b.sender == m.sender)
            .map(|((at, _), _)| *at);
        senders.push((m.at_ms, before_batch.or(last)));
        messages::post(
            ctx,
            thread,
            Sender::Named(&m.sender),
            &m.content,
            MsgType::Text,
            &empty,
        )?;
    }
    for m in batch {
        ctx.conn
            .prepare_cached(
                "INSERT INTO turn_senders (thread_id, sender, last_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (thread_id, sender) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
            )?
            .execute(params![thread.row_id, m.sender, m.at_ms])?;
    }
    let batch_ms = batch.iter().map(|m| m.at_ms).max().unwrap_or(now_ms);
    ctx.conn
        .prepare_cached("UPDATE threads SET last_batch_ms = ?2 WHERE id = ?1")?
        .execute(params![thread.row_id, batch_ms])?;
    let timing = BatchTiming {
        previous_batch_ms,
        batch_ms,
        size: batch.len(),
        senders,
    };
    Ok((epoch, timing))
}

/// The outcome of `respond`.
pub enum Respond {
    /// The epoch is behind the thread's: nothing stored or sent.
    Superseded,
    Scheduled(Vec<Scheduled>),
}

/// Stores the parts of a reply with their delivery times (Unix ms), after
/// any parts still pending for this thread, logs each, and starts the
/// typing indicator.
pub fn schedule(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    epoch: i64,
    parts: &[String],
    offsets_ms: &[i64],
    now_ms: i64,
) -> ApiResult<Respond> {
    let current: i64 = ctx
        .conn
        .prepare_cached("SELECT turn_epoch FROM threads WHERE id = ?1")?
        .query_row([thread.row_id], |r| r.get(0))?;
    if epoch < current {
        return Ok(Respond::Superseded);
    }
    if epoch > current {
        return Err(ApiError::field(
            "turn_epoch",
            format!("turn_epoch {epoch} is ahead of the thread's current turn ({current})"),
        ));
    }
    // A second reply in the same turn queues behind the first.
    let pending_until: Option<i64> = ctx
        .conn
        .prepare_cached(
            "SELECT max(deliver_at_ms) FROM scheduled_replies WHERE thread_id = ?1 AND state = 'pending'",
        )?
        .query_row([thread.row_id], |r| r.get(0))?;
    let typing_now = pending_until.is_none();
    let start = pending_until.map_or(now_ms, |p| p.max(now_ms));
    let count = parts.len() as i64;
    let seq = last_seq(ctx.conn, thread.row_id)?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, (part, offset)) in parts.iter().zip(offsets_ms).enumerate() {
        let at_ms = start + offset;
        let deliver_at = domain::format_time(
            chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_else(chrono::Utc::now),
        );
        let id = domain::ids::new_message_id();
        ctx.conn
            .prepare_cached(
                "INSERT INTO scheduled_replies (uuid, thread_id, turn_epoch, idx, count, content,
                                                deliver_at, deliver_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                thread.row_id,
                epoch,
                i as i64,
                count,
                part,
                deliver_at,
                at_ms
            ])?;
        let logged = ReplyPart {
            id: &id,
            index: i as i64,
            count,
            content: part,
            turn_epoch: epoch,
            deliver_at: &deliver_at,
        };
        let refs = Refs {
            reply_row: Some(ctx.conn.last_insert_rowid()),
            ..Refs::thread(thread.row_id)
        };
        log_part(ctx, thread, Kind::ReplyScheduled, seq, refs, &logged);
        out.push(Scheduled {
            id,
            index: i as i64,
            content: part.clone(),
            deliver_at,
        });
    }
    if typing_now {
        ctx.signal(typing(thread, seq, "start", epoch));
    }
    Ok(Respond::Scheduled(out))
}

/// When the next pending part is due (Unix ms), if any.
pub fn next_due_ms(conn: &Connection) -> ApiResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(deliver_at_ms) FROM scheduled_replies WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))?)
}

/// How many parts are pending (`/metrics`; a count over a partial index).
pub fn pending_count(conn: &Connection) -> ApiResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM scheduled_replies WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Delivers every pending part due by `now_ms`: stores it as a message
/// (sender `agent`, `response`), logs `turn_taking.message`, then signals
/// typing `start` for the thread's next pending part or `stop` after its last.
/// Returns how many were delivered.
pub fn deliver_due(ctx: &mut WriteCtx<'_>, now_ms: i64) -> ApiResult<usize> {
    struct Due {
        row_id: i64,
        uuid: String,
        thread_row: i64,
        epoch: i64,
        idx: i64,
        count: i64,
        content: String,
        deliver_at: String,
    }
    let due: Vec<Due> = {
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT id, uuid, thread_id, turn_epoch, idx, count, content, deliver_at
             FROM scheduled_replies WHERE state = 'pending' AND deliver_at_ms <= ?1
             ORDER BY deliver_at_ms, thread_id, turn_epoch, idx LIMIT 500",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            Ok(Due {
                row_id: r.get(0)?,
                uuid: r.get(1)?,
                thread_row: r.get(2)?,
                epoch: r.get(3)?,
                idx: r.get(4)?,
                count: r.get(5)?,
                content: r.get(6)?,
                deliver_at: r.get(7)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let empty = Metadata::parse("metadata", None)?;
    for d in &due {
        let Some(thread) = threads::by_row_id(ctx.conn, d.thread_row)? else {
            continue;
        };
        let stored = messages::insert_quietly(
            ctx.conn,
            &thread,
            Sender::Named(AGENT_SENDER),
            &d.content,
            MsgType::Response,
            &empty,
        )?;
        ctx.conn
            .prepare_cached(
                "UPDATE scheduled_replies SET state = 'delivered', message_id = ?2 WHERE id = ?1",
            )?
            .execute(params![d.row_id, stored.row_id])?;
        let part = ReplyPart {
            id: &d.uuid,
            index: d.idx,
            count: d.count,
            content: &d.content,
            turn_epoch: d.epoch,
            deliver_at: &d.deliver_at,
        };
        // Its seq is the stored message's: a resume replays it as thread.message.
        let refs = Refs {
            message_row: Some(stored.row_id),
            reply_row: Some(d.row_id),
            ..Refs::thread(thread.row_id)
        };
        let seq = stored.message.seq;
        log_part(ctx, &thread, Kind::ReplyDelivered, seq, refs, &part);
        let more: bool = ctx
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM scheduled_replies WHERE thread_id = ?1 AND state = 'pending')",
            )?
            .query_row([d.thread_row], |r| r.get(0))?;
        let state = if more { "start" } else { "stop" };
        ctx.signal(typing(&thread, seq, state, d.epoch));
    }
    Ok(due.len())
}
