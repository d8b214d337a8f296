//! The request middleware: gives every request an id (`X-Request-Id`), writes
//! the error envelope for every non-2xx response (whoever produced it), adds
//! the `X-RateLimit-*` headers a limiter left behind, and logs one line per
//! request. It logs the path only, never the query (which may hold a grant)
//! nor any header (which may hold a key). The same place counts the request
//! for `/metrics`, by route pattern and status. Every answer it passes
//! carries the database's generation (`Threadline-Generation`), so that a
//! client that reads over HTTP can tell a restored server from the one it
//! left, as a socket's `connection.ready` tells it.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::web::BytesMut;
use actix_web::HttpMessage;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::extract::{client_ip, AccountId};
use super::state::AppState;
use crate::error::{envelope_json, ApiError};
use crate::metrics::RoutePattern;
use crate::ratelimit::{ip_key, RateInfo};

/// The id of one request: `req_` + 16 URL-safe characters (12 bytes,
/// base64url), kept inline: no allocation per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestId([u8; 20]);

impl RequestId {
    /// A fresh id, unique in this process and, with overwhelming
    /// probability, across processes. Each worker thread draws from its own
    /// sequence rather than a cryptographic generator (the id is a label for
    /// the log, not a secret): splitmix64 over a per-thread counter started
    /// at a random point (a bijection, so one thread never repeats itself in
    /// 2^64 ids), and 32 bits of a random per-thread tag mixed into the rest
    /// (two threads' ids collide only if both the counter and the tag do).
    fn new() -> RequestId {
        thread_local! {
            static SEQUENCE: Cell<(u64, u32)> = Cell::new(rand::random());
        }
        let (state, tag) = SEQUENCE
            .try_with(|cell| {
                let (state, tag) = cell.get();
                let next = state.wrapping_add(GOLDEN_GAMMA);
                cell.set((next, tag));
                (next, tag)
            })
            // Only while the thread is being torn down.
            .unwrap_or_else(|_| rand::random());
        let high = splitmix64(state);
        let low = tag ^ (high >> 32) as u32;
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&high.to_le_bytes());
        bytes[8..].copy_from_slice(&low.to_le_bytes());
        let mut id = *b"req_0000000000000000";
        // 12 bytes are exactly 16 characters: the slice always fits.
        let _ = URL_SAFE_NO_PAD.encode_slice(bytes, &mut id[4..]);
        RequestId(id)
    }

    pub fn as_str(&self) -> &str {
        // Built from ASCII only (the prefix and the base64url alphabet).
        std::str::from_utf8(&self.0).unwrap_or("req_")
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a bijection on u64 that scrambles
/// consecutive inputs into unrelated-looking outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The body (the envelope) and `X-Request-Id` of an answer the HTTP layer
/// makes itself before any route (a malformed head `400`, `408` for a head
/// not complete in time, `414`, `431`, `501`; see
/// `actix_http::h1::set_refusal_body`). No log line: such requests have no
/// route or key, and a client could send them without end.
pub fn refusal_body(
    status: actix_web::http::StatusCode,
    headers: &mut actix_web::http::header::HeaderMap,
) -> actix_web::web::Bytes {
    let request_id = RequestId::new();
    if let Ok(v) = HeaderValue::from_bytes(&request_id.0) {
        headers.insert(X_REQUEST_ID, v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    envelope_json(&ApiError::of_http_layer(status), request_id.as_str()).into()
}
/// The database's generation (see `store::generation`) on every answer.
pub const THREADLINE_GENERATION: HeaderName = HeaderName::from_static("threadline-generation");

/// The `Threadline-Generation` value of a server whose database is of
/// `generation` (a UUID, always a valid header value): made once, when the
/// server starts, and cloned into each answer.
pub fn generation_header(generation: &str) -> HeaderValue {
    HeaderValue::from_str(generation).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    // Kept here only (no reader asks the request's extensions for it).
    let request_id = RequestId::new();
    // The connection and header limits are checked here, in this one
    // middleware, rather than in a layer of their own: one boxed future
    // and one service call less per request.
    let mut res = match super::limits::refusal(&req) {
        Some(refused) => req.error_response(refused),
        // An Err here (rare: errors normally come back as responses) is
        // rendered by actix through ApiError::error_response, which writes
        // the envelope.
        None => {
            let res = next.call(req).await?.map_into_boxed_body();
            // A refusal for what was sent gives way to one for the credentials.
            // Boxed: inline, its state made this future (which an upgraded
            // connection's dispatcher keeps room for) 0.4 KiB larger.
            Box::pin(super::extract::credentials_before_content(res)).await
        }
    };

    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        let from_handler = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>());
        let fallback;
        let error = match from_handler {
            Some(e) => e,
            None => {
                fallback = ApiError::from_status(status);
                &fallback
            }
        };
        if let ApiError::Internal(cause) | ApiError::Storage(cause) = error {
            log::error!("{} internal error: {cause}", request_id.as_str());
        }
        if let ApiError::RateLimited { .. } = error {
            if let Some(state) = res.request().app_data::<actix_web::web::Data<AppState>>() {
                state.metrics.rate_limited(route_of(res.request()));
            }
        }
        let body = envelope_json(error, request_id.as_str());
        res = res.map_body(|head, _| {
            head.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            BoxBody::new(body)
        });
    } else if is_json(&res) {
        res = res.map_body(|_, body| with_final_newline(body));
    }

    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let route = route_of(res.request());
    let rate = res.request().extensions().get::<RateInfo>().copied();
    // One look for the state: the request counted, and the generation
    // taken (a clone of the value made at start: a reference count, no
    // allocation).
    let generation = match res.request().app_data::<actix_web::web::Data<AppState>>() {
        Some(state) => {
            state.metrics.request(route, status, elapsed);
            Some(state.generation.clone())
        }
        None => None,
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_bytes(&request_id.0) {
        headers.insert(X_REQUEST_ID, v);
    }
    if let Some(generation) = generation {
        headers.insert(THREADLINE_GENERATION, generation);
    }
    if let Some(rate) = rate {
        let (limit, reset) = recent_values(rate);
        headers.insert(X_RATELIMIT_LIMIT, limit);
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(rate.remaining));
        headers.insert(X_RATELIMIT_RESET, reset);
    }
    let req = res.request();
    // Tenths of a millisecond, rounded, printed as integers: formatting a
    // float with a precision cost more than the rest of the line's fields.
    let tenths =
        elapsed.as_secs() * 10_000 + (u64::from(elapsed.subsec_nanos()) + 50_000) / 100_000;
    let latency_ms = tenths as f64 / 10.0;
    let (whole, tenth) = (tenths / 10, tenths % 10);
    if without_a_key(route, status) && !line_admitted(req, status) {
        // Counted, and summed up in one line with the rest of the minute's.
        return Ok(res);
    }
    let extensions = req.extensions();
    let user_id = extensions.get::<AccountId>().map_or("", |a| a.0.as_str());
    // The key-values are what `--log-format json` writes; the text format
    // shows the message alone.
    log::info!(
        target: crate::logging::REQUEST_TARGET,
        request_id = request_id.as_str(),
        method:% = LoggedMethod(req.method().as_str()),
        route = route.0,
        status = status,
        latency_ms = latency_ms,
        client:% = ClientIp(req),
        user_id = user_id;
        "{} {} {} {status} {whole}.{tenth}ms",
        request_id.as_str(),
        LoggedMethod(req.method().as_str()),
        LoggedPath(req.path()),
    );
    drop(extensions);
    Ok(res)
}

/// The routes served without a key (nothing on them authenticates).
const OPEN_ROUTES: [&str; 10] = [
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/api/acsp/agent-init",
    "/",
    "/inspect",
    "/inspect/",
    "/inspect/app.js",
    "/inspect/style.css",
    "/inspect/icon.svg",
];

/// Whether a request's line is one of those bounded per client address
/// ([`crate::logging::UnauthenticatedLines`]): requests that did not get in
/// with a key. Those are refusals that come before or instead of a key's
/// check (401, and 405, 408, 413, 429, 431, which need no key to cause),
/// paths that match no route, and the routes open without a key. An
/// authenticated request's line is always written (its 2xx, or a 403, 404,
/// 409 or 422 that came after its key was checked).
fn without_a_key(route: RoutePattern, status: u16) -> bool {
    matches!(status, 401 | 405 | 408 | 413 | 429 | 431)
        || route == RoutePattern::UNMATCHED
        || OPEN_ROUTES.contains(&route.0)
}

/// Whether the line of a request without a key is written (its client
/// address is within its lines for the minute), or only counted.
fn line_admitted(req: &actix_web::HttpRequest, status: u16) -> bool {
    match req.app_data::<actix_web::web::Data<crate::logging::UnauthenticatedLines>>() {
        Some(lines) => lines.admit(ip_key(client_ip(req)), status),
        None => true,
    }
}

/// Longest path a request line shows, in bytes. A client may send a URI of
/// tens of kilobytes to any route, with no key: its line should not grow
/// with it.
const LOGGED_PATH_BYTES: usize = 256;

/// A request's path as its log line shows it: whole up to
/// [`LOGGED_PATH_BYTES`], else cut there and marked with how much was left out.
struct LoggedPath<'a>(&'a str);

