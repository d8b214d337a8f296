//! Webhook endpoints and attempts, on either backend.

pub use crate::store::webhooks::{Attempt, Endpoint, NewEndpoint, ATTEMPTS_KEPT};

use super::Db;
use crate::error::ApiResult;
use crate::events::Event;
use crate::store::{pg::webhooks as pg, webhooks as sqlite};

/// Refuses (`409 TOO_MANY_WEBHOOKS`) when the account has its
/// `limits::WEBHOOKS_PER_ACCOUNT` endpoints already; the API and the CLI
/// both call it in the transaction that creates one.
pub fn check_room(db: Db<'_>, account_id: i64) -> ApiResult<()> {
    let max = crate::domain::limits::WEBHOOKS_PER_ACCOUNT;
    if list(db, account_id)?.len() >= max {
        return Err(crate::error::ApiError::Conflict {
            code: "TOO_MANY_WEBHOOKS",
            message: format!("this account has {max} webhook endpoints already; delete one first"),
        });
    }
    Ok(())
}

pub fn create(db: Db<'_>, account_id: i64, new: &NewEndpoint<'_>) -> ApiResult<Endpoint> {
    match db {
        Db::Sqlite(c) => sqlite::create(c, account_id, new),
        Db::Pg(c) => pg::create(c, account_id, new),
    }
}

pub fn by_public_id(db: Db<'_>, public_id: &str) -> ApiResult<Option<Endpoint>> {
    match db {
        Db::Sqlite(c) => sqlite::by_public_id(c, public_id),
        Db::Pg(c) => pg::by_public_id(c, public_id),
    }
}

pub fn owned(db: Db<'_>, account_id: i64, public_id: &str) -> ApiResult<Option<Endpoint>> {
    Ok(by_public_id(db, public_id)?.filter(|e| e.account_id == account_id))
}

pub fn list(db: Db<'_>, account_id: i64) -> ApiResult<Vec<Endpoint>> {
    match db {
        Db::Sqlite(c) => sqlite::list(c, account_id),
        Db::Pg(c) => pg::list(c, account_id),
    }
}

pub fn all(db: Db<'_>) -> ApiResult<Vec<(String, String)>> {
    match db {
        Db::Sqlite(c) => sqlite::all(c),
        Db::Pg(c) => pg::all(c),
    }
}

pub fn delete(db: Db<'_>, e: &Endpoint) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::delete(c, e),
        Db::Pg(c) => pg::delete(c, e),
    }
}

pub fn rotate_secret(
    db: Db<'_>,
    e: &Endpoint,
    secret: &str,
    previous_until: Option<&str>,
) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::rotate_secret(c, e, secret, previous_until),
        Db::Pg(c) => pg::rotate_secret(c, e, secret, previous_until),
    }
}

pub fn expired_previous_secrets(db: Db<'_>, now: &str) -> ApiResult<bool> {
    match db {
        Db::Sqlite(c) => sqlite::expired_previous_secrets(c, now),
        Db::Pg(c) => pg::expired_previous_secrets(c, now),
    }
}

pub fn forget_expired_previous_secrets(db: Db<'_>, now: &str) -> ApiResult<usize> {
    match db {
        Db::Sqlite(c) => sqlite::forget_expired_previous_secrets(c, now),
        Db::Pg(c) => pg::forget_expired_previous_secrets(c, now),
    }
}

pub fn pause(db: Db<'_>, e: &Endpoint) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::pause(c, e),
        Db::Pg(c) => pg::pause(c, e),
    }
}

pub fn resume(db: Db<'_>, e: &Endpoint) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::resume(c, e),
        Db::Pg(c) => pg::resume(c, e),
    }
}

pub fn cursor(db: Db<'_>, e: &Endpoint) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::cursor(c, e),
        Db::Pg(c) => pg::cursor(c, e),
    }
}

pub fn pending(db: Db<'_>, e: &Endpoint, after: i64, scan: i64) -> ApiResult<(Vec<Event>, i64)> {
    match db {
        Db::Sqlite(c) => sqlite::pending(c, e, after, scan),
        Db::Pg(c) => pg::pending(c, e, after, scan),
    }
}

pub fn advance(db: Db<'_>, e: &Endpoint, position: i64) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::advance(c, e, position),
        Db::Pg(c) => pg::advance(c, e, position),
    }
}

pub fn failed(
    db: Db<'_>,
    e: &Endpoint,
    position: i64,
    failures: i64,
    next_at: Option<&str>,
    reason: &str,
) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::failed(c, e, position, failures, next_at, reason),
        Db::Pg(c) => pg::failed(c, e, position, failures, next_at, reason),
    }
}

pub fn record_attempt(db: Db<'_>, e: &Endpoint, a: &Attempt) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::record_attempt(c, e, a),
        Db::Pg(c) => pg::record_attempt(c, e, a),
    }
}

pub fn attempts(db: Db<'_>, e: &Endpoint, limit: i64) -> ApiResult<Vec<Attempt>> {
    match db {
        Db::Sqlite(c) => sqlite::attempts(c, e, limit),
        Db::Pg(c) => pg::attempts(c, e, limit),
    }
}

/// Takes or renews the endpoint's delivery lease for `node` (several nodes
/// on PostgreSQL: only the holder delivers). On SQLite one server delivers,
/// so it always holds it.
pub fn lease(db: Db<'_>, e: &Endpoint, node: &str, secs: i64) -> ApiResult<bool> {
    match db {
        Db::Sqlite(_) => Ok(true),
        Db::Pg(c) => pg::lease(c, e, node, secs),
    }
}
