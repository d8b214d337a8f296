//! The HTTP API: routes, shared state, the request middleware and extractors.
//! Handlers follow one shape: extract → parse into domain types → store
//! (which publishes after commit) → respond.

mod access;
mod acsp;
pub mod extract;
mod health;
mod json;
pub mod limits;
pub mod middleware;
mod realtime;
mod registration;
mod sse;
mod turn;
mod webhooks;

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

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use Route::*;
    cfg.service(resource("/healthz", None).route(web::get().to(health::healthz)))
        .service(
            resource("/api/acsp/agent-init", None).route(web::post().to(registration::agent_init)),
        )
        .service(
            resource("/api/acsp/thread/create", Some(ThreadCreate))
                .route(web::post().to(acsp::create_thread)),
        )
        .service(
            resource("/api/acsp/thread/message", Some(ThreadMessage))
                .route(web::post().to(acsp::post_message)),
        )
        .service(
            resource("/api/acsp/thread/status", Some(ThreadStatus))
                .route(web::post().to(acsp::set_status)),
        )
        .service(
            resource("/api/acsp/thread", Some(ThreadGet)).route(web::get().to(acsp::get_thread)),
        )
        .service(
            resource("/api/acsp/thread/{thread_id}", Some(ThreadGet))
                .route(web::get().to(acsp::get_thread)),
        )
        .service(
            resource("/api/acsp/threads", Some(ThreadList))
                .route(web::get().to(acsp::list_threads)),
        )
        .service(
            resource("/api/acsp/realtime/open", Some(RealtimeOpen))
                .route(web::post().to(realtime::open_inbox)),
        )
        .service(
            resource("/v1/turn-taking/actions/open_thread", Some(OpenThread))
                .route(web::post().to(realtime::open_thread)),
        )
        .service(
            resource(
                "/v1/turn-taking/actions/submit_messages",
                Some(SubmitMessages),
            )
            .route(web::post().to(turn::submit_messages)),
        )
        .service(
            resource("/v1/turn-taking/actions/respond", Some(Respond))
                .route(web::post().to(turn::respond)),
        )
        .service(
            resource("/v1/turn-taking/actions/record_event", Some(RecordEvent))
                .route(web::post().to(turn::record_event)),
        )
        .service(resource("/v1/ws", None).route(web::get().to(realtime::connect)))
        .service(resource("/v1/sse", None).route(web::get().to(sse::stream)))
        .service(
            resource("/api/acsp/webhooks", None)
                .route(web::post().to(webhooks::create))
                .route(web::get().to(webhooks::list)),
        )
        .service(
            resource("/api/acsp/webhooks/{id}", None).route(web::delete().to(webhooks::delete)),
        )
        .service(
            resource("/api/acsp/webhooks/{id}/rotate", None)
                .route(web::post().to(webhooks::rotate)),
        )
        .service(
            resource("/api/acsp/webhooks/{id}/pause", None).route(web::post().to(webhooks::pause)),
        )
        .service(
            resource("/api/acsp/webhooks/{id}/resume", None)
                .route(web::post().to(webhooks::resume)),
        )
        .service(
            resource("/api/acsp/webhooks/{id}/attempts", None)
                .route(web::get().to(webhooks::attempts)),
        )
        .default_service(web::to(not_found));
}