impl std::fmt::Display for LoggedPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.0;
        if path.len() <= LOGGED_PATH_BYTES {
            return f.write_str(path);
        }
        let mut cut = LOGGED_PATH_BYTES;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{}…(+{} bytes)", &path[..cut], path.len() - cut)
    }
}

/// Longest method a request line shows, in bytes. A method is any token
/// (RFC 9110 §9.1), as long as the request line (tens of kilobytes, with
/// no key); the longest registered ones have 17 characters.
const LOGGED_METHOD_BYTES: usize = 32;

/// A request's method as its log line shows it: whole up to
/// [`LOGGED_METHOD_BYTES`], else cut there and marked with how much was
/// left out, as [`LoggedPath`] does for the path.
struct LoggedMethod<'a>(&'a str);

impl std::fmt::Display for LoggedMethod<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A method is a token: ASCII, so any byte is a character boundary.
        let method = self.0;
        match method.get(..LOGGED_METHOD_BYTES) {
            Some(cut) if method.len() > LOGGED_METHOD_BYTES => {
                write!(f, "{cut}…(+{} bytes)", method.len() - LOGGED_METHOD_BYTES)
            }
            _ => f.write_str(method),
        }
    }
}

/// The client's address as the JSON request line shows it, worked out only
/// if a line is formatted with its key-values (the text line has none).
struct ClientIp<'a>(&'a actix_web::HttpRequest);

