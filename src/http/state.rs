//! What every resource module of the API uses: the state handlers reach,
//! and the builder of a resource. A leaf below the resource modules, so
//! that http/mod.rs depends on them and none of them on it.

use std::sync::Arc;

use actix_web::{web, HttpResponse, Resource};

use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::metrics::{Metrics, RoutePattern};
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
    /// What `/metrics` shows; the request middleware counts into it.
    pub metrics: Arc<Metrics>,
    /// When the server started, for `/healthz`'s `uptime_secs`.
    pub started: std::time::Instant,
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// A resource that answers 405 (in the envelope) to other methods, counts
/// its requests under `route`'s quota, and is named by its pattern in metrics.
pub(super) fn resource(path: &'static str, route: Option<Route>) -> Resource {
    #[cfg(test)]
    REGISTERED.with(|r| r.borrow_mut().push(path));
    let r = web::resource(path)
        .app_data(RoutePattern(path))
        .default_service(web::to(method_not_allowed));
    match route {
        Some(route) => r.app_data(route),
        None => r,
    }
}

#[cfg(test)]
thread_local! {
    /// Every path given to [`resource`] on this thread: the unit tests
    /// compare what the server registers with the OpenAPI document.
    pub(super) static REGISTERED: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}
