//! Realtime routes: open_thread (threads and their connect grants), the agent
//! inbox grant, and the WebSocket endpoint that redeems grants.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::extract::{grant_refused, required, Caller, JsonBody, Query, GRANT_REFUSED};
use super::state::{resource, AppState};
use crate::access;
use crate::domain::{self, Aid, ThreadId};
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Route;
use crate::realtime::frame_limit::{self, MAX_FRAME};
use crate::realtime::grants::KeyHash;
use crate::realtime::revocation::KeyWatch;
use crate::realtime::session::{self, Heartbeat, Target};
use crate::realtime::{agent_channel, thread_channel, Grant};
use crate::store::db::{accounts, threads};

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/acsp/realtime/open", Some(Route::RealtimeOpen)).post(open_inbox))
        .service(
            resource(
                "/v1/turn-taking/actions/open_thread",
                Some(Route::OpenThread),
            )
            .post(open_thread),
        )
        .service(resource("/v1/ws", None).get_upgrade(connect));
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct OpenThreadBody {
    #[schema(format = "uuid")]
    thread_id: Option<String>,
    #[schema(value_type = Option<crate::http::openapi::Integrations>)]
    #[serde(default, deserialize_with = "crate::domain::json_value::unique_keys")]
    integrations: Option<serde_json::Value>,
    /// `false`: only re-open; a `thread_id` that names no thread is `404`
    /// (on `thread_id`) instead of a new thread, and `thread_id` is
    /// required. Default `true` (the contract's behaviour).
    create: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RealtimeOpenBody {
    #[schema(required = true, value_type = String, pattern = "^[0-9a-f]{50}$")]
    aid: Option<String>,
}

/// The `realtime` object: where and until when to connect with a grant.
#[derive(Serialize, utoipa::ToSchema)]
struct RealtimeObject {
    connect_url: String,
    expires_at: String,
}

/// The thread object of `open_thread`'s answer (a turn-taking thread as its
/// opener sees it).
#[derive(Serialize, utoipa::ToSchema)]
struct OpenedThread {
    id: String,
    user_id: String,
    created_at: String,
    updated_at: String,
}

/// The answer to `open_thread`.
#[derive(Serialize, utoipa::ToSchema)]
struct OpenThreadAnswer {
    thread: OpenedThread,
    channel: String,
    realtime: RealtimeObject,
}

/// The answer to `realtime/open`.
#[derive(Serialize, utoipa::ToSchema)]
struct InboxAnswer {
    channel: String,
    realtime: RealtimeObject,
}

/// Checks `integrations`: an object whose `social_signals`, when present,
/// is an object whose `channel_id`, when present, is a string. `null`
/// counts as absent there too, as everywhere in a body (so
/// `"social_signals": null` leaves social signals off).
fn parse_integrations(value: serde_json::Value) -> ApiResult<String> {
    let serde_json::Value::Object(obj) = &value else {
        return Err(ApiError::field(
            "integrations",
            "integrations must be a JSON object",
        ));
    };
    match obj.get("social_signals") {
        None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::field(
                "integrations.social_signals",
                "integrations.social_signals must be a JSON object",
            ))
        }
    }
    if let Some(channel) = obj.get("social_signals").and_then(|s| s.get("channel_id")) {
        if !channel.is_string() && !channel.is_null() {
            return Err(ApiError::field(
                "integrations.social_signals.channel_id",
                "integrations.social_signals.channel_id must be a string",
            ));
        }
    }
    let text = value.to_string();
    if text.len() > domain::Metadata::MAX_BYTES {
        return Err(ApiError::field(
            "integrations",
            format!(
                "integrations must be at most {} serialized",
                domain::limits::kib(domain::Metadata::MAX_BYTES)
            ),
        ));
    }
    Ok(text)
}

/// The `realtime` object of a grant minted by the caller's key.
async fn realtime_object(
    state: &AppState,
    grant: Grant,
    caller: &Caller,
) -> ApiResult<RealtimeObject> {
    let (token, expires_at) = state.grants.mint(grant, caller.key_hash()).await?;
    Ok(RealtimeObject {
        connect_url: format!("{}/v1/ws?c={token}", state.ws_base),
        expires_at: domain::format_time(expires_at),
    })
}

