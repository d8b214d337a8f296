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
            })
        })
        .await?;
    let body = state
        .metrics
        .render(gauges)
        .map_err(|e| ApiError::Internal(format!("metrics encoding failed: {e}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(body))
}
