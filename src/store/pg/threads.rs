//! Threads and messages on PostgreSQL (mirrors `store::lookup`,
//! `store::threads` and `store::messages`): the same statements, with
//! `$n` parameters, `RETURNING id` for SQLite's last rowid, and the seq
//! taken under the thread's row lock (several nodes post to one thread).

use postgres::Row;
use serde_json::value::RawValue;

use super::conn::{get, PgConn};
use super::deferred::{Post, ThreadState};
use super::PgCtx;
use crate::domain::text::Subject;
use crate::domain::{self, IdempotencyKey, Metadata, MsgType};
use crate::domain::{StatusFilter, ThreadId, ThreadStatus};
use crate::error::{ApiError, ApiResult};
use crate::events::{self, new_event_id, Event, Kind};
use crate::store::accounts::{Account, AgentRef};
use crate::store::messages::{message_event, new_message, JsonPage, Posted, Sender, Stored};
use crate::store::model::ThreadSummary;
use crate::store::model::{raw_json, Message, Participant, Thread, ThreadKind, ThreadRecord};
use crate::store::threads::NewAcspThread;
use crate::store::writer::Refs;

/// An enum from its stored name; an unknown name is a 500, never a default.
pub(super) fn stored<T>(name: &str, from_name: fn(&str) -> Option<T>) -> ApiResult<T> {
    from_name(name).ok_or_else(|| ApiError::Internal(format!("unknown stored name {name:?}")))
}

/// The columns [`thread_record`] reads, with the two participants' agents;
/// each lookup adds its WHERE.
macro_rules! thread_select {
    () => {
        "
    SELECT t.id, t.uuid, t.kind, t.owner_account_id,
           t.creator_agent_id, ca.account_id, ca.aid,
           t.target_agent_id, ta.account_id, ta.aid,
           t.subject, t.status, t.last_seq, t.metadata, t.created_at, t.updated_at,
           t.integrations, t.turn_epoch
    FROM threads t
    LEFT JOIN agents ca ON ca.id = t.creator_agent_id
    LEFT JOIN agents ta ON ta.id = t.target_agent_id"
    };
}
const THREAD_BY_UUID: &str = concat!(thread_select!(), "\n    WHERE t.uuid = $1");
const THREAD_BY_ROW: &str = concat!(thread_select!(), "\n    WHERE t.id = $1");
/// A writer batch's lookups in one statement ([`lookup_batch`]): the live
/// login keys `$1`, the agents `$2` and the threads `$3` (their rows
/// locked), one row each. A thread's row is [`thread_select!`]'s columns
/// (0–17); column 18 says what the row is; a key's row has its hash,
/// account and user in columns 19–21, an agent's its columns in 22–25.
const BATCH_LOOKUP: &str = concat!(
    "WITH th (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17) AS (",
    thread_select!(),
    "
    WHERE t.uuid = ANY($3)
    FOR UPDATE OF t
), k AS (
    SELECT k.key_hash, a.id, a.user_id FROM login_keys k JOIN accounts a ON a.id = k.account_id
    WHERE k.key_hash = ANY($1) AND k.revoked_at IS NULL
), g AS (
    SELECT id, account_id, aid, name FROM agents WHERE aid = ANY($2)
)
SELECT th.*, 0, NULL::bytea, NULL::bigint, NULL::text, NULL::bigint, NULL::bigint, NULL::text,
       NULL::text
FROM th
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, 1, k.key_hash, k.id, k.user_id, NULL, NULL, NULL, NULL
FROM k
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, 2, NULL, NULL, NULL, g.id, g.account_id, g.aid, g.name
FROM g"
);

