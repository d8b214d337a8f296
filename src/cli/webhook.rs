//! `webhook create|list|delete|rotate|pause|resume|attempts`: an account's
//! webhook endpoints from the command line, on the database directly (a
//! running server's roll call sees a change within a second). Each prints
//! what the API's route answers (`/api/acsp/webhooks…`), with the same
//! shapes; an endpoint that is not the account's is "no webhook endpoint",
//! as the API's 404 does not tell an unknown id from another account's.

use serde_json::json;

use super::admin::account;
use super::{in_transaction, reading, transaction, Access};
use crate::config::DbArg;
use crate::domain::UserId;
use crate::error::ApiResult;
use crate::store::db::webhooks::{self, Endpoint};
use crate::store::Db;

/// `webhook create`: prints `{"webhook": {...}, "secret": "whsec_..."}`.
pub fn webhook_create(
    db: &DbArg,
    user: &str,
    url: &str,
    events: Vec<String>,
    description: Option<&str>,
    allow_private: bool,
) -> Result<String, String> {
    use crate::webhooks::{sign, target};
    let user = UserId::parse(user)?;
    let url = target::parse_url(url).map_err(|e| e.public_message())?;
    let events = target::parse_events(events).map_err(|e| e.public_message())?;
    let description =
        crate::domain::text::WebhookDescription::parse_optional(description.map(str::to_owned))
            .map_err(|e| e.public_message())?;
    target::check_blocking(&url, allow_private).map_err(|e| match e.public_message() {
        // The API's wording names the server's flag; this command's is --allow-private.
        m if m == target::PRIVATE_REFUSED => "the target is a private, loopback or \
             link-local address; add --allow-private to register it (the server delivers \
             there only when started with --allow-private-webhooks)"
            .to_owned(),
        m => m,
    })?;
    let secret = sign::new_secret();
    let public_id = format!("wh_{}", uuid::Uuid::new_v4().simple());
    let endpoint = in_transaction(db, |conn| {
        let account = account(conn, &user)?;
        webhooks::check_room(conn, account)?;
        let new = webhooks::NewEndpoint {
            public_id: &public_id,
            url: url.as_str(),
            events: &events,
            description: description.as_deref(),
            secret: &secret,
        };
        webhooks::create(conn, account, &new)
    })?;
    Ok(json!({"webhook": endpoint, "secret": secret}).to_string())
}

/// `webhook list`: prints `{"webhooks": [...]}`.
pub fn webhook_list(db: &DbArg, user: &str) -> Result<String, String> {
    let user = UserId::parse(user)?;
    let all = reading(db, |conn| webhooks::list(conn, account(conn, &user)?))?;
    Ok(json!({ "webhooks": all }).to_string())
}

/// Runs `f` in one transaction on the account's endpoint `id`; an endpoint
/// that is not there, or not the account's, is an error naming both.
fn on_endpoint<T: Send>(
    db: &DbArg,
    user: &str,
    id: &str,
    access: Access,
    f: impl FnOnce(Db<'_>, Endpoint) -> ApiResult<T> + Send,
) -> Result<T, String> {
    let user = UserId::parse(user)?;
    let on = |conn: Db<'_>| match webhooks::owned(conn, account(conn, &user)?, id)? {
        Some(e) => f(conn, e).map(Some),
        None => Ok(None),
    };
    let found = transaction(db, false, access, on)?;
    found.ok_or_else(|| format!("no webhook endpoint {id} in account {}", user.as_str()))
}

/// The endpoint as it is now (after a change in the same transaction).
fn reread(conn: Db<'_>, e: &Endpoint) -> ApiResult<Endpoint> {
    Ok(webhooks::by_public_id(conn, &e.public_id)?
        .expect("expect: the endpoint was read in this transaction"))
}

/// `webhook delete`: prints `{"deleted": true}`.
pub fn webhook_delete(db: &DbArg, user: &str, id: &str) -> Result<String, String> {
    on_endpoint(db, user, id, Access::Write, |conn, e| {
        webhooks::delete(conn, &e)
    })?;
    Ok(json!({"deleted": true}).to_string())
}

/// `webhook rotate`: prints `{"webhook": {...}, "secret": "whsec_..."}`, the
/// new secret (shown this once; only the server keeps it). The secret
/// replaced keeps signing beside it for `keep_previous_hours` (`None`: the
/// API's default, 24; 0: not at all), as the API's `keep_previous_hours`.
pub fn webhook_rotate(
    db: &DbArg,
    user: &str,
    id: &str,
    keep_previous_hours: Option<i64>,
) -> Result<String, String> {
    let hours = crate::webhooks::keep_previous_hours(keep_previous_hours)
        .map_err(|e| e.public_message())?;
    let secret = crate::webhooks::sign::new_secret();
    let endpoint = on_endpoint(db, user, id, Access::Write, |conn, e| {
        let until = crate::webhooks::previous_secret_until(hours);
        webhooks::rotate_secret(conn, &e, &secret, until.as_deref())?;
        reread(conn, &e)
    })?;
    Ok(json!({"webhook": endpoint, "secret": secret}).to_string())
}

/// `webhook pause`: prints `{"webhook": {...}}` (an endpoint that is not
/// active stays as it is, as with the API).
pub fn webhook_pause(db: &DbArg, user: &str, id: &str) -> Result<String, String> {
    let endpoint = on_endpoint(db, user, id, Access::Write, |conn, e| {
        webhooks::pause(conn, &e)?;
        reread(conn, &e)
    })?;
    Ok(json!({ "webhook": endpoint }).to_string())
}

/// `webhook resume`: prints `{"webhook": {...}}`.
pub fn webhook_resume(db: &DbArg, user: &str, id: &str) -> Result<String, String> {
    let endpoint = on_endpoint(db, user, id, Access::Write, |conn, e| {
        webhooks::resume(conn, &e)?;
        reread(conn, &e)
    })?;
    Ok(json!({ "webhook": endpoint }).to_string())
}

/// `webhook attempts`: prints `{"webhook": {...}, "attempts": [...]}`, the
/// latest `limit` attempts (`--limit` takes 1 to [`webhooks::ATTEMPTS_KEPT`]),
/// newest first.
pub fn webhook_attempts(db: &DbArg, user: &str, id: &str, limit: i64) -> Result<String, String> {
    let (endpoint, attempts) = on_endpoint(db, user, id, Access::Read, |conn, e| {
        let attempts = webhooks::attempts(conn, &e, limit)?;
        Ok((e, attempts))
    })?;
    Ok(json!({"webhook": endpoint, "attempts": attempts}).to_string())
}
