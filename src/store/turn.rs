//! Turn-taking state: turn epochs, batch timing for tags, and the schedule of
//! paced replies (stored before `respond` answers, delivered by the
//! scheduler, cancelled by a newer turn).

use rusqlite::{params, Connection, OptionalExtension};

use super::messages::{self, Sender};
use super::model::ThreadRecord;
use super::threads;
use super::writer::{Refs, WriteCtx};
use crate::domain::{self, limits, BatchTiming, Metadata, MsgType};
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
pub(super) fn typing(thread: &ThreadRecord, seq: i64, state: &str, epoch: i64) -> Event {
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
    ctx.log(part_event(thread, kind, seq, part), refs);
}

/// The event of a delivered reply part; both backends log it. Its id is
/// the stored message's: a resume replays the part as that message's
/// `thread.message`, and an event sent again keeps its id.
pub(super) fn delivered_event(
    thread: &ThreadRecord,
    seq: i64,
    message_id: &str,
    part: &ReplyPart<'_>,
) -> Event {
    Event {
        id: message_id.to_owned(),
        ..part_event(thread, Kind::ReplyDelivered, seq, part)
    }
}

/// The event of what became of a reply part; both backends log it.
pub(super) fn part_event(
    thread: &ThreadRecord,
    kind: Kind,
    seq: i64,
    part: &ReplyPart<'_>,
) -> Event {
    let delivered = (kind == Kind::ReplyDelivered).then_some(seq);
    Event {
        position: None,
        id: new_event_id(),
        kind,
        thread_id: thread.view.id.clone(),
        seq,
        participants: thread.participant_aids(),
        data: reply_part_json(part, delivered),
        created_at: domain::now(),
    }
}

fn last_seq(conn: &Connection, thread_row: i64) -> ApiResult<i64> {
    Ok(conn
        .prepare_cached("SELECT last_seq FROM threads WHERE id = ?1")?
        .query_row([thread_row], |r| r.get(0))?)
}

/// A batch stored by [`submit`].
pub struct Submitted {
    /// The turn the batch started.
    pub epoch: i64,
    /// What the tag rules look at.
    pub timing: BatchTiming,
    /// The seq of its first and last message.
    pub seqs: (i64, i64),
}

/// Starts a new turn with `batch`: bumps the epoch, cancels the undelivered
/// parts of older turns (logging each, and stopping the typing indicator),
/// stores and logs the messages. Returns the new epoch, the timing the tags
/// look at and the messages' seqs; the caller records the decision with
/// [`record_decision`] in the same write.
pub fn submit(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    batch: &[Inbound],
    now_ms: i64,
) -> ApiResult<Submitted> {
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
    let mut seqs: Option<(i64, i64)> = None;
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
        let posted = messages::post(
            ctx,
            thread,
            Sender::Named(&m.sender),
            &m.content,
            MsgType::Text,
            &empty,
        )?;
        let seq = posted.message.seq;
        seqs = Some(seqs.map_or((seq, seq), |(first, _)| (first, seq)));
    }
    // A sender's last time only moves forward, except from a time after
    // this batch's receipt: no message is timed so (`policy::message_time`),
    // so it was stored before that rule, from a stamp in the future, and
    // kept as the maximum it would hold off the sender's `comeback` for good.
    for m in batch {
        ctx.conn
            .prepare_cached(
                "INSERT INTO turn_senders (thread_id, sender, last_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (thread_id, sender) DO UPDATE SET last_ms =
                     CASE WHEN last_ms > ?4 THEN excluded.last_ms
                          ELSE max(last_ms, excluded.last_ms) END",
            )?
            .execute(params![thread.row_id, m.sender, m.at_ms, now_ms])?;
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
    // The handler refuses an empty batch before it gets here.
    let seqs = seqs.ok_or_else(|| ApiError::Internal("an empty turn-taking batch".into()))?;
    Ok(Submitted {
        epoch,
        timing,
        seqs,
    })
}

