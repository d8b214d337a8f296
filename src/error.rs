//! The one error type of the HTTP API and its mapping to status codes and the
//! JSON error envelope. Handlers return `ApiResult<T>` and use `?`; the request
//! middleware (`http::middleware`) adds the request id to every envelope.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::domain::limits::{kib, MAX_BODY_BYTES, MAX_HEADER_BYTES};

/// Every way a request can fail, each with its documented status and code.
#[derive(Debug)]
pub enum ApiError {
    /// 401: missing, malformed, unknown or revoked key; bad WebSocket grant.
    Unauthorized(&'static str),
    /// 403: valid key, but it may not do this (e.g. act as an agent it does not own).
    Forbidden(String),
    /// 404: unknown route, or a resource absent or invisible to the caller.
    NotFound(String),
    /// A 403 or 404 that one input field is at fault for (an `aid` the key
    /// does not own, an unknown `target_aid`, a `thread_id` given in the
    /// body or query): the envelope names it. Made by [`ApiError::on_field`];
    /// `error` is the `Forbidden` or `NotFound` itself.
    OnField {
        error: Box<ApiError>,
        field: &'static str,
    },
    /// 405: known path, wrong method.
    MethodNotAllowed,
    /// 408: the request body did not arrive within `--body-timeout-secs`
    /// (the connection is closed after the answer).
    RequestTimeout,
    /// 409: the operation conflicts with the resource's state.
    Conflict { code: &'static str, message: String },
    /// 413: body over `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// 422: an input is malformed, of the wrong type, missing or out of range.
    Validation {
        message: String,
        field: Option<String>,
    },
    /// 429: over quota; retry after this many whole seconds (≥ 1).
    RateLimited { retry_after: u64 },
    /// 429: the connection is over a connection cap (its address's, its
    /// block's, or its share near the server's budget: the message says
    /// which, `crate::http::limits`); it is closed after the answer.
    TooManyConnections(&'static str),
    /// 431: request headers over the documented limit.
    HeadersTooLarge,
    /// 400 (`VALIDATION_ERROR`, on `Host`): `Host` missing (HTTP/1.1),
    /// given twice, or not `host[:port]` (RFC 9112 §3.2).
    HostInvalid,
    /// 400 (`VALIDATION_ERROR`): a request head the HTTP layer cannot read
    /// (answered by it, the connection closed).
    MalformedHead,
    /// 408: the request head did not arrive within 5 s (the HTTP layer's).
    HeadTimeout,
    /// 414: the request target is over the HTTP layer's limit.
    UriTooLong,
    /// 501: a transfer coding the server does not decode.
    NotImplemented,
    /// 503: shutting down, or storage stayed busy past its timeout.
    Unavailable,
    /// 500: a bug. The cause is logged with the request id, never sent.
    Internal(String),
    /// 500, answered as [`ApiError::Internal`]: the database itself failed
    /// (a full disk, an I/O error, a read-only or unopenable file, out of
    /// memory), not the request nor the row it wrote. Kept apart so that
    /// the scheduler counts it against no reply part
    /// (`store::turn::is_store_fault`). The cause is logged, never sent.
    Storage(String),
}

/// Result type of handlers and everything they call.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A 422 about one named input field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// A 422 about the request as a whole (e.g. a body that is not JSON).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: None,
        }
    }

    /// This 403 or 404, naming `field` as the input at fault (when it does
    /// not name one yet). Any other error is returned as it is: a 422 names
    /// its own field, and the rest are not about one input.
    pub fn on_field(self, field: &'static str) -> Self {
        match self {
            ApiError::Forbidden(_) | ApiError::NotFound(_) => ApiError::OnField {
                error: Box::new(self),
                field,
            },
            other => other,
        }
    }

    /// This error, with a 404 naming `field` (see [`ApiError::on_field`]):
    /// for a lookup by an input whose other refusals (a 403 on `aid`) name
    /// their own.
    pub fn not_found_on(self, field: &'static str) -> Self {
        match self {
            ApiError::NotFound(_) => self.on_field(field),
            other => other,
        }
    }

