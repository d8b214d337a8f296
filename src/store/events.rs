//! The event log: one row per committed change, written by the writer in
//! the change's own transaction (`WriteCtx::log`), read back in order by
//! [`events_after`], pruned by age ([`prune`]) without ever passing a
//! consumer's recorded cursor.
//!
//! A row points at what is already stored (the message, the reply part, the
//! thread) rather than copying it: posting is the hot path, and a message's
//! JSON is already in `messages.json`. Only a status change, which has no
//! row of its own, keeps its small payload in `data`.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::{to_raw_value, RawValue};

use super::model::{raw_json, Thread};
use crate::error::{ApiError, ApiResult};
use crate::events::{reply_part_json, Event, Kind, ReplyPart};

/// The highest position given out (0 for an empty log): where a new
/// consumer that wants only what comes next starts. Pruning never deletes
/// the newest event, so this never goes back and no position is reused.
pub fn last_position(conn: &Connection) -> ApiResult<i64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(position) FROM events")?
        .query_row([], |r| r.get(0))?;
    Ok(last.unwrap_or(0))
}

/// The oldest position still in the log, if any. A consumer whose cursor
/// is below `oldest - 1` has lost events to retention.
pub fn first_position(conn: &Connection) -> ApiResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(position) FROM events")?
        .query_row([], |r| r.get(0))?)
}

/// Which threads' events a read of the log is limited to: those a stream's
/// channel can carry, so that a replay reads and rebuilds only rows it may
/// send, not every account's events since the position it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogScope {
    /// The thread with this id.
    Thread(String),
    /// The threads the agent with this AID takes part in.
    Agent(String),
}

/// The columns [`stored_event`] reads, from the log and what its rows point
/// at, for the events after `?1` (`$1`) that `$where` keeps, oldest first,
/// at most `?2` (`$2`): one text for both backends' statements. A
/// `thread.deleted` row has no thread left to join (its row names the
/// deleted thread's agents itself); any other row whose thread is gone (a
/// row emptied by a deletion before migration 13) is not an event.
macro_rules! log_select {
    ($after:literal, $limit:literal, $where:literal) => {
        concat!(
            "SELECT e.position, e.kind, e.seq, e.uuid, e.data, e.created_at,
                t.uuid, ca.aid, ta.aid, t.subject, t.metadata, t.created_at,
                m.uuid, m.json,
                r.uuid, r.idx, r.count, r.content, r.turn_epoch, r.deliver_at
             FROM events e
             LEFT JOIN threads t ON t.id = e.thread_id
             LEFT JOIN agents ca ON ca.id = COALESCE(t.creator_agent_id, e.creator_agent_id)
             LEFT JOIN agents ta ON ta.id = COALESCE(t.target_agent_id, e.target_agent_id)
             LEFT JOIN messages m ON m.id = e.message_id
             LEFT JOIN scheduled_replies r ON r.id = e.reply_id
             WHERE e.position > ",
            $after,
            " AND (t.id IS NOT NULL OR e.kind = 'thread.deleted') ",
            $where,
            " ORDER BY e.position LIMIT ",
            $limit
        )
    };
}

pub(crate) use log_select;