/// Records the decision and tags `submit_messages` answers for the batch
/// [`submit`] stored, in the same transaction, so that other clients can
/// read them back ([`turns_page`]).
pub fn record_decision(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    submitted: &Submitted,
    decision: &str,
    tags: &[&str],
) -> ApiResult<()> {
    let tags = serde_json::to_string(tags).expect("expect: a list of strings always serializes");
    ctx.conn
        .prepare_cached(
            "INSERT INTO turn_decisions (thread_id, turn_epoch, decision, tags, first_seq,
                                         last_seq, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            thread.row_id,
            submitted.epoch,
            decision,
            tags,
            submitted.seqs.0,
            submitted.seqs.1,
            domain::now()
        ])?;
    Ok(())
}

/// The most reply parts the turns route lists for one turn (its newest).
pub const PARTS_PER_TURN: i64 = 50;

/// One turn as the turns route shows it: the inbound batch's decision (all
/// `None` when none was recorded: a reply in turn 0, before any batch, or a
/// batch stored before the decisions were) and the reply parts scheduled in
/// it (the newest [`PARTS_PER_TURN`]).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TurnView {
    pub turn_epoch: i64,
    #[schema(value_type = Option<crate::domain::kinds::DecisionName>)]
    pub decision: Option<String>,
    #[schema(value_type = Vec<crate::domain::kinds::TurnTagName>)]
    pub tags: Vec<String>,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub created_at: Option<String>,
    pub parts: Vec<PartView>,
}

/// One part of a paced reply, with what became of it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PartView {
    pub id: String,
    pub index: i64,
    pub count: i64,
    pub content: String,
    /// `scheduled`, `delivered`, `cancelled`, or `failed` (given up after
    /// its delivery failed 5 times).
    pub status: &'static str,
    pub deliver_at: String,
    /// The delivered message's seq.
    pub seq: Option<i64>,
}

