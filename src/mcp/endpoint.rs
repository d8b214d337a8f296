//! `/mcp`: the MCP Streamable HTTP endpoint (rmcp's transport for
//! actix-web). Every request must carry a live login key
//! (`Authorization: Bearer nk_...`), checked as on any API route (its own
//! quota per key, then the key in the store) before rmcp sees the request;
//! the tools then call the API with that same key. A missing, unknown or
//! revoked key is `401` and counts against the client IP's quota for bad
//! keys, like any API request. A `POST`'s body is then read as any route
//! reads one (`413` over 64 KiB, `408` past `--body-timeout-secs`, `422`
//! unless it is JSON, valid all through; JSON that is not an object is
//! answered in JSON-RPC, as over stdio) before rmcp parses it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, FromRequest, HttpMessage};
use rmcp_actix_web::transport::{LocalSessionManager, StreamableHttpService};

use super::api::http_pool;
use super::jsonrpc;
use super::server::ThreadlineMcp;
use crate::domain::limits::MAX_BODY_BYTES;
use crate::domain::LoginKey;
use crate::error::ApiError;
use crate::http::extract::{bearer_key, check_json_object, read_body_whole, Caller};
use crate::http::AppState;
use crate::metrics::RoutePattern;
use crate::ratelimit::Route;

/// The path the endpoint answers on.
pub const PATH: &str = "/mcp";

/// The checked key of an `/mcp` request, handed to the tools.
#[derive(Clone)]
pub struct CallerKey(pub LoginKey);

/// Says when the client of an `/mcp` request is gone (its answer dropped
/// unsent: the connection closed): `wait_for_messages` then stops waiting,
/// rather than hold its socket to the end of its timeout.
#[derive(Clone)]
pub struct ClientGone(tokio::sync::watch::Receiver<()>);

