//! The event log on PostgreSQL (mirrors `store::events`). Positions come
//! from the `log_head` row, which a writer's batch locks at its BEGIN
//! ([`append`] numbers its events), so they follow commit order across
//! nodes and a reader of `position > P` never skips a row committed later.

use postgres::Row;

use super::conn::{get, PgConn};
use super::deferred::store_posts;
use crate::error::ApiResult;
use crate::events::{Event, Kind};
use crate::store::events::{log_select, LogColumns, LogPage, LogScope};
use crate::store::writer::Refs;

/// The channel every node LISTENs on: a commit that logged events
/// NOTIFYs it. Only a wake-up: the events are read from the table.
pub const CHANNEL: &str = "threadline_events";

pub fn last_position(c: &PgConn) -> ApiResult<i64> {
    get(&c.one("SELECT position FROM log_head", &[])?, 0)
}

/// Moves the log's head [`RESTORE_POSITION_GAP`] ahead, as a `threadline
/// backup` copy's log is on SQLite: a consumer that followed the server
/// before a restore past the restored data's newest event still hears what
/// is logged next. Returns the position of the next event.
///
/// [`RESTORE_POSITION_GAP`]: crate::store::backup::RESTORE_POSITION_GAP
pub fn leave_a_gap(c: &PgConn) -> ApiResult<i64> {
    let head: i64 = get(
        &c.one(
            "UPDATE log_head SET position = position + $1 RETURNING position",
            &[&crate::store::backup::RESTORE_POSITION_GAP],
        )?,
        0,
    )?;
    Ok(head + 1)
}

pub fn first_position(c: &PgConn) -> ApiResult<Option<i64>> {
    get(&c.one("SELECT min(position) FROM events", &[])?, 0)
}

pub fn events_after(c: &PgConn, position: i64, limit: i64) -> ApiResult<Vec<Event>> {
    Ok(page_after(c, position, limit)?.events)
}

/// [`events_after`] as a [`LogPage`] (mirrors `store::events::page_after`):
/// a row that cannot be rebuilt is left out, and read past.
pub fn page_after(c: &PgConn, position: i64, limit: i64) -> ApiResult<LogPage> {
    let rows = c.all(log_select!("$1", "$2", ""), &[&position, &limit.max(0)])?;
    LogPage::of(&rows)
}

/// [`events_after`], of the threads in `scope` only (mirrors
/// `store::events::events_after_in`).
pub fn events_after_in(
    c: &PgConn,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<Vec<Event>> {
    Ok(page_after_in(c, position, limit, scope)?.events)
}

/// [`events_after_in`] as a [`LogPage`] (mirrors
/// `store::events::page_after_in`).
pub fn page_after_in(
    c: &PgConn,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<LogPage> {
    let (sql, key) = match scope {
        LogScope::Thread(uuid) => (
            log_select!(
                "$1",
                "$2",
                "AND e.thread_id IN (SELECT id FROM threads WHERE uuid = $3)"
            ),
            uuid,
        ),
        LogScope::Agent(aid) => (
            log_select!(
                "$1",
                "$2",
                "AND (e.thread_id IN (SELECT t.id FROM threads t JOIN agents a
                        ON a.id = t.creator_agent_id OR a.id = t.target_agent_id
                      WHERE a.aid = $3)
                      OR (e.kind = 'thread.deleted'
                          AND (ca.aid = $3 OR ta.aid = $3)))"
            ),
            aid,
        ),
    };
    let rows = c.all(sql, &[&position, &limit.max(0), key])?;
    LogPage::of(&rows)
}

/// A log row read on PostgreSQL; rebuilt by the same
/// [`store::events::stored_event`](crate::store::events) as on SQLite.
impl LogColumns for Row {
    fn int(&self, idx: usize) -> ApiResult<i64> {
        get(self, idx)
    }
    fn text(&self, idx: usize) -> ApiResult<String> {
        get(self, idx)
    }
    fn opt_text(&self, idx: usize) -> ApiResult<Option<String>> {
        get(self, idx)
    }
}

/// The rest of [`append`]'s statement after `WITH`, its parameters
/// numbered as given (so that it may follow the posts held back).
macro_rules! append_events {
    ($n:literal, $kinds:literal, $threads:literal, $seqs:literal, $messages:literal,
     $replies:literal, $uuids:literal, $data:literal, $times:literal) => {
        concat!(
            "head AS (
                 UPDATE log_head SET position = position + $",
            $n,
            " RETURNING position - $",
            $n,
            " AS base
             ), rows AS (
                 INSERT INTO events (position, kind, thread_id, seq, message_id, reply_id, uuid,
                                     data, created_at)
                 SELECT head.base + e.ord, e.kind, e.thread_id, e.seq, e.message_id, e.reply_id,
                        e.uuid, e.data, e.created_at
                 FROM head, unnest($",
            $kinds,
            "::text[], $",
            $threads,
            "::bigint[], $",
            $seqs,
            "::bigint[], $",
            $messages,
            "::bigint[], $",
            $replies,
            "::bigint[], $",
            $uuids,
            "::text[], $",
            $data,
            "::text[], $",
            $times,
            "::text[])
                      WITH ORDINALITY AS e(kind, thread_id, seq, message_id, reply_id, uuid,
                                           data, created_at, ord)
                 RETURNING 1
             )
             SELECT head.base + $",
            $n,
            ", pg_notify('threadline_events', (head.base + $",
            $n,
            ")::text)
             FROM head, (SELECT count(*) FROM rows) AS written"
        )
    };
}