/// The thread's turns with an epoch below `before` (all when `None`),
/// newest first, at most `limit`; and whether older ones exist. A turn is
/// listed if its batch's decision was recorded or a reply was scheduled in
/// it.
pub fn turns_page(
    conn: &Connection,
    thread_row: i64,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<TurnView>, bool)> {
    let epochs: Vec<i64> = conn
        .prepare_cached(
            "SELECT turn_epoch FROM turn_decisions WHERE thread_id = ?1 AND turn_epoch < ?2
             UNION
             SELECT turn_epoch FROM scheduled_replies WHERE thread_id = ?1 AND turn_epoch < ?2
             ORDER BY turn_epoch DESC LIMIT ?3",
        )?
        .query_map(
            params![thread_row, before.unwrap_or(i64::MAX), limit + 1],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    let mut page = TurnPage::new(epochs, limit);
    let Some((oldest, newest)) = page.range() else {
        return Ok(page.finish());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT turn_epoch, decision, tags, first_seq, last_seq, created_at FROM turn_decisions
         WHERE thread_id = ?1 AND turn_epoch BETWEEN ?2 AND ?3",
    )?;
    let mut rows = stmt.query(params![thread_row, oldest, newest])?;
    while let Some(r) = rows.next()? {
        let tags: String = r.get(2)?;
        page.decision(r.get(0)?, r.get(1)?, &tags, r.get(3)?, r.get(4)?, r.get(5)?)?;
    }
    // The newest parts of each turn only: a turn takes any number of
    // replies, and a page must stay small.
    let mut stmt = conn.prepare_cached(
        "SELECT s.turn_epoch, s.uuid, s.idx, s.count, s.content, s.state, s.deliver_at, m.seq
         FROM (SELECT *, row_number() OVER (PARTITION BY turn_epoch ORDER BY id DESC) AS nth
               FROM scheduled_replies
               WHERE thread_id = ?1 AND turn_epoch BETWEEN ?2 AND ?3) s
         LEFT JOIN messages m ON m.id = s.message_id
         WHERE s.nth <= ?4
         ORDER BY s.id",
    )?;
    let mut rows = stmt.query(params![thread_row, oldest, newest, PARTS_PER_TURN])?;
    while let Some(r) = rows.next()? {
        let state: String = r.get(5)?;
        page.part(
            r.get(0)?,
            &state,
            PartView {
                id: r.get(1)?,
                index: r.get(2)?,
                count: r.get(3)?,
                content: r.get(4)?,
                status: "",
                deliver_at: r.get(6)?,
                seq: r.get(7)?,
            },
        );
    }
    Ok(page.finish())
}

/// A page of turns assembled from the rows each backend reads: the epochs
/// (newest first), then the decisions and parts that fall in their range.
pub(crate) struct TurnPage {
    epochs: Vec<i64>,
    turns: Vec<TurnView>,
    has_more: bool,
}

impl TurnPage {
    /// `epochs`: newest first, `limit + 1` asked for (one more tells that
    /// older turns exist).
    pub(crate) fn new(mut epochs: Vec<i64>, limit: i64) -> TurnPage {
        let has_more = epochs.len() as i64 > limit;
        epochs.truncate(usize::try_from(limit).unwrap_or(0));
        let turns = epochs
            .iter()
            .map(|&turn_epoch| TurnView {
                turn_epoch,
                decision: None,
                tags: Vec::new(),
                first_seq: None,
                last_seq: None,
                created_at: None,
                parts: Vec::new(),
            })
            .collect();
        TurnPage {
            epochs,
            turns,
            has_more,
        }
    }

    /// The oldest and newest epoch on the page; `None` when it is empty.
    pub(crate) fn range(&self) -> Option<(i64, i64)> {
        Some((*self.epochs.last()?, *self.epochs.first()?))
    }

    fn slot(&mut self, epoch: i64) -> Option<&mut TurnView> {
        // `epochs` is sorted newest first.
        let i = self.epochs.binary_search_by(|e| epoch.cmp(e)).ok()?;
        self.turns.get_mut(i)
    }

    /// A recorded batch decision (`tags`: the stored JSON array).
    pub(crate) fn decision(
        &mut self,
        epoch: i64,
        decision: String,
        tags: &str,
        first_seq: i64,
        last_seq: i64,
        created_at: String,
    ) -> ApiResult<()> {
        let Some(turn) = self.slot(epoch) else {
            return Ok(());
        };
        turn.decision = Some(decision);
        turn.tags = serde_json::from_str(tags)
            .map_err(|e| ApiError::Internal(format!("turn_decisions.tags: {e}")))?;
        turn.first_seq = Some(first_seq);
        turn.last_seq = Some(last_seq);
        turn.created_at = Some(created_at);
        Ok(())
    }

    /// A reply part in its stored `state`, which names its `status`.
    pub(crate) fn part(&mut self, epoch: i64, state: &str, mut part: PartView) {
        part.status = match state {
            "pending" => "scheduled",
            "delivered" => "delivered",
            "failed" => "failed",
            _ => "cancelled",
        };
        if let Some(turn) = self.slot(epoch) {
            turn.parts.push(part);
        }
    }

    pub(crate) fn finish(self) -> (Vec<TurnView>, bool) {
        (self.turns, self.has_more)
    }
}

/// The outcome of `respond`.
pub enum Respond {
    /// The epoch is behind the thread's: nothing stored or sent.
    Superseded,
    Scheduled(Vec<Scheduled>),
}

/// Refuses (`409 TOO_MANY_PENDING_PARTS`) a reply of `adding` parts to a
/// thread with `pending` parts waiting, when together they would pass
/// [`limits::PENDING_PARTS_PER_THREAD`]: the next turn cancels every
/// pending part in its own write, which every other write waits for.
/// Nothing is stored; the parts already pending go out as scheduled.
pub(crate) fn check_room(pending: i64, adding: usize) -> ApiResult<()> {
    let max = limits::PENDING_PARTS_PER_THREAD;
    if pending.saturating_add(i64::try_from(adding).unwrap_or(i64::MAX)) > max {
        return Err(ApiError::Conflict {
            code: "TOO_MANY_PENDING_PARTS",
            message: format!(
                "this thread has {pending} reply parts waiting to be delivered, and this \
                 reply's {adding} would take it past {max}, the most a thread holds: wait \
                 for them to go out, or start a new turn (submit_messages cancels them)"
            ),
        });
    }
    Ok(())
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
    let (pending_until, pending): (Option<i64>, i64) = ctx
        .conn
        .prepare_cached(
            "SELECT max(deliver_at_ms), count(*) FROM scheduled_replies
             WHERE thread_id = ?1 AND state = 'pending'",
        )?
        .query_row([thread.row_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    check_room(pending, parts.len())?;
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

/// The turn of the thread's first pending part, if a part is pending (the
/// agent is typing): what a socket that connects is told.
pub fn typing_epoch(conn: &Connection, thread_row: i64) -> ApiResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT turn_epoch FROM scheduled_replies WHERE thread_id = ?1 AND state = 'pending'
             ORDER BY id LIMIT 1",
        )?
        .query_row([thread_row], |r| r.get(0))
        .optional()?)
}

/// Whether `sender` posted to the thread after `seq` (through any node:
/// the `typing_without_sending` watch asks the database, not its memory).
pub fn spoke_since(conn: &Connection, thread_row: i64, sender: &str, seq: i64) -> ApiResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE thread_id = ?1 AND seq > ?3 AND sender = ?2)",
        )?
        .query_row(rusqlite::params![thread_row, sender, seq], |r| r.get(0))?)
}