impl ClientGone {
    /// Resolves once the request's answer has been dropped.
    pub async fn wait(mut self) {
        // Nothing is ever sent: `changed` ends when the sender is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

/// An answer's body that holds the sender of its request's [`ClientGone`]:
/// dropping the body (sent, or given up with the connection) drops it.
struct Guarded {
    body: BoxBody,
    _gone: tokio::sync::watch::Sender<()>,
}

impl MessageBody for Guarded {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// The `/mcp` endpoint of one server: rmcp's transport, shared by every
/// worker.
#[derive(Clone)]
pub struct Endpoint {
    service: StreamableHttpService<ThreadlineMcp, LocalSessionManager>,
}

/// The address to call the server's own API on: the bound one, with a
/// wildcard address (`0.0.0.0`, `::`) replaced by loopback.
pub fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Endpoint {
    /// The endpoint of a server whose API answers at `base` (see
    /// [`loopback_url`]); its calls there carry the header `internal`
    /// (name, value), so the server does not count them against the
    /// per-IP connection cap (see `http::limits::INTERNAL_HEADER`).
    pub fn new(base: &str, internal: (&'static str, String)) -> Endpoint {
        let http = http_pool();
        let base: Arc<str> = Arc::from(base.trim_end_matches('/'));
        let internal = (internal.0, Arc::<str>::from(internal.1));
        let factory = move || {
            Ok(ThreadlineMcp::per_request(
                http.clone(),
                base.clone(),
                internal.clone(),
            ))
        };
        let service = StreamableHttpService::builder()
            .service_factory(Arc::new(factory))
            .session_manager(Arc::new(LocalSessionManager::default()))
            // Stateless: each request stands alone, with its own key; the
            // server keeps no session per client to leak or to expire.
            .stateful_mode(false)
            .max_request_body_bytes(MAX_BODY_BYTES)
            // rmcp's default accepts only loopback `Host`s, against DNS
            // rebinding of unauthenticated local servers. Every request here
            // needs a login key that a rebound page does not have, and the
            // server may be reached under any name (--public-url, a proxy).
            .allowed_hosts(Vec::new())
            .on_request_fn(|req, extensions| {
                if let Some(key) = req.extensions().get::<CallerKey>() {
                    extensions.insert(key.clone());
                }
                if let Some(gone) = req.extensions().get::<ClientGone>() {
                    extensions.insert(gone.clone());
                }
            })
            .build();
        Endpoint { service }
    }

    /// Registers `/mcp` behind the key check.
    pub fn mount(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(
            self.service
                .clone()
                .scope_with_path(PATH)
                .app_data(RoutePattern(PATH))
                .app_data(Route::Mcp)
                .wrap(from_fn(Self::authenticate)),
        );
    }

    /// Lets a request with a live key through (its key in the request's
    /// extensions); answers anything else itself.
    async fn authenticate(
        mut req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        // The scope matches `/mcp/` and `/mcp//` too; paths are matched
        // exactly, here as on every route (the route's 404 before the key).
        if req.path() != PATH {
            let error = ApiError::NotFound(not_exactly_mcp(req.path()));
            return Ok(req.error_response(error));
        }
        match Self::live_key(&req).await {
            Ok(key) => {
                req.extensions_mut().insert(CallerKey(key));
                if req.method() == Method::POST && !accepts_json_and_events(req.headers()) {
                    // rmcp would answer 406, which the API has no code for.
                    return Ok(req.error_response(ApiError::field(
                        "Accept",
                        "Accept must list both application/json and text/event-stream \
                         (MCP's Streamable HTTP)",
                    )));
                }
                // The body as sent, kept (a reference, not a copy) for
                // judging a message rmcp cannot read.
                let mut sent = None;
                if req.method() == Method::POST {
                    // Read here, as every route reads its body: rmcp's own
                    // read has no deadline (a stalled body held the
                    // connection for good) and answers malformed JSON 415.
                    let (http_req, payload) = req.parts_mut();
                    match read_body_whole(http_req, payload).await {
                        Ok(body) => match check_head(&body) {
                            Ok(Head::Pass) => {
                                sent = Some(body.clone());
                                req.set_payload(Payload::from(body));
                            }
                            Ok(Head::Answer(answer)) => {
                                let res = actix_web::HttpResponse::Ok()
                                    .content_type("application/json")
                                    .body(answer);
                                return Ok(req.into_response(res));
                            }
                            Err(error) => return Ok(req.error_response(error)),
                        },
                        Err(error) => return Ok(req.error_response(error)),
                    }
                }
                let (gone_tx, gone_rx) = tokio::sync::watch::channel(());
                req.extensions_mut().insert(ClientGone(gone_rx));
                let res = next.call(req).await?.map_into_boxed_body();
                let res = res
                    .map_body(|_, body| Guarded {
                        body,
                        _gone: gone_tx,
                    })
                    .map_into_boxed_body();
                // rmcp's own 400s (a malformed `Host`, a protocol version
                // it does not speak, ...) carry its text, which the
                // envelope replaced with "malformed request": say which.
                // A 404 is its answer to an unknown method from a client of
                // MCP 2026-07-28 or later (older ones get a 200 with the
                // JSON-RPC error), which the envelope called "no such route".
                let status = res.status();
                let rewritten = [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND];
                if rewritten.contains(&status) && res.response().error().is_none() {
                    let (req, res) = res.into_parts();
                    let said = actix_web::body::to_bytes_limited(res.into_body(), RMCP_SAID_BYTES)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    let error = match status {
                        StatusCode::NOT_FOUND => {
                            ApiError::NotFound(super::methods::not_found_message(&rmcp_said(&said)))
                        }
                        _ => rmcp_refusal(&said),
                    };
                    let mut res = actix_web::HttpResponse::from_error(error);
                    // The status stays: MCP's clients read a 400 as the
                    // transport's refusal (a version it does not speak).
                    *res.status_mut() = status;
                    return Ok(ServiceResponse::new(req, res));
                }
                // A 415 to a body declared JSON (and valid JSON, checked
                // above) means it is not a JSON-RPC message rmcp knows: a
                // request is answered in JSON-RPC, as over stdio.
                if res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
                    && declared_json(res.request())
                {
                    let (req, _) = res.into_parts();
                    return Ok(not_a_message(req, sent.as_deref()));
                }
                Ok(res)
            }
            Err(error) => Ok(req.error_response(error)),
        }
    }

    /// The request's key if it is live and within its quota for `/mcp`:
    /// the same extractor and store check as any API route.
    async fn live_key(req: &ServiceRequest) -> Result<LoginKey, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Internal("app state missing".into()))?;
        let caller = Caller::extract(req.request()).await?;
        caller.read_here(&state.store, |_, _| Ok(())).await?;
        // The extractor found a well-formed key, so this finds it too.
        bearer_key(req.headers()).ok_or(ApiError::Unavailable)
    }
}

/// The answer to a body rmcp could not read as a JSON-RPC message (see
/// [`jsonrpc::judge`]): a request gets JSON-RPC's error object with its
/// `id` (`null` when it has none to read), as a client matches answers; a
/// notification or a response, which JSON-RPC never answers, gets `422` in
/// the envelope, saying what is wrong.
fn not_a_message(req: actix_web::HttpRequest, sent: Option<&[u8]>) -> ServiceResponse<BoxBody> {
    let refusal = sent.and_then(jsonrpc::judge);
    match refusal {
        Some(refusal) if refusal.id.is_some() => {
            let res = actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body(refusal.answer().to_string());
            ServiceResponse::new(req, res)
        }
        refusal => {
            let message = refusal.map_or("the body is not a JSON-RPC 2.0 message", |r| r.message);
            ServiceResponse::from_err(ApiError::invalid(message), req).map_into_boxed_body()
        }
    }
}

/// The 404 of a path under `/mcp` that is not `/mcp`, worded as for
/// every other route.
fn not_exactly_mcp(path: &str) -> String {
    if path.ends_with('/') || path.contains("//") {
        "no such route (paths have no trailing or doubled slash: /mcp, not /mcp/)".into()
    } else {
        "no such route".into()
    }
}

/// The longest JSON-RPC `method` and string `id` let through to rmcp. MCP's
/// method names are under 40 characters, ids are counters or UUIDs; rmcp
/// writes both into a WARN line when it answers an error (an unknown
/// method), so a 60 KiB name or id made a 60 KiB log line per request.
const MAX_LOGGED_CHARS: usize = 128;

/// What to do with a JSON-RPC message after [`check_head`].
#[derive(Debug, PartialEq)]
enum Head {
    /// On to rmcp.
    Pass,
    /// Answer with this JSON-RPC error, rmcp not asked.
    Answer(String),
}

/// Judges a POST's body, in one parse (rmcp's own follows): `422` unless
/// it is JSON, valid all through (as on every route); JSON that is not an
/// object is answered JSON-RPC's `-32600` with `"id": null`, as over stdio
/// (a batch included: see README, "API notes"). Refuses (422) a message
/// whose `method` or string `id` is longer than [`MAX_LOGGED_CHARS`], or
/// that gives `jsonrpc`, `id`, `method` or `params` twice. Answers
/// JSON-RPC's `-32602 invalid params` to a request whose `params` is not an
/// object (MCP's are all objects; rmcp read no message in it at all: 422
/// "not a JSON-RPC 2.0 message"). Other shapes pass: rmcp judges them.
fn check_head(body: &[u8]) -> Result<Head, ApiError> {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        // Read only so that one given twice is found.
        #[serde(default)]
        #[allow(dead_code)]
        jsonrpc: Option<serde::de::IgnoredAny>,
        // Raw, each of them: no member's type can fail the parse, so its
        // only errors are the body's grammar and a member given twice.
        #[serde(borrow, default)]
        method: Option<&'a RawValue>,
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        params: Option<&'a RawValue>,
    }
    crate::http::json::check(body).map_err(|d| ApiError::invalid(d.to_string()))?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return not_an_object(body);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let head = match Fields::deserialize(&mut *de).and_then(|head| de.end().map(|()| head)) {
        Ok(head) => head,
        Err(e) => {
            // The refusal any route gives a body that is not JSON comes
            // first (the rest of the body may be malformed too).
            check_json_object(body)?;
            if !jsonrpc::is_given_twice(&e) {
                return Ok(Head::Pass);
            }
            // A member given twice is 422 naming it, as a field given twice
            // is on every route (rmcp refused it as no JSON-RPC message).
            let (message, field) = crate::http::json::type_error(None, &e.to_string());
            return Err(match field {
                Some(field) => ApiError::field(&field, message),
                None => ApiError::invalid(message),
            });
        }
    };
    // A method that is not a string: rmcp judges the message (and says so).
    let method = match head.method {
        Some(raw) if !raw.get().starts_with('"') => return Ok(Head::Pass),
        Some(raw) => serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()).ok(),
        None => None,
    };
    let too_long = |text: &str| text.chars().count() > MAX_LOGGED_CHARS;
    if method.as_deref().is_some_and(too_long) {
        return Err(ApiError::field(
            "method",
            format!("method must be at most {MAX_LOGGED_CHARS} characters"),
        ));
    }
    let id_text = head
        .id
        .and_then(|id| serde_json::from_str::<std::borrow::Cow<'_, str>>(id.get()).ok());
    if id_text.as_deref().is_some_and(too_long) {
        return Err(ApiError::field(
            "id",
            format!("a string id must be at most {MAX_LOGGED_CHARS} characters"),
        ));
    }
    // `null` reads as absent, as rmcp reads it; a notification (no id)
    // gets no answer, so rmcp judges it.
    let not_an_object = head
        .params
        .map(|p| p.get().trim_start())
        .is_some_and(|p| !p.starts_with('{') && p != "null");
    let invalid_params = |id: &RawValue, message: String| {
        Head::Answer(
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": jsonrpc::INVALID_PARAMS, "message": message},
            })
            .to_string(),
        )
    };
    match (method, head.id) {
        (Some(_), Some(id)) if not_an_object => Ok(invalid_params(
            id,
            "params must be a JSON object".to_owned(),
        )),
        // `params` that do not fit a method rmcp knows, and methods it does
        // not know, are answered by the server's handler (see
        // `super::methods`), from what rmcp has read: not parsed again here.
        _ => Ok(Head::Pass),
    }
}