/// Numbers a transaction's logged events and writes their rows: the last
/// statement before COMMIT. One statement (head, rows and NOTIFY together,
/// after the posts the writer's connection holds back, if any): while
/// `log_head` is locked, every round trip is time all writers of all nodes
/// queue for. NOTIFY is delivered at COMMIT, to every node, with the
/// position of the last event (a follower that has published it skips
/// the read).
pub(super) fn append(c: &PgConn, pending: &mut [(Event, Refs)]) -> ApiResult<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let n = pending.len() as i64;
    let mut kinds = Vec::with_capacity(pending.len());
    let mut threads = Vec::with_capacity(pending.len());
    let mut seqs = Vec::with_capacity(pending.len());
    let mut messages = Vec::with_capacity(pending.len());
    let mut replies = Vec::with_capacity(pending.len());
    let mut uuids: Vec<Option<&str>> = Vec::with_capacity(pending.len());
    let mut data: Vec<Option<&str>> = Vec::with_capacity(pending.len());
    let mut times = Vec::with_capacity(pending.len());
    for (event, refs) in pending.iter() {
        kinds.push(event.kind.as_str());
        threads.push(refs.thread_row);
        seqs.push(event.seq);
        messages.push(refs.message_row);
        replies.push(refs.reply_row);
        // A message's event id is the message's own; any other is stored.
        uuids.push((event.kind != Kind::ThreadMessage).then_some(event.id.as_str()));
        // Only these have no stored row to rebuild their payload from.
        data.push(event.kind.keeps_data().then(|| event.data.get()));
        times.push(event.created_at.as_str());
    }
    let head: i64 = get(
        &c.one_storing_held(
            concat!("WITH ", append_events!(1, 2, 3, 4, 5, 6, 7, 8, 9)),
            // After the posts held back, if any: one round trip for both.
            concat!(
                "WITH ",
                store_posts!(),
                ", ",
                append_events!(15, 16, 17, 18, 19, 20, 21, 22, 23)
            ),
            &[
                &n, &kinds, &threads, &seqs, &messages, &replies, &uuids, &data, &times,
            ],
        )?,
        0,
    )?;
    let mut position = head - n;
    for (event, _) in pending.iter_mut() {
        position += 1;
        event.position = Some(position);
    }
    Ok(())
}

pub fn prune(c: &PgConn, cutoff: &str, batch: i64) -> ApiResult<usize> {
    let floor: i64 = get(
        &c.one(
            "SELECT LEAST(COALESCE((SELECT max(position) FROM events), 0),
                          COALESCE((SELECT min(position) FROM event_cursors) + 1, 9223372036854775807))",
            &[],
        )?,
        0,
    )?;
    let rows = c.all(
        "SELECT position, created_at < $2 FROM events WHERE position < $1
         ORDER BY position LIMIT $3",
        &[&floor, &cutoff, &batch],
    )?;
    let mut upto = None;
    for row in &rows {
        if !get::<bool>(row, 1)? {
            break;
        }
        upto = Some(get::<i64>(row, 0)?);
    }
    match upto {
        Some(p) => Ok(c.exec("DELETE FROM events WHERE position <= $1", &[&p])? as usize),
        None => Ok(0),
    }
}

pub fn save_cursor(c: &PgConn, consumer: &str, position: i64) -> ApiResult<()> {
    c.exec(
        "INSERT INTO event_cursors (consumer, position, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer) DO UPDATE SET position = excluded.position,
                                              updated_at = excluded.updated_at",
        &[&consumer, &position, &crate::domain::now()],
    )?;
    Ok(())
}

pub fn cursor(c: &PgConn, consumer: &str) -> ApiResult<Option<i64>> {
    c.opt(
        "SELECT position FROM event_cursors WHERE consumer = $1",
        &[&consumer],
    )?
    .map(|r| get(&r, 0))
    .transpose()
}

pub fn drop_cursor(c: &PgConn, consumer: &str) -> ApiResult<()> {
    c.exec(
        "DELETE FROM event_cursors WHERE consumer = $1",
        &[&consumer],
    )?;
    Ok(())
}
