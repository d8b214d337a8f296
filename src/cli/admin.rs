//! The operator's commands: list agents and keys, revoke an account's keys,
//! rename an agent, delete a thread, prune, back up, mark a restored
//! database. Each refuses a database file that does not exist and prints
//! one JSON object.

use serde_json::json;

use super::{in_transaction, reading};
use crate::config::DbArg;
use crate::domain::text::AgentName;
use crate::domain::{Aid, ThreadId, UserId};
use crate::error::{ApiError, ApiResult};
use crate::store::db::{accounts, admin, events, generation};
use crate::store::{self, Db, Location};

/// The account's row id, or an error naming the user id.
pub(super) fn account(conn: Db<'_>, user: &UserId) -> ApiResult<i64> {
    accounts::account_by_user_id(conn, user)?
        .ok_or_else(|| ApiError::invalid(format!("no account {}", user.as_str())))
}

/// `agent list [--user]`: prints `{"agents": [{"aid", "name", "user_id", ...}]}`.
pub fn agent_list(db: &DbArg, user: Option<&str>) -> Result<String, String> {
    let user = user.map(UserId::parse).transpose()?;
    let agents = reading(db, |conn| {
        let id = user.as_ref().map(|u| account(conn, u)).transpose()?;
        admin::agents(conn, id)
    })?;
    Ok(json!({ "agents": agents }).to_string())
}

/// `agent rename AID --name NAME`: prints `{"aid", "name"}`.
pub fn agent_rename(db: &DbArg, aid: &str, name: &str) -> Result<String, String> {
    let aid = Aid::parse("aid", aid).map_err(|e| e.public_message())?;
    let name = AgentName::parse("name", name.to_owned()).map_err(|e| e.public_message())?;
    let renamed = in_transaction(db, |conn| admin::rename_agent(conn, &aid, name.as_str()))?;
    if !renamed {
        return Err(format!("no agent {}", aid.as_str()));
    }
    Ok(json!({"aid": aid.as_str(), "name": name.as_str()}).to_string())
}

/// `key list --user`: prints `{"user_id", "keys": [{"id", "hash_prefix",
/// "created_at", "revoked_at"}]}`.
pub fn key_list(db: &DbArg, user: &str) -> Result<String, String> {
    let user = UserId::parse(user)?;
    let keys = reading(db, |conn| admin::keys(conn, account(conn, &user)?))?;
    Ok(json!({"user_id": user.as_str(), "keys": keys}).to_string())
}

/// `key revoke-all --user`: prints `{"user_id", "revoked": N}`.
pub fn key_revoke_all(db: &DbArg, user: &str) -> Result<String, String> {
    let user = UserId::parse(user)?;
    let n = in_transaction(db, |conn| {
        admin::revoke_all_keys(conn, account(conn, &user)?)
    })?;
    Ok(json!({"user_id": user.as_str(), "revoked": n}).to_string())
}

/// `thread delete THREAD_ID`: prints `{"thread_id", "deleted": {"threads",
/// "messages"}}`; an unknown thread is an error.
pub fn thread_delete(db: &DbArg, thread_id: &str) -> Result<String, String> {
    let id = ThreadId::parse("thread_id", thread_id).map_err(|e| e.public_message())?;
    match in_transaction(db, |conn| admin::delete_thread(conn, id))? {
        Some(deleted) => Ok(json!({"thread_id": id.to_text(), "deleted": deleted}).to_string()),
        None => Err(format!("no thread {}", id.to_text())),
    }
}

/// `mark-restored`: does to data restored some other way what `threadline
/// backup` does to its copy. A restore went back in time, so the database
/// gets a new generation (clients that resume a thread read it again) and
/// its event log numbers the next event 2^32 past its newest (consumers
/// that followed the old server hear what is logged next). Prints
/// `{"generation", "previous", "restored_positions_from"}` (`previous` null
/// when it had none). A server running on the database keeps naming the
/// generation it started with until it restarts.
pub fn mark_restored(db: &DbArg) -> Result<String, String> {
    let (previous, generation, from) = in_transaction(db, |conn| {
        let (previous, generation) = generation::renew(conn)?;
        Ok((previous, generation, events::leave_a_gap(conn)?))
    })?;
    Ok(json!({
        "generation": generation,
        "previous": previous,
        "restored_positions_from": from,
    })
    .to_string())
}

/// `prune`: prints `{"pruned": {"idempotency_keys", "threads", "messages"},
/// "idempotency_keys_before", "threads_before"}`.
pub fn prune(
    db: &DbArg,
    idempotency_days: u32,
    threads_older_than_days: Option<u32>,
) -> Result<String, String> {
    let cutoff = |days: u32| {
        crate::domain::format_time(chrono::Utc::now() - chrono::Duration::days(i64::from(days)))
    };
    let keys_before = cutoff(idempotency_days);
    let threads_before = threads_older_than_days.map(cutoff);
    let pruned = in_transaction(db, |conn| {
        admin::prune(conn, &keys_before, threads_before.as_deref())
    })?;
    Ok(json!({
        "pruned": pruned,
        "idempotency_keys_before": keys_before,
        "threads_before": threads_before,
    })
    .to_string())
}

/// `backup --to FILE`: prints `{"path", "bytes", "millis",
/// "last_message_id", "last_message_at"}`.
pub fn backup(db: &DbArg, to: &std::path::Path) -> Result<String, String> {
    let Location::Sqlite(path) = db.location() else {
        return Err(
            "backup copies a SQLite file; on PostgreSQL use its own tools: \
                    pg_dump --format=custom --file=threadline.dump DATABASE_URL \
                    (restore with pg_restore, then threadline mark-restored)"
                .into(),
        );
    };
    super::check_db_path(db)?;
    super::refuse_empty(path)?;
    if to.is_dir() {
        return Err(format!(
            "--to {} is a directory: name the backup file in it (such as {})",
            to.display(),
            to.join("threadline-backup.db").display()
        ));
    }
    // SQLite's word for a missing directory is "unable to open database".
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!(
                "cannot write the backup to {}: the directory {} does not exist",
                to.display(),
                dir.display()
            ));
        }
    }
    let report = store::backup::backup(path, to)?;
    serde_json::to_string(&report).map_err(|e| format!("cannot print the report: {e}"))
}
