//! Webhook endpoints and their attempts on PostgreSQL (mirrors
//! `store::webhooks`).

use postgres::Row;

use super::conn::{get, PgConn};
use super::events;
use crate::domain;
use crate::error::ApiResult;
use crate::events::{Event, Kind};
use crate::store::webhooks::{
    logged_kinds, stored_message, Attempt, Endpoint, NewEndpoint, ATTEMPTS_KEPT,
};

fn endpoint(r: &Row) -> ApiResult<Endpoint> {
    let events: String = get(r, 4)?;
    Ok(Endpoint {
        row: get(r, 0)?,
        public_id: get(r, 1)?,
        account_id: get(r, 2)?,
        url: get(r, 3)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: get(r, 5)?,
        secret: get(r, 6)?,
        status: get(r, 7)?,
        disabled_reason: get(r, 8)?,
        failures: get(r, 9)?,
        next_attempt_at: get(r, 10)?,
        created_at: get(r, 11)?,
        updated_at: get(r, 12)?,
        previous_secret: get(r, 13)?,
        previous_secret_expires_at: get(r, 14)?,
        failing_position: get(r, 15)?,
    }
    .expire_previous(&domain::now()))
}

/// The columns [`endpoint`] reads, in its order (a macro: the statements
/// are `&'static str`, for the connection's statement cache).
macro_rules! columns {
    () => {
        "id, public_id, account_id, url, events, description, secret, status, disabled_reason,
         failures, next_attempt_at, created_at, updated_at, previous_secret,
         previous_secret_expires_at, failing_position"
    };
}

fn consumer(public_id: &str) -> String {
    format!("webhook:{public_id}")
}

pub fn create(c: &PgConn, account_id: i64, new: &NewEndpoint<'_>) -> ApiResult<Endpoint> {
    let now = domain::now();
    let events_json = serde_json::to_string(new.events).expect("expect: strings serialize");
    c.exec(
        "INSERT INTO webhooks (public_id, account_id, url, events, description, secret,
                               created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        &[
            &new.public_id,
            &account_id,
            &new.url,
            &events_json,
            &new.description,
            &new.secret,
            &now,
        ],
    )?;
    events::save_cursor(c, &consumer(new.public_id), events::last_position(c)?)?;
    by_public_id(c, new.public_id)?
        .ok_or_else(|| crate::error::ApiError::Internal("webhook vanished after insert".into()))
}

pub fn by_public_id(c: &PgConn, public_id: &str) -> ApiResult<Option<Endpoint>> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM webhooks WHERE public_id = $1");
    c.opt(SQL, &[&public_id])?.map(|r| endpoint(&r)).transpose()
}

pub fn list(c: &PgConn, account_id: i64) -> ApiResult<Vec<Endpoint>> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM webhooks WHERE account_id = $1 ORDER BY id"
    );
    c.all(SQL, &[&account_id])?.iter().map(endpoint).collect()
}

pub fn all(c: &PgConn) -> ApiResult<Vec<(String, String)>> {
    c.all("SELECT public_id, updated_at FROM webhooks", &[])?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect()
}

pub fn delete(c: &PgConn, e: &Endpoint) -> ApiResult<bool> {
    c.exec(
        "DELETE FROM webhook_attempts WHERE webhook_id = $1",
        &[&e.row],
    )?;
    let n = c.exec("DELETE FROM webhooks WHERE id = $1", &[&e.row])?;
    events::drop_cursor(c, &e.consumer())?;
    Ok(n > 0)
}

pub fn expired_previous_secrets(c: &PgConn, now: &str) -> ApiResult<bool> {
    get(
        &c.one(
            "SELECT EXISTS (SELECT 1 FROM webhooks WHERE previous_secret_expires_at <= $1)",
            &[&now],
        )?,
        0,
    )
}

