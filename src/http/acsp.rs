//! The ACSP threads API: create, message, get, status, list.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::{required, Caller, JsonBody, Query, RawJson};
use super::state::{resource, AppState};
use crate::access;
use crate::domain::text::{Content, Subject};
use crate::domain::{Aid, IdempotencyKey, Metadata, MsgType, StatusFilter, ThreadId, ThreadStatus};
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Route;
use crate::store::db::messages::JsonPage;
use crate::store::db::{accounts, messages, threads};
use crate::store::model::{Incarnation, Message, Thread, ThreadSummary};
use crate::store::pages::FinalPage;
use crate::store::WriteHint;

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use Route::*;
    cfg.service(resource("/api/acsp/thread/create", Some(ThreadCreate)).post(create_thread))
        .service(resource("/api/acsp/thread/message", Some(ThreadMessage)).post(post_message))
        .service(resource("/api/acsp/thread/status", Some(ThreadStatus)).post(set_status))
        .service(resource("/api/acsp/thread", Some(ThreadGet)).get(get_thread))
        .service(resource("/api/acsp/thread/{thread_id}", Some(ThreadGet)).get(get_thread))
        .service(resource("/api/acsp/threads", Some(ThreadList)).get(list_threads));
}

// Responses are serialized straight from these (no intermediate JSON tree).

#[derive(Serialize, utoipa::ToSchema)]
struct ThreadBody {
    thread: Thread,
}

// Describes the 201 body `message_body` writes; never built (serialized
// only by the test that checks the two agree).
#[allow(dead_code)]
#[derive(Serialize, utoipa::ToSchema)]
struct MessageBody {
    #[schema(value_type = Message)]
    message: Arc<Message>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ThreadList {
    threads: Vec<ThreadSummary>,
    total: i64,
    has_more: bool,
}

/// The answer to a status change.
#[derive(Serialize, utoipa::ToSchema)]
struct StatusAnswer {
    thread_id: String,
    /// The same id, under the name older clients read.
    session_id: String,
    #[schema(value_type = crate::http::openapi::ThreadStatusName)]
    status: &'static str,
    updated_at: String,
}

/// `{"thread": …, "messages": […], "has_more": …}`: the read page. Its
/// messages are the stored JSON of each, concatenated, never re-encoded (a
/// measured speed-up), and sent as they are kept: the body is three parts,
/// the thread, the shared array and the end, so a kept page is not copied
/// into each answer (another measured speed-up). The page is written out
/// here and in [`page_head`], in one place.
fn page_body(head: Bytes, array: Bytes, has_more: bool) -> PageBody {
    // The final newline every JSON body ends with, written here so the
    // middleware need not copy a page to add it.
    let tail: &'static [u8] = if has_more {
        b",\"has_more\":true}\n"
    } else {
        b",\"has_more\":false}\n"
    };
    let parts = [head, array, Bytes::from_static(tail)];
    let size = parts.iter().map(|p| p.len() as u64).sum();
    SizedStream::new(size, futures_util::stream::iter(parts.map(Ok)))
}

/// The start of a page's answer, up to its messages: `{"thread":…,"messages":`.
fn page_head(thread: &Thread) -> ApiResult<Bytes> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"{\"thread\":");
    serde_json::to_writer(&mut head, thread)
        .map_err(|e| ApiError::Internal(format!("serializing a thread: {e}")))?;
    head.extend_from_slice(b",\"messages\":");
    Ok(head.into())
}

/// A page's body: its parts in turn, its size known up front.
type PageBody =
    SizedStream<futures_util::stream::Iter<std::array::IntoIter<Result<Bytes, Infallible>, 3>>>;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateThreadBody {
    #[schema(required = true, value_type = String, pattern = "^[0-9a-f]{50}$")]
    aid: Option<String>,
    /// An existing agent, not `aid` itself.
    #[schema(required = true, value_type = String, pattern = "^[0-9a-f]{50}$")]
    target_aid: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    subject: Option<String>,
    #[schema(min_length = 1, max_length = 2048)]
    first_message: Option<String>,
    /// At most 16 KiB serialized.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
}

