//! Accounts, login keys and agents, on either backend.

pub use crate::store::accounts::{Account, AgentRef, NewAgent};

use super::Db;
use crate::domain::{Aid, LoginKey, UserId};
use crate::error::ApiResult;
use crate::store::{accounts as sqlite, pg::accounts as pg};

pub fn create_account(db: Db<'_>) -> ApiResult<(i64, UserId)> {
    match db {
        Db::Sqlite(c) => sqlite::create_account(c),
        Db::Pg(c) => pg::create_account(c),
    }
}

pub fn account_by_user_id(db: Db<'_>, user_id: &UserId) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::account_by_user_id(c, user_id),
        Db::Pg(c) => pg::account_by_user_id(c, user_id),
    }
}

pub fn create_key(db: Db<'_>, account_id: i64) -> ApiResult<LoginKey> {
    match db {
        Db::Sqlite(c) => sqlite::create_key(c, account_id),
        Db::Pg(c) => pg::create_key(c, account_id),
    }
}

pub fn revoke_key(db: Db<'_>, key: &LoginKey) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::revoke_key(c, key),
        Db::Pg(c) => pg::revoke_key(c, key),
    }
}

pub fn authenticate(db: Db<'_>, key_hash: &[u8; 32]) -> ApiResult<Option<Account>> {
    match db {
        Db::Sqlite(c) => sqlite::authenticate(c, key_hash),
        Db::Pg(c) => pg::authenticate(c, key_hash),
    }
}

pub fn revoked_since(db: Db<'_>, since: &str) -> ApiResult<Vec<([u8; 32], String)>> {
    match db {
        Db::Sqlite(c) => sqlite::revoked_since(c, since),
        Db::Pg(c) => pg::revoked_since(c, since),
    }
}

pub fn create_agent(db: Db<'_>, account_id: i64, agent: &NewAgent) -> ApiResult<i64> {
    match db {
        Db::Sqlite(c) => sqlite::create_agent(c, account_id, agent),
        Db::Pg(c) => pg::create_agent(c, account_id, agent),
    }
}

pub fn aid_exists(db: Db<'_>, aid: &Aid) -> ApiResult<bool> {
    Ok(agent_by_aid(db, aid)?.is_some())
}

pub fn agent_by_aid(db: Db<'_>, aid: &Aid) -> ApiResult<Option<AgentRef>> {
    match db {
        Db::Sqlite(c) => sqlite::agent_by_aid(c, aid),
        Db::Pg(c) => pg::agent_by_aid(c, aid),
    }
}

pub fn agents_of_account(db: Db<'_>, account_id: i64, limit: i64) -> ApiResult<Vec<AgentRef>> {
    match db {
        Db::Sqlite(c) => sqlite::agents_of_account(c, account_id, limit),
        Db::Pg(c) => pg::agents_of_account(c, account_id, limit),
    }
}

pub fn is_empty(db: Db<'_>) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::is_empty(c),
        Db::Pg(c) => pg::is_empty(c),
    }
}