pub fn forget_expired_previous_secrets(c: &PgConn, now: &str) -> ApiResult<usize> {
    Ok(c.exec(
        "UPDATE webhooks SET previous_secret = NULL, previous_secret_expires_at = NULL
         WHERE previous_secret_expires_at <= $1",
        &[&now],
    )? as usize)
}

pub fn rotate_secret(
    c: &PgConn,
    e: &Endpoint,
    secret: &str,
    previous_until: Option<&str>,
) -> ApiResult<()> {
    // As on SQLite: the right-hand sides read the row as it was.
    c.exec(
        "UPDATE webhooks SET secret = $2,
                previous_secret = CASE WHEN $4::text IS NULL THEN NULL ELSE secret END,
                previous_secret_expires_at = $4, updated_at = $3
         WHERE id = $1",
        &[&e.row, &secret, &domain::now(), &previous_until],
    )?;
    Ok(())
}

pub fn pause(c: &PgConn, e: &Endpoint) -> ApiResult<()> {
    c.exec(
        "UPDATE webhooks SET status = 'paused', updated_at = $2
         WHERE id = $1 AND status = 'active'",
        &[&e.row, &domain::now()],
    )?;
    Ok(())
}

pub fn resume(c: &PgConn, e: &Endpoint) -> ApiResult<()> {
    if events::cursor(c, &e.consumer())?.is_none() {
        events::save_cursor(c, &e.consumer(), events::last_position(c)?)?;
    }
    c.exec(
        "UPDATE webhooks SET status = 'active', disabled_reason = NULL, failures = 0,
                             next_attempt_at = NULL, failing_position = NULL, updated_at = $2
         WHERE id = $1",
        &[&e.row, &domain::now()],
    )?;
    Ok(())
}

pub fn cursor(c: &PgConn, e: &Endpoint) -> ApiResult<Option<i64>> {
    events::cursor(c, &e.consumer())
}

pub fn pending(c: &PgConn, e: &Endpoint, after: i64, scan: i64) -> ApiResult<(Vec<Event>, i64)> {
    let upto: Option<i64> = get(
        &c.one(
            "SELECT max(position) FROM
               (SELECT position FROM events WHERE position > $1 ORDER BY position LIMIT $2) s",
            &[&after, &scan],
        )?,
        0,
    )?;
    let Some(upto) = upto else {
        return Ok((Vec::new(), after));
    };
    let rows = c.all(
        "SELECT e.position FROM events e
         LEFT JOIN threads t ON t.id = e.thread_id
         LEFT JOIN agents ca ON ca.id = COALESCE(t.creator_agent_id, e.creator_agent_id)
         LEFT JOIN agents ta ON ta.id = COALESCE(t.target_agent_id, e.target_agent_id)
         WHERE e.position > $1 AND e.position <= $2
           AND e.kind = ANY($3)
           AND (t.id IS NOT NULL OR e.kind = 'thread.deleted')
           AND (COALESCE(t.owner_account_id, e.owner_account_id) = $4
                OR ca.account_id = $4 OR ta.account_id = $4)
         ORDER BY e.position",
        &[&after, &upto, &logged_kinds(e), &e.account_id],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let p: i64 = get(r, 0)?;
        for ev in events::events_after(c, p - 1, 1)? {
            out.push(match ev.kind {
                Kind::ReplyDelivered => {
                    let json: String = get(
                        &c.one(
                            "SELECT m.json FROM events e JOIN messages m ON m.id = e.message_id
                             WHERE e.position = $1",
                            &[&p],
                        )?,
                        0,
                    )?;
                    // A stored message that is not JSON: left out (and
                    // logged), as an event that cannot be rebuilt is.
                    let thread = ev.thread_id.clone();
                    match stored_message(ev, json) {
                        Ok(ev) => ev,
                        Err(e) => {
                            crate::store::events::unreadable(p, Some(thread), &e);
                            continue;
                        }
                    }
                }
                _ => ev,
            });
        }
    }
    Ok((out, upto))
}