/// A body that does not start with `{` (after whitespace): JSON's other
/// values are answered in JSON-RPC, as over stdio ([`jsonrpc::judge`]:
/// `-32600`, `"id": null`); anything else gets the `422` every route gives.
fn not_an_object(body: &[u8]) -> Result<Head, ApiError> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        if let Some(refusal) = jsonrpc::judge(body) {
            return Ok(Head::Answer(refusal.answer().to_string()));
        }
    }
    check_json_object(body)?;
    // Not reached: a body that is no object fails the check.
    Err(ApiError::invalid("request body must be a JSON object"))
}

/// The most of rmcp's answer read to tell its 400s apart (it may echo a
/// header, up to the 16 KiB of headers, or a body field).
const RMCP_SAID_BYTES: usize = 80 * 1024;

/// One of rmcp's 400s in the API's words, from the text it answered with
/// (plain text, or a JSON-RPC error whose message says why). Never the
/// client's value: rmcp's text echoes it.
fn rmcp_refusal(said: &[u8]) -> ApiError {
    // Matched by how rmcp's messages start: what follows may be the
    // client's own text.
    let said = rmcp_said(said);
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| said.starts_with(p));
    const VERSION: &str = "MCP-Protocol-Version";
    if starts(&[
        "Bad Request: Invalid Host header",
        "Bad Request: missing Host header",
    ]) {
        ApiError::field("Host", crate::error::HOST_MESSAGE)
    } else if starts(&["Invalid Request: MCP-Protocol-Version header"]) {
        ApiError::field(
            VERSION,
            "MCP-Protocol-Version must be the protocolVersion of the initialize request it comes with",
        )
    } else if starts(&["MCP-Protocol-Version header ("]) {
        ApiError::field(
            VERSION,
            "MCP-Protocol-Version must be the protocol version the request's params._meta names",
        )
    } else if starts(&[
        "request _meta protocolVersion requires",
        "Missing MCP-Protocol-Version header",
    ]) {
        ApiError::field(
            VERSION,
            "MCP-Protocol-Version is required (the request's params._meta names a protocol version)",
        )
    } else if starts(&[
        "Bad Request: Unsupported MCP-Protocol-Version",
        "Bad Request: Invalid MCP-Protocol-Version",
    ]) {
        let versions: Vec<&str> = rmcp::model::ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .map(|v| v.as_str())
            .collect();
        ApiError::field(
            VERSION,
            format!(
                "MCP-Protocol-Version must be one of the MCP versions this server speaks: {}",
                versions.join(", ")
            ),
        )
    } else if starts(&["Invalid params: request"]) {
        ApiError::field(
            "params._meta",
            "params._meta must carry the fields its MCP version requires (protocolVersion among them)",
        )
    } else if starts(&["stateless server does not accept JSON-RPC responses"]) {
        ApiError::invalid(
            "/mcp takes JSON-RPC requests and notifications, not responses (it asks clients nothing)",
        )
    } else if starts(&["missing required Mcp-Method header"]) {
        ApiError::field(
            "Mcp-Method",
            "Mcp-Method is required: the request's method, as in its body (MCP 2026-07-28 and later)",
        )
    } else if starts(&["missing required Mcp-Name header"]) {
        ApiError::field(
            "Mcp-Name",
            "Mcp-Name is required for this method: the name in its params (MCP 2026-07-28 and later)",
        )
    } else if starts(&["Mcp-", "multiple Mcp-", "missing Mcp-Param-"]) {
        ApiError::invalid("the request's Mcp-* headers do not match its body")
    } else {
        ApiError::invalid("the MCP transport refused the request")
    }
}

