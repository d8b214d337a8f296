//! The HTTP API: routes, shared state, the request middleware and extractors.
//! Handlers follow one shape: extract → parse into domain types → store
//! (which publishes after commit) → respond.

mod acsp;
pub mod extract;
mod health;
mod json;
pub mod limits;
pub mod middleware;
mod realtime;
mod registration;
mod turn;

use std::sync::Arc;

use actix_web::{web, HttpResponse, Resource};

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::ratelimit::{RateLimits, Route};
use crate::realtime::{Grants, Hub, Revocations};
use crate::store::Store;

/// What every handler can reach (through `web::Data`).
pub struct AppState {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub grants: Arc<Grants>,
    /// Open sockets by login key, closed when their key is revoked.
    pub revocations: Arc<Revocations>,
    pub limits: RateLimits,
    pub config: ServeConfig,
    /// `ws://host:port` or `wss://...`, from the public URL.
    pub ws_base: String,
    /// Delivers paced replies and raises typing signals.
    pub scheduler: Arc<crate::turn::Scheduler>,
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// A resource that answers 405 (in the envelope) to other methods and counts
/// its requests under `route`'s quota.
fn resource(path: &str, route: Option<Route>) -> Resource {
    let r = web::resource(path).default_service(web::to(method_not_allowed));
    match route {
        Some(route) => r.app_data(route),
        None => r,
    }
}

/// Registers every route: each resource module registers its own.
pub fn routes(cfg: &mut web::ServiceConfig) {
    health::routes(cfg);
    registration::routes(cfg);
    acsp::routes(cfg);
    realtime::routes(cfg);
    turn::routes(cfg);
    cfg.default_service(web::to(not_found));
}
