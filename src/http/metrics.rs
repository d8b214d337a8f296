//! GET /metrics: the Prometheus/OpenMetrics exposition. Open unless
//! `--metrics-token` is set; then it asks for `Authorization: Bearer TOKEN`,
//! and wrong tokens count against the client IP's quota for bad keys, like
//! bad login keys do (so the token cannot be guessed at speed).

use std::path::PathBuf;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::{client_ip, note_rate, ONE_AUTHORIZATION};
use super::state::{resource, AppState};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{StoreGauges, CONTENT_TYPE};
use crate::store::db::turn;

/// Registers this module's route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", None).get(metrics));
}

/// Each route's status when it succeeds, as (route pattern, status):
/// `/metrics` shows `threadline_http_requests_total` for each at 0 from the
/// start (and the route's latency histogram, empty), so that a dashboard's
/// `rate()` has a series per route on a fresh server; other statuses
/// appear as they are answered. The routes of the OpenAPI document are
/// checked against it by a test; those it leaves out come last.
pub const ANSWERED: &[(&str, u16)] = &[
    ("/api/acsp/thread/create", 201),
    ("/api/acsp/thread/message", 201),
    ("/api/acsp/thread/status", 200),
    ("/api/acsp/thread", 200),
    ("/api/acsp/thread/{thread_id}", 200),
    ("/api/acsp/threads", 200),
    ("/api/acsp/me", 200),
    ("/api/acsp/agent-init", 201),
    ("/api/acsp/realtime/open", 200),
    ("/v1/ws", 101),
    ("/v1/sse", 200),
    ("/v1/turn-taking/actions/open_thread", 200),
    ("/v1/turn-taking/actions/submit_messages", 200),
    ("/v1/turn-taking/actions/respond", 200),
    ("/v1/turn-taking/actions/record_event", 200),
    ("/v1/turn-taking/threads/{thread_id}/turns", 200),
    ("/api/acsp/webhooks", 200),
    ("/api/acsp/webhooks", 201),
    ("/api/acsp/webhooks/{id}", 200),
    ("/api/acsp/webhooks/{id}/rotate", 200),
    ("/api/acsp/webhooks/{id}/pause", 200),
    ("/api/acsp/webhooks/{id}/resume", 200),
    ("/api/acsp/webhooks/{id}/attempts", 200),
    ("/healthz", 200),
    ("/metrics", 200),
    ("/openapi.json", 200),
    // Not in the OpenAPI document.
    ("/mcp", 200),
    ("/", 200),
    ("/inspect", 200),
    ("/inspect/", 200),
    ("/inspect/app.js", 200),
    ("/inspect/style.css", 200),
    ("/inspect/icon.svg", 200),
];

/// How many entries of [`ANSWERED`] are routes the OpenAPI document leaves out.
#[cfg(test)]
const UNDOCUMENTED: usize = 7;

const BAD_TOKEN: &str = "missing or wrong metrics token (Authorization: Bearer <--metrics-token>)";

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    description = "Prometheus/OpenMetrics text. Open unless `--metrics-token` is set.",
    responses(
        (status = 200, description = "The metrics.", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "A token is set and the request did not carry it.", body = crate::http::openapi::ErrorEnvelope),
    ),
    security((), ("bearer" = []))
)]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if let Some(token) = &state.config.metrics_token {
        let mut headers = req.headers().get_all(AUTHORIZATION);
        let header = headers.next().and_then(|v| v.to_str().ok());
        // Two headers: which one was meant is a guess (as on the API).
        let repeated = headers.next().is_some();
        if repeated || !token.admits(header) {
            note_rate(&req, state.limits.check_unauthenticated(client_ip(&req)))?;
            return Err(ApiError::Unauthorized(match repeated {
                true => ONE_AUTHORIZATION,
                false => BAD_TOKEN,
            }));
        }
    }
    let mut wal = state.config.db.path.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let gauges = state
        .store
        .read(move |conn| {
            Ok(StoreGauges {
                // Absent between a truncating checkpoint and the next write.
                wal_bytes: std::fs::metadata(&wal).map_or(0, |m| m.len()),
                pending_replies: turn::pending_count(conn)?,
                failed_replies: turn::failed_count(conn)?,
            })
        })
        .await?;
    let body = state
        .metrics
        .render(gauges)
        .map_err(|e| ApiError::Internal(format!("metrics encoding failed: {e}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(body))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every success status the OpenAPI document gives a route is shown
    /// from the start, and nothing it does not give (but the routes it
    /// leaves out).
    #[test]
    fn the_series_shown_from_zero_are_the_routes_successes() {
        let doc = serde_json::to_value(crate::http::openapi::openapi()).expect("a document");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for operation in item.as_object().expect("a path item").values() {
                let Some(responses) = operation["responses"].as_object() else {
                    continue;
                };
                for status in responses.keys() {
                    let status: u16 = status.parse().expect("a numeric status");
                    if status < 300 {
                        documented.insert((path.clone(), status));
                    }
                }
            }
        }
        let (listed, undocumented) = ANSWERED.split_at(ANSWERED.len() - UNDOCUMENTED);
        let listed: BTreeSet<(String, u16)> =
            listed.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect();
        assert_eq!(listed.len() + UNDOCUMENTED, ANSWERED.len(), "listed twice");
        assert_eq!(listed, documented);
        for (path, _) in undocumented {
            assert!(doc["paths"].get(*path).is_none(), "{path} is documented");
        }
    }
}