/// What rmcp answered: a JSON-RPC error's message, or the plain text.
fn rmcp_said(said: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(said)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(said).into_owned())
}

/// Whether a request declares a JSON body (`Content-Type:
/// application/json`, parameters aside), as rmcp requires.
fn declared_json(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `Accept` lists both media types a Streamable HTTP client must
/// take (as rmcp reads it: each range's type, parameters aside).
fn accepts_json_and_events(headers: &actix_web::http::header::HeaderMap) -> bool {
    let ranges = || {
        headers
            .get_all(actix_web::http::header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|range| range.split(';').next().unwrap_or_default().trim())
    };
    let has = |wanted: &str| ranges().any(|r| r.eq_ignore_ascii_case(wanted));
    has("application/json") && has("text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_must_list_json_and_event_streams() {
        let accepts = |values: &[&'static str]| {
            let mut headers = actix_web::http::header::HeaderMap::new();
            for v in values {
                headers.append(
                    actix_web::http::header::ACCEPT,
                    actix_web::http::header::HeaderValue::from_static(v),
                );
            }
            accepts_json_and_events(&headers)
        };
        assert!(accepts(&["application/json, text/event-stream"]));
        assert!(accepts(&["Text/Event-Stream;q=0.5 , application/json;q=1"]));
        assert!(accepts(&["application/json", "text/event-stream"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["*/*"]));
        assert!(!accepts(&["application/json"]));
        assert!(!accepts(&["text/event-stream"]));
    }

    #[test]
    fn params_that_are_not_an_object_are_invalid_params_not_an_unknown_method() {
        let check = |v: serde_json::Value| check_head(v.to_string().as_bytes()).unwrap();
        for params in [
            serde_json::json!([]),
            serde_json::json!(5),
            serde_json::json!("x"),
        ] {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list",
                                          "params": params});
            let Head::Answer(answer) = check(body) else {
                panic!("{params}: passed");
            };
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(answer["id"], 7, "{answer}");
            assert_eq!(answer["error"]["code"], -32602, "{answer}");
        }
        for body in [
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": null}),
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            // A notification is not answered.
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized", "params": []}),
        ] {
            assert_eq!(check(body.clone()), Head::Pass, "{body}");
        }
    }

    #[test]
    fn rmcp_s_refusals_say_which_header_is_wrong_without_echoing_it() {
        let cases = [
            ("Bad Request: Invalid Host header", Some("Host")),
            ("Bad Request: Invalid Host header encoding", Some("Host")),
            (
                "Bad Request: Unsupported MCP-Protocol-Version: 1999-01-01",
                Some("MCP-Protocol-Version"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"Invalid Request: MCP-Protocol-Version header (2025-06-18) does not match initialize params.protocolVersion (vvvv)"}}"#,
                Some("MCP-Protocol-Version"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"MCP-Protocol-Version header (a) does not match request _meta protocolVersion (b)"}}"#,
                Some("MCP-Protocol-Version"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params: request requires protocolVersion in request _meta"}}"#,
                Some("params._meta"),
            ),
            // Matched by how rmcp's text starts, not by what the client
            // put in it.
            (
                "Bad Request: Unsupported MCP-Protocol-Version: Invalid Host header",
                Some("MCP-Protocol-Version"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"missing required Mcp-Method header"}}"#,
                Some("Mcp-Method"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"missing required Mcp-Name header for `tools/call`"}}"#,
                Some("Mcp-Name"),
            ),
            ("something else", None),
        ];
        for (said, field) in cases {
            let error = rmcp_refusal(said.as_bytes());
            assert_eq!(error.field_name(), field, "{said}");
            let message = error.public_message();
            assert!(
                !message.contains("1999") && !message.contains("vvvv"),
                "{message}"
            );
        }
        let message =
            rmcp_refusal(b"Bad Request: Unsupported MCP-Protocol-Version: x").public_message();
        assert!(message.contains("2025-06-18"), "{message}");
    }

    #[test]
    fn long_methods_and_string_ids_are_refused_before_rmcp_logs_them() {
        let check = |v: serde_json::Value| check_head(v.to_string().as_bytes()).map(|_| ());
        let long = "m".repeat(MAX_LOGGED_CHARS + 1);
        let fine = "m".repeat(MAX_LOGGED_CHARS);
        assert!(check(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": fine})).is_ok());
        assert!(check(serde_json::json!({"id": fine.clone(), "method": "ping"})).is_ok());
        assert!(check(serde_json::json!({"id": 1, "method": long.clone()})).is_err());
        assert!(check(serde_json::json!({"id": long.clone(), "method": "ping"})).is_err());
        // Shapes rmcp judges pass through.
        assert!(check(serde_json::json!({"id": {"a": long}, "method": 5})).is_ok());
        assert!(check(serde_json::json!({"method": "notifications/initialized"})).is_ok());
    }

    #[test]
    fn the_own_api_is_called_on_loopback_when_bound_to_every_address() {
        let url = |a: &str| loopback_url(a.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("127.0.0.1:41000"), "http://127.0.0.1:41000");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80");
    }
}
