//! Turn-taking actions: submit_messages, respond, record_event; and the
//! thread's turns read back (each batch's decision and its reply parts).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::extract::{required, Caller, JsonBody, Query};
use super::json::Object;
use super::state::{resource, AppState};
use crate::access;
use crate::domain::limits::{
    MAX_TURN_BATCH as MAX_BATCH, SYSTEM_PROMPT_CHARS as MAX_SYSTEM_PROMPT,
};
use crate::domain::text::{SenderName, TurnContent};
use crate::domain::ThreadId;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Route;
use crate::store::db::turn::{self, Inbound, Respond, Scheduled, TurnView};
use crate::turn::policy;
use crate::turn::scheduler::now_ms;
use crate::turn::split;

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(
            "/v1/turn-taking/actions/submit_messages",
            Some(Route::SubmitMessages),
        )
        .post(submit_messages),
    )
    .service(resource("/v1/turn-taking/actions/respond", Some(Route::Respond)).post(respond))
    .service(
        resource(
            "/v1/turn-taking/actions/record_event",
            Some(Route::RecordEvent),
        )
        .post(record_event),
    )
    .service(
        // A read like a thread's history, under the same quota.
        resource(
            "/v1/turn-taking/threads/{thread_id}/turns",
            Some(Route::ThreadGet),
        )
        .get(list_turns),
    );
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SubmitBody {
    #[schema(required = true, value_type = String, format = "uuid")]
    thread_id: Option<String>,
    #[schema(required = true, value_type = Vec<SubmitMessage>, min_items = 1, max_items = 20)]
    messages: Option<Vec<Object<SubmitMessage>>>,
    #[schema(max_length = 8000)]
    system_prompt: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SubmitMessage {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 255)]
    sender: Option<String>,
    #[schema(required = true, value_type = String, min_length = 1, max_length = 4000)]
    content: Option<String>,
    #[schema(format = DateTime)]
    client_ts: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RespondBody {
    #[schema(required = true, value_type = String, format = "uuid")]
    thread_id: Option<String>,
    /// Not blank: at least one character that is not white space.
    #[schema(
        required = true,
        value_type = String,
        min_length = 1,
        max_length = 4000,
        pattern = "[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    content: Option<String>,
    /// The `turn_epoch` of the batch replied to: behind the thread's
    /// current one, the reply is superseded; ahead of it, 422.
    // Read as any JSON value and checked by `parse_epoch`, so that a
    // number out of range is refused in words that give the range.
    #[schema(required = true, value_type = i64, minimum = 0)]
    turn_epoch: Option<serde_json::Value>,
    #[schema(max_length = 8000)]
    system_prompt: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RecordEventBody {
    #[schema(required = true, value_type = String, format = "uuid")]
    thread_id: Option<String>,
    #[serde(rename = "type")]
    #[schema(required = true, value_type = crate::http::openapi::TurnEventType)]
    kind: Option<String>,
    #[schema(required = true, value_type = String, min_length = 1, max_length = 255)]
    sender: Option<String>,
    #[schema(format = DateTime)]
    client_ts: Option<String>,
}

/// The answer to `submit_messages`.
#[derive(Serialize, utoipa::ToSchema)]
struct SubmitAnswer {
    #[schema(value_type = crate::domain::kinds::DecisionName)]
    decision: &'static str,
    turn_epoch: i64,
    #[schema(value_type = Vec<crate::domain::kinds::TurnTagName>)]
    tags: Vec<&'static str>,
}

/// The answer to `respond`: the parts scheduled, or none if a newer turn
/// superseded this reply.
#[derive(Serialize, utoipa::ToSchema)]
struct RespondAnswer {
    scheduled: Vec<Scheduled>,
    superseded: bool,
}

/// A page of a thread's turns, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct TurnsPage {
    turns: Vec<TurnView>,
    has_more: bool,
}