// Its strings borrow from the request's body where they hold no escape
// (`Text`): the AID, thread id and type are checked, never kept as sent.
// (Not a doc comment: it would become the schema's description.)
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PostMessageBody<'a> {
    #[serde(borrow)]
    #[schema(required = true, value_type = String, pattern = "^[0-9a-f]{50}$")]
    aid: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(required = true, value_type = String, format = "uuid")]
    thread_id: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(required = true, value_type = String, min_length = 1, max_length = 2048)]
    content: Option<Text<'a>>,
    #[serde(borrow)]
    /// `text` when absent.
    #[schema(value_type = Option<crate::http::openapi::MsgTypeName>)]
    msg_type: Option<Text<'a>>,
    /// At most 16 KiB serialized.
    #[serde(borrow)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetStatusBody {
    #[schema(required = true, value_type = String, pattern = "^[0-9a-f]{50}$")]
    aid: Option<String>,
    #[schema(required = true, value_type = String, format = "uuid")]
    thread_id: Option<String>,
    #[schema(required = true, value_type = crate::http::openapi::ThreadStatusName)]
    status: Option<String>,
}

/// POST /api/acsp/thread/create
#[utoipa::path(
    post,
    path = "/api/acsp/thread/create",
    tag = "acsp",
    request_body = CreateThreadBody,
    responses(
        (status = 201, description = "The new thread.", body = ThreadBody),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "`target_aid` does not exist.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn create_thread(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateThreadBody>,
) -> ApiResult<HttpResponse> {
    let aid = Aid::parse("aid", &required("aid", body.aid)?)?;
    let target_aid = Aid::parse("target_aid", &required("target_aid", body.target_aid)?)?;
    let subject = body
        .subject
        .map(|s| Subject::parse("subject", s))
        .transpose()?;
    let first_message = body
        .first_message
        .map(|s| Content::parse("first_message", s))
        .transpose()?;
    let metadata = Metadata::parse("metadata", body.metadata.as_deref())?;
    if aid == target_aid {
        return Err(ApiError::field(
            "target_aid",
            "target_aid must be another agent than aid",
        ));
    }
    let thread = caller
        .write(&state.store, move |ctx, account| {
            let creator = access::acting_agent(ctx.conn, account.id, &aid)?;
            let target = accounts::agent_by_aid(ctx.conn, &target_aid)?.ok_or_else(|| {
                ApiError::NotFound("no agent with that target_aid".into()).on_field("target_aid")
            })?;
            threads::create_acsp(
                ctx,
                threads::NewAcspThread {
                    creator,
                    target,
                    subject,
                    metadata,
                    first_message,
                },
            )
        })
        .await?;
    Ok(HttpResponse::Created().json(ThreadBody { thread }))
}

