//! Accounts, login keys and agents.

use rusqlite::{params, Connection};

use super::row::optional;
use crate::domain::{self, Aid, LoginKey, UserId};
use crate::error::ApiResult;

/// An authenticated account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub user_id: String,
}

/// An agent as access checks see it.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub id: i64,
    pub account_id: i64,
    pub aid: String,
    pub name: String,
}

/// A newly created agent, with everything agent-init echoes back.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub aid: Aid,
    pub name: String,
    pub capabilities: Vec<String>,
    pub description: Option<String>,
    pub metadata: domain::Metadata,
}

/// Creates an account; returns its row id and user id.
pub fn create_account(conn: &Connection) -> ApiResult<(i64, UserId)> {
    let user_id = UserId::random();
    conn.prepare_cached("INSERT INTO accounts (user_id, created_at) VALUES (?1, ?2)")?
        .execute(params![user_id.as_str(), domain::now()])?;
    Ok((conn.last_insert_rowid(), user_id))
}

/// Finds an account by its user id.
pub fn account_by_user_id(conn: &Connection, user_id: &UserId) -> ApiResult<Option<i64>> {
    optional(conn.query_row(
        "SELECT id FROM accounts WHERE user_id = ?1",
        [user_id.as_str()],
        |r| r.get(0),
    ))
}

/// Creates a login key for an account. The key is returned once; only its
/// hash is stored.
pub fn create_key(conn: &Connection, account_id: i64) -> ApiResult<LoginKey> {
    let key = LoginKey::generate();
    conn.prepare_cached(
        "INSERT INTO login_keys (account_id, key_hash, created_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![account_id, &key.hash()[..], domain::now()])?;
    Ok(key)
}

/// Revokes a key; returns false if no live key matched.
pub fn revoke_key(conn: &Connection, key: &LoginKey) -> ApiResult<bool> {
    let n = conn.execute(
        "UPDATE login_keys SET revoked_at = ?2 WHERE key_hash = ?1 AND revoked_at IS NULL",
        params![&key.hash()[..], domain::now()],
    )?;
    Ok(n == 1)
}

/// The account a live (not revoked) key belongs to.
pub fn authenticate(conn: &Connection, key_hash: &[u8; 32]) -> ApiResult<Option<Account>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.user_id FROM login_keys k JOIN accounts a ON a.id = k.account_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
    )?;
    optional(stmt.query_row([&key_hash[..]], |r| {
        Ok(Account {
            id: r.get(0)?,
            user_id: r.get(1)?,
        })
    }))
}

/// The hashes of the keys revoked at or after `since` (an API time: they
/// compare as text), with when each was revoked.
pub fn revoked_since(conn: &Connection, since: &str) -> ApiResult<Vec<([u8; 32], String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key_hash, revoked_at FROM login_keys
         WHERE revoked_at IS NOT NULL AND revoked_at >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut revoked = Vec::new();
    for row in rows {
        let (hash, at) = row?;
        // The schema's hashes are 32 bytes; anything else matches no key.
        if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
            revoked.push((hash, at));
        }
    }
    Ok(revoked)
}

/// Creates an agent owned by `account_id`.
pub fn create_agent(conn: &Connection, account_id: i64, agent: &NewAgent) -> ApiResult<i64> {
    let capabilities =
        serde_json::to_string(&agent.capabilities).expect("expect: a Vec<String> serializes");
    conn.prepare_cached(
        "INSERT INTO agents (aid, account_id, name, capabilities, description, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        agent.aid.as_str(),
        account_id,
        agent.name,
        capabilities,
        agent.description,
        agent.metadata.as_json_text(),
        domain::now()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Whether an agent with this AID exists.
pub fn aid_exists(conn: &Connection, aid: &Aid) -> ApiResult<bool> {
    Ok(agent_by_aid(conn, aid)?.is_some())
}

/// Looks an agent up by AID.
pub fn agent_by_aid(conn: &Connection, aid: &Aid) -> ApiResult<Option<AgentRef>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, account_id, aid, name FROM agents WHERE aid = ?1")?;
    optional(stmt.query_row([aid.as_str()], agent_ref))
}

/// Up to `limit` agents of an account, oldest first.
pub fn agents_of_account(
    conn: &Connection,
    account_id: i64,
    limit: i64,
) -> ApiResult<Vec<AgentRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, account_id, aid, name FROM agents WHERE account_id = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![account_id, limit], agent_ref)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the database holds no account yet (for `serve --dev`).
pub fn is_empty(conn: &Connection) -> ApiResult<bool> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))?;
    Ok(n == 0)
}

fn agent_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRef> {
    Ok(AgentRef {
        id: r.get(0)?,
        account_id: r.get(1)?,
        aid: r.get(2)?,
        name: r.get(3)?,
    })
}
