//! Webhook endpoints over the API (`/api/acsp/webhooks`): an account
//! registers, lists, deletes, pauses and resumes its endpoints, rotates
//! their signing secrets and reads their latest delivery attempts. The
//! secret is in the answer only when it is made (create, rotate).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::extract::{required, Caller, JsonBody, Query};
use super::state::resource;
use super::AppState;
use crate::domain::text::WebhookDescription;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Route;
use crate::store::db::webhooks::{self, Endpoint, NewEndpoint};
use crate::webhooks::{sign, target, Dispatcher};

/// Changes share one per-key quota, reads a roomier one (the web inspector
/// polls them): see [`Route::WebhookChange`]. The list is read on the
/// resource where endpoints are created, and counts as a read.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use Route::{WebhookChange, WebhookRead};
    cfg.service(
        resource("/api/acsp/webhooks", Some(WebhookChange))
            .post(create)
            .get(list),
    )
    .service(resource("/api/acsp/webhooks/{id}", Some(WebhookChange)).delete(delete))
    .service(resource("/api/acsp/webhooks/{id}/rotate", Some(WebhookChange)).post(rotate))
    .service(resource("/api/acsp/webhooks/{id}/pause", Some(WebhookChange)).post(pause))
    .service(resource("/api/acsp/webhooks/{id}/resume", Some(WebhookChange)).post(resume))
    .service(resource("/api/acsp/webhooks/{id}/attempts", Some(WebhookRead)).get(attempts));
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateBody {
    /// An absolute `http://` or `https://` URL with a host, at most 2048
    /// characters, written out in full (no user name, password or
    /// fragment; no spaces or backslashes). Its host must resolve, and to
    /// a public address unless the server runs with
    /// `--allow-private-webhooks` (else 422).
    #[schema(required = true, value_type = String, max_length = 2048, format = "uri")]
    url: Option<String>,
    #[schema(required = true, value_type = Vec<crate::http::openapi::WebhookEvent>, min_items = 1)]
    events: Option<Vec<String>>,
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// The body of `rotate` (optional: no body is the defaults).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RotateBody {
    /// Hours the secret replaced keeps signing deliveries beside the new
    /// one (each then carries both `v1,` signatures, the new first), so
    /// receivers can be given the new secret meanwhile. `0`: only the new
    /// secret signs from now on. A rotation within the window keeps only
    /// the secret it replaces. Default 24.
    #[schema(minimum = 0, maximum = 168, default = 24)]
    keep_previous_hours: Option<i64>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("webhook endpoint not found".into())
}

/// A new endpoint's public id.
fn new_public_id() -> String {
    format!("wh_{}", uuid::Uuid::new_v4().simple())
}

/// POST /api/acsp/webhooks
#[utoipa::path(
    post,
    path = "/api/acsp/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The endpoint and its signing secret (shown here and by rotate only).", body = crate::http::openapi::WebhookWithSecret),
        (status = 409, description = "`TOO_MANY_WEBHOOKS`: the account has 20.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<HttpResponse> {
    let url = target::parse_url(&required("url", body.url)?)?;
    let events = target::parse_events(required("events", body.events)?)?;
    let description = WebhookDescription::parse_optional(body.description)?;
    // The key first: resolving the url's host for a caller without one
    // would tell anybody which names resolve, and to private addresses,
    // and run lookups for them with no quota.
    caller.read(&state.store, |_, _| Ok(())).await?;
    target::check(&url, dispatcher.allow_private()).await?;
    let secret = sign::new_secret();
    let public_id = new_public_id();
    let (url, new_secret) = (url.to_string(), secret.clone());
    let endpoint = caller
        .write(&state.store, move |ctx, account| {
            webhooks::check_room(ctx.conn, account.id)?;
            let new = NewEndpoint {
                public_id: &public_id,
                url: &url,
                events: &events,
                description: description.as_deref(),
                secret: &new_secret,
            };
            webhooks::create(ctx.conn, account.id, &new)
        })
        .await?;
    dispatcher.into_inner().changed(&endpoint.public_id);
    Ok(HttpResponse::Created().json(json!({"webhook": endpoint, "secret": secret})))
}

/// GET /api/acsp/webhooks
#[utoipa::path(
    get,
    path = "/api/acsp/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    responses((status = 200, description = "The account's endpoints (no secrets).", body = crate::http::openapi::WebhookList)),
    security(("bearer" = []))
)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let all = caller
        .read(&state.store, |c, account| webhooks::list(c, account.id))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "webhooks": all })))
}

/// Reads the caller's endpoint `id` (404 if it is not theirs).
async fn owned(state: &AppState, caller: &Caller, id: String) -> ApiResult<Endpoint> {
    caller
        .read(&state.store, move |c, account| {
            webhooks::owned(c, account.id, &id)?.ok_or_else(not_found)
        })
        .await
}

/// Runs `f` on the caller's endpoint `id` in a write, then wakes its task.
async fn change<T: Send + 'static>(
    state: &AppState,
    dispatcher: &Arc<Dispatcher>,
    caller: &Caller,
    id: String,
    f: impl FnOnce(crate::store::Db<'_>, &Endpoint) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let public_id = id.clone();
    let out = caller
        .write(&state.store, move |ctx, account| {
            let e = webhooks::owned(ctx.conn, account.id, &id)?.ok_or_else(not_found)?;
            f(ctx.conn, &e)
        })
        .await?;
    dispatcher.changed(&public_id);
    Ok(out)
}

