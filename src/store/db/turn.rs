//! Turn-taking state, on either backend.

pub use crate::store::turn::{
    Delivery, Inbound, PartView, Respond, Scheduled, Submitted, TurnView, AGENT_SENDER,
    MAX_ATTEMPTS, PARTS_PER_TURN,
};

use super::{Ctx, Db, Tx};
use crate::error::ApiResult;
use crate::store::model::ThreadRecord;
use crate::store::{pg::turn as pg, turn as sqlite};

pub fn submit(
    tx: &mut Tx<'_, '_>,
    thread: &ThreadRecord,
    batch: &[Inbound],
    now_ms: i64,
) -> ApiResult<Submitted> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::submit(ctx, thread, batch, now_ms),
        Ctx::Pg(c, ctx) => pg::submit(c, ctx, thread, batch, now_ms),
    }
}

pub fn record_decision(
    tx: &mut Tx<'_, '_>,
    thread: &ThreadRecord,
    submitted: &Submitted,
    decision: &str,
    tags: &[&str],
) -> ApiResult<()> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::record_decision(ctx, thread, submitted, decision, tags),
        Ctx::Pg(c, _) => pg::record_decision(c, thread, submitted, decision, tags),
    }
}

pub fn turns_page(
    db: Db<'_>,
    thread_row: i64,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<TurnView>, bool)> {
    match db {
        Db::Sqlite(c) => sqlite::turns_page(c, thread_row, before, limit),
        Db::Pg(c) => pg::turns_page(c, thread_row, before, limit),
    }
}

pub fn schedule(
    tx: &mut Tx<'_, '_>,
    thread: &ThreadRecord,
    epoch: i64,
    parts: &[String],
    offsets_ms: &[i64],
    now_ms: i64,
) -> ApiResult<Respond> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::schedule(ctx, thread, epoch, parts, offsets_ms, now_ms),
        Ctx::Pg(c, ctx) => pg::schedule(c, ctx, thread, epoch, parts, offsets_ms, now_ms),
    }
}

pub fn next_due_ms(db: Db<'_>) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::next_due_ms(c),
        Db::Pg(c) => pg::next_due_ms(c),
    }
}

/// Whether `sender` posted to the thread after `seq`.
pub fn spoke_since(db: Db<'_>, thread_row: i64, sender: &str, seq: i64) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::spoke_since(c, thread_row, sender, seq),
        Db::Pg(c) => pg::spoke_since(c, thread_row, sender, seq),
    }
}

pub fn pending_count(db: Db<'_>) -> ApiResult<u64> {
    match db {
        Db::Sqlite(c) => sqlite::pending_count(c),
        Db::Pg(c) => pg::pending_count(c),
    }
}

/// How many parts were given up (`/metrics`).
pub fn failed_count(db: Db<'_>) -> ApiResult<u64> {
    match db {
        Db::Sqlite(c) => sqlite::failed_count(c),
        Db::Pg(c) => pg::failed_count(c),
    }
}

/// Delivers the due parts, each alone: one that fails is tried again after
/// `retry_base_ms` (doubled with each failure) and given up after
/// [`MAX_ATTEMPTS`]. On PostgreSQL each part is claimed with
/// `FOR UPDATE SKIP LOCKED`, so with several nodes up it is delivered once.
pub fn deliver_due(tx: &mut Tx<'_, '_>, now_ms: i64, retry_base_ms: i64) -> ApiResult<Delivery> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::deliver_due(ctx, now_ms, retry_base_ms),
        Ctx::Pg(c, ctx) => pg::deliver_due(c, ctx, now_ms, retry_base_ms),
    }
}

/// The turn of the thread's first pending part, if one is pending: the
/// agent is typing (what a socket that connects is told).
pub fn typing_epoch(db: Db<'_>, thread_row: i64) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::typing_epoch(c, thread_row),
        Db::Pg(c) => pg::typing_epoch(c, thread_row),
    }
}