fn thread_record(r: &Row) -> ApiResult<ThreadRecord> {
    let kind: String = get(r, 2)?;
    let creator: Option<i64> = get(r, 4)?;
    let target: Option<i64> = get(r, 7)?;
    let creator_aid: Option<String> = get(r, 6)?;
    let target_aid: Option<String> = get(r, 9)?;
    let participants = match (creator, target, &creator_aid, &target_aid) {
        (Some(c), Some(t), Some(ca), Some(ta)) => Some((
            Participant {
                agent_id: c,
                account_id: get(r, 5)?,
                aid: ca.clone(),
            },
            Participant {
                agent_id: t,
                account_id: get(r, 8)?,
                aid: ta.clone(),
            },
        )),
        _ => None,
    };
    let status: String = get(r, 11)?;
    Ok(ThreadRecord {
        row_id: get(r, 0)?,
        kind: stored(&kind, ThreadKind::from_name)?,
        owner_account_id: get(r, 3)?,
        participants,
        integrations: get(r, 16)?,
        turn_epoch: get(r, 17)?,
        view: Thread {
            id: get(r, 1)?,
            creator_aid,
            target_aid,
            subject: get(r, 10)?,
            status: stored(&status, ThreadStatus::from_name)?.as_str(),
            message_count: get(r, 12)?,
            metadata: raw_json(get(r, 13)?),
            created_at: get(r, 14)?,
            updated_at: get(r, 15)?,
        },
    })
}

pub fn by_id(c: &PgConn, id: ThreadId) -> ApiResult<Option<ThreadRecord>> {
    c.opt(THREAD_BY_UUID, &[&id.to_text()])?
        .map(|r| thread_record(&r))
        .transpose()
}

/// What a writer batch's jobs will look up ([`lookup_batch`]).
#[derive(Default)]
pub struct BatchLookup {
    /// The live login keys among those asked for, with their accounts.
    pub accounts: Vec<([u8; 32], Account)>,
    pub agents: Vec<AgentRef>,
    /// The threads, their rows locked.
    pub threads: Vec<ThreadRecord>,
}

/// Looks up, in one statement (one round trip for a writer batch rather
/// than one per kind), the live login keys with these hashes, the agents
/// with these AIDs and the threads with these ids, locking the threads'
/// rows; on the writer's connection, their states are noted for the posts
/// held back (`pg::deferred`).
pub fn lookup_batch(
    c: &PgConn,
    keys: &[&[u8]],
    aids: &[&str],
    ids: &[String],
) -> ApiResult<BatchLookup> {
    let mut found = BatchLookup::default();
    for r in c.all(BATCH_LOOKUP, &[&keys, &aids, &ids])? {
        match get::<i32>(&r, 18)? {
            0 => found.threads.push(thread_record(&r)?),
            1 => {
                let hash: &[u8] = get(&r, 19)?;
                if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                    let account = Account {
                        id: get(&r, 20)?,
                        user_id: get(&r, 21)?,
                    };
                    found.accounts.push((hash, account));
                }
            }
            _ => found.agents.push(AgentRef {
                id: get(&r, 22)?,
                account_id: get(&r, 23)?,
                aid: get(&r, 24)?,
                name: get(&r, 25)?,
            }),
        }
    }
    for t in &found.threads {
        c.set_thread_state(
            t.row_id,
            ThreadState {
                last_seq: t.view.message_count,
                status: t.view.status.to_owned(),
            },
        );
    }
    Ok(found)
}

pub fn by_row_id(c: &PgConn, row_id: i64) -> ApiResult<Option<ThreadRecord>> {
    c.opt(THREAD_BY_ROW, &[&row_id])?
        .map(|r| thread_record(&r))
        .transpose()
}

pub fn create_acsp(c: &PgConn, ctx: &mut PgCtx, new: NewAcspThread) -> ApiResult<Thread> {
    let id = ThreadId::new();
    let now = domain::now();
    c.exec(
        "INSERT INTO threads (uuid, kind, owner_account_id, creator_agent_id, target_agent_id,
                              subject, metadata, activity_at, created_at, updated_at)
         VALUES ($1, $8, $2, $3, $4, $5, $6, $7, $7, $7)",
        &[
            &id.to_text(),
            &new.creator.account_id,
            &new.creator.id,
            &new.target.id,
            &new.subject.as_ref().map(Subject::as_str),
            &new.metadata.as_json_text(),
            &now,
            &ThreadKind::Acsp.as_str(),
        ],
    )?;
    let mut record =
        by_id(c, id)?.ok_or_else(|| ApiError::Internal("thread vanished after insert".into()))?;
    log_created(ctx, &record)?;
    if let Some(content) = new.first_message {
        let sender = Sender::Agent(&new.creator);
        let empty = Metadata::parse("metadata", None)?;
        let posted = post(
            c,
            ctx,
            &record,
            sender,
            content.as_str(),
            MsgType::Text,
            &empty,
        )?;
        record.view.message_count = posted.message.seq;
        record.view.updated_at = posted.message.created_at.clone();
    }
    Ok(record.view)
}

