//! GET /healthz: whether the database answers, and the realtime figures an
//! operator (and the tests) watch.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::state::{resource, AppState};
use crate::error::{ApiError, ApiResult};

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", None).get(healthz));
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses(
        (status = 200, description = "The database answers.", body = crate::http::openapi::Health),
    )
)]
pub async fn healthz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !state.store.ping().await {
        return Err(ApiError::Unavailable);
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "durability": state.store.durability().as_str(),
        "realtime": {
            "live_actors": state.hub.live_actors(),
            // Open WebSockets: each registers under its key until it closes.
            "sockets": state.revocations.sockets(),
        },
    })))
}