/// POST /v1/turn-taking/actions/open_thread
#[utoipa::path(
    post,
    path = "/v1/turn-taking/actions/open_thread",
    tag = "turn-taking",
    request_body(content = Option<OpenThreadBody>, description = "Optional: an empty body opens a new thread."),
    responses(
        (status = 200, description = "The thread (new or existing) and a single-use grant for its socket.", body = OpenThreadAnswer),
        (status = 404, description = "`thread_id` names no thread the caller may see.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn open_thread(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Option<OpenThreadBody>>,
) -> ApiResult<HttpResponse> {
    let body = body.unwrap_or(OpenThreadBody {
        thread_id: None,
        integrations: None,
        create: None,
    });
    let requested = body
        .thread_id
        .map(|id| ThreadId::parse("thread_id", &id))
        .transpose()?;
    let create = body.create.unwrap_or(true);
    if !create && requested.is_none() {
        return Err(ApiError::field(
            "thread_id",
            "thread_id is required when create is false (there is nothing to re-open)",
        ));
    }
    let integrations = body.integrations.map(parse_integrations).transpose()?;
    let (thread, account) = caller
        .write(&state.store, move |ctx, account| {
            let id = requested.unwrap_or_default();
            let thread = match threads::by_id(ctx.conn, id)? {
                // Re-open only (e.g. a wait on a thread deleted meanwhile):
                // the same answer as a thread the caller may not see.
                None if !create => return Err(ApiError::thread_not_found()),
                None => threads::create_turn(ctx, account.id, id, integrations.as_deref())?,
                Some(t) if access::visible_to_account(&t, account.id) => {
                    if let Some(i) = &integrations {
                        threads::set_integrations(ctx.conn, &t, i)?;
                    }
                    access::thread_for_account(ctx.conn, account.id, id)?
                }
                Some(_) => return Err(ApiError::thread_not_found()),
            };
            Ok((thread, account.clone()))
        })
        .await
        .map_err(|e| e.not_found_on("thread_id"))?;
    let realtime = realtime_object(
        &state,
        Grant::Thread {
            thread_id: thread.view.id.clone(),
            account_id: account.id,
        },
        &caller,
    )
    .await?;
    Ok(HttpResponse::Ok().json(OpenThreadAnswer {
        channel: thread_channel(&thread.view.id),
        thread: OpenedThread {
            id: thread.view.id,
            user_id: account.user_id,
            created_at: thread.view.created_at,
            updated_at: thread.view.updated_at,
        },
        realtime,
    }))
}

/// POST /api/acsp/realtime/open
#[utoipa::path(
    post,
    path = "/api/acsp/realtime/open",
    tag = "realtime",
    request_body = RealtimeOpenBody,
    responses(
        (status = 200, description = "A single-use grant for the agent's inbox socket.", body = InboxAnswer),
        (status = 403, description = "`aid` is not one of the account's agents.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn open_inbox(
    state: web::Data<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RealtimeOpenBody>,
) -> ApiResult<HttpResponse> {
    let aid = Aid::parse("aid", &required("aid", body.aid)?)?;
    let agent = caller
        .read(&state.store, move |conn, account| {
            access::acting_agent(conn, account.id, &aid)
        })
        .await?;
    let realtime = realtime_object(
        &state,
        Grant::Agent {
            aid: agent.aid.clone(),
            account_id: agent.account_id,
        },
        &caller,
    )
    .await?;
    Ok(HttpResponse::Ok().json(InboxAnswer {
        channel: agent_channel(&agent.aid),
        realtime,
    }))
}

/// GET /v1/ws?c=GRANT[&after=SEQ]
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    tag = "realtime",
    description = "The WebSocket upgrade: a stream of JSON event frames for the grant's channel (see the README's Realtime section). Not a JSON route.",
    params(
        ("c" = String, Query, description = "The grant (from `connect_url`)."),
        ("after" = Option<i64>, Query, minimum = 0, description = "Replay a thread's messages with a higher seq first."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 401, description = "Unknown, used or expired grant.", body = crate::http::openapi::ErrorEnvelope),
        (status = 404, description = "The grant's thread was deleted since the grant was issued: do not retry.", body = crate::http::openapi::ErrorEnvelope),
    )
)]
pub async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let q = Query::parse(&req)?;
    let after = q.int("after", 0, i64::MAX, None)?;
    let token = q.get("c").unwrap_or_default();
    // Refuse a bad grant before anything else, but use a good one up only
    // once the request is known to be a WebSocket handshake.
    if !state.grants.live_anywhere(token).await {
        return Err(grant_refused(&req, GRANT_REFUSED));
    }
    // actix-ws checks the handshake and decodes what the client sends; what
    // the server sends is our own body (see `realtime::body`).
    if let Some(refused) = handshake_refused(&req) {
        return Ok(refused);
    }
    let body = frame_limit::limited(&req, body)?;
    let (response, _, incoming) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::invalid("expected a WebSocket upgrade request"))?;
    let incoming = incoming.max_frame_size(MAX_FRAME);
    let (grant, key_watch) = redeem_live(&state, token, GRANT_REFUSED)
        .await
        .map_err(|e| grant_refused(&req, e))?;
    let target = match grant {
        Grant::Thread {
            thread_id,
            account_id,
        } => Target::Thread {
            thread_id: ThreadId::parse("thread_id", &thread_id)?,
            account_id,
            after,
        },
        Grant::Agent { aid, .. } => Target::Agent { aid },
    };
    // Join before answering: once the client has its 101, nothing it then
    // causes can be published before the socket is listening.
    let joined = session::join(&state.hub, &state.store, target).await?;
    let heartbeat = Heartbeat {
        interval: Duration::from_secs(state.config.ws_ping_secs),
        timeout: Duration::from_secs(state.config.ws_timeout_secs),
    };
    let (socket_body, session) = session::open(
        joined,
        Arc::clone(&state.hub),
        state.store.clone(),
        heartbeat,
        key_watch,
    );
    actix_web::rt::spawn(session.run(incoming));
    let mut response = response.set_body(socket_body).map_into_boxed_body();
    // A client that takes no byte of what is written to it for twice the
    // heartbeat's timeout is dropped, close frame or not: without this, one
    // that stopped reading held its connection forever once the kernel's
    // buffers were full (vendor/actix-http/PATCHES.md). Twice: the session
    // gives such a client the timeout before it closes (1008, or 4008 for
    // a replay or a queue that cannot move), and the close as long again
    // to reach a client that reads again. The bound holds at the close
    // too (for bytes the kernel could not send yet), so a session that ends
    // before its writes stall leaves no orphaned socket behind either.
    response
        .extensions_mut()
        .insert(actix_http::h1::StreamWriteTimeout(heartbeat.timeout * 2));
    Ok(response)
}

