//! Messages: insertion with gap-free `seq`, pages of history, read marks and
//! idempotency keys.

use rusqlite::{params, Connection};

use serde_json::value::RawValue;

use super::accounts::AgentRef;
use super::model::{raw_json, Message, ThreadRecord};
use super::row::optional;
use super::row::stored;
use super::writer::{Hot, Refs, WriteCtx};
use crate::domain::{self, ids::new_message_id, IdempotencyKey, Metadata, MsgType};
use crate::error::{ApiError, ApiResult};
use crate::events::{Event, Kind};

/// Who sends a message.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// An agent (ACSP).
    Agent(&'a AgentRef),
    /// A free-form sender name (turn-taking).
    Named(&'a str),
}

const MESSAGE_SELECT: &str = "
    SELECT m.uuid, m.seq, ag.aid, m.sender, COALESCE(ag.name, m.sender), m.content,
           m.msg_type, m.metadata, m.created_at
    FROM messages m LEFT JOIN agents ag ON ag.id = m.sender_agent_id";

fn message_row(thread_id: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let msg_type: String = r.get(6)?;
    Ok(Message {
        id: r.get(0)?,
        thread_id: thread_id.to_owned(),
        seq: r.get(1)?,
        sender_aid: r.get(2)?,
        sender: r.get(3)?,
        sender_name: r.get(4)?,
        content: r.get(5)?,
        msg_type: stored(&msg_type, MsgType::from_name)?.as_str(),
        metadata: raw_json(r.get(7)?),
        created_at: r.get(8)?,
    })
}

/// Stores a message as the thread's next `seq` if the thread is `active`
/// (else `409 THREAD_NOT_ACTIVE`) and logs its `thread.message` event. The
/// status is checked in the same statement that takes the seq, so
/// `thread`'s view may be stale. The caller has checked that the sender may
/// post here.
pub fn post(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
) -> ApiResult<Posted> {
    let stored = store(ctx, thread, sender, content, msg_type, metadata, true)?;
    // A copy for the answer: the event, shared with every subscriber, keeps
    // the one it was stored as.
    let json = stored.json.clone();
    let event = message_event(thread, &stored.message, stored.json);
    ctx.log(
        event,
        Refs {
            message_row: Some(stored.row_id),
            ..Refs::thread(thread.row_id)
        },
    );
    Ok(Posted {
        message: stored.message,
        json,
    })
}

/// A message just posted, and its JSON object as stored: the answer is
/// made from the JSON rather than by serializing the message again.
pub struct Posted {
    pub message: Message,
    pub json: Box<RawValue>,
}

/// A stored message's `thread.message` event; `json` is the message object.
pub fn message_event(thread: &ThreadRecord, message: &Message, json: Box<RawValue>) -> Event {
    Event {
        position: None,
        id: message.id.clone(),
        kind: Kind::ThreadMessage,
        thread_id: thread.view.id.clone(),
        seq: message.seq,
        participants: thread.participant_aids(),
        data: json,
        created_at: message.created_at.clone(),
    }
}

/// A message just stored: the object, its JSON (as stored) and its row id.
pub struct Stored {
    pub message: Message,
    pub json: Box<RawValue>,
    pub row_id: i64,
}

/// Stores a message without logging an event (the caller logs its own),
/// whatever the thread's status.
pub fn insert_quietly(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
) -> ApiResult<Stored> {
    store(ctx, thread, sender, content, msg_type, metadata, false)
}

fn store(
    ctx: &mut WriteCtx<'_>,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
    only_if_active: bool,
) -> ApiResult<Stored> {
    let now = domain::now();
    let Some(seq) = next_seq(ctx, thread.row_id, &now, only_if_active)? else {
        let status: String = ctx
            .conn
            .prepare_cached("SELECT status FROM threads WHERE id = ?1")?
            .query_row([thread.row_id], |r| r.get(0))?;
        return Err(ApiError::thread_not_active(&status));
    };
    let (message, sender_agent_id) =
        new_message(thread, seq, sender, content, msg_type, metadata, now);
    // Serialized once: for the row, and as the event's payload.
    let json = serde_json::value::to_raw_value(&message).expect("expect: a message serializes");
    ctx.execute(
        Hot::InsertMessage,
        params![
            message.id,
            thread.row_id,
            seq,
            sender_agent_id,
            message.sender,
            content,
            msg_type.as_str(),
            metadata.as_json_text(),
            message.created_at,
            json.get()
        ],
    )?;
    Ok(Stored {
        message,
        json,
        row_id: ctx.conn.last_insert_rowid(),
    })
}

/// A new message of `thread` numbered `seq`, with a fresh id, and the agent
/// row its `sender_agent_id` column names (none for a free-form sender).
/// One place for both backends' write paths.
pub(crate) fn new_message(
    thread: &ThreadRecord,
    seq: i64,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
    created_at: String,
) -> (Message, Option<i64>) {
    let (sender_agent_id, sender_text, sender_aid, sender_name) = match sender {
        Sender::Agent(a) => (
            Some(a.id),
            a.aid.clone(),
            Some(a.aid.clone()),
            a.name.clone(),
        ),
        Sender::Named(n) => (None, n.to_owned(), None, n.to_owned()),
    };
    let message = Message {
        id: new_message_id(),
        thread_id: thread.view.id.clone(),
        seq,
        sender_aid,
        sender: sender_text,
        sender_name,
        content: content.to_owned(),
        msg_type: msg_type.as_str(),
        metadata: raw_json(metadata.as_json_text().to_owned()),
        created_at,
    };
    (message, sender_agent_id)
}

thread_local! {
    /// The `last_seq` this thread (the writer) last gave each thread row.
    /// Only a guess: [`next_seq`] checks it in the UPDATE itself, so a stale
    /// entry (a rolled-back batch, another process, another database on
    /// this thread) costs the read-back it would have saved, never a wrong
    /// seq.
    static LAST_SEQ: std::cell::RefCell<std::collections::HashMap<i64, i64>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Entries of [`LAST_SEQ`] before it is emptied: a bound on its memory.
const LAST_SEQ_ENTRIES: usize = 65_536;

/// A message's row (run by the writer as a prepared [`Hot`] statement).
pub(super) const INSERT_MESSAGE: &str =
    "INSERT INTO messages (uuid, thread_id, seq, sender_agent_id, sender, content, msg_type,
                           metadata, created_at, json)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Takes seq `?4 + 1` for thread `?1` at time `?2`, if `?4` is still its
/// last (and, with `?3`, the thread is active).
pub(super) const TAKE_KEPT_SEQ: &str = "UPDATE threads SET last_seq = ?4 + 1, last_message_at = ?2,
                                              activity_at = ?2, updated_at = ?2
                             WHERE id = ?1 AND last_seq = ?4 AND (NOT ?3 OR status = 'active')";
/// Takes the next seq of thread `?1`, whatever it is (read back after).
const TAKE_NEXT_SEQ: &str = "UPDATE threads SET last_seq = last_seq + 1, last_message_at = ?2,
                                              activity_at = ?2, updated_at = ?2
                             WHERE id = ?1 AND (NOT ?3 OR status = 'active')";

/// Takes the thread's next seq (bumping `last_seq` and the activity times),
/// or `None` if the thread is missing or, with `only_if_active`, not active.
///
/// One writer: bumping last_seq and reading it back in this transaction
/// cannot race. Not `UPDATE … RETURNING`: SQLite gathers RETURNING rows in a
/// temporary b-tree it builds and drops for every call (a measured ~7% of the
/// writer's instructions per post). When the seq this writer gave last is
/// known, the UPDATE sets the next one only if `last_seq` still is that
/// value, which saves reading the row back; otherwise (or if the guess was
/// stale) it bumps and reads back.
fn next_seq(
    ctx: &mut WriteCtx<'_>,
    thread_row: i64,
    now: &str,
    only_if_active: bool,
) -> ApiResult<Option<i64>> {
    let guess = LAST_SEQ.with(|m| m.borrow().get(&thread_row).copied());
    let mut seq = None;
    if let Some(last) = guess {
        let bumped = ctx.execute(
            Hot::TakeKeptSeq,
            params![thread_row, now, only_if_active, last],
        )?;
        if bumped == 1 {
            seq = Some(last + 1);
        }
    }
    if seq.is_none() {
        let conn = ctx.conn;
        let bumped = conn.prepare_cached(TAKE_NEXT_SEQ)?.execute(params![
            thread_row,
            now,
            only_if_active
        ])?;
        if bumped != 1 {
            return Ok(None);
        }
        seq = Some(
            conn.prepare_cached("SELECT last_seq FROM threads WHERE id = ?1")?
                .query_row([thread_row], |r| r.get(0))?,
        );
    }
    LAST_SEQ.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= LAST_SEQ_ENTRIES {
            m.clear();
        }
        if let Some(seq) = seq {
            m.insert(thread_row, seq);
        }
    });
    Ok(seq)
}