impl std::fmt::Display for ClientIp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        client_ip(self.0).fmt(f)
    }
}

/// The `X-RateLimit-Limit` and `-Reset` values: the limit is the same for
/// every request of a quota and the reset moves once a second, so the
/// header values of the last request this thread answered are reused
/// rather than formatted (and allocated) again.
fn recent_values(rate: RateInfo) -> (HeaderValue, HeaderValue) {
    thread_local! {
        static RECENT: RefCell<Option<(RateInfo, HeaderValue, HeaderValue)>> =
            const { RefCell::new(None) };
    }
    let fresh = || (HeaderValue::from(rate.limit), HeaderValue::from(rate.reset));
    RECENT
        .try_with(|recent| {
            let mut recent = recent.borrow_mut();
            match &mut *recent {
                Some((last, limit, reset)) if last.limit == rate.limit => {
                    if last.reset != rate.reset {
                        *reset = HeaderValue::from(rate.reset);
                        *last = rate;
                    }
                    (limit.clone(), reset.clone())
                }
                _ => {
                    let (limit, reset) = fresh();
                    *recent = Some((rate, limit.clone(), reset.clone()));
                    (limit, reset)
                }
            }
        })
        .unwrap_or_else(|_| fresh())
}

/// Whether a response carries a JSON body.
fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// Ends a JSON body with a newline, so `curl` output and line-oriented tools
/// see whole lines. A body that already ends with one (the hand-built thread
/// page) passes through without a copy; streamed bodies are left alone.
fn with_final_newline(body: BoxBody) -> BoxBody {
    match body.try_into_bytes() {
        Ok(bytes) if bytes.ends_with(b"\n") => BoxBody::new(bytes),
        Ok(bytes) => {
            // Usually the answer's own buffer, with room to spare (serde_json
            // grows it by doubling): the newline goes on without a copy.
            let mut body = bytes
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            body.extend_from_slice(b"\n");
            BoxBody::new(body.freeze())
        }
        Err(body) => body,
    }
}