/// [`events_after`], of the threads in `scope` only (see [`LogScope`]).
pub fn events_after_in(
    conn: &Connection,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<Vec<Event>> {
    Ok(page_after_in(conn, position, limit, scope)?.events)
}

/// The log's rows after `position` of the threads in `scope`, at most
/// `limit` of them, as a [`LogPage`]: what a consumer that pages through
/// the log reads (an unreadable row moves it on as a readable one does).
pub fn page_after_in(
    conn: &Connection,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<LogPage> {
    let (sql, key) = match scope {
        LogScope::Thread(uuid) => (
            log_select!(
                "?1",
                "?2",
                "AND e.thread_id IN (SELECT id FROM threads WHERE uuid = ?3)"
            ),
            uuid,
        ),
        LogScope::Agent(aid) => (
            log_select!(
                "?1",
                "?2",
                "AND (e.thread_id IN (SELECT t.id FROM threads t JOIN agents a
                        ON a.id = t.creator_agent_id OR a.id = t.target_agent_id
                      WHERE a.aid = ?3)
                      OR (e.kind = 'thread.deleted'
                          AND (ca.aid = ?3 OR ta.aid = ?3)))"
            ),
            aid,
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![position, limit.max(0), key])?;
    let mut page = LogPage::default();
    while let Some(r) = rows.next()? {
        page.take(r)?;
    }
    Ok(page)
}

/// The logged events after `position`, oldest first, at most `limit`: each
/// with the same id, kind, seq and payload as it was published live. A row
/// that cannot be rebuilt is left out (see [`LogPage`]).
pub fn events_after(conn: &Connection, position: i64, limit: i64) -> ApiResult<Vec<Event>> {
    Ok(page_after(conn, position, limit)?.events)
}

/// [`events_after`] as a [`LogPage`].
pub fn page_after(conn: &Connection, position: i64, limit: i64) -> ApiResult<LogPage> {
    let mut stmt = conn.prepare_cached(log_select!("?1", "?2", ""))?;
    let mut rows = stmt.query(params![position, limit.max(0)])?;
    let mut page = LogPage::default();
    while let Some(r) = rows.next()? {
        page.take(r)?;
    }
    Ok(page)
}

/// Some rows of the log, read in order: the events rebuilt from them, and
/// how far the read went. A row whose event cannot be rebuilt (what it
/// points at no longer reads back: a reply part's content that is not
/// text, a message's JSON that is not JSON, a status payload missing) is
/// left out,
/// logged once with its position ([`unreadable`]), and still counts as
/// read. (Only what the row's columns hold: a read that fails, such as a
/// corrupt database page or a busy database, fails the page as before.)
/// One bad row used to fail every read of a page that held it, so
/// every event stream resumed from before it ended ("could not read the
/// event log"), webhooks and other nodes stopped at it, until retention
/// pruned it.
#[derive(Debug, Default)]
pub struct LogPage {
    /// The events of the rows that could be rebuilt, oldest first.
    pub events: Vec<Event>,
    /// The rows read (those left out included): fewer than asked for
    /// means the log ends here.
    pub rows: usize,
    /// The position of the last row read, if any: where the next page
    /// starts.
    pub read_upto: Option<i64>,
}

impl LogPage {
    /// The page of these rows, read in order.
    pub(super) fn of<R: LogColumns>(rows: &[R]) -> ApiResult<LogPage> {
        let mut page = LogPage::default();
        for r in rows {
            page.take(r)?;
        }
        Ok(page)
    }

    /// Reads one row into the page.
    pub(super) fn take(&mut self, r: &impl LogColumns) -> ApiResult<()> {
        // The primary key: it reads, or nothing of the table does.
        let position = r.int(0)?;
        self.rows += 1;
        self.read_upto = Some(position);
        match stored_event(r) {
            Ok(event) => self.events.push(event),
            Err(e) => unreadable(position, r.opt_text(6).ok().flatten(), &e),
        }
        Ok(())
    }
}

/// Logs an event of the log that cannot be rebuilt, once per process (for
/// the first few thousand such rows): every stream resumed from before it
/// reads it again, and would log it again each time.
pub(crate) fn unreadable(position: i64, thread: Option<String>, e: &ApiError) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    /// A row by position and thread (two databases in one process, as in
    /// tests, give out the same positions).
    type Row = (i64, Option<String>);
    /// The rows already logged.
    static LOGGED: Mutex<Option<HashSet<Row>>> = Mutex::new(None);
    const REMEMBERED: usize = 4096;
    let first = match LOGGED.lock() {
        Ok(mut logged) => {
            let logged = logged.get_or_insert_with(HashSet::new);
            if logged.len() >= REMEMBERED {
                logged.clear();
            }
            logged.insert((position, thread.clone()))
        }
        Err(_) => true,
    };
    if first {
        log::error!(
            "event log: the event at position {position} (thread {}) cannot be read back, \
             and is left out by whatever reads the log (event streams, webhooks, other \
             nodes), which goes on past it: {}",
            thread.as_deref().unwrap_or("unknown"),
            e,
        );
    }
}

pub(super) fn broken(what: &str) -> ApiError {
    ApiError::Internal(format!("event log: {what}"))
}

/// The columns of a log row, as each backend reads them: `events_after`
/// selects the same columns in the same order on SQLite and PostgreSQL, so
/// one [`stored_event`] rebuilds the events of both.
pub(super) trait LogColumns {
    fn int(&self, idx: usize) -> ApiResult<i64>;
    fn text(&self, idx: usize) -> ApiResult<String>;
    fn opt_text(&self, idx: usize) -> ApiResult<Option<String>>;
}

impl LogColumns for rusqlite::Row<'_> {
    fn int(&self, idx: usize) -> ApiResult<i64> {
        Ok(self.get(idx)?)
    }
    fn text(&self, idx: usize) -> ApiResult<String> {
        Ok(self.get(idx)?)
    }
    fn opt_text(&self, idx: usize) -> ApiResult<Option<String>> {
        Ok(self.get(idx)?)
    }
}

