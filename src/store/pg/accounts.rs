//! Accounts, login keys and agents on PostgreSQL (mirrors `store::accounts`).

use super::conn::{get, PgConn};
use crate::domain::{self, Aid, LoginKey, UserId};
use crate::error::ApiResult;
use crate::store::accounts::{Account, AgentRef, NewAgent};

pub fn create_account(c: &PgConn) -> ApiResult<(i64, UserId)> {
    let user_id = UserId::random();
    let row = c.one(
        "INSERT INTO accounts (user_id, created_at) VALUES ($1, $2) RETURNING id",
        &[&user_id.as_str(), &domain::now()],
    )?;
    Ok((get(&row, 0)?, user_id))
}

pub fn account_by_user_id(c: &PgConn, user_id: &UserId) -> ApiResult<Option<i64>> {
    c.opt(
        "SELECT id FROM accounts WHERE user_id = $1",
        &[&user_id.as_str()],
    )?
    .map(|r| get(&r, 0))
    .transpose()
}

pub fn create_key(c: &PgConn, account_id: i64) -> ApiResult<LoginKey> {
    let key = LoginKey::generate();
    c.exec(
        "INSERT INTO login_keys (account_id, key_hash, created_at) VALUES ($1, $2, $3)",
        &[&account_id, &&key.hash()[..], &domain::now()],
    )?;
    Ok(key)
}

pub fn revoke_key(c: &PgConn, key: &LoginKey) -> ApiResult<bool> {
    let n = c.exec(
        "UPDATE login_keys SET revoked_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL",
        &[&&key.hash()[..], &domain::now()],
    )?;
    Ok(n == 1)
}

pub fn authenticate(c: &PgConn, key_hash: &[u8; 32]) -> ApiResult<Option<Account>> {
    c.opt(
        "SELECT a.id, a.user_id FROM login_keys k JOIN accounts a ON a.id = k.account_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        &[&&key_hash[..]],
    )?
    .map(|r| {
        Ok(Account {
            id: get(&r, 0)?,
            user_id: get(&r, 1)?,
        })
    })
    .transpose()
}

pub fn revoked_since(c: &PgConn, since: &str) -> ApiResult<Vec<([u8; 32], String)>> {
    let rows = c.all(
        "SELECT key_hash, revoked_at FROM login_keys
         WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
        &[&since],
    )?;
    let mut revoked = Vec::new();
    for r in rows {
        let hash: Vec<u8> = get(&r, 0)?;
        if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
            revoked.push((hash, get(&r, 1)?));
        }
    }
    Ok(revoked)
}

pub fn create_agent(c: &PgConn, account_id: i64, agent: &NewAgent) -> ApiResult<i64> {
    let capabilities =
        serde_json::to_string(&agent.capabilities).expect("expect: a Vec<String> serializes");
    let row = c.one(
        "INSERT INTO agents (aid, account_id, name, capabilities, description, metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &agent.aid.as_str(),
            &account_id,
            &agent.name,
            &capabilities,
            &agent.description,
            &agent.metadata.as_json_text(),
            &domain::now(),
        ],
    )?;
    get(&row, 0)
}

pub fn agent_by_aid(c: &PgConn, aid: &Aid) -> ApiResult<Option<AgentRef>> {
    c.opt(
        "SELECT id, account_id, aid, name FROM agents WHERE aid = $1",
        &[&aid.as_str()],
    )?
    .map(|r| agent_ref(&r))
    .transpose()
}

pub fn agents_of_account(c: &PgConn, account_id: i64, limit: i64) -> ApiResult<Vec<AgentRef>> {
    c.all(
        "SELECT id, account_id, aid, name FROM agents WHERE account_id = $1 ORDER BY id LIMIT $2",
        &[&account_id, &limit],
    )?
    .iter()
    .map(agent_ref)
    .collect()
}

pub fn is_empty(c: &PgConn) -> ApiResult<bool> {
    let n: i64 = get(&c.one("SELECT COUNT(*) FROM accounts", &[])?, 0)?;
    Ok(n == 0)
}

fn agent_ref(r: &postgres::Row) -> ApiResult<AgentRef> {
    Ok(AgentRef {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        aid: get(r, 2)?,
        name: get(r, 3)?,
    })
}