/// The pattern of the route that served `req` (its resource's app data).
fn route_of(req: &actix_web::HttpRequest) -> RoutePattern {
    req.app_data::<RoutePattern>()
        .copied()
        .unwrap_or(RoutePattern::UNMATCHED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_header_is_made_once_and_each_answer_shares_its_bytes() {
        let generation = "0f3e6d1c-9a51-4c3e-8f11-2b7a1c5d9e00";
        let made = generation_header(generation);
        assert_eq!(made.to_str().unwrap(), generation);
        // What each answer gets: the same bytes, not a copy of them.
        let answers: Vec<HeaderValue> = (0..3).map(|_| made.clone()).collect();
        for answer in &answers {
            assert_eq!(answer.as_bytes().as_ptr(), made.as_bytes().as_ptr());
        }
    }

    #[test]
    fn request_ids_are_well_formed_and_unique_across_threads() {
        let draw = || (0..50_000).map(|_| RequestId::new()).collect::<Vec<_>>();
        let other = std::thread::spawn(draw);
        let mut ids = draw();
        ids.extend(other.join().unwrap());
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            let id = id.as_str();
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("req_"), "{id}");
            assert!(
                id[4..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
            assert!(seen.insert(id.to_owned()), "{id} came twice");
        }
        // Every character of the alphabet turns up in every position: the
        // ids are not a counter with a fixed prefix.
        for position in 4..20 {
            let used: std::collections::HashSet<u8> = ids.iter().map(|id| id.0[position]).collect();
            assert_eq!(used.len(), 64, "position {position}");
        }
    }

    #[test]
    fn a_long_method_is_cut_in_the_log_line_and_a_short_one_is_not() {
        assert_eq!(LoggedMethod("GET").to_string(), "GET");
        let exact = "M".repeat(LOGGED_METHOD_BYTES);
        assert_eq!(LoggedMethod(&exact).to_string(), exact);
        let long = "M".repeat(LOGGED_METHOD_BYTES + 100);
        assert_eq!(
            LoggedMethod(&long).to_string(),
            format!("{exact}…(+100 bytes)")
        );
    }

    #[test]
    fn a_long_path_is_cut_in_the_log_line_and_a_short_one_is_not() {
        assert_eq!(
            LoggedPath("/api/acsp/threads").to_string(),
            "/api/acsp/threads"
        );
        let exact = format!("/{}", "a".repeat(LOGGED_PATH_BYTES - 1));
        assert_eq!(LoggedPath(&exact).to_string(), exact);
        let long = format!("/{}", "a".repeat(60_000));
        let shown = LoggedPath(&long).to_string();
        assert!(shown.starts_with(&long[..LOGGED_PATH_BYTES]), "{shown}");
        assert!(shown.ends_with("…(+59745 bytes)"), "{shown}");
        // A cut never splits a character.
        let wide = format!("/{}", "é".repeat(200));
        let shown = LoggedPath(&wide).to_string();
        assert!(shown.ends_with("…(+146 bytes)"), "{shown}");
    }

    #[test]
    fn the_rate_limit_values_follow_the_request() {
        let values = |limit, reset| {
            let (l, r) = recent_values(RateInfo {
                limit,
                remaining: 0,
                reset,
            });
            (
                l.to_str().unwrap().to_owned(),
                r.to_str().unwrap().to_owned(),
            )
        };
        // In turn: the same request again, a new second, another quota,
        // and back to the first quota.
        for (limit, reset) in [
            (60, 1_800_000_000),
            (60, 1_800_000_000),
            (60, 1_800_000_001),
            (30, 1_800_000_001),
            (60, 1_800_000_001),
        ] {
            assert_eq!(
                values(limit, reset),
                (limit.to_string(), reset.to_string()),
                "limit {limit}, reset {reset}"
            );
        }
    }
}
