//! Webhook endpoints, their delivery attempts and their place in the event
//! log. An endpoint's cursor is the `event_cursors` row
//! `webhook:<public id>`: it is created with the endpoint (at the log's
//! current end, so an endpoint hears what happens after it was made) and
//! dropped when the endpoint is deleted or disabled, so pruning never keeps
//! events for an endpoint that will not take them.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::events;
use super::row::optional;
use crate::domain;
use crate::error::{ApiError, ApiResult};
use crate::events::{Event, Kind};

/// Attempts kept per endpoint (older ones are deleted as new ones come).
pub const ATTEMPTS_KEPT: i64 = 100;

/// An endpoint as stored. `secret` never leaves through [`Endpoint`]'s
/// JSON: it is shown once, by whoever creates or rotates it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[serde(skip)]
    pub row: i64,
    #[serde(rename = "id")]
    pub public_id: String,
    #[serde(skip)]
    pub account_id: i64,
    /// Shown with any user name or password masked (older endpoints may
    /// carry them): see [`crate::webhooks::target::shown`].
    #[serde(serialize_with = "crate::webhooks::target::serialize_shown")]
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub secret: String,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Failed attempts at the event it is trying to deliver.
    pub failures: i64,
    pub next_attempt_at: Option<String>,
    /// Until when deliveries carry a second signature, made with the
    /// secret the last rotation replaced; `null` when they carry one.
    pub previous_secret_expires_at: Option<String>,
    /// That secret (never shown).
    #[serde(skip)]
    pub previous_secret: Option<String>,
    /// The log position of the event `failures` counts attempts at (`None`
    /// when there are none, or counted before migration 10).
    #[serde(skip)]
    pub failing_position: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl Endpoint {
    /// The name of its row in `event_cursors`.
    pub fn consumer(&self) -> String {
        consumer(&self.public_id)
    }

    /// The secret a rotation replaced, if it still signs at `now` (RFC 3339,
    /// as [`domain::now`] writes it: such times compare as strings).
    pub fn previous_secret_at(&self, now: &str) -> Option<&str> {
        match (&self.previous_secret, &self.previous_secret_expires_at) {
            (Some(secret), Some(until)) if until.as_str() > now => Some(secret),
            _ => None,
        }
    }

    /// How many failed attempts count against `position` (the event about
    /// to be tried): the stored count if it was counted on that event, none
    /// if it was counted on another (which left the log, its thread deleted,
    /// before it was delivered: the next event starts afresh).
    pub fn failures_at(&self, position: Option<i64>) -> i64 {
        match (self.failing_position, position) {
            (Some(failing), Some(p)) if failing != p => 0,
            _ => self.failures,
        }
    }

    /// The endpoint as read at `now`: a previous secret whose window has
    /// passed is neither shown nor used (the roll call forgets it soon).
    pub(crate) fn expire_previous(mut self, now: &str) -> Endpoint {
        if self.previous_secret_at(now).is_none() {
            self.previous_secret = None;
            self.previous_secret_expires_at = None;
        }
        self
    }
}

fn consumer(public_id: &str) -> String {
    format!("webhook:{public_id}")
}

/// One delivery attempt, as the API lists them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub event_id: String,
    pub position: i64,
    pub attempt: i64,
    /// The receiver's HTTP status; `None` when it did not answer.
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub created_at: String,
}

/// What a new endpoint is made of (already parsed).
pub struct NewEndpoint<'a> {
    pub public_id: &'a str,
    pub url: &'a str,
    pub events: &'a [String],
    pub description: Option<&'a str>,
    pub secret: &'a str,
}

const COLUMNS: &str = "id, public_id, account_id, url, events, description, secret, status,
     disabled_reason, failures, next_attempt_at, created_at, updated_at, previous_secret,
     previous_secret_expires_at, failing_position";

fn endpoint(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let events: String = r.get(4)?;
    Ok(Endpoint {
        row: r.get(0)?,
        public_id: r.get(1)?,
        account_id: r.get(2)?,
        url: r.get(3)?,
        // Written by `create` from a Vec<String>.
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(5)?,
        secret: r.get(6)?,
        status: r.get(7)?,
        disabled_reason: r.get(8)?,
        failures: r.get(9)?,
        next_attempt_at: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        previous_secret: r.get(13)?,
        previous_secret_expires_at: r.get(14)?,
        failing_position: r.get(15)?,
    }
    .expire_previous(&domain::now()))
}