/// How many parts were given up (`/metrics`; a count over a partial index
/// of the few there are).
pub fn failed_count(conn: &Connection) -> ApiResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM scheduled_replies WHERE state = 'failed'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// How many parts are pending (`/metrics`; a count over a partial index).
pub fn pending_count(conn: &Connection) -> ApiResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM scheduled_replies WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Failed delivery attempts after which a part is given up (`failed`).
pub const MAX_ATTEMPTS: i64 = 5;

/// The pause before the next attempt at a part that has failed `failures`
/// times (at least once): `base`, doubled with each failure.
pub fn retry_pause_ms(failures: i64, base_ms: i64) -> i64 {
    let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    base_ms.max(0).saturating_mul(1 << doublings)
}

/// What one delivery round did.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Parts delivered.
    pub delivered: usize,
    /// Attempts that failed and were counted against their part ...
    pub failed_attempts: usize,
    /// ... and of those, the parts given up.
    pub given_up: usize,
    /// A fault of the store rather than of a part: the database could not
    /// even record that a part failed (a full disk, an I/O error), or it
    /// was busy. Nothing was counted against the part, the round stopped
    /// there (what was delivered before stands), and the scheduler backs
    /// off as for a write that failed.
    pub store_fault: Option<ApiError>,
}

/// What became of a failed attempt at a part.
pub(crate) enum Failed {
    /// Tried again at this time (Unix ms), its thread's later parts moved
    /// back by as much.
    Retry { at_ms: i64 },
    /// Given up: marked `failed`.
    GaveUp,
}

/// A part just given up (marked `failed`), as far as its row read back.
pub(crate) struct GivenUp<'a> {
    pub row_id: i64,
    pub uuid: Option<&'a str>,
    pub epoch: Option<i64>,
    pub idx: Option<i64>,
    pub count: Option<i64>,
    /// Its failed attempts, the last one included.
    pub failures: i64,
}

impl GivenUp<'_> {
    /// What its thread hears (`seq`: the thread's last), in this order:
    /// `turn_taking.reply_failed`, logged (with what its log row points at)
    /// when the part's id, place and turn read back; then, unless another
    /// part is pending (`more`; `None` when that could not be read), the
    /// typing indicator's `stop` (a signal: no refs).
    pub(crate) fn events(
        &self,
        thread: &ThreadRecord,
        seq: i64,
        more: Option<bool>,
    ) -> Vec<(Event, Option<Refs>)> {
        let mut out = Vec::with_capacity(2);
        if let (Some(id), Some(epoch), Some(index), Some(count)) =
            (self.uuid, self.epoch, self.idx, self.count)
        {
            let data = events::PartFailed {
                id,
                index,
                count,
                turn_epoch: epoch,
                failures: self.failures,
            };
            let event = Event {
                position: None,
                id: new_event_id(),
                kind: Kind::ReplyFailed,
                thread_id: thread.view.id.clone(),
                seq,
                participants: thread.participant_aids(),
                data: events::data(&data),
                created_at: domain::now(),
            };
            let refs = Refs {
                reply_row: Some(self.row_id),
                ..Refs::thread(thread.row_id)
            };
            out.push((event, Some(refs)));
        }
        if let (Some(epoch), Some(false)) = (self.epoch, more) {
            out.push((typing(thread, seq, "stop", epoch), None));
        }
        out
    }
}