/// A page as JSON, ready to send: the stored message objects, oldest first,
/// as one JSON array.
pub struct JsonPage {
    pub array: Vec<u8>,
    /// The seq of the last message on the page, if any.
    pub last_seq: Option<i64>,
    pub has_more: bool,
}

/// Like [`page`], but concatenates the stored JSON of each message instead
/// of decoding and re-encoding it.
pub fn page_json(
    conn: &Connection,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<JsonPage> {
    let from = after.saturating_add(offset);
    let mut stmt = conn.prepare_cached(
        // A range rather than LIMIT ?: SQLite plans with a bound LIMIT and
        // so recompiles the statement whenever it changes. seq is gap-free,
        // so the range holds exactly the page and one more.
        "SELECT seq, json FROM messages WHERE thread_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![
        thread.row_id,
        from.saturating_add(1),
        from.saturating_add(limit + 1)
    ])?;
    let mut array = Vec::with_capacity(512 * limit.min(64) as usize);
    array.push(b'[');
    let mut count = 0;
    let mut last_seq = None;
    let mut has_more = false;
    while let Some(row) = rows.next()? {
        if count == limit {
            has_more = true;
            break;
        }
        if count > 0 {
            array.push(b',');
        }
        last_seq = Some(row.get::<_, i64>(0)?);
        let json = row.get_ref(1)?;
        let json = json
            .as_bytes()
            .map_err(|e| crate::error::ApiError::Internal(format!("message json column: {e}")))?;
        array.extend_from_slice(json);
        count += 1;
    }
    array.push(b']');
    Ok(JsonPage {
        array,
        last_seq,
        has_more,
    })
}

