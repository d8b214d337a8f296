//! Messages, on either backend.

pub use crate::store::messages::{JsonPage, Posted, Sender};

use super::{Ctx, Db, Tx};
use crate::domain::{IdempotencyKey, Metadata, MsgType};
use crate::error::ApiResult;
use crate::store::model::{Message, ThreadRecord};
use crate::store::{messages as sqlite, pg::threads as pg};

pub fn post(
    tx: &mut Tx<'_, '_>,
    thread: &ThreadRecord,
    sender: Sender<'_>,
    content: &str,
    msg_type: MsgType,
    metadata: &Metadata,
) -> ApiResult<Posted> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::post(ctx, thread, sender, content, msg_type, metadata),
        Ctx::Pg(c, ctx) => pg::post(c, ctx, thread, sender, content, msg_type, metadata),
    }
}

pub fn page_json(
    db: Db<'_>,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<JsonPage> {
    match db {
        Db::Sqlite(c) => sqlite::page_json(c, thread, after, limit, offset),
        Db::Pg(c) => pg::page_json(c, thread, after, limit, offset),
    }
}

/// The message `seq` of `thread` as it was stored when posted (the JSON
/// its `201` and every page carry), or `None` if there is none.
pub fn stored_json(
    db: Db<'_>,
    thread: &ThreadRecord,
    seq: i64,
) -> ApiResult<Option<Box<serde_json::value::RawValue>>> {
    let page = page_json(db, thread, seq.saturating_sub(1), 1, 0)?;
    if page.last_seq != Some(seq) {
        return Ok(None);
    }
    // `[` + the one stored object + `]`.
    let object = page
        .array
        .get(1..page.array.len().saturating_sub(1))
        .and_then(|o| std::str::from_utf8(o).ok())
        .ok_or_else(|| crate::error::ApiError::Internal("a stored message's JSON".into()))?;
    serde_json::value::RawValue::from_string(object.to_owned())
        .map(Some)
        .map_err(|e| crate::error::ApiError::Internal(format!("a stored message's JSON: {e}")))
}

pub fn page(
    db: Db<'_>,
    thread: &ThreadRecord,
    after: i64,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<Message>, bool)> {
    match db {
        Db::Sqlite(c) => sqlite::page(c, thread, after, limit, offset),
        Db::Pg(c) => pg::page(c, thread, after, limit, offset),
    }
}

pub fn read_mark(db: Db<'_>, agent_id: i64, thread_row: i64) -> ApiResult<i64> {
    match db {
        Db::Sqlite(c) => sqlite::read_mark(c, agent_id, thread_row),
        Db::Pg(c) => pg::read_mark(c, agent_id, thread_row),
    }
}

pub fn mark_read(db: Db<'_>, agent_id: i64, thread_row: i64, seq: i64) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::mark_read(c, agent_id, thread_row, seq),
        Db::Pg(c) => pg::mark_read(c, agent_id, thread_row, seq),
    }
}

pub fn by_idempotency_key(
    db: Db<'_>,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
) -> ApiResult<Option<Message>> {
    match db {
        Db::Sqlite(c) => sqlite::by_idempotency_key(c, account_id, thread, key),
        Db::Pg(c) => pg::by_idempotency_key(c, account_id, thread, key),
    }
}

pub fn remember_idempotency_key(
    db: Db<'_>,
    account_id: i64,
    thread: &ThreadRecord,
    key: &IdempotencyKey,
    message: &Message,
) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::remember_idempotency_key(c, account_id, thread, key, message),
        Db::Pg(c) => pg::remember_idempotency_key(c, account_id, thread, key, message),
    }
}