/// Rebuilds one event from its row and what the row points at.
pub(super) fn stored_event(r: &impl LogColumns) -> ApiResult<Event> {
    let position: i64 = r.int(0)?;
    let name: String = r.text(1)?;
    let kind = Kind::logged(&name).ok_or_else(|| broken("unknown kind"))?;
    let seq: i64 = r.int(2)?;
    let uuid: Option<String> = r.opt_text(3)?;
    let created_at: String = r.text(5)?;
    // A deleted thread's id is in its event's data (no row is left).
    let thread_id: Option<String> = r.opt_text(6)?;
    let creator_aid: Option<String> = r.opt_text(7)?;
    let target_aid: Option<String> = r.opt_text(8)?;
    let participants = match (&creator_aid, &target_aid) {
        (Some(c), Some(t)) => vec![c.clone(), t.clone()],
        _ => Vec::new(),
    };
    let part = |seq: Option<i64>| -> ApiResult<Box<RawValue>> {
        let id: Option<String> = r.opt_text(14)?;
        let id = id.ok_or_else(|| broken("reply part missing"))?;
        let content: String = r.text(17)?;
        let deliver_at: String = r.text(19)?;
        let part = ReplyPart {
            id: &id,
            index: r.int(15)?,
            count: r.int(16)?,
            content: &content,
            turn_epoch: r.int(18)?,
            deliver_at: &deliver_at,
        };
        Ok(reply_part_json(&part, seq))
    };
    let (id, data) = match kind {
        Kind::ThreadMessage => {
            let id: Option<String> = r.opt_text(12)?;
            let json: Option<String> = r.opt_text(13)?;
            let (id, json) = id.zip(json).ok_or_else(|| broken("message missing"))?;
            let data = RawValue::from_string(json).map_err(|_| broken("message json"))?;
            (id, data)
        }
        Kind::ThreadStatus | Kind::ReplyFailed | Kind::ThreadDeleted => {
            let json: Option<String> = r.opt_text(4)?;
            let json = json.ok_or_else(|| broken("event data missing"))?;
            let data = RawValue::from_string(json).map_err(|_| broken("event data json"))?;
            (uuid.clone().unwrap_or_default(), data)
        }
        Kind::ThreadCreated => {
            // As it stood when created: nothing changes a thread's identity,
            // subject or metadata later, and it started active and empty.
            let created: String = r.text(11)?;
            let thread = Thread {
                id: thread_id.clone().unwrap_or_default(),
                creator_aid,
                target_aid,
                subject: r.opt_text(9)?,
                status: "active",
                message_count: 0,
                metadata: raw_json(r.text(10)?),
                created_at: created.clone(),
                updated_at: created,
            };
            let data = to_raw_value(&thread).map_err(|_| broken("thread json"))?;
            (uuid.clone().unwrap_or_default(), data)
        }
        Kind::ReplyScheduled | Kind::ReplyCancelled => {
            (uuid.clone().unwrap_or_default(), part(None)?)
        }
        Kind::ReplyDelivered => (uuid.clone().unwrap_or_default(), part(Some(seq))?),
        Kind::Typing | Kind::Signal => return Err(broken("a signal in the log")),
    };
    if id.is_empty() {
        return Err(broken("event without an id"));
    }
    let thread_id = match (thread_id, kind) {
        (Some(id), _) => id,
        (None, Kind::ThreadDeleted) => deleted_thread_id(&data)?,
        (None, _) => return Err(broken("thread missing")),
    };
    Ok(Event {
        position: Some(position),
        id,
        kind,
        thread_id,
        seq,
        participants,
        data,
        created_at,
    })
}

/// The id of the thread a `thread.deleted` event's data names.
fn deleted_thread_id(data: &RawValue) -> ApiResult<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        thread_id: String,
    }
    serde_json::from_str::<Named>(data.get())
        .map(|n| n.thread_id)
        .map_err(|_| broken("deleted thread's id"))
}

/// Deletes, oldest first, at most `batch` events created before `cutoff`
/// (RFC 3339). What goes is always a prefix of the log, and never the
/// newest event (the next position is the newest + 1, so keeping it keeps
/// positions from being reused) nor anything after the lowest recorded
/// consumer cursor. Returns how many went.
pub fn prune(conn: &Connection, cutoff: &str, batch: i64) -> ApiResult<usize> {
    // Everything below `floor` may go, age permitting.
    let floor: i64 = conn
        .prepare_cached(
            "SELECT min(COALESCE((SELECT max(position) FROM events), 0),
                        COALESCE((SELECT min(position) FROM event_cursors) + 1, 9223372036854775807))",
        )?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT position, created_at < ?2 FROM events WHERE position < ?1
         ORDER BY position LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![floor, cutoff, batch])?;
    // The oldest run of events old enough; stop at the first that is not,
    // so what is left stays one contiguous stretch of the log.
    let mut upto = None;
    while let Some(row) = rows.next()? {
        if !row.get::<_, bool>(1)? {
            break;
        }
        upto = Some(row.get::<_, i64>(0)?);
    }
    drop(rows);
    match upto {
        Some(p) => Ok(conn
            .prepare_cached("DELETE FROM events WHERE position <= ?1")?
            .execute([p])?),
        None => Ok(0),
    }
}

