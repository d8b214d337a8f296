//! The operator's commands, on either backend.

pub use crate::store::admin::{AgentRow, Deleted, KeyRow, Pruned};

use super::Db;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;
use crate::store::{admin as sqlite, pg::admin as pg};

pub fn agents(db: Db<'_>, account_id: Option<i64>) -> ApiResult<Vec<AgentRow>> {
    match db {
        Db::Sqlite(c) => sqlite::agents(c, account_id),
        Db::Pg(c) => pg::agents(c, account_id),
    }
}

pub fn keys(db: Db<'_>, account_id: i64) -> ApiResult<Vec<KeyRow>> {
    match db {
        Db::Sqlite(c) => sqlite::keys(c, account_id),
        Db::Pg(c) => pg::keys(c, account_id),
    }
}

pub fn revoke_all_keys(db: Db<'_>, account_id: i64) -> ApiResult<usize> {
    match db {
        Db::Sqlite(c) => sqlite::revoke_all_keys(c, account_id),
        Db::Pg(c) => pg::revoke_all_keys(c, account_id),
    }
}

pub fn rename_agent(db: Db<'_>, aid: &Aid, name: &str) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::rename_agent(c, aid, name),
        Db::Pg(c) => pg::rename_agent(c, aid, name),
    }
}

pub fn delete_thread(db: Db<'_>, id: ThreadId) -> ApiResult<Option<Deleted>> {
    match db {
        Db::Sqlite(c) => sqlite::delete_thread(c, id),
        Db::Pg(c) => pg::delete_thread(c, id),
    }
}

pub fn prune(db: Db<'_>, keys_before: &str, threads_before: Option<&str>) -> ApiResult<Pruned> {
    match db {
        Db::Sqlite(c) => sqlite::prune(c, keys_before, threads_before),
        Db::Pg(c) => pg::prune(c, keys_before, threads_before),
    }
}
