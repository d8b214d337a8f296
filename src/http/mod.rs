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
pub(crate) mod metrics;
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

/// The route patterns a rate limit can refuse (`429 RATE_LIMITED`): each
/// one with a per-key quota, and those whose handlers count bad
/// credentials or registrations by client address. `/metrics` shows each
/// one's `threadline_rate_limit_refusals_total` from the start, at 0, so
/// that an alert on refusals has a series to watch on a fresh server.
pub const LIMITED_ROUTES: &[&str] = &[
    "/api/acsp/thread/create",
    "/api/acsp/thread/message",
    "/api/acsp/thread/status",
    "/api/acsp/thread",
    "/api/acsp/thread/{thread_id}",
    "/api/acsp/threads",
    "/api/acsp/me",
    "/api/acsp/realtime/open",
    "/api/acsp/webhooks",
    "/api/acsp/webhooks/{id}",
    "/api/acsp/webhooks/{id}/rotate",
    "/api/acsp/webhooks/{id}/pause",
    "/api/acsp/webhooks/{id}/resume",
    "/api/acsp/webhooks/{id}/attempts",
    "/v1/turn-taking/actions/open_thread",
    "/v1/turn-taking/actions/submit_messages",
    "/v1/turn-taking/actions/respond",
    "/v1/turn-taking/actions/record_event",
    "/v1/turn-taking/threads/{thread_id}/turns",
    "/v1/sse",
    "/mcp",
    // Counted by their handlers: registrations, and bad grants and
    // metrics tokens, by client address.
    "/api/acsp/agent-init",
    "/v1/ws",
    "/metrics",
];

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// [`LIMITED_ROUTES`] holds every route registered with a per-key
    /// quota, `/mcp` (mounted apart, with its quota), and the routes whose
    /// handlers check a limit themselves; nothing else.
    #[actix_web::test]
    async fn the_routes_shown_with_refusals_are_those_a_limit_can_refuse() {
        state::WITH_QUOTA.with(|r| r.borrow_mut().clear());
        let _app = actix_web::test::init_service(actix_web::App::new().configure(routes)).await;
        let mut limited: BTreeSet<&str> = state::WITH_QUOTA
            .with(|r| r.borrow().clone())
            .into_iter()
            .collect();
        assert!(limited.len() > 15, "quotas were recorded: {limited:?}");
        limited.extend([crate::mcp::endpoint::PATH]);
        // `check_registration` and `check_unauthenticated` outside the
        // key extractor.
        limited.extend(["/api/acsp/agent-init", "/v1/ws", "/metrics"]);
        let listed: BTreeSet<&str> = LIMITED_ROUTES.iter().copied().collect();
        assert_eq!(listed.len(), LIMITED_ROUTES.len(), "a route listed twice");
        assert_eq!(listed, limited);
    }
}
