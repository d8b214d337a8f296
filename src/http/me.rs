//! GET /api/acsp/me: the key's account and its agents, so a client that has
//! only a login key can find its AIDs.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::extract::Caller;
use super::state::{resource, AppState};
use crate::error::ApiResult;
use crate::ratelimit::Route;
use crate::store::db::admin;

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/acsp/me", Some(Route::Me)).get(me));
}

/// GET /api/acsp/me
#[utoipa::path(
    get,
    path = "/api/acsp/me",
    operation_id = "me",
    tag = "acsp",
    responses((status = 200, description = "The key's account and its agents.", body = crate::http::openapi::MeAnswer)),
    security(("bearer" = []))
)]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let (user_id, agents) = caller
        .read(&state.store, |conn, account| {
            Ok((
                account.user_id.clone(),
                admin::agents(conn, Some(account.id))?,
            ))
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "user_id": user_id, "agents": agents })))
}
