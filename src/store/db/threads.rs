//! Threads, on either backend.

pub use crate::store::threads::NewAcspThread;

use super::{Ctx, Db, Tx};
use crate::domain::{Aid, StatusFilter, ThreadId, ThreadStatus};
use crate::error::ApiResult;
use crate::store::accounts::Account;
use crate::store::model::{ReaderView, Thread, ThreadRecord, ThreadSummary};
use crate::store::pg::accounts as pg_accounts;
use crate::store::{pg::threads as pg, threads as sqlite};

pub fn by_id(db: Db<'_>, id: ThreadId) -> ApiResult<Option<ThreadRecord>> {
    match db {
        Db::Sqlite(c) => sqlite::by_id(c, id),
        Db::Pg(c) => pg::by_id(c, id),
    }
}

/// The key's account, the agent `aid`, the thread and that agent's read
/// mark in it, for a read (`None`: the key is unknown or revoked). One
/// statement on SQLite; on PostgreSQL the lookups each route makes, in the
/// caller's transaction.
pub fn reader_view(
    db: Db<'_>,
    key_hash: &[u8; 32],
    aid: Option<&Aid>,
    id: ThreadId,
) -> ApiResult<Option<(Account, ReaderView)>> {
    match db {
        Db::Sqlite(c) => sqlite::reader_view(c, key_hash, aid, id),
        Db::Pg(c) => {
            let Some(account) = pg_accounts::authenticate(c, key_hash)? else {
                return Ok(None);
            };
            let agent = aid.map(|a| pg_accounts::agent_by_aid(c, a)).transpose()?;
            let agent = agent.flatten();
            let thread = pg::by_id(c, id)?;
            let read_mark = match (&agent, &thread) {
                (Some(agent), Some(thread)) => pg::read_mark(c, agent.id, thread.row_id)?,
                _ => 0,
            };
            Ok(Some((
                account,
                ReaderView {
                    agent,
                    thread,
                    read_mark,
                    page_head: std::sync::OnceLock::new(),
                },
            )))
        }
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