/// The one WebSocket version there is (RFC 6455).
const WS_VERSION: &str = "13";

/// The refusal (422, the grant left unused) of a request that is not a
/// WebSocket handshake, naming the header at fault. One over HTTP/1.0 is refused too
/// (RFC 6455 §4.1 asks for 1.1: an HTTP/1.0 server ignores `Upgrade`); it
/// was upgraded, with an `HTTP/1.0 101`. A missing or other
/// `Sec-WebSocket-Version` is answered with the version the server speaks
/// in that header, as RFC 6455 §4.4 requires.
fn handshake_refused(req: &HttpRequest) -> Option<HttpResponse> {
    use actix_http::ws::verify_handshake;
    use actix_web::http::header::{HeaderName, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
    use actix_web::http::Version;
    if req.version() < Version::HTTP_11 {
        return Some(HttpResponse::from_error(ApiError::invalid(
            "a WebSocket handshake needs HTTP/1.1 (RFC 6455)",
        )));
    }
    // A handshake is a GET without a body (RFC 6455 §4.1); a body's bytes
    // would be read as the client's first frames once upgraded.
    let headers = req.headers();
    let with_body = headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if with_body {
        return Some(HttpResponse::from_error(ApiError::invalid(
            "a WebSocket handshake has no body",
        )));
    }
    // Neither may be sent twice (RFC 6455 §11.3.1, §4.1: one nonce, and a
    // version that is 13): which one the client meant is a guess, and
    // actix reads the first, so `13` then `8` was taken and `8` then `13`
    // refused.
    let twice = |name: HeaderName| headers.get_all(name).nth(1).is_some();
    let refused = if twice(SEC_WEBSOCKET_KEY) {
        Some((
            "Sec-WebSocket-Key",
            "send one Sec-WebSocket-Key header: this request has more than one",
        ))
    } else if twice(SEC_WEBSOCKET_VERSION) {
        Some((
            "Sec-WebSocket-Version",
            "send one Sec-WebSocket-Version header (13): this request has more than one",
        ))
    } else {
        None
    };
    // `websocket` must be one of the protocols `Upgrade` lists (RFC 6455
    // §4.2.1; the header is a list, RFC 9110 §7.8), as the HTTP layer reads
    // it to hand the connection over: actix's check took any value holding
    // the word (`websocket/13`), which the HTTP layer does not upgrade.
    let lists_websocket = headers.get_all(UPGRADE).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    let refused = match refused {
        None if !lists_websocket => {
            Some(("Upgrade", "a WebSocket handshake needs Upgrade: websocket"))
        }
        refused => refused,
    };
    let (field, message) = match refused {
        Some(refused) => refused,
        None => match handshake_error(verify_handshake(req.head()).err()?) {
            Some(named) => named,
            None => {
                return Some(HttpResponse::from_error(ApiError::invalid(
                    "expected a WebSocket upgrade request",
                )))
            }
        },
    };
    let mut res = HttpResponse::from_error(ApiError::field(field, message));
    if field == "Sec-WebSocket-Version" {
        res.headers_mut().insert(
            SEC_WEBSOCKET_VERSION,
            actix_web::http::header::HeaderValue::from_static(WS_VERSION),
        );
    }
    Some(res)
}

/// The header at fault in a handshake actix refuses, and what to say;
/// `None` for the one refusal that is no header's (not a `GET`).
fn handshake_error(e: actix_http::ws::HandshakeError) -> Option<(&'static str, &'static str)> {
    use actix_http::ws::HandshakeError;
    Some(match e {
        HandshakeError::NoWebsocketUpgrade => {
            ("Upgrade", "a WebSocket handshake needs Upgrade: websocket")
        }
        HandshakeError::NoConnectionUpgrade => (
            "Connection",
            "a WebSocket handshake needs Connection: Upgrade",
        ),
        HandshakeError::NoVersionHeader | HandshakeError::UnsupportedVersion => (
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Version must be 13 (RFC 6455)",
        ),
        HandshakeError::BadWebsocketKey => (
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)",
        ),
        HandshakeError::GetMethodRequired => return None,
    })
}

/// Uses a grant up (`refused` if it is unknown, used or expired) and checks
/// that the key that minted it is still live. The watch on that key is taken
/// before the check: a revocation committed after the check then reaches
/// the socket or stream through the watcher (`realtime::revocation`).
pub(super) async fn redeem_live(
    state: &AppState,
    token: &str,
    refused: ApiError,
) -> ApiResult<(Grant, KeyWatch)> {
    let (grant, key) = state.grants.take(token).await?.ok_or(refused)?;
    let key_watch = state.revocations.watch(key);
    minting_key_is_live(state, key).await?;
    Ok((grant, key_watch))
}

/// 401 if the login key that minted a grant has been revoked.
pub(super) async fn minting_key_is_live(state: &AppState, key: KeyHash) -> ApiResult<()> {
    let live = state
        .store
        .read(move |c| accounts::authenticate(c, &key))
        .await?;
    match live {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized(
            "the login key that opened this grant has been revoked",
        )),
    }
}