/// Stores a new endpoint and starts its cursor at the log's current end.
pub fn create(conn: &Connection, account_id: i64, new: &NewEndpoint<'_>) -> ApiResult<Endpoint> {
    let now = domain::now();
    let events_json = serde_json::to_string(new.events).expect("expect: strings serialize");
    conn.prepare_cached(
        "INSERT INTO webhooks (public_id, account_id, url, events, description, secret,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        new.public_id,
        account_id,
        new.url,
        events_json,
        new.description,
        new.secret,
        now
    ])?;
    events::save_cursor(conn, &consumer(new.public_id), events::last_position(conn)?)?;
    Ok(by_public_id(conn, new.public_id)?.expect("expect: inserted just now"))
}

/// The endpoint with this public id, whoever owns it.
pub fn by_public_id(conn: &Connection, public_id: &str) -> ApiResult<Option<Endpoint>> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE public_id = ?1");
    optional(conn.prepare_cached(&sql)?.query_row([public_id], endpoint))
}

/// The endpoint with this public id if `account_id` owns it.
pub fn owned(conn: &Connection, account_id: i64, public_id: &str) -> ApiResult<Option<Endpoint>> {
    Ok(by_public_id(conn, public_id)?.filter(|e| e.account_id == account_id))
}

/// An account's endpoints, oldest first.
pub fn list(conn: &Connection, account_id: i64) -> ApiResult<Vec<Endpoint>> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE account_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([account_id], endpoint)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every endpoint's public id and `updated_at` (the worker's roll call).
pub fn all(conn: &Connection) -> ApiResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT public_id, updated_at FROM webhooks")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether some endpoint keeps a previous secret whose window closed at or
/// before `now` (the roll call's question, a read, before it writes).
pub fn expired_previous_secrets(conn: &Connection, now: &str) -> ApiResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM webhooks WHERE previous_secret_expires_at <= ?1)",
        )?
        .query_row([now], |r| r.get(0))?)
}

/// Forgets the previous secrets whose window closed at or before `now`.
/// `updated_at` stays: nothing the endpoint shows changed (an expired one
/// is not shown), and the tasks need no wake.
pub fn forget_expired_previous_secrets(conn: &Connection, now: &str) -> ApiResult<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE webhooks SET previous_secret = NULL, previous_secret_expires_at = NULL
             WHERE previous_secret_expires_at <= ?1",
        )?
        .execute([now])?)
}

/// Deletes an endpoint, its attempts and its cursor. Returns whether it existed.
pub fn delete(conn: &Connection, e: &Endpoint) -> ApiResult<bool> {
    conn.prepare_cached("DELETE FROM webhook_attempts WHERE webhook_id = ?1")?
        .execute([e.row])?;
    let n = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
        .execute([e.row])?;
    events::drop_cursor(conn, &e.consumer())?;
    Ok(n > 0)
}

/// Replaces the signing secret. With `previous_until` (RFC 3339) the secret
/// replaced keeps signing beside the new one until then; any older previous
/// secret is dropped. Without it only the new one signs.
pub fn rotate_secret(
    conn: &Connection,
    e: &Endpoint,
    secret: &str,
    previous_until: Option<&str>,
) -> ApiResult<()> {
    // The right-hand sides read the row as it was: `secret` is the old one.
    conn.prepare_cached(
        "UPDATE webhooks SET secret = ?2,
                previous_secret = CASE WHEN ?4 IS NULL THEN NULL ELSE secret END,
                previous_secret_expires_at = ?4, updated_at = ?3
         WHERE id = ?1",
    )?
    .execute(params![e.row, secret, domain::now(), previous_until])?;
    Ok(())
}

/// Pauses an active endpoint: deliveries stop, the cursor stays (resuming
/// delivers what happened meanwhile).
pub fn pause(conn: &Connection, e: &Endpoint) -> ApiResult<()> {
    conn.prepare_cached(
        "UPDATE webhooks SET status = 'paused', updated_at = ?2
         WHERE id = ?1 AND status = 'active'",
    )?
    .execute(params![e.row, domain::now()])?;
    Ok(())
}

/// Resumes a paused or disabled endpoint with a fresh retry schedule. A
/// disabled one had dropped its cursor: it starts again from the log's end.
pub fn resume(conn: &Connection, e: &Endpoint) -> ApiResult<()> {
    if events::cursor(conn, &e.consumer())?.is_none() {
        events::save_cursor(conn, &e.consumer(), events::last_position(conn)?)?;
    }
    conn.prepare_cached(
        "UPDATE webhooks SET status = 'active', disabled_reason = NULL, failures = 0,
                             next_attempt_at = NULL, failing_position = NULL, updated_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![e.row, domain::now()])?;
    Ok(())
}

/// The endpoint's cursor: the last position it has handled.
pub fn cursor(conn: &Connection, e: &Endpoint) -> ApiResult<Option<i64>> {
    events::cursor(conn, &e.consumer())
}