pub fn advance(c: &PgConn, e: &Endpoint, position: i64) -> ApiResult<()> {
    c.exec(
        "UPDATE event_cursors SET position = GREATEST(position, $2), updated_at = $3
         WHERE consumer = $1",
        &[&e.consumer(), &position, &domain::now()],
    )?;
    c.exec(
        "UPDATE webhooks SET failures = 0, next_attempt_at = NULL, failing_position = NULL
         WHERE id = $1 AND failures != 0",
        &[&e.row],
    )?;
    Ok(())
}

pub fn failed(
    c: &PgConn,
    e: &Endpoint,
    position: i64,
    failures: i64,
    next_at: Option<&str>,
    reason: &str,
) -> ApiResult<()> {
    // As on SQLite: only while the endpoint is as the attempt found it.
    match next_at {
        Some(at) => {
            c.exec(
                "UPDATE webhooks SET failures = $2, next_attempt_at = $3, failing_position = $5
                 WHERE id = $1 AND failures = $4",
                &[&e.row, &failures, &at, &e.failures, &position],
            )?;
        }
        None => {
            let disabled = c.exec(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = $2, failures = $3,
                                     next_attempt_at = NULL, failing_position = $6,
                                     updated_at = $4
                 WHERE id = $1 AND status = 'active' AND failures = $5",
                &[
                    &e.row,
                    &reason,
                    &failures,
                    &domain::now(),
                    &e.failures,
                    &position,
                ],
            )?;
            if disabled == 1 {
                events::drop_cursor(c, &e.consumer())?;
            }
        }
    }
    Ok(())
}

pub fn record_attempt(c: &PgConn, e: &Endpoint, a: &Attempt) -> ApiResult<()> {
    // As on SQLite: nothing for an endpoint deleted meanwhile.
    let exists: bool = get(
        &c.one(
            "SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1)",
            &[&e.row],
        )?,
        0,
    )?;
    if !exists {
        return Ok(());
    }
    c.exec(
        "INSERT INTO webhook_attempts (webhook_id, event_id, position, attempt, http_status,
                                       latency_ms, error, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &e.row,
            &a.event_id,
            &a.position,
            &a.attempt,
            &a.status,
            &a.latency_ms,
            &a.error,
            &a.created_at,
        ],
    )?;
    c.exec(
        "DELETE FROM webhook_attempts WHERE webhook_id = $1 AND id <=
           (SELECT id FROM webhook_attempts WHERE webhook_id = $1
            ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&e.row, &ATTEMPTS_KEPT],
    )?;
    Ok(())
}

pub fn attempts(c: &PgConn, e: &Endpoint, limit: i64) -> ApiResult<Vec<Attempt>> {
    c.all(
        "SELECT event_id, position, attempt, http_status, latency_ms, error, created_at
         FROM webhook_attempts WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        &[&e.row, &limit],
    )?
    .iter()
    .map(|r| {
        Ok(Attempt {
            event_id: get(r, 0)?,
            position: get(r, 1)?,
            attempt: get(r, 2)?,
            status: get(r, 3)?,
            latency_ms: get(r, 4)?,
            error: get(r, 5)?,
            created_at: get(r, 6)?,
        })
    })
    .collect()
}

/// Takes or renews the endpoint's delivery lease for `node`, for `secs`:
/// true if this node holds it now (it was free, expired, already its own,
/// or its holder's session is gone: a node killed, and maybe restarted
/// under a new id, would otherwise stall the endpoint until expiry).
pub fn lease(c: &PgConn, e: &Endpoint, node: &str, secs: i64) -> ApiResult<bool> {
    let n = c.exec(
        "UPDATE webhooks SET lease_owner = $2, lease_until = now() + $3 * interval '1 second'
         WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now()
                            OR NOT EXISTS (SELECT 1 FROM pg_stat_activity
                                           WHERE application_name = 'threadline-node-' || lease_owner))",
        &[&e.row, &node, &(secs as f64)],
    )?;
    Ok(n == 1)
}