/// Records the last position `consumer` has handled: pruning keeps every
/// later event until the consumer moves on or drops its cursor.
pub fn save_cursor(conn: &Connection, consumer: &str, position: i64) -> ApiResult<()> {
    conn.prepare_cached(
        "INSERT INTO event_cursors (consumer, position, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer) DO UPDATE SET position = excluded.position,
                                              updated_at = excluded.updated_at",
    )?
    .execute(params![consumer, position, crate::domain::now()])?;
    Ok(())
}

/// The last position `consumer` recorded, if it has one.
pub fn cursor(conn: &Connection, consumer: &str) -> ApiResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT position FROM event_cursors WHERE consumer = ?1")?
        .query_row([consumer], |r| r.get(0))
        .optional()?)
}

/// Forgets `consumer`'s cursor (it stopped for good): pruning may pass it.
pub fn drop_cursor(conn: &Connection, consumer: &str) -> ApiResult<()> {
    conn.prepare_cached("DELETE FROM event_cursors WHERE consumer = ?1")?
        .execute([consumer])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated in-memory database with one turn-taking thread and
    /// `times.len()` status events created at those times.
    fn log_with(times: &[&str]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, user_id, created_at) VALUES (1, 'usr_0', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, activity_at, created_at, updated_at)
             VALUES (1, 'th', 'turn', 1, 't', 't', 't');",
        )
        .unwrap();
        for (i, at) in times.iter().enumerate() {
            conn.execute(
                "INSERT INTO events (kind, thread_id, seq, uuid, data, created_at)
                 VALUES ('thread.status', 1, 0, ?1, '{}', ?2)",
                params![format!("e{i}"), at],
            )
            .unwrap();
        }
        conn
    }

    fn positions(conn: &Connection) -> Vec<i64> {
        events_after(conn, 0, 100)
            .unwrap()
            .iter()
            .map(|e| e.position.unwrap())
            .collect()
    }

    #[test]
    fn pruning_removes_old_events_as_a_prefix_in_batches() {
        let conn = log_with(&[
            "2026-01-01",
            "2026-01-02",
            "2026-03-01",
            "2026-01-03",
            "2026-03-02",
        ]);
        assert_eq!(prune(&conn, "2026-02-01", 1).unwrap(), 1);
        assert_eq!(positions(&conn), [2, 3, 4, 5]);
        assert_eq!(prune(&conn, "2026-02-01", 100).unwrap(), 1);
        // Event 4 is old too, but 3 is not: the log stays contiguous.
        assert_eq!(positions(&conn), [3, 4, 5]);
        assert_eq!(prune(&conn, "2026-02-01", 100).unwrap(), 0);
        assert_eq!(first_position(&conn).unwrap(), Some(3));
    }

    #[test]
    fn pruning_keeps_the_newest_event_and_the_high_water_mark() {
        let conn = log_with(&["2026-01-01", "2026-01-02"]);
        assert_eq!(prune(&conn, "2027-01-01", 100).unwrap(), 1);
        assert_eq!(positions(&conn), [2]);
        assert_eq!(last_position(&conn).unwrap(), 2);
    }

    #[test]
    fn pruning_never_passes_a_recorded_cursor() {
        let conn = log_with(&["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]);
        save_cursor(&conn, "webhook:1", 1).unwrap();
        save_cursor(&conn, "webhook:2", 3).unwrap();
        assert_eq!(prune(&conn, "2027-01-01", 100).unwrap(), 1);
        assert_eq!(positions(&conn), [2, 3, 4], "webhook:1 still needs 2..");
        drop_cursor(&conn, "webhook:1").unwrap();
        assert_eq!(cursor(&conn, "webhook:2").unwrap(), Some(3));
        assert_eq!(prune(&conn, "2027-01-01", 100).unwrap(), 2);
        assert_eq!(positions(&conn), [4]);
    }

    #[test]
    fn the_schema_admits_exactly_the_logged_kinds() {
        let conn = log_with(&[]);
        let insert = |kind: &str| {
            conn.execute(
                "INSERT INTO events (kind, thread_id, seq, created_at) VALUES (?1, 1, 0, 't')",
                [kind],
            )
        };
        for kind in Kind::LOGGED {
            insert(kind.as_str()).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        }
        for kind in [Kind::Typing, Kind::Signal] {
            assert!(insert(kind.as_str()).is_err(), "{kind:?} is not logged");
        }
    }
}
