//! Self-service registration: POST /api/acsp/agent-init (off unless the
//! server runs with --open-registration or --dev; limited per client IP).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::{client_ip, note_rate, required, JsonBody};
use super::state::{resource, AppState};
use crate::domain::limits::MAX_CAPABILITIES;
use crate::domain::text::{AgentName, Capability, Description};
use crate::domain::{Aid, Metadata};
use crate::error::{ApiError, ApiResult};
use crate::store::db::accounts::{self, NewAgent};

/// Registers this module's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/acsp/agent-init", None).post(agent_init));
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct AgentInitBody {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    agent_name: Option<String>,
    /// Each 1–100 characters (`[]` for none); one listed twice is kept
    /// once, where first listed.
    #[schema(required = true, value_type = Vec<CapabilityText>, max_items = 32)]
    capabilities: Option<Vec<String>>,
    #[schema(min_length = 1, max_length = 1000)]
    description: Option<String>,
    /// At most 16 KiB serialized.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
    /// The agent's Ed25519 public key; its AID is the first 50 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    ed25519_pubkey: Option<String>,
}

/// One capability of a registering agent.
// Describes the items of `capabilities`; never built.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 100)]
struct CapabilityText(String);

/// The answer to a registration: the new agent, and the account's user id
/// and login key (shown this once).
#[derive(Serialize)]
struct Registered<'a> {
    aid: &'a str,
    login_key: &'a str,
    agent_name: &'a str,
    capabilities: &'a [String],
    description: Option<&'a str>,
    metadata: &'a RawValue,
    user_id: &'a str,
}

/// POST /api/acsp/agent-init
#[utoipa::path(
    post,
    path = "/api/acsp/agent-init",
    tag = "acsp",
    request_body = AgentInitBody,
    responses(
        (status = 201, description = "The new agent, with its new account's login key (shown this once).", body = crate::http::openapi::Registration),
        (status = 403, description = "Registration is closed (`--open-registration` is off).", body = crate::http::openapi::ErrorEnvelope),
        (status = 409, description = "An agent with this `ed25519_pubkey` exists already.", body = crate::http::openapi::ErrorEnvelope),
    )
)]
pub async fn agent_init(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    if !state.config.registration_open() {
        return Err(ApiError::Forbidden(
            "registration is closed (start the server with --open-registration)".into(),
        ));
    }
    note_rate(&req, state.limits.check_registration(client_ip(&req)))?;
    // Read the body only once registration is known to be open and allowed.
    let JsonBody(body) = JsonBody::<AgentInitBody>::from_payload(&req, body).await?;
    let name = AgentName::parse("agent_name", required("agent_name", body.agent_name)?)?;
    // The contract makes it required; say what to send when there are none.
    let capabilities = body.capabilities.ok_or_else(|| {
        ApiError::field(
            "capabilities",
            "capabilities is required: a list of strings ([] for none)",
        )
    })?;
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(ApiError::field(
            "capabilities",
            format!("capabilities must have at most {MAX_CAPABILITIES} items"),
        ));
    }
    // Each is named by its index, as a wrong type in it is. One listed
    // twice is kept once, where first listed (as a webhook's `events`).
    let mut listed: Vec<String> = Vec::with_capacity(capabilities.len());
    for (i, c) in capabilities.into_iter().enumerate() {
        let c = Capability::parse(&format!("capabilities[{i}]"), c)?.into_string();
        if !listed.contains(&c) {
            listed.push(c);
        }
    }
    let capabilities = listed;
    let description = body
        .description
        .map(|d| Description::parse("description", d).map(Description::into_string))
        .transpose()?;
    let metadata = Metadata::parse("metadata", body.metadata.as_deref())?;
    let aid = match body.ed25519_pubkey {
        Some(key) => Aid::from_pubkey("ed25519_pubkey", &key)?,
        None => Aid::random(),
    };
    let agent = NewAgent {
        aid,
        name: name.into_string(),
        capabilities,
        description,
        metadata,
    };
    let (agent, user_id, key) = state
        .store
        .write(move |ctx| {
            if accounts::aid_exists(ctx.conn, &agent.aid)? {
                return Err(ApiError::Conflict {
                    code: "CONFLICT",
                    message: "an agent with this public key is already registered".into(),
                });
            }
            let (account_id, user_id) = accounts::create_account(ctx.conn)?;
            let key = accounts::create_key(ctx.conn, account_id)?;
            accounts::create_agent(ctx.conn, account_id, &agent)?;
            Ok((agent, user_id, key))
        })
        .await?;
    // Metadata parsed as a JSON object: its text is JSON.
    let metadata: &RawValue = serde_json::from_str(agent.metadata.as_json_text())
        .map_err(|e| ApiError::Internal(format!("registration metadata: {e}")))?;
    Ok(HttpResponse::Created().json(Registered {
        aid: agent.aid.as_str(),
        login_key: key.reveal(),
        agent_name: &agent.name,
        capabilities: &agent.capabilities,
        description: agent.description.as_deref(),
        metadata,
        user_id: user_id.as_str(),
    }))
}