pub fn create_turn(
    c: &PgConn,
    ctx: &mut PgCtx,
    account_id: i64,
    id: ThreadId,
    integrations: Option<&str>,
) -> ApiResult<ThreadRecord> {
    let now = domain::now();
    c.exec(
        "INSERT INTO threads (uuid, kind, owner_account_id, integrations, activity_at, created_at, updated_at)
         VALUES ($1, $5, $2, $3, $4, $4, $4)",
        &[&id.to_text(), &account_id, &integrations, &now, &ThreadKind::Turn.as_str()],
    )?;
    let record =
        by_id(c, id)?.ok_or_else(|| ApiError::Internal("thread vanished after insert".into()))?;
    log_created(ctx, &record)?;
    Ok(record)
}

fn log_created(ctx: &mut PgCtx, record: &ThreadRecord) -> ApiResult<()> {
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

pub fn set_status(
    c: &PgConn,
    ctx: &mut PgCtx,
    record: &ThreadRecord,
    status: ThreadStatus,
) -> ApiResult<String> {
    // FOR UPDATE: two nodes setting a status at once do not both log it.
    let Some(row) = c.opt(
        "SELECT status, updated_at FROM threads WHERE id = $1 FOR UPDATE",
        &[&record.row_id],
    )?
    else {
        return Err(ApiError::thread_not_found());
    };
    let (current, updated_at): (String, String) = (get(&row, 0)?, get(&row, 1)?);
    if current == status.as_str() {
        return Ok(updated_at);
    }
    let now = domain::now();
    c.exec(
        "UPDATE threads SET status = $2, updated_at = $3 WHERE id = $1",
        &[&record.row_id, &status.as_str(), &now],
    )?;
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

pub fn list_for_agent(
    c: &PgConn,
    agent_id: i64,
    filter: StatusFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<ThreadSummary>, i64)> {
    let status: Option<&str> = match filter {
        StatusFilter::All => None,
        StatusFilter::Only(s) => Some(s.as_str()),
    };
    let total: i64 = get(
        &c.one(
            "SELECT (SELECT COUNT(*) FROM threads WHERE creator_agent_id = $1 AND ($2::text IS NULL OR status = $2))
                  + (SELECT COUNT(*) FROM threads WHERE target_agent_id = $1 AND ($2::text IS NULL OR status = $2))",
            &[&agent_id, &status],
        )?,
        0,
    )?;
    let rows = c.all(
        "SELECT t.uuid,
                CASE WHEN t.creator_agent_id = $1 THEN ta.aid ELSE ca.aid END,
                CASE WHEN t.creator_agent_id = $1 THEN ta.name ELSE ca.name END,
                t.subject, t.status, t.last_seq, t.last_message_at,
                (SELECT COUNT(*) FROM messages m
                  WHERE m.thread_id = t.id
                    AND m.seq > COALESCE(rm.last_read_seq, 0)
                    AND m.sender_agent_id IS DISTINCT FROM $1),
                t.created_at, t.updated_at
         FROM threads t
         JOIN agents ca ON ca.id = t.creator_agent_id
         JOIN agents ta ON ta.id = t.target_agent_id
         LEFT JOIN read_marks rm ON rm.agent_id = $1 AND rm.thread_id = t.id
         WHERE (t.creator_agent_id = $1 OR t.target_agent_id = $1)
           AND ($2::text IS NULL OR t.status = $2)
         ORDER BY t.activity_at DESC, t.uuid DESC
         LIMIT $3 OFFSET $4",
        &[&agent_id, &status, &limit, &offset],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let status: String = get(r, 4)?;
        out.push(ThreadSummary {
            id: get(r, 0)?,
            peer_aid: get(r, 1)?,
            peer_name: get(r, 2)?,
            subject: get(r, 3)?,
            status: stored(&status, ThreadStatus::from_name)?.as_str(),
            message_count: get(r, 5)?,
            last_message_at: get(r, 6)?,
            unread_count: get(r, 7)?,
            created_at: get(r, 8)?,
            updated_at: get(r, 9)?,
        });
    }
    Ok((out, total))
}

pub fn set_integrations(c: &PgConn, thread: &ThreadRecord, integrations: &str) -> ApiResult<()> {
    c.exec(
        "UPDATE threads SET integrations = $2, updated_at = $3 WHERE id = $1",
        &[&thread.row_id, &integrations, &domain::now()],
    )?;
    Ok(())
}

// ---- messages ----

const MESSAGE_BY_KEY: &str = "
    SELECT m.uuid, m.seq, ag.aid, m.sender, COALESCE(ag.name, m.sender), m.content,
           m.msg_type, m.metadata, m.created_at
    FROM messages m LEFT JOIN agents ag ON ag.id = m.sender_agent_id
    JOIN idempotency_keys k ON k.message_id = m.id
    WHERE k.account_id = $1 AND k.thread_id = $2 AND k.key = $3";
const MESSAGE_PAGE: &str = "
    SELECT m.uuid, m.seq, ag.aid, m.sender, COALESCE(ag.name, m.sender), m.content,
           m.msg_type, m.metadata, m.created_at
    FROM messages m LEFT JOIN agents ag ON ag.id = m.sender_agent_id
    WHERE m.thread_id = $1 AND m.seq BETWEEN $2 AND $3 ORDER BY m.seq";

fn message_row(thread_id: &str, r: &Row) -> ApiResult<Message> {
    let msg_type: String = get(r, 6)?;
    Ok(Message {
        id: get(r, 0)?,
        thread_id: thread_id.to_owned(),
        seq: get(r, 1)?,
        sender_aid: get(r, 2)?,
        sender: get(r, 3)?,
        sender_name: get(r, 4)?,
        content: get(r, 5)?,
        msg_type: stored(&msg_type, MsgType::from_name)?.as_str(),
        metadata: raw_json(get(r, 7)?),
        created_at: get(r, 8)?,
    })
}

pub fn post(
    c: &PgConn,
    ctx: &mut PgCtx,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
) -> ApiResult<Posted> {
    let stored = store(c, thread, sender, content, msg_type, metadata, true)?;
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

pub fn insert_quietly(
    c: &PgConn,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
) -> ApiResult<Stored> {
    store(c, thread, sender, content, msg_type, metadata, false)
}

fn store(
    c: &PgConn,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
    only_if_active: bool,
) -> ApiResult<Stored> {
    if c.deferring() {
        return hold(
            c,
            thread,
            sender,
            content,
            msg_type,
            metadata,
            only_if_active,
        );
    }
    let (mut message, sender_agent_id) = new_message(
        thread,
        0,
        sender,
        content,
        msg_type,
        metadata,
        domain::now(),
    );
    // The stored JSON holds the seq, which the statement takes: it is
    // spliced in there, between the text before and after it.
    let (before, after) = around_seq(&message)?;
    // One statement, one round trip (the writer runs posts one after the
    // other): the UPDATE takes the thread's row lock until COMMIT and the
    // seq, the INSERT stores the message under it; no row if the thread is
    // not active.
    let row = c.opt(
        "WITH t AS (
             UPDATE threads SET last_seq = last_seq + 1, last_message_at = $2,
                                activity_at = $2, updated_at = $2
             WHERE id = $1 AND (NOT $3 OR status = 'active') RETURNING last_seq
         )
         INSERT INTO messages (uuid, thread_id, seq, sender_agent_id, sender, content, msg_type,
                               metadata, created_at, json)
         SELECT $4, $1, t.last_seq, $5, $6, $7, $8, $9, $2, $10::text || t.last_seq || $11::text
         FROM t
         RETURNING id, seq",
        &[
            &thread.row_id,
            &message.created_at,
            &only_if_active,
            &message.id,
            &sender_agent_id,
            &message.sender,
            &content,
            &msg_type.as_str(),
            &metadata.as_json_text(),
            &before,
            &after,
        ],
    )?;
    let Some(row) = row else {
        let status: String = get(
            &c.one(
                "SELECT status FROM threads WHERE id = $1",
                &[&thread.row_id],
            )?,
            0,
        )?;
        return Err(ApiError::thread_not_active(&status));
    };
    message.seq = get(&row, 1)?;
    let json = RawValue::from_string(format!("{before}{}{after}", message.seq))
        .map_err(|e| ApiError::Internal(format!("message json: {e}")))?;
    Ok(Stored {
        message,
        json,
        row_id: get(&row, 0)?,
    })
}

/// [`store`] on the writer's connection: the post is held back (see
/// `pg::deferred`), its seq counted from the thread's locked row.
fn hold(
    c: &PgConn,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
    only_if_active: bool,
) -> ApiResult<Stored> {
    let state = match c.thread_state(thread.row_id) {
        Some(state) => state,
        None => {
            let row = c
                .opt(
                    "SELECT last_seq, status FROM threads WHERE id = $1 FOR UPDATE",
                    &[&thread.row_id],
                )?
                .ok_or_else(ApiError::thread_not_found)?;
            ThreadState {
                last_seq: get(&row, 0)?,
                status: get(&row, 1)?,
            }
        }
    };
    if only_if_active && state.status != ThreadStatus::Active.as_str() {
        c.set_thread_state(thread.row_id, state.clone());
        return Err(ApiError::thread_not_active(&state.status));
    }
    let seq = state.last_seq + 1;
    let row_id = c.next_message_id()?;
    let (message, sender_agent_id) = new_message(
        thread,
        seq,
        sender,
        content,
        msg_type,
        metadata,
        domain::now(),
    );
    let json: Box<RawValue> =
        serde_json::value::to_raw_value(&message).expect("expect: a message serializes");
    c.hold(Post {
        id: row_id,
        uuid: message.id.clone(),
        thread_id: thread.row_id,
        seq,
        sender_agent_id,
        sender: message.sender.clone(),
        content: message.content.clone(),
        msg_type: message.msg_type,
        metadata: metadata.as_json_text().to_owned(),
        created_at: message.created_at.clone(),
        json: json.get().to_owned(),
    });
    c.set_thread_state(
        thread.row_id,
        ThreadState {
            last_seq: seq,
            status: state.status,
        },
    );
    Ok(Stored {
        message,
        json,
        row_id,
    })
}

/// The message's JSON (with seq 0) cut around its seq's value: the text up
/// to `"seq":` and the text after the 0. `seq` is the third field, after
/// two ids that hold no quotes, so its first occurrence is the field.
fn around_seq(message: &Message) -> ApiResult<(String, String)> {
    let mut json = serde_json::to_string(message).expect("expect: a message serializes");
    const FIELD: &str = "\"seq\":0";
    let at = json
        .find(FIELD)
        .ok_or_else(|| ApiError::Internal("message json without its seq".into()))?;
    let after = json.split_off(at + FIELD.len());
    json.truncate(at + FIELD.len() - 1);
    Ok((json, after))
}

pub fn page_json(
    c: &PgConn,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<JsonPage> {
    let from = after.saturating_add(offset);
    let rows = c.all(
        "SELECT seq, json FROM messages WHERE thread_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
        &[&thread.row_id, &from.saturating_add(1), &from.saturating_add(limit + 1)],
    )?;
    let mut array = Vec::with_capacity(512 * limit.min(64) as usize);
    array.push(b'[');
    let mut last_seq = None;
    let mut has_more = false;
    for (count, row) in rows.iter().enumerate() {
        if count as i64 == limit {
            has_more = true;
            break;
        }
        if count > 0 {
            array.push(b',');
        }
        last_seq = Some(get::<i64>(row, 0)?);
        array.extend_from_slice(get::<&str>(row, 1)?.as_bytes());
    }
    array.push(b']');
    Ok(JsonPage {
        array,
        last_seq,
        has_more,
    })
}

pub fn page(
    c: &PgConn,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<Message>, bool)> {
    let from = after.saturating_add(offset);
    let rows = c.all(
        MESSAGE_PAGE,
        &[
            &thread.row_id,
            &from.saturating_add(1),
            &from.saturating_add(limit + 1),
        ],
    )?;
    let mut messages = rows
        .iter()
        .map(|r| message_row(&thread.view.id, r))
        .collect::<ApiResult<Vec<_>>>()?;
    let has_more = messages.len() as i64 > limit;
    messages.truncate(limit as usize);
    Ok((messages, has_more))
}

pub fn read_mark(c: &PgConn, agent_id: i64, thread_row: i64) -> ApiResult<i64> {
    match c.opt(
        "SELECT last_read_seq FROM read_marks WHERE agent_id = $1 AND thread_id = $2",
        &[&agent_id, &thread_row],
    )? {
        Some(r) => get(&r, 0),
        None => Ok(0),
    }
}

pub fn mark_read(c: &PgConn, agent_id: i64, thread_row: i64, seq: i64) -> ApiResult<()> {
    c.exec(
        "INSERT INTO read_marks (agent_id, thread_id, last_read_seq) VALUES ($1, $2, $3)
         ON CONFLICT (agent_id, thread_id)
         DO UPDATE SET last_read_seq = GREATEST(read_marks.last_read_seq, excluded.last_read_seq)",
        &[&agent_id, &thread_row, &seq],
    )?;
    Ok(())
}

/// The message an earlier request stored under this key. Called in the
/// posting transaction: it first takes a transaction lock on the key, so
/// that two requests with one key on two nodes run one after the other and
/// the second finds what the first stored.
pub fn by_idempotency_key(
    c: &PgConn,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
) -> ApiResult<Option<Message>> {
    let name = format!(
        "idempotency/{account_id}/{}/{}",
        thread.row_id,
        key.as_str()
    );
    c.one(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&name],
    )?;
    c.opt(
        MESSAGE_BY_KEY,
        &[&account_id, &thread.row_id, &key.as_str()],
    )?
    .map(|r| message_row(&thread.view.id, &r))
    .transpose()
}

/// Remembers which message an idempotency key stored (by thread and seq,
/// like SQLite's: `messages.uuid` has no index, migration 8).
pub fn remember_idempotency_key(
    c: &PgConn,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
    message: &Message,
) -> ApiResult<()> {
    c.exec(
        "INSERT INTO idempotency_keys (account_id, thread_id, key, message_id, created_at)
         SELECT $1, $2, $3, id, $5 FROM messages WHERE thread_id = $2 AND seq = $4",
        &[
            &account_id,
            &thread.row_id,
            &key.as_str(),
            &message.seq,
            &domain::now(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::new_message_id;

    #[test]
    fn the_seq_is_spliced_into_the_json_where_serde_puts_it() {
        let mut message = Message {
            id: new_message_id(),
            thread_id: ThreadId::new().to_text(),
            seq: 0,
            sender_aid: None,
            // A sender and content that spell the field themselves.
            sender: "\"seq\":0".into(),
            sender_name: "\"seq\":0,".into(),
            content: "{\"seq\":0}".into(),
            msg_type: MsgType::Text.as_str(),
            metadata: raw_json("{\"seq\":0}".into()),
            created_at: domain::now(),
        };
        let (before, after) = around_seq(&message).expect("the message has a seq");
        message.seq = 1234;
        let spliced = format!("{before}1234{after}");
        let direct = serde_json::to_string(&message).expect("a message serializes");
        assert_eq!(spliced, direct);
    }
}