/// Logs a failed attempt (warn) or a part given up (error, once): ids only,
/// never the part's content.
pub(crate) fn log_failure(part: &str, thread: &str, failures: i64, outcome: &Failed, e: &ApiError) {
    match outcome {
        Failed::Retry { at_ms } => log::warn!(
            "delivering reply part {part} of thread {thread} failed (attempt {failures} of \
             {MAX_ATTEMPTS}; next at {at_ms} ms): {e}"
        ),
        Failed::GaveUp => log::error!(
            "gave up delivering reply part {part} of thread {thread} after {failures} failed \
             attempts; its thread's later parts go on: {e}"
        ),
    }
}

/// Whether a failure is the store's (busy, locked, shutting down; a full
/// disk, an I/O error, a read-only database: nothing about the part)
/// rather than the part's. Such a failure counts against no part, even
/// when the database could still record one.
pub(crate) fn is_store_fault(e: &ApiError) -> bool {
    matches!(e, ApiError::Unavailable | ApiError::Storage(_))
}

/// A due part as read for delivery. Its id always reads (the row id); the
/// rest may not, from a row the database cannot give back as stored (a
/// corrupt one): such a part fails, alone, like one the database refuses.
struct Due {
    row_id: i64,
    thread_row: Option<i64>,
    deliver_at_ms: Option<i64>,
    failures: i64,
    /// The part's id and turn, for the log line and the typing indicator
    /// of a part given up, whatever else reads back.
    uuid: Option<String>,
    epoch: Option<i64>,
    /// Its place in its reply, for the `turn_taking.reply_failed` event.
    idx: Option<i64>,
    count: Option<i64>,
    part: Result<DuePart, String>,
}

struct DuePart {
    uuid: String,
    epoch: i64,
    idx: i64,
    count: i64,
    content: String,
    deliver_at: String,
}