/// The answer to `record_event`.
#[derive(Serialize, utoipa::ToSchema)]
struct RecordEventAnswer {
    #[schema(value_type = Vec<String>, max_items = 0)]
    tags: [&'static str; 0],
}

fn parse_thread_id(raw: Option<String>) -> ApiResult<ThreadId> {
    ThreadId::parse("thread_id", &required("thread_id", raw)?)
}

fn check_system_prompt(prompt: &Option<String>) -> ApiResult<()> {
    if prompt
        .as_ref()
        .is_some_and(|p| p.chars().count() > MAX_SYSTEM_PROMPT)
    {
        return Err(ApiError::field(
            "system_prompt",
            format!("system_prompt must be at most {MAX_SYSTEM_PROMPT} characters"),
        ));
    }
    Ok(())
}

/// `respond`'s `turn_epoch`: an integer from 0 to `i64::MAX`, refused in
/// words that give the range when it is outside (see
/// [`super::json::integer_in`]; `-0` reads as 0).
fn parse_epoch(value: serde_json::Value) -> ApiResult<i64> {
    super::json::integer_in("turn_epoch", &value, 0, i64::MAX)
}

/// Parses an RFC 3339 time into Unix ms.
fn parse_ts(field: &str, raw: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::field(field, format!("{field} must be an RFC 3339 time")))
}