    /// 404 for a thread that does not exist or that the caller may not see:
    /// the two answer alike, so that a thread's existence is never revealed.
    pub fn thread_not_found() -> Self {
        ApiError::NotFound("thread not found".into())
    }

    /// 409 for a write that needs an active thread; `status` is the one it has.
    pub fn thread_not_active(status: &str) -> Self {
        ApiError::Conflict {
            code: "THREAD_NOT_ACTIVE",
            message: format!("thread is {status}; only active threads take messages"),
        }
    }

    /// The machine-readable code of the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::RequestTimeout => "REQUEST_TIMEOUT",
            ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::RateLimited { .. } | ApiError::TooManyConnections(_) => "RATE_LIMITED",
            ApiError::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ApiError::HostInvalid | ApiError::MalformedHead => "VALIDATION_ERROR",
            ApiError::HeadTimeout => "REQUEST_TIMEOUT",
            ApiError::UriTooLong => "URI_TOO_LONG",
            ApiError::NotImplemented => "NOT_IMPLEMENTED",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::Internal(_) | ApiError::Storage(_) => "INTERNAL",
            ApiError::OnField { error, .. } => error.code(),
        }
    }

    /// The human-readable message of the envelope. Never carries internals.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Unauthorized(m) => (*m).to_owned(),
            ApiError::Forbidden(m) | ApiError::NotFound(m) => m.clone(),
            ApiError::MethodNotAllowed => "method not allowed on this route".to_owned(),
            ApiError::RequestTimeout => "the request body did not arrive in time".to_owned(),
            ApiError::Conflict { message, .. } => message.clone(),
            ApiError::PayloadTooLarge => format!("request body is over {}", kib(MAX_BODY_BYTES)),
            ApiError::Validation { message, .. } => message.clone(),
            ApiError::RateLimited { retry_after } => {
                format!("rate limit exceeded; retry after {retry_after} s")
            }
            ApiError::TooManyConnections(message) => (*message).to_owned(),
            ApiError::HeadersTooLarge => format!(
                "request headers are over {} (or {MAX_HEADER_FIELDS} fields)",
                kib(MAX_HEADER_BYTES)
            ),
            ApiError::HostInvalid => HOST_MESSAGE.to_owned(),
            ApiError::MalformedHead => {
                "malformed request: the request line or a header cannot be read".to_owned()
            }
            ApiError::HeadTimeout => "the request head did not arrive in time".to_owned(),
            ApiError::UriTooLong => {
                format!("request target (path and query) is over {MAX_TARGET_BYTES} bytes")
            }
            ApiError::NotImplemented => {
                "Transfer-Encoding: only chunked is decoded (no coding before it)".to_owned()
            }
            ApiError::Unavailable => "service unavailable; retry shortly".to_owned(),
            ApiError::Internal(_) | ApiError::Storage(_) => "internal error".to_owned(),
            ApiError::OnField { error, .. } => error.public_message(),
        }
    }

    /// The input field at fault, when one is.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            ApiError::Validation { field, .. } => field.as_deref(),
            ApiError::OnField { field, .. } => Some(field),
            ApiError::HostInvalid => Some("Host"),
            ApiError::NotImplemented => Some("Transfer-Encoding"),
            _ => None,
        }
    }

    /// The body of an answer the HTTP layer makes itself, before any
    /// route (see [`crate::http::middleware::refusal_body`]).
    pub fn of_http_layer(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => ApiError::MalformedHead,
            408 => ApiError::HeadTimeout,
            414 => ApiError::UriTooLong,
            431 => ApiError::HeadersTooLarge,
            501 => ApiError::NotImplemented,
            _ => ApiError::from_status(status),
        }
    }

    /// Seconds to wait, for 429.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::TooManyConnections(_) => Some(1),
            _ => None,
        }
    }

    /// The error for a status that was produced outside our handlers (e.g. by
    /// actix itself), so that it too gets the envelope.
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => ApiError::Unauthorized("unauthorized"),
            403 => ApiError::Forbidden("forbidden".to_owned()),
            404 => ApiError::NotFound("no such route".to_owned()),
            405 => ApiError::MethodNotAllowed,
            408 => ApiError::RequestTimeout,
            413 => ApiError::PayloadTooLarge,
            400 | 415 | 422 => ApiError::invalid("malformed request"),
            431 => ApiError::HeadersTooLarge,
            503 => ApiError::Unavailable,
            _ => ApiError::Internal(format!("unexpected status {status}")),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The cause of an internal error is for the log, through Display.
            ApiError::Internal(cause) => write!(f, "internal error: {cause}"),
            ApiError::Storage(cause) => write!(f, "storage error: {cause}"),
            other => write!(f, "{}: {}", other.code(), other.public_message()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::TooManyConnections(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::HostInvalid | ApiError::MalformedHead => StatusCode::BAD_REQUEST,
            ApiError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::OnField { error, .. } => error.status_code(),
        }
    }

    /// The request middleware rewrites this body with the request id; this
    /// one stands if an error ever bypasses the middleware.
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        // The rest of a late body, or more requests from an address over its
        // cap, are not waited for.
        if matches!(
            self,
            ApiError::RequestTimeout | ApiError::TooManyConnections(_)
        ) {
            res.force_close();
        }
        res.content_type("application/json")
            .body(envelope_json(self, "unknown"))
    }
}