/// DELETE /api/acsp/webhooks/{id}
#[utoipa::path(
    delete,
    path = "/api/acsp/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(("id" = String, Path, pattern = "^wh_[0-9a-f]{32}$", description = "The endpoint's id (`wh_…`).")),
    responses(
        (status = 200, description = "Deleted.", body = crate::http::openapi::Deleted),
        (status = 404, description = "Not one of the account's endpoints.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let dispatcher = dispatcher.into_inner();
    change(&state, &dispatcher, &caller, id.into_inner(), |c, e| {
        webhooks::delete(c, e)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": true})))
}

/// POST /api/acsp/webhooks/{id}/rotate
#[utoipa::path(
    post,
    path = "/api/acsp/webhooks/{id}/rotate",
    operation_id = "rotate_webhook_secret",
    tag = "webhooks",
    params(("id" = String, Path, pattern = "^wh_[0-9a-f]{32}$", description = "The endpoint's id (`wh_…`).")),
    request_body(content = Option<RotateBody>, description = "Optional: without a body the secret replaced signs beside the new one for 24 hours."),
    responses(
        (status = 200, description = "The endpoint and its new secret (shown once); `previous_secret_expires_at` says until when the secret replaced signs too.", body = crate::http::openapi::WebhookWithSecret),
        (status = 404, description = "Not one of the account's endpoints.", body = crate::http::openapi::ErrorEnvelope),
        (status = 422, description = "`keep_previous_hours` not an integer from 0 to 168 (nothing changed).", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn rotate(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    id: web::Path<String>,
    JsonBody(body): JsonBody<Option<RotateBody>>,
) -> ApiResult<HttpResponse> {
    let hours = crate::webhooks::keep_previous_hours(body.and_then(|b| b.keep_previous_hours))?;
    let secret = sign::new_secret();
    let new_secret = secret.clone();
    let dispatcher = dispatcher.into_inner();
    let id = id.into_inner();
    change(&state, &dispatcher, &caller, id.clone(), move |c, e| {
        // Timed in the write: the window starts when the rotation commits.
        let until = crate::webhooks::previous_secret_until(hours);
        webhooks::rotate_secret(c, e, &new_secret, until.as_deref())
    })
    .await?;
    let endpoint = owned(&state, &caller, id).await?;
    Ok(HttpResponse::Ok().json(json!({"webhook": endpoint, "secret": secret})))
}

/// POST /api/acsp/webhooks/{id}/pause
#[utoipa::path(
    post,
    path = "/api/acsp/webhooks/{id}/pause",
    operation_id = "pause_webhook",
    tag = "webhooks",
    params(("id" = String, Path, pattern = "^wh_[0-9a-f]{32}$", description = "The endpoint's id (`wh_…`).")),
    responses(
        (status = 200, description = "The endpoint, paused.", body = crate::http::openapi::WebhookAnswer),
        (status = 404, description = "Not one of the account's endpoints.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn pause(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_status(state, dispatcher, caller, id.into_inner(), false).await
}

/// POST /api/acsp/webhooks/{id}/resume
#[utoipa::path(
    post,
    path = "/api/acsp/webhooks/{id}/resume",
    operation_id = "resume_webhook",
    tag = "webhooks",
    params(("id" = String, Path, pattern = "^wh_[0-9a-f]{32}$", description = "The endpoint's id (`wh_…`).")),
    responses(
        (status = 200, description = "The endpoint, active again.", body = crate::http::openapi::WebhookAnswer),
        (status = 404, description = "Not one of the account's endpoints.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn resume(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_status(state, dispatcher, caller, id.into_inner(), true).await
}

async fn set_status(
    state: web::Data<AppState>,
    dispatcher: web::Data<Dispatcher>,
    caller: Caller,
    id: String,
    active: bool,
) -> ApiResult<HttpResponse> {
    let dispatcher = dispatcher.into_inner();
    change(&state, &dispatcher, &caller, id.clone(), move |c, e| {
        if active {
            webhooks::resume(c, e)
        } else {
            webhooks::pause(c, e)
        }
    })
    .await?;
    let endpoint = owned(&state, &caller, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "webhook": endpoint })))
}

/// GET /api/acsp/webhooks/{id}/attempts[?limit=N]
#[utoipa::path(
    get,
    path = "/api/acsp/webhooks/{id}/attempts",
    operation_id = "list_webhook_attempts",
    tag = "webhooks",
    params(
        ("id" = String, Path, pattern = "^wh_[0-9a-f]{32}$", description = "The endpoint's id (`wh_…`)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Attempts to list (default 20)."),
    ),
    responses(
        (status = 200, description = "The endpoint and its latest attempts, newest first.", body = crate::http::openapi::AttemptsAnswer),
        (status = 404, description = "Not one of the account's endpoints.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    let q = Query::parse(&req)?;
    let limit = q
        .int("limit", 1, webhooks::ATTEMPTS_KEPT, Some(20))?
        .unwrap_or(20);
    let id = id.into_inner();
    let (endpoint, attempts) = caller
        .read(&state.store, move |c, account| {
            let e = webhooks::owned(c, account.id, &id)?.ok_or_else(not_found)?;
            let attempts = webhooks::attempts(c, &e, limit)?;
            Ok((e, attempts))
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"webhook": endpoint, "attempts": attempts})))
}
