//! The request middleware: gives every request an id (`X-Request-Id`), writes
//! the error envelope for every non-2xx response (whoever produced it), adds
//! the `X-RateLimit-*` headers a limiter left behind, and logs one line per
//! request. It logs the path only, never the query (which may hold a grant)
//! nor any header (which may hold a key). The same place counts the request
//! for `/metrics`, by route pattern and status.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::web::BytesMut;
use actix_web::HttpMessage;
use base64::Engine;
use rand::RngCore;

use super::extract::{client_ip, AccountId};
use super::state::AppState;
use crate::error::{envelope_json, ApiError};
use crate::metrics::RoutePattern;
use crate::ratelimit::RateInfo;

/// The id of one request: `req_` + 16 random URL-safe characters.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn new() -> RequestId {
        let mut bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut bytes);
        // Encoded straight after the prefix: one allocation, no formatting.
        let mut id = String::with_capacity(20);
        id.push_str("req_");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut id);
        RequestId(id)
    }
}

pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    // Kept here only (no reader asks the request's extensions for it).
    let request_id = RequestId::new();
    let method = req.method().clone();
    let path = req.path().to_owned();
    // The connection and header limits are checked here, in this one
    // middleware, rather than in a layer of their own: one boxed future
    // and one service call less per request.
    let mut res = match super::limits::refusal(&req) {
        Some(refused) => req.error_response(refused),
        // An Err here (rare: errors normally come back as responses) is
        // rendered by actix through ApiError::error_response, which writes
        // the envelope.
        None => next.call(req).await?.map_into_boxed_body(),
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
        if let ApiError::Internal(cause) = error {
            log::error!("{} internal error: {cause}", request_id.0);
        }
        if let ApiError::RateLimited { .. } = error {
            if let Some(state) = res.request().app_data::<actix_web::web::Data<AppState>>() {
                state.metrics.rate_limited(route_of(res.request()));
            }
        }
        let body = envelope_json(error, &request_id.0);
        res = res.map_body(|head, _| {
            head.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            BoxBody::new(body)
        });
    } else if is_json(&res) {
        res = res.map_body(|_, body| with_final_newline(body));
    }

    let rate = res.request().extensions().get::<RateInfo>().copied();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id.0) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(rate) = rate {
        for (name, value) in [
            ("x-ratelimit-limit", rate.limit as u64),
            ("x-ratelimit-remaining", rate.remaining as u64),
            ("x-ratelimit-reset", rate.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let req = res.request();
    let route = route_of(req);
    if let Some(state) = req.app_data::<actix_web::web::Data<AppState>>() {
        state.metrics.request(route, status, elapsed);
    }
    // Tenths of a millisecond, rounded, printed as integers: formatting a
    // float with a precision cost more than the rest of the line's fields.
    let tenths =
        elapsed.as_secs() * 10_000 + (u64::from(elapsed.subsec_nanos()) + 50_000) / 100_000;
    let latency_ms = tenths as f64 / 10.0;
    let (whole, tenth) = (tenths / 10, tenths % 10);
    let extensions = req.extensions();
    let user_id = extensions.get::<AccountId>().map_or("", |a| a.0.as_str());
    // The key-values are what `--log-format json` writes; the text format
    // shows the message alone.
    log::info!(
        target: crate::logging::REQUEST_TARGET,
        request_id = request_id.0.as_str(),
        method = method.as_str(),
        route = route.0,
        status = status,
        latency_ms = latency_ms,
        client:% = client_ip(req),
        user_id = user_id;
        "{} {method} {path} {status} {whole}.{tenth}ms",
        request_id.0,
    );
    drop(extensions);
    Ok(res)
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
