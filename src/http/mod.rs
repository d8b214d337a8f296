//! The HTTP API: routes, shared state, the request middleware and extractors.
//! Handlers follow one shape: extract → parse into domain types → store
//! (which publishes after commit) → respond.

mod acsp;
pub mod extract;
mod forwarded;
mod health;
mod inspector;
pub(crate) mod json;
pub mod limits;
mod me;
mod metrics;
pub mod middleware;
pub mod openapi;
mod realtime;
mod registration;
mod sse;
mod state;
mod turn;
mod webhooks;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

pub use state::AppState;

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // Routes are matched exactly; a client that joins its base URL and a
    // path with one slash too many is told where it went wrong.
    let path = req.path();
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        return Err(ApiError::NotFound(
            "no such route (paths have no trailing or doubled slash: /api/acsp/threads, \
             not /api/acsp/threads/)"
                .into(),
        ));
    }
    Err(ApiError::NotFound("no such route".into()))
}

/// Registers every route: each resource module registers its own.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // actix tries the routes in the order they are registered, one after
    // another: the threads API, which takes nearly every request, comes
    // first (no pattern of it overlaps another module's).
    acsp::routes(cfg);
    health::routes(cfg);
    inspector::routes(cfg);
    metrics::routes(cfg);
    registration::routes(cfg);
    me::routes(cfg);
    realtime::routes(cfg);
    turn::routes(cfg);
    sse::routes(cfg);
    webhooks::routes(cfg);
    openapi::routes(cfg);
    cfg.default_service(web::to(not_found));
}