/// What a bad `Host` is told (here and over `/mcp`, where the MCP library
/// checks it too).
pub const HOST_MESSAGE: &str = "Host must be a host name or an address, with an optional port";

/// The longest request target (path and query) the HTTP layer reads: the
/// `http` crate's limit.
pub const MAX_TARGET_BYTES: usize = 65_534;

/// The most header fields the HTTP layer reads in one request.
pub const MAX_HEADER_FIELDS: usize = 96;

/// The JSON error envelope, ending with a newline (the request middleware
/// writes it on every error response).
pub fn envelope_json(error: &ApiError, request_id: &str) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("code".into(), error.code().into());
    obj.insert("message".into(), error.public_message().into());
    if let Some(field) = error.field_name() {
        obj.insert("field".into(), field.into());
    }
    if let Some(secs) = error.retry_after() {
        obj.insert("retry_after".into(), secs.into());
    }
    obj.insert("request_id".into(), request_id.into());
    let mut text = serde_json::json!({ "error": obj }).to_string();
    text.push('\n');
    text
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // busy_timeout ran out: the database stayed locked (another process).
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                ApiError::Unavailable
            }
            // The file, the disk or the machine, not the statement. (A
            // corrupt page is left out: it may hold one row only, and a
            // reply part stored in it is better given up than retried for
            // ever with every other thread's.)
            Some(
                rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::OutOfMemory,
            ) => ApiError::Storage(format!("sqlite: {e}")),
            _ => ApiError::Internal(format!("sqlite: {e}")),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        ApiError::Internal(format!("connection pool: {e}"))
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        ApiError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> ApiError {
        ApiError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    /// A fault of the database file or the machine stays told apart from a
    /// statement's (the scheduler counts it against no reply part), and is
    /// answered as any internal error: `500 INTERNAL`, no cause sent.
    #[test]
    fn sqlite_faults_of_the_store_are_kept_apart_from_a_statements() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_NOMEM,
        ] {
            let e = sqlite(code);
            assert!(matches!(e, ApiError::Storage(_)), "{code}: {e:?}");
            assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(e.code(), "INTERNAL");
            assert_eq!(e.public_message(), "internal error");
        }
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_TRIGGER,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_MISMATCH,
        ] {
            assert!(
                matches!(sqlite(code), ApiError::Internal(_)),
                "{code} is the statement's"
            );
        }
        assert!(matches!(sqlite(ffi::SQLITE_BUSY), ApiError::Unavailable));
    }
}