/// Delivers every pending part due by `now_ms`: stores it as a message
/// (sender `agent`, `response`), logs `turn_taking.message`, then signals
/// typing `start` for the thread's next pending part or `stop` after its last.
/// Parts due at the same instant go out in the order they were scheduled (by
/// row id): under `--pace-scale 0` a second reply of the turn is due with the
/// first one's last part, and ordering by part index interleaved the two
/// replies.
///
/// Each part goes in a savepoint of its own: one the database refuses is
/// undone alone, and the others are delivered. Its failure is counted, and it
/// is tried again after [`retry_pause_ms`] (`retry_base_ms` doubled with each
/// failure), its thread's later parts moved back by as much so that the
/// thread's order holds; after [`MAX_ATTEMPTS`] it is marked `failed`, and the
/// thread's later parts go on. If the failure cannot even be recorded, the
/// store is at fault, not the part: see [`Delivery::store_fault`].
pub fn deliver_due(ctx: &mut WriteCtx<'_>, now_ms: i64, retry_base_ms: i64) -> ApiResult<Delivery> {
    let due: Vec<Due> = {
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT id, thread_id, deliver_at_ms, failures, uuid, turn_epoch, idx, count, content,
                    deliver_at
             FROM scheduled_replies WHERE state = 'pending' AND deliver_at_ms <= ?1
             ORDER BY deliver_at_ms, id LIMIT 500",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            let part = || -> rusqlite::Result<DuePart> {
                Ok(DuePart {
                    uuid: r.get(4)?,
                    epoch: r.get(5)?,
                    idx: r.get(6)?,
                    count: r.get(7)?,
                    content: r.get(8)?,
                    deliver_at: r.get(9)?,
                })
            };
            Ok(Due {
                row_id: r.get(0)?,
                thread_row: r.get(1).ok(),
                deliver_at_ms: r.get(2).ok(),
                failures: r.get(3).unwrap_or(0),
                uuid: r.get(4).ok(),
                epoch: r.get(5).ok(),
                idx: r.get(6).ok(),
                count: r.get(7).ok(),
                part: part().map_err(|e| e.to_string()),
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let empty = Metadata::parse("metadata", None)?;
    let mut out = Delivery::default();
    // Threads with a part that failed this round: their later parts wait
    // (moved back with it), so that a thread's messages keep their order.
    let mut held = std::collections::HashSet::new();
    for d in &due {
        if d.thread_row.is_some_and(|t| held.contains(&t)) {
            continue;
        }
        savepoint(ctx.conn, "SAVEPOINT part")?;
        let error = match deliver_part(ctx, d, &empty) {
            Ok(()) => {
                savepoint(ctx.conn, "RELEASE part")?;
                out.delivered += 1;
                continue;
            }
            Err(e) => e,
        };
        savepoint(ctx.conn, "ROLLBACK TO part")?;
        if is_store_fault(&error) {
            savepoint(ctx.conn, "RELEASE part")?;
            out.store_fault = Some(error);
            break;
        }
        let outcome = match record_failure(ctx, d, now_ms, retry_base_ms) {
            Ok(outcome) => outcome,
            Err(fault) => {
                // Not even the failure could be written: the store's fault,
                // undone and not counted against the part.
                savepoint(ctx.conn, "ROLLBACK TO part")?;
                savepoint(ctx.conn, "RELEASE part")?;
                log::debug!("a delivery failed ({error}), and so did recording it");
                out.store_fault = Some(fault);
                break;
            }
        };
        savepoint(ctx.conn, "RELEASE part")?;
        held.extend(d.thread_row);
        out.failed_attempts += 1;
        // Read for the log line and the typing indicator only: a thread
        // that does not read back leaves both out, not the round.
        let thread = d
            .thread_row
            .and_then(|row| threads::by_row_id(ctx.conn, row).ok().flatten());
        let thread_name = thread.as_ref().map_or_else(
            || format!("(row {:?})", d.thread_row),
            |t| t.view.id.clone(),
        );
        let part_name = d
            .uuid
            .clone()
            .unwrap_or_else(|| format!("(row {})", d.row_id));
        log_failure(&part_name, &thread_name, d.failures + 1, &outcome, &error);
        if matches!(outcome, Failed::GaveUp) {
            out.given_up += 1;
            if let Some(thread) = &thread {
                let more = pending_in(ctx.conn, thread.row_id);
                let seq = last_seq(ctx.conn, thread.row_id);
                if let Ok(seq) = seq {
                    let failed = GivenUp {
                        row_id: d.row_id,
                        uuid: d.uuid.as_deref(),
                        epoch: d.epoch,
                        idx: d.idx,
                        count: d.count,
                        failures: d.failures.saturating_add(1),
                    };
                    for (event, refs) in failed.events(thread, seq, more.ok()) {
                        match refs {
                            Some(refs) => ctx.log(event, refs),
                            None => ctx.signal(event),
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn savepoint(conn: &Connection, sql: &str) -> ApiResult<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Whether the thread has a part pending.
fn pending_in(conn: &Connection, thread_row: i64) -> ApiResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM scheduled_replies WHERE thread_id = ?1 AND state = 'pending')",
        )?
        .query_row([thread_row], |r| r.get(0))?)
}

/// Delivers one part (in the caller's savepoint): the message, the part's
/// state, its logged event and the typing indicator after it.
fn deliver_part(ctx: &mut WriteCtx<'_>, d: &Due, empty: &Metadata) -> ApiResult<()> {
    let part = d
        .part
        .as_ref()
        .map_err(|e| ApiError::Internal(format!("a scheduled part does not read back: {e}")))?;
    let thread_row = d
        .thread_row
        .ok_or_else(|| ApiError::Internal("a scheduled part's thread does not read back".into()))?;
    let thread = threads::by_row_id(ctx.conn, thread_row)?
        .ok_or_else(|| ApiError::Internal("a scheduled part's thread is gone".into()))?;
    let stored = messages::insert_quietly(
        ctx,
        &thread,
        Sender::Named(AGENT_SENDER),
        &part.content,
        MsgType::Response,
        empty,
    )?;
    ctx.conn
        .prepare_cached(
            "UPDATE scheduled_replies SET state = 'delivered', message_id = ?2 WHERE id = ?1",
        )?
        .execute(params![d.row_id, stored.row_id])?;
    let more = pending_in(ctx.conn, thread_row)?;
    let logged = ReplyPart {
        id: &part.uuid,
        index: part.idx,
        count: part.count,
        content: &part.content,
        turn_epoch: part.epoch,
        deliver_at: &part.deliver_at,
    };
    // Its seq is the stored message's: a resume replays it as thread.message.
    let refs = Refs {
        message_row: Some(stored.row_id),
        reply_row: Some(d.row_id),
        ..Refs::thread(thread.row_id)
    };
    let seq = stored.message.seq;
    // Queued only now: nothing above can fail any more, so a part undone
    // leaves no event behind.
    ctx.log(
        delivered_event(&thread, seq, &stored.message.id, &logged),
        refs,
    );
    let state = if more { "start" } else { "stop" };
    ctx.signal(typing(&thread, seq, state, part.epoch));
    Ok(())
}

/// Counts a failed attempt at `d` (in the caller's savepoint, the attempt
/// undone): tried again after a pause, with the thread's later parts moved
/// back as much, or given up after [`MAX_ATTEMPTS`].
fn record_failure(
    ctx: &mut WriteCtx<'_>,
    d: &Due,
    now_ms: i64,
    retry_base_ms: i64,
) -> ApiResult<Failed> {
    let failures = d.failures.saturating_add(1);
    if failures >= MAX_ATTEMPTS {
        ctx.conn
            .prepare_cached(
                "UPDATE scheduled_replies SET failures = ?2, state = 'failed' WHERE id = ?1",
            )?
            .execute(params![d.row_id, failures])?;
        return Ok(Failed::GaveUp);
    }
    let at_ms = now_ms.saturating_add(retry_pause_ms(failures, retry_base_ms));
    if let Some(thread_row) = d.thread_row {
        // Parts of a thread are due in row order; moved by one delay they stay so.
        let delay = at_ms
            .saturating_sub(d.deliver_at_ms.unwrap_or(now_ms))
            .max(0);
        ctx.conn
            .prepare_cached(
                "UPDATE scheduled_replies SET deliver_at_ms = deliver_at_ms + ?3
                 WHERE thread_id = ?1 AND state = 'pending' AND id > ?2",
            )?
            .execute(params![thread_row, d.row_id, delay])?;
    }
    ctx.conn
        .prepare_cached(
            "UPDATE scheduled_replies SET failures = ?2, deliver_at_ms = ?3 WHERE id = ?1",
        )?
        .execute(params![d.row_id, failures, at_ms])?;
    Ok(Failed::Retry { at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_part_waits_twice_as_long_after_each_failure() {
        let pauses: Vec<i64> = (1..MAX_ATTEMPTS).map(|n| retry_pause_ms(n, 1000)).collect();
        assert_eq!(pauses, [1000, 2000, 4000, 8000]);
        // Whatever the count or the base, no overflow and no negative pause.
        assert_eq!(retry_pause_ms(0, 1000), 1000);
        assert_eq!(retry_pause_ms(i64::MAX, 1000), 1000 << 16);
        assert_eq!(retry_pause_ms(3, i64::MAX), i64::MAX);
        assert_eq!(retry_pause_ms(3, -5), 0);
    }
}