/// A page of a thread's messages, oldest first: those with `seq > after`,
/// skipping `offset`, at most `limit`. Also says whether more follow.
pub fn page(
    conn: &Connection,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<Message>, bool)> {
    // seq is gap-free, so "skip offset rows after `after`" is a keyed range,
    // not an OFFSET scan: the page starts at seq after + offset + 1.
    let from = after.saturating_add(offset);
    let mut stmt = conn.prepare_cached(&format!(
        "{MESSAGE_SELECT} WHERE m.thread_id = ?1 AND m.seq BETWEEN ?2 AND ?3 ORDER BY m.seq"
    ))?;
    let range = params![
        thread.row_id,
        from.saturating_add(1),
        from.saturating_add(limit + 1)
    ];
    let rows = stmt.query_map(range, |r| message_row(&thread.view.id, r))?;
    let mut messages: Vec<Message> = rows.collect::<Result<_, _>>()?;
    let has_more = messages.len() as i64 > limit;
    messages.truncate(limit as usize);
    Ok((messages, has_more))
}

/// An agent's read mark in a thread (0 when it has read nothing).
pub fn read_mark(conn: &Connection, agent_id: i64, thread_row: i64) -> ApiResult<i64> {
    let mark = conn
        .prepare_cached(
            "SELECT last_read_seq FROM read_marks WHERE agent_id = ?1 AND thread_id = ?2",
        )?
        .query_row(params![agent_id, thread_row], |r| r.get(0));
    Ok(optional(mark)?.unwrap_or(0))
}

/// Raises an agent's read mark in a thread to `seq` (never lowers it).
pub fn mark_read(conn: &Connection, agent_id: i64, thread_row: i64, seq: i64) -> ApiResult<()> {
    conn.prepare_cached(
        "INSERT INTO read_marks (agent_id, thread_id, last_read_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (agent_id, thread_id)
         DO UPDATE SET last_read_seq = max(last_read_seq, excluded.last_read_seq)",
    )?
    .execute(params![agent_id, thread_row, seq])?;
    Ok(())
}

/// The message an earlier request stored under this idempotency key.
pub fn by_idempotency_key(
    conn: &Connection,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
) -> ApiResult<Option<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{MESSAGE_SELECT} JOIN idempotency_keys k ON k.message_id = m.id
         WHERE k.account_id = ?1 AND k.thread_id = ?2 AND k.key = ?3"
    ))?;
    optional(
        stmt.query_row(params![account_id, thread.row_id, key.as_str()], |r| {
            message_row(&thread.view.id, r)
        }),
    )
}