/// POST /v1/turn-taking/actions/submit_messages
#[utoipa::path(
    post,
    path = "/v1/turn-taking/actions/submit_messages",
    tag = "turn-taking",
    request_body = SubmitBody,
    responses(
        (status = 200, description = "The decision for this batch, its turn and tags.", body = SubmitAnswer),
        (status = 404, description = "No such thread, or the caller may not see it.", body = crate::http::openapi::ErrorEnvelope),
        (status = 409, description = "`THREAD_NOT_ACTIVE`.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn submit_messages(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SubmitBody>,
) -> ApiResult<HttpResponse> {
    let thread_id = parse_thread_id(body.thread_id)?;
    let raw = required("messages", body.messages)?;
    if raw.is_empty() || raw.len() > MAX_BATCH {
        return Err(ApiError::field(
            "messages",
            format!("messages must have 1–{MAX_BATCH} items"),
        ));
    }
    check_system_prompt(&body.system_prompt)?;
    let received = now_ms();
    let mut batch = Vec::with_capacity(raw.len());
    for (i, Object(m)) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("messages[{i}].{name}");
        let sender = SenderName::parse(&field("sender"), required(&field("sender"), m.sender)?)?;
        let content =
            TurnContent::parse(&field("content"), required(&field("content"), m.content)?)?;
        let client_ts = m
            .client_ts
            .map(|ts| parse_ts(&field("client_ts"), &ts))
            .transpose()?;
        let at_ms = policy::message_time(client_ts, received);
        batch.push(Inbound {
            sender: sender.into_string(),
            content: content.into_string(),
            at_ms,
        });
    }
    let decision = policy::decide(
        state.config.turn_policy,
        batch.iter().map(|m| m.content.as_str()),
    );
    let senders: Vec<String> = batch.iter().map(|m| m.sender.clone()).collect();
    let (epoch, tags) = caller
        .write(&state.store, move |ctx, account| {
            let thread = access::thread_for_account(ctx.conn, account.id, thread_id)?;
            let thread = access::active(access::turn_taking(thread)?)?;
            let submitted = turn::submit(ctx, &thread, &batch, received)?;
            let tags = if policy::social_signals(&thread) {
                policy::tags(&submitted.timing)
            } else {
                Vec::new()
            };
            turn::record_decision(ctx, &thread, &submitted, decision, &tags)?;
            Ok((submitted.epoch, tags))
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    for sender in &senders {
        state.scheduler.sender_spoke(thread_id, sender);
    }
    // Cancelled parts change what is due next.
    state.scheduler.wake();
    Ok(HttpResponse::Ok().json(SubmitAnswer {
        decision,
        turn_epoch: epoch,
        tags,
    }))
}

/// POST /v1/turn-taking/actions/respond
#[utoipa::path(
    post,
    path = "/v1/turn-taking/actions/respond",
    tag = "turn-taking",
    request_body = RespondBody,
    responses(
        (status = 200, description = "The reply's parts as scheduled, or `superseded`.", body = RespondAnswer),
        (status = 404, description = "No such thread, or the caller may not see it.", body = crate::http::openapi::ErrorEnvelope),
        (status = 409, description = "`THREAD_NOT_ACTIVE`; or `TOO_MANY_PENDING_PARTS`: the reply would leave more than 1,000 parts of the thread waiting for delivery (nothing is stored).", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn respond(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RespondBody>,
) -> ApiResult<HttpResponse> {
    let thread_id = parse_thread_id(body.thread_id)?;
    let content = TurnContent::parse("content", required("content", body.content)?)?;
    let epoch = parse_epoch(required("turn_epoch", body.turn_epoch)?)?;
    check_system_prompt(&body.system_prompt)?;
    let parts = split::split_reply(content.as_str());
    if parts.is_empty() {
        return Err(ApiError::field("content", "content must not be blank"));
    }
    let offsets: Vec<i64> = split::schedule(&parts, state.config.pace_scale)
        .iter()
        .map(|d| d.as_millis() as i64)
        .collect();
    let now = now_ms();
    let outcome = caller
        .write(&state.store, move |ctx, account| {
            let thread = access::thread_for_account(ctx.conn, account.id, thread_id)?;
            let thread = access::active(access::turn_taking(thread)?)?;
            turn::schedule(ctx, &thread, epoch, &parts, &offsets, now)
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    match outcome {
        Respond::Superseded => Ok(HttpResponse::Ok().json(RespondAnswer {
            scheduled: Vec::new(),
            superseded: true,
        })),
        Respond::Scheduled(scheduled) => {
            state.scheduler.wake();
            Ok(HttpResponse::Ok().json(RespondAnswer {
                scheduled,
                superseded: false,
            }))
        }
    }
}

/// POST /v1/turn-taking/actions/record_event
#[utoipa::path(
    post,
    path = "/v1/turn-taking/actions/record_event",
    tag = "turn-taking",
    request_body = RecordEventBody,
    responses(
        (status = 200, description = "Always `{\"tags\": []}`.", body = RecordEventAnswer),
        (status = 404, description = "No such thread, or the caller may not see it.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn record_event(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RecordEventBody>,
) -> ApiResult<HttpResponse> {
    let thread_id = parse_thread_id(body.thread_id)?;
    let kind = required("type", body.kind)?;
    if !matches!(
        kind.as_str(),
        "typing_start" | "typing_stop" | "message_edited"
    ) {
        return Err(ApiError::field(
            "type",
            "type must be one of typing_start, typing_stop, message_edited",
        ));
    }
    let sender = SenderName::parse("sender", required("sender", body.sender)?)?;
    if let Some(ts) = &body.client_ts {
        parse_ts("client_ts", ts)?;
    }
    let thread = caller
        .read(&state.store, move |c, account| {
            access::turn_taking(access::thread_for_account(c, account.id, thread_id)?)
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    if kind == "typing_start" && policy::social_signals(&thread) {
        state
            .scheduler
            .typing_started(thread_id, &thread, sender.into_string());
    }
    Ok(HttpResponse::Ok().json(RecordEventAnswer { tags: [] }))
}

/// GET /v1/turn-taking/threads/{thread_id}/turns?limit=&before=
#[utoipa::path(
    get,
    path = "/v1/turn-taking/threads/{thread_id}/turns",
    tag = "turn-taking",
    params(
        ("thread_id" = String, Path, format = "uuid", description = "A turn-taking thread's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Turns per page (default 20)."),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only turns with a lower epoch (the next page)."),
    ),
    responses(
        (status = 200, description = "The thread's turns, newest first: each batch's decision and tags and its reply parts.", body = TurnsPage),
        (status = 404, description = "No such thread, or the caller may not see it.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_turns(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let thread_id = ThreadId::parse("thread_id", &path.into_inner())?;
    let q = Query::parse(&req)?;
    let limit = q.int("limit", 1, 100, Some(20))?.unwrap_or(20);
    let before = q.int("before", 1, i64::MAX, None)?;
    let (turns, has_more) = caller
        .read(&state.store, move |conn, account| {
            let thread =
                access::turn_taking(access::thread_for_account(conn, account.id, thread_id)?)?;
            turn::turns_page(conn, thread.row_id, before, limit)
        })
        .await?;
    Ok(HttpResponse::Ok().json(TurnsPage { turns, has_more }))
}