/// The events after `after` that `e` takes (its types, threads of its
/// account: an agent of the account takes part, or the account opened it;
/// for a deleted thread, as its `thread.deleted` row remembers them),
/// looking at most `scan` positions of the log. Returns them and the last
/// position looked at (the cursor may move there once they are delivered).
/// The choice is made on the rows' integers in SQL; only the chosen events
/// are rebuilt (other accounts' events cost an index probe, not a JSON
/// parse: every endpoint reads every commit's events).
pub fn pending(
    conn: &Connection,
    e: &Endpoint,
    after: i64,
    scan: i64,
) -> ApiResult<(Vec<Event>, i64)> {
    let upto: Option<i64> = conn
        .prepare_cached(
            "SELECT max(position) FROM
               (SELECT position FROM events WHERE position > ?1 ORDER BY position LIMIT ?2)",
        )?
        .query_row(params![after, scan], |r| r.get(0))?;
    let Some(upto) = upto else {
        return Ok((Vec::new(), after));
    };
    let types = serde_json::to_string(&logged_kinds(e)).expect("expect: strings serialize");
    let mut stmt = conn.prepare_cached(
        "SELECT e.position FROM events e
         LEFT JOIN threads t ON t.id = e.thread_id
         LEFT JOIN agents ca ON ca.id = COALESCE(t.creator_agent_id, e.creator_agent_id)
         LEFT JOIN agents ta ON ta.id = COALESCE(t.target_agent_id, e.target_agent_id)
         WHERE e.position > ?1 AND e.position <= ?2
           AND e.kind IN (SELECT value FROM json_each(?3))
           AND (t.id IS NOT NULL OR e.kind = 'thread.deleted')
           AND (COALESCE(t.owner_account_id, e.owner_account_id) = ?4
                OR ca.account_id = ?4 OR ta.account_id = ?4)
         ORDER BY e.position",
    )?;
    let positions = stmt
        .query_map(params![after, upto, types, e.account_id], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(positions.len());
    for p in positions {
        // An event that cannot be rebuilt is not in the page (and logged):
        // the cursor moves past it with the rest.
        for ev in events::events_after(conn, p - 1, 1)? {
            out.push(match ev.kind {
                Kind::ReplyDelivered => {
                    let json = conn
                        .prepare_cached(
                            "SELECT m.json FROM events e JOIN messages m ON m.id = e.message_id
                             WHERE e.position = ?1",
                        )?
                        .query_row([p], |r| r.get::<_, String>(0));
                    // The stored message it goes out as no longer reads
                    // back (not text, not there): left out as well. A
                    // failure to read at all (busy, I/O) is the page's.
                    let json = match json {
                        Ok(json) => Ok(json),
                        Err(
                            e @ (rusqlite::Error::InvalidColumnType(..)
                            | rusqlite::Error::FromSqlConversionFailure(..)
                            | rusqlite::Error::QueryReturnedNoRows),
                        ) => Err(ApiError::from(e)),
                        Err(e) => return Err(e.into()),
                    };
                    let thread = ev.thread_id.clone();
                    match json.and_then(|json| stored_message(ev, json)) {
                        Ok(ev) => ev,
                        Err(e) => {
                            events::unreadable(p, Some(thread), &e);
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

/// The kinds of logged events an endpoint takes: its types, and with
/// `thread.message` the parts of turn-taking replies delivered (each
/// stored as a message of its thread, logged as the part).
pub(crate) fn logged_kinds(e: &Endpoint) -> Vec<String> {
    let mut kinds = e.events.clone();
    if kinds.iter().any(|k| k == Kind::ThreadMessage.as_str()) {
        kinds.push(Kind::ReplyDelivered.as_str().to_owned());
    }
    kinds
}

/// A delivered reply part's event as the `thread.message` of the message
/// it stored (`json`, the message as the API returns it): what the
/// thread's history and a socket's resume show for it. Its id is already
/// the message's.
pub(crate) fn stored_message(ev: Event, json: String) -> ApiResult<Event> {
    let data = serde_json::value::RawValue::from_string(json)
        .map_err(|_| crate::error::ApiError::Internal("event log: message json".into()))?;
    Ok(Event {
        kind: Kind::ThreadMessage,
        data,
        ..ev
    })
}

/// Moves the cursor to `position` (everything up to it is handled) and
/// clears the failure count.
pub fn advance(conn: &Connection, e: &Endpoint, position: i64) -> ApiResult<()> {
    // Only while the cursor row exists: a deleted or disabled endpoint's
    // late success must not bring it back (pruning would then keep the log).
    conn.prepare_cached(
        "UPDATE event_cursors SET position = max(position, ?2), updated_at = ?3
         WHERE consumer = ?1",
    )?
    .execute(params![e.consumer(), position, domain::now()])?;
    conn.prepare_cached(
        "UPDATE webhooks SET failures = 0, next_attempt_at = NULL, failing_position = NULL
         WHERE id = ?1 AND failures != 0",
    )?
    .execute([e.row])?;
    Ok(())
}

/// Records a failed attempt at the event at `position`: the failure count
/// (for that event) and the time of the next try, or, when `next_at` is
/// `None` (the schedule is spent), disables the endpoint with `reason` and
/// drops its cursor. Only while the endpoint is as `e` was read when the
/// attempt began (its failure count, and active for the disabling): one
/// paused meanwhile keeps its place, and one resumed meanwhile keeps the
/// fresh schedule `resume` gave it.
pub fn failed(
    conn: &Connection,
    e: &Endpoint,
    position: i64,
    failures: i64,
    next_at: Option<&str>,
    reason: &str,
) -> ApiResult<()> {
    match next_at {
        Some(at) => {
            conn.prepare_cached(
                "UPDATE webhooks SET failures = ?2, next_attempt_at = ?3, failing_position = ?5
                 WHERE id = ?1 AND failures = ?4",
            )?
            .execute(params![e.row, failures, at, e.failures, position])?;
        }
        None => {
            let disabled = conn
                .prepare_cached(
                    "UPDATE webhooks SET status = 'disabled', disabled_reason = ?2, failures = ?3,
                                         next_attempt_at = NULL, failing_position = ?6,
                                         updated_at = ?4
                     WHERE id = ?1 AND status = 'active' AND failures = ?5",
                )?
                .execute(params![
                    e.row,
                    reason,
                    failures,
                    domain::now(),
                    e.failures,
                    position
                ])?;
            if disabled == 1 {
                events::drop_cursor(conn, &e.consumer())?;
            }
        }
    }
    Ok(())
}

/// Records an attempt and trims the endpoint's history to [`ATTEMPTS_KEPT`];
/// nothing for an endpoint deleted while the attempt was under way (its
/// row gone, the insert failed its foreign key: a warning in the log for
/// every delete of a busy endpoint).
pub fn record_attempt(conn: &Connection, e: &Endpoint, a: &Attempt) -> ApiResult<()> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = ?1)")?
        .query_row([e.row], |r| r.get(0))?;
    if !exists {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO webhook_attempts (webhook_id, event_id, position, attempt, http_status,
                                       latency_ms, error, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.row,
        a.event_id,
        a.position,
        a.attempt,
        a.status,
        a.latency_ms,
        a.error,
        a.created_at
    ])?;
    conn.prepare_cached(
        "DELETE FROM webhook_attempts WHERE webhook_id = ?1 AND id <=
           (SELECT id FROM webhook_attempts WHERE webhook_id = ?1
            ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![e.row, ATTEMPTS_KEPT])?;
    Ok(())
}

/// The endpoint's latest attempts, newest first.
pub fn attempts(conn: &Connection, e: &Endpoint, limit: i64) -> ApiResult<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, position, attempt, http_status, latency_ms, error, created_at
         FROM webhook_attempts WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![e.row, limit], |r| {
        Ok(Attempt {
            event_id: r.get(0)?,
            position: r.get(1)?,
            attempt: r.get(2)?,
            status: r.get(3)?,
            latency_ms: r.get(4)?,
            error: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(failures: i64, failing_position: Option<i64>) -> Endpoint {
        Endpoint {
            row: 1,
            public_id: "wh_x".into(),
            account_id: 1,
            url: "http://example.com/".into(),
            events: Vec::new(),
            description: None,
            secret: "whsec_new".into(),
            status: "active".into(),
            disabled_reason: None,
            failures,
            next_attempt_at: None,
            previous_secret_expires_at: Some("2026-06-16T12:00:00.000Z".into()),
            previous_secret: Some("whsec_old".into()),
            failing_position,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn the_previous_secret_signs_until_its_expiry_only() {
        let e = endpoint(0, None);
        assert_eq!(
            e.previous_secret_at("2026-06-16T11:59:59.999Z"),
            Some("whsec_old")
        );
        assert_eq!(e.previous_secret_at("2026-06-16T12:00:00.000Z"), None);
        let read_later = e.clone().expire_previous("2026-06-16T12:00:00.001Z");
        assert_eq!(read_later.previous_secret, None);
        assert_eq!(read_later.previous_secret_expires_at, None);
        let read_before = e.expire_previous("2026-06-16T11:00:00.000Z");
        assert_eq!(read_before.previous_secret.as_deref(), Some("whsec_old"));
    }

    #[test]
    fn failures_count_for_the_event_they_were_counted_on() {
        assert_eq!(endpoint(3, Some(10)).failures_at(Some(10)), 3);
        assert_eq!(endpoint(3, Some(10)).failures_at(Some(12)), 0);
        // Counted before migration 10: kept, as before.
        assert_eq!(endpoint(3, None).failures_at(Some(12)), 3);
        assert_eq!(endpoint(0, None).failures_at(Some(12)), 0);
    }
}
