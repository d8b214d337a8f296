//! Threads, on either backend.

pub use crate::store::threads::NewAcspThread;

use super::{Ctx, Db, Tx};
use crate::domain::{StatusFilter, ThreadId, ThreadStatus};
use crate::error::ApiResult;
use crate::store::model::{Thread, ThreadRecord, ThreadSummary};
use crate::store::{pg::threads as pg, threads as sqlite};

pub fn by_id(db: Db<'_>, id: ThreadId) -> ApiResult<Option<ThreadRecord>> {
    match db {
        Db::Sqlite(c) => sqlite::by_id(c, id),
        Db::Pg(c) => pg::by_id(c, id),
    }
}

pub fn by_row_id(db: Db<'_>, row_id: i64) -> ApiResult<Option<ThreadRecord>> {
    match db {
        Db::Sqlite(c) => sqlite::by_row_id(c, row_id),
        Db::Pg(c) => pg::by_row_id(c, row_id),
    }
}

pub fn create_acsp(tx: &mut Tx<'_, '_>, new: NewAcspThread) -> ApiResult<Thread> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::create_acsp(ctx, new),
        Ctx::Pg(c, ctx) => pg::create_acsp(c, ctx, new),
    }
}

pub fn set_status(
    tx: &mut Tx<'_, '_>,
    record: &ThreadRecord,
    status: ThreadStatus,
) -> ApiResult<String> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::set_status(ctx, record, status),
        Ctx::Pg(c, ctx) => pg::set_status(c, ctx, record, status),
    }
}

pub fn list_for_agent(
    db: Db<'_>,
    agent_id: i64,
    filter: StatusFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<ThreadSummary>, i64)> {
    match db {
        Db::Sqlite(c) => sqlite::list_for_agent(c, agent_id, filter, limit, offset),
        Db::Pg(c) => pg::list_for_agent(c, agent_id, filter, limit, offset),
    }
}

pub fn create_turn(
    tx: &mut Tx<'_, '_>,
    account_id: i64,
    id: ThreadId,
    integrations: Option<&str>,
) -> ApiResult<ThreadRecord> {
    match tx.ctx() {
        Ctx::Sqlite(ctx) => sqlite::create_turn(ctx, account_id, id, integrations),
        Ctx::Pg(c, ctx) => pg::create_turn(c, ctx, account_id, id, integrations),
    }
}

pub fn set_integrations(db: Db<'_>, thread: &ThreadRecord, integrations: &str) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::set_integrations(c, thread, integrations),
        Db::Pg(c) => pg::set_integrations(c, thread, integrations),
    }
}