/// POST /api/acsp/thread/message
#[utoipa::path(
    post,
    path = "/api/acsp/thread/message",
    tag = "acsp",
    request_body = PostMessageBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = "^[ -~]+$", description = "1–128 printable ASCII characters. A retry with the same key, from the same account to the same thread, returns the original message and stores nothing.")),
    responses(
        (status = 201, description = "The stored message.", body = MessageBody),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "No such thread, or the agent is not in it.", body = crate::http::openapi::ErrorEnvelope),
        (status = 409, description = "`THREAD_NOT_ACTIVE`: the thread is closed or archived.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn post_message(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    raw: RawJson,
) -> ApiResult<HttpResponse> {
    let body: PostMessageBody<'_> = raw.parse()?;
    let aid = Aid::parse("aid", &required("aid", body.aid)?.0)?;
    let thread_id = ThreadId::parse("thread_id", &required("thread_id", body.thread_id)?.0)?;
    let content = Content::parse("content", required("content", body.content)?.0.into_owned())?;
    let msg_type = match body.msg_type {
        Some(t) => MsgType::parse("msg_type", &t.0)?,
        None => MsgType::Text,
    };
    let metadata = Metadata::parse("metadata", body.metadata)?;
    // The body is done with (nothing borrows it past here): not held
    // while the write waits.
    drop(raw);
    // Sent twice, the key a retry is meant under is a guess: a wrong one
    // stores the message again (or answers with another one).
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY);
    let idempotency_key = match (keys.next(), keys.next()) {
        (Some(v), None) => Some(IdempotencyKey::parse(v.to_str().map_err(|_| {
            ApiError::field("Idempotency-Key", "Idempotency-Key must be printable ASCII")
        })?)?),
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "Idempotency-Key",
                "send one Idempotency-Key header: this request has more than one",
            ))
        }
        (None, _) => None,
    };
    let hint = WriteHint {
        agent: Some(aid.clone()),
        thread: Some(thread_id),
        ..WriteHint::default()
    };
    let json = caller
        .write_repeatable(&state.store, hint, move |ctx, account| {
            let sender = access::acting_agent_in(ctx, account.id, &aid)?;
            let thread = access::thread_identity_for_agent(ctx, &sender, thread_id)?;
            if let Some(key) = &idempotency_key {
                if let Some(original) =
                    messages::by_idempotency_key(ctx.conn, account.id, &thread, key)?
                {
                    // As stored when it was posted, so the retry's body is
                    // the original's: serialized again, it took the
                    // sender's name of now (an agent renamed since).
                    return match messages::stored_json(ctx.conn, &thread, original.seq)? {
                        Some(json) => Ok(json),
                        None => serde_json::value::to_raw_value(&original)
                            .map_err(|e| ApiError::Internal(format!("serializing a message: {e}"))),
                    };
                }
            }
            // 409 THREAD_NOT_ACTIVE unless active, checked as the seq is taken.
            let sent = messages::Sender::Agent(&sender);
            let posted = messages::post(ctx, &thread, sent, content.as_str(), msg_type, &metadata)?;
            if let Some(key) = &idempotency_key {
                let message = &posted.message;
                messages::remember_idempotency_key(ctx.conn, account.id, &thread, key, message)?;
            }
            Ok(posted.json)
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    Ok(HttpResponse::Created()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(message_body(&json)))
}

/// A JSON string as the body holds it when it has no escape, decoded
/// into its own buffer when it has. serde borrows a `Cow<str>` field only
/// when it is not wrapped (not in an `Option`): this one borrows in any
/// place. Refuses what a `String` refuses, in the same words ("a string").
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Named once, not parsed from text for every post.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A [`MessageBody`] around a message's JSON object as it was stored, not
/// serialized again, with the newline every JSON body ends with.
fn message_body(json: &RawValue) -> Vec<u8> {
    let json = json.get().as_bytes();
    let mut body = Vec::with_capacity(json.len() + 14);
    body.extend_from_slice(b"{\"message\":");
    body.extend_from_slice(json);
    body.extend_from_slice(b"}\n");
    body
}

/// GET /api/acsp/thread/{thread_id} and GET /api/acsp/thread?thread_id=
#[utoipa::path(
    get,
    path = "/api/acsp/thread/{thread_id}",
    tag = "acsp",
    params(
        ("thread_id" = String, Path, format = "uuid", description = "The thread's id."),
        ("aid" = Option<String>, Query, pattern = "^[0-9a-f]{50}$", description = "The agent reading (marks the page read). For an ACSP thread: required when the account owns several agents (422 without it), inferred when it owns one. Not needed for a turn-taking thread."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Messages per page (default 50)."),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Messages to skip after `after`."),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only messages with a higher seq."),
    ),
    responses(
        (status = 200, description = "The thread and a page of its messages, oldest first.", body = crate::http::openapi::ThreadPage),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "No such thread, or the caller may not see it.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_thread(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: Option<web::Path<String>>,
) -> ApiResult<HttpResponse> {
    let q = Query::parse(&req)?;
    let in_query = q.get("thread_id");
    // A 404 names `thread_id` when the query gave it (an input field); a
    // path is not one, and its 404 names none (like an unknown route's).
    let by_query = in_query.is_some();
    let thread_id = match (&path, in_query) {
        (Some(p), None) => ThreadId::parse("thread_id", p)?,
        (None, q) => ThreadId::parse("thread_id", required("thread_id", q)?)?,
        // Named twice: one thread (in either case), or which is meant is a guess.
        (Some(p), Some(q)) => {
            let id = ThreadId::parse("thread_id", p)?;
            if ThreadId::parse("thread_id", q)? != id {
                return Err(ApiError::field(
                    "thread_id",
                    "thread_id in the query names another thread than the path: send one",
                ));
            }
            id
        }
    };
    let aid = q.get("aid").map(|a| Aid::parse("aid", a)).transpose()?;
    let limit = q.int("limit", 1, 200, Some(50))?.unwrap_or(50);
    let offset = q.int("offset", 0, i64::MAX, Some(0))?.unwrap_or(0);
    let after = q.int("after", 0, i64::MAX, Some(0))?.unwrap_or(0);
    drop(q);

    let pages = state.store.pages().clone();
    let from = after.saturating_add(offset);
    // A kept page is looked up first, but used only once the checks below
    // have passed: the cache holds no permission (see store::pages). With
    // one, and an AID to read as, the read is a single statement.
    let kept = pages.get(thread_id, from, limit);
    let single = kept.is_some() && aid.is_some();
    // Reads by key only (the page's range included): run on the worker.
    let (body, mark) = caller
        .read_thread(
            &state.store,
            single,
            aid.clone(),
            thread_id,
            move |conn, account, found| {
                let access::Reading {
                    thread,
                    reader,
                    read_mark,
                } = access::reading(conn, account.id, aid.as_ref(), found)?;
                // A page kept under this id for a deleted thread is not
                // this thread's (in `single` mode this one's page is then
                // read outside the lookup's snapshot: rare, and harmless).
                let kept = kept.filter(|k| k.thread.is(thread));
                let page = match kept {
                    Some(kept) => Page::Final(kept),
                    None => match messages::page_json(conn, thread, after, limit, offset)? {
                        // A message follows it: the page can no longer change.
                        JsonPage {
                            array,
                            last_seq: Some(last_seq),
                            has_more: true,
                        } => Page::Final(pages.put(
                            thread_id,
                            from,
                            limit,
                            FinalPage {
                                array: array.into(),
                                last_seq,
                                thread: Incarnation::of(thread),
                            },
                        )),
                        open => Page::Open(open),
                    },
                };
                let (array, last_seq, has_more) = match page {
                    Page::Final(p) => (p.array.clone(), Some(p.last_seq), true),
                    Page::Open(p) => (Bytes::from(p.array), p.last_seq, p.has_more),
                };
                // Only agents whose read mark this page would raise need a write.
                let mark = match (reader, last_seq) {
                    (Some(agent), Some(last)) => {
                        let marked = match read_mark {
                            Some(m) => m,
                            None => messages::read_mark(conn, agent.id, thread.row_id)?,
                        };
                        (marked < last).then_some((agent.id, thread.row_id, last))
                    }
                    _ => None,
                };
                // `thread` is `found`'s own, so its head is kept there.
                let head = match found.page_head.get() {
                    Some(head) => head.clone(),
                    None => {
                        let head = page_head(&thread.view)?;
                        found.page_head.get_or_init(|| head).clone()
                    }
                };
                Ok((page_body(head, array, has_more), mark))
            },
        )
        .await
        .map_err(|e| {
            if by_query {
                e.not_found_on("thread_id")
            } else {
                e
            }
        })?;

    // The messages shown count as read by the agent (a high-water mark).
    if let Some((agent_id, thread_row, seq)) = mark {
        state
            .store
            .write(move |ctx| messages::mark_read(ctx.conn, agent_id, thread_row, seq))
            .await?;
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// A page of history as read: final (kept, shared) or still open.
enum Page {
    Final(Arc<FinalPage>),
    Open(JsonPage),
}

/// POST /api/acsp/thread/status
#[utoipa::path(
    post,
    path = "/api/acsp/thread/status",
    tag = "acsp",
    request_body = SetStatusBody,
    responses(
        (status = 200, description = "The thread's status now.", body = StatusAnswer),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "No such thread, or the agent is not in it.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn set_status(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SetStatusBody>,
) -> ApiResult<HttpResponse> {
    let aid = Aid::parse("aid", &required("aid", body.aid)?)?;
    let thread_id = ThreadId::parse("thread_id", &required("thread_id", body.thread_id)?)?;
    let status = ThreadStatus::parse("status", &required("status", body.status)?)?;
    let updated_at = caller
        .write(&state.store, move |ctx, account| {
            let agent = access::acting_agent(ctx.conn, account.id, &aid)?;
            let thread = access::thread_for_agent(ctx.conn, &agent, thread_id)?;
            threads::set_status(ctx, &thread, status)
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    let id = thread_id.to_text();
    Ok(HttpResponse::Ok().json(StatusAnswer {
        thread_id: id.clone(),
        session_id: id,
        status: status.as_str(),
        updated_at,
    }))
}

/// GET /api/acsp/threads
#[utoipa::path(
    get,
    path = "/api/acsp/threads",
    tag = "acsp",
    params(
        ("aid" = Option<String>, Query, pattern = "^[0-9a-f]{50}$", description = "The agent whose threads to list. Required when the account owns several agents (422 without it); inferred when it owns one."),
        ("status" = Option<crate::http::openapi::StatusFilterName>, Query, description = "`active` (default), `closed`, `archived` or `all`."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Threads per page (default 20)."),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Threads to skip."),
    ),
    responses(
        (status = 200, description = "The agent's threads, most recent activity first, with unread counts.", body = ThreadList),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_threads(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> ApiResult<HttpResponse> {
    let q = Query::parse(&req)?;
    let aid = q.get("aid").map(|a| Aid::parse("aid", a)).transpose()?;
    let filter = match q.get("status") {
        Some(s) => StatusFilter::parse("status", s)?,
        None => StatusFilter::Only(ThreadStatus::Active),
    };
    let limit = q.int("limit", 1, 100, Some(20))?.unwrap_or(20);
    let offset = q.int("offset", 0, i64::MAX, Some(0))?.unwrap_or(0);
    let (rows, total) = caller
        .read(&state.store, move |conn, account| {
            let agent = access::acting_or_only_agent(conn, account.id, aid.as_ref())?;
            threads::list_for_agent(conn, agent.id, filter, limit, offset)
        })
        .await?;
    let has_more = offset.saturating_add(rows.len() as i64) < total;
    Ok(HttpResponse::Ok().json(ThreadList {
        threads: rows,
        total,
        has_more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_201_body_is_what_serializing_the_message_body_writes() {
        let message = Message {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            thread_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c".into(),
            seq: 42,
            sender_aid: Some("ab".repeat(25)),
            sender: "ab".repeat(25),
            sender_name: "Ann \"the\" bot".into(),
            content: "quote \" backslash \\ nul \u{0} bell \u{7} tab \t line \n </script> é 😀"
                .into(),
            msg_type: "text",
            metadata: crate::store::model::raw_json(r#"{"k":["v\n",1]}"#.into()),
            created_at: "2026-11-28T21:00:00.123Z".into(),
        };
        let stored = serde_json::value::to_raw_value(&message).expect("a message serializes");
        let mut expected = serde_json::to_vec(&MessageBody {
            message: Arc::new(message),
        })
        .expect("the body serializes");
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&message_body(&stored)),
            String::from_utf8_lossy(&expected)
        );
    }
}