/// Remembers which message an idempotency key stored (found by its thread
/// and seq: `messages.uuid` has no index, migration 8).
pub fn remember_idempotency_key(
    conn: &Connection,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
    message: &Message,
) -> ApiResult<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (account_id, thread_id, key, message_id, created_at)
         SELECT ?1, ?2, ?3, id, ?5 FROM messages WHERE thread_id = ?2 AND seq = ?4",
    )?
    .execute(params![
        account_id,
        thread.row_id,
        key.as_str(),
        message.seq,
        domain::now()
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated in-memory database with one active thread (row 1) whose
    /// `last_seq` is `last_seq`.
    fn thread_at(last_seq: i64) -> Connection {
        let conn = Connection::open_in_memory().expect("an in-memory database opens");
        super::super::migrate::migrate(&conn, std::path::Path::new(":memory:"))
            .expect("the migrations apply");
        conn.execute(
            "INSERT INTO accounts (id, user_id, created_at) VALUES (1, 'usr_0', 't');",
            [],
        )
        .expect("the account is stored");
        conn.execute(
            "INSERT INTO threads (id, uuid, kind, owner_account_id, last_seq, activity_at,
                                  created_at, updated_at)
             VALUES (1, 'th', 'turn', 1, ?1, 't', 't', 't')",
            [last_seq],
        )
        .expect("the thread is stored");
        conn
    }

    fn stored_last_seq(conn: &Connection) -> i64 {
        conn.query_row("SELECT last_seq FROM threads WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("the thread is there")
    }

    /// [`next_seq`] on `conn`, in a writer's context.
    fn take(conn: &Connection, thread_row: i64, now: &str, active: bool) -> ApiResult<Option<i64>> {
        super::super::writer::with_ctx(conn, |ctx| next_seq(ctx, thread_row, now, active))
    }

    fn guess(last_seq: Option<i64>) {
        LAST_SEQ.with(|m| {
            let mut m = m.borrow_mut();
            m.clear();
            if let Some(last_seq) = last_seq {
                m.insert(1, last_seq);
            }
        });
    }

    #[test]
    fn the_next_seq_is_right_whatever_the_writer_last_gave() {
        // No guess, a right one, one ahead of the row (a rolled-back
        // batch), one behind it (another process posted).
        for (guessed, stored) in [(None, 7), (Some(7), 7), (Some(9), 7), (Some(3), 7)] {
            let conn = thread_at(stored);
            guess(guessed);
            let seq = take(&conn, 1, "now", true).expect("the statements run");
            assert_eq!(seq, Some(stored + 1), "guess {guessed:?}");
            assert_eq!(stored_last_seq(&conn), stored + 1, "guess {guessed:?}");
            // And the next one follows on, from the guess now kept.
            let seq = take(&conn, 1, "now", true).expect("the statements run");
            assert_eq!(seq, Some(stored + 2), "guess {guessed:?}");
        }
    }

    /// The opcodes of `sql` as SQLite compiles it on `conn`.
    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN {sql}"))
            .expect("the statement compiles");
        // Its parameters left unbound: EXPLAIN only compiles.
        let mut rows = stmt.raw_query();
        let mut ops = Vec::new();
        while let Some(row) = rows.next().expect("runs") {
            ops.push(row.get(1).expect("an opcode"));
        }
        ops
    }

    #[test]
    fn taking_a_seq_changes_no_index_entry() {
        // Migration 6: the thread-list indexes no longer hold activity_at,
        // so the UPDATE each post makes rewrites the thread's row only.
        let conn = thread_at(0);
        for sql in [TAKE_KEPT_SEQ, TAKE_NEXT_SEQ] {
            let ops = opcodes(&conn, sql);
            assert!(ops.iter().any(|op| op == "Insert"), "the row is rewritten");
            let index_ops: Vec<_> = ops.iter().filter(|op| op.starts_with("Idx")).collect();
            assert!(index_ops.is_empty(), "{index_ops:?} in {sql}");
        }
    }

    #[test]
    fn a_thread_not_active_gets_no_seq_even_with_a_right_guess() {
        let conn = thread_at(4);
        conn.execute("UPDATE threads SET status = 'closed' WHERE id = 1", [])
            .expect("the thread closes");
        guess(Some(4));
        assert_eq!(take(&conn, 1, "now", true).expect("runs"), None);
        assert_eq!(stored_last_seq(&conn), 4);
        // Stored quietly (not only if active), it takes the seq.
        assert_eq!(take(&conn, 1, "now", false).expect("runs"), Some(5));
        assert_eq!(take(&conn, 2, "now", false).expect("runs"), None);
    }
}
