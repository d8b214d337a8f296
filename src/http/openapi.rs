//! The OpenAPI 3.1 document served at `GET /openapi.json`, generated from
//! the `#[utoipa::path]` annotations on the handlers and the `ToSchema`
//! derives on their bodies. What every route shares (the Bearer scheme,
//! the error envelope, and the statuses any route can answer: 429 from the
//! per-IP connection cap, 431, 500, 503; 408, 413 and 422 wherever a body
//! or a parameter is read) is added here once, by [`Shared`], rather than
//! repeated on every handler.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response};
use utoipa::{Modify, OpenApi, ToSchema};

use super::state::resource;
use crate::store::admin::AgentRow;
use crate::store::webhooks::{Attempt, Endpoint};
// The document's names for two domain enums; the store's answer types
// name them too, so they live with the enums they describe.
pub use crate::domain::kinds::{MsgTypeName, ThreadStatusName};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json", None).get(document));
}

/// Routes the server registers that the document leaves out, and why.
pub const UNDOCUMENTED: [(&str, &str); 7] = [
    (
        "/",
        "the web inspector's page (HTML for a browser, not an API)",
    ),
    ("/inspect", "the web inspector's page"),
    ("/inspect/", "the web inspector's page"),
    ("/inspect/app.js", "the web inspector's script"),
    ("/inspect/style.css", "the web inspector's style sheet"),
    ("/inspect/icon.svg", "the web inspector's icon"),
    (
        "/mcp",
        "the Model Context Protocol endpoint (JSON-RPC over streamable HTTP; \
         its tools carry their own JSON schemas, listed by `tools/list`)",
    ),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "threadline",
        description = "A self-hosted thread server for AI agents: ACSP agent threads and \
                       turn-taking chat over HTTP, WebSocket and server-sent events."
    ),
    paths(
        super::registration::agent_init,
        super::me::me,
        super::acsp::create_thread,
        super::acsp::post_message,
        super::acsp::get_thread,
        get_thread_by_query,
        super::acsp::set_status,
        super::acsp::list_threads,
        super::realtime::open_inbox,
        super::realtime::open_thread,
        super::realtime::connect,
        super::turn::submit_messages,
        super::turn::respond,
        super::turn::record_event,
        super::turn::list_turns,
        super::sse::stream,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::rotate,
        super::webhooks::pause,
        super::webhooks::resume,
        super::webhooks::attempts,
        super::health::healthz,
        super::metrics::metrics,
        document,
    ),
    components(schemas(ErrorEnvelope, StatusFilterName)),
    modifiers(&Shared)
)]
struct ApiDoc;

/// The document, built once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// GET /openapi.json
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object))
)]
pub async fn document() -> HttpResponse {
    // Serialized once: anyone may ask for it, so it must cost nothing.
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        // expect: the document is plain data (strings, maps, numbers).
        serde_json::to_string(openapi()).expect("expect: the OpenAPI document serializes")
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(text.as_str())
}

/// The same read as `GET /api/acsp/thread/{thread_id}`, with the thread
/// named in the query (one handler serves both paths).
#[utoipa::path(
    get,
    path = "/api/acsp/thread",
    operation_id = "get_thread_by_query",
    tag = "acsp",
    params(
        ("thread_id" = String, Query, format = "uuid", description = "The thread's id."),
        ("aid" = Option<String>, Query, pattern = "^[0-9a-f]{50}$", description = "The agent reading (marks the page read). For an ACSP thread: required when the account owns several agents (422 without it), inferred when it owns one. Not needed for a turn-taking thread."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Messages per page (default 50)."),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Messages to skip after `after`."),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only messages with a higher seq."),
    ),
    responses(
        (status = 200, description = "The thread and a page of its messages, oldest first.", body = ThreadPage),
        (status = 403, description = "`aid` is not one of the account's agents.", body = ErrorEnvelope),
        (status = 404, description = "No such thread, or the caller may not see it.", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn get_thread_by_query() {}

/// The error envelope every error response carries.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// What went wrong.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
struct ErrorBody {
    /// Machine-readable: `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`,
    /// `METHOD_NOT_ALLOWED`, `REQUEST_TIMEOUT`, `CONFLICT`,
    /// `THREAD_NOT_ACTIVE`, `TOO_MANY_WEBHOOKS`, `TOO_MANY_PENDING_PARTS`,
    /// `PAYLOAD_TOO_LARGE`,
    /// `VALIDATION_ERROR`, `RATE_LIMITED`, `HEADERS_TOO_LARGE`,
    /// `UNAVAILABLE`, `INTERNAL`.
    code: String,
    message: String,
    /// The input at fault, when one is: on `VALIDATION_ERROR`; on
    /// `FORBIDDEN` (`aid`); on `NOT_FOUND` (`target_aid`, or a `thread_id`
    /// given in the body or query, not in the path). Absent otherwise.
    #[schema(required = false)]
    field: String,
    /// Seconds to wait (`RATE_LIMITED` only).
    #[schema(required = false, minimum = 1)]
    retry_after: u64,
    /// Also in the `X-Request-Id` header and the server's log line.
    request_id: String,
}

/// `GET /api/acsp/thread/{thread_id}`: the thread and one page.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ThreadPage {
    thread: crate::store::model::Thread,
    messages: Vec<crate::store::model::Message>,
    has_more: bool,
}

/// `POST /api/acsp/agent-init`: the new agent and its account.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Registration {
    aid: String,
    /// The new account's login key, shown this once.
    login_key: String,
    agent_name: String,
    capabilities: Vec<String>,
    description: Option<String>,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    user_id: String,
}

/// An event type a webhook endpoint may take.
// Describes a JSON shape read elsewhere (`webhooks::target::EVENT_TYPES`,
// compared with this in the unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, ToSchema)]
pub enum WebhookEvent {
    #[serde(rename = "thread.created")]
    Created,
    #[serde(rename = "thread.message")]
    Message,
    #[serde(rename = "thread.status")]
    Status,
    /// A thread was deleted (`threadline thread delete`, `prune`): data
    /// `{thread_id, creator_aid, target_aid, deleted_at, reason}`.
    #[serde(rename = "thread.deleted")]
    Deleted,
}

/// The thread list's filter: one status, or `all`.
// Describes values parsed elsewhere (`domain::StatusFilter`, compared
// with this in the unit tests); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilterName {
    Active,
    Closed,
    Archived,
    All,
}

/// What a turn-taking client reports with `record_event`.
// Describes values parsed elsewhere (`http::turn::record_event`; the
// black-box tests send each, and one more); never built.
#[allow(dead_code)]
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnEventType {
    TypingStart,
    TypingStop,
    MessageEdited,
}

/// A turn-taking thread's integrations (at most 16 KiB serialized).
// Describes a JSON shape read elsewhere (`http::realtime`); never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Integrations {
    /// Present: the thread's turns are tagged from timing.
    #[schema(required = false)]
    social_signals: SocialSignals,
}

// Describes a JSON shape read elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
struct SocialSignals {
    #[schema(required = false)]
    channel_id: String,
}

/// `GET /api/acsp/me`.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct MeAnswer {
    user_id: String,
    /// The account's agents, oldest first.
    agents: Vec<AgentRow>,
}

/// `GET /healthz`.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Health {
    /// `ok`.
    status: String,
    version: String,
    uptime_secs: u64,
    /// The writer's `synchronous` level: `normal` or `full`.
    durability: String,
    realtime: RealtimeGauges,
}

// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
struct RealtimeGauges {
    live_actors: u64,
    sockets: u64,
}

/// An endpoint with its signing secret (shown by create and rotate only).
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct WebhookWithSecret {
    webhook: Endpoint,
    /// `whsec_…`: the base64 after it keys the HMAC.
    secret: String,
}

/// One endpoint.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct WebhookAnswer {
    webhook: Endpoint,
}

/// The account's endpoints.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Endpoint>,
}

/// An endpoint and its latest attempts, newest first.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct AttemptsAnswer {
    webhook: Endpoint,
    attempts: Vec<Attempt>,
}

/// `DELETE /api/acsp/webhooks/{id}`.
// Describes a JSON shape written elsewhere; never built.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Deleted {
    deleted: bool,
}

/// Adds what every operation shares (see the module comment).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("login key (nk_…)")
                    .description(Some(
                        "A login key, `Authorization: Bearer nk_…`. Missing, malformed, \
                         unknown or revoked: 401.",
                    ))
                    .build(),
            ),
        );
        let mut description = doc.info.description.clone().unwrap_or_default();
        description.push_str(
            "\n\nErrors: every error response is the `ErrorEnvelope` with its request id. \
             Left out of this document:\n",
        );
        for (path, why) in UNDOCUMENTED {
            description.push_str(&format!("\n- `{path}`: {why}"));
        }
        doc.info.description = Some(description);
        add_links(doc);
        describe_text_rules(doc);
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_shared_responses(op);
                headers_are_never_null(op);
                name_the_generation(op);
            }
        }
    }
}

/// Links from the answers that make a resource to the operations that
/// take its id, so a client (or schemathesis' stateful phase) can follow
/// them: (operation, status, link name, target operation, parameter, value).
const LINKS: [(&str, &str, &str, &str, &str, &str); 7] = [
    (
        "create_thread",
        "201",
        "GetThread",
        "get_thread",
        "thread_id",
        "$response.body#/thread/id",
    ),
    (
        "create_webhook",
        "201",
        "DeleteWebhook",
        "delete_webhook",
        "id",
        "$response.body#/webhook/id",
    ),
    (
        "create_webhook",
        "201",
        "RotateWebhookSecret",
        "rotate_webhook_secret",
        "id",
        "$response.body#/webhook/id",
    ),
    (
        "create_webhook",
        "201",
        "PauseWebhook",
        "pause_webhook",
        "id",
        "$response.body#/webhook/id",
    ),
    (
        "create_webhook",
        "201",
        "ResumeWebhook",
        "resume_webhook",
        "id",
        "$response.body#/webhook/id",
    ),
    (
        "create_webhook",
        "201",
        "ListWebhookAttempts",
        "list_webhook_attempts",
        "id",
        "$response.body#/webhook/id",
    ),
    (
        "open_thread",
        "200",
        "GetOpenedThread",
        "get_thread",
        "thread_id",
        "$response.body#/thread/id",
    ),
];

fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            for (from, status, name, to, param, value) in LINKS {
                if op.operation_id.as_deref() != Some(from) {
                    continue;
                }
                if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
                    let link = utoipa::openapi::link::LinkBuilder::new()
                        .operation_id(to)
                        .parameter(param, value)
                        .build();
                    response.links.insert(name.to_owned(), RefOr::T(link));
                }
            }
        }
    }
}

/// What a name or label must be (`domain::text::one_line`): no keyword
/// states it (a `pattern` could state the characters but not "something
/// visible"), so the field's description does.
pub(crate) const ONE_LINE: &str = "One visible line: no control characters (C0 and C1, tab and \
                        newline included), no bidi embeddings, overrides or isolates \
                        (U+202A–U+202E, U+2066–U+2069), and not only whitespace or \
                        invisible characters (U+200B–U+200F, U+2060, U+FEFF, …).";

/// What a name adds to [`ONE_LINE`] (`domain::text::Name`).
const NAME: &str = "It neither starts nor ends with white space (refused, not trimmed).";

/// What free text shown to people must be (`domain::text::readable`).
const PROSE: &str = "Free text: tabs and line breaks (LF, CRLF) allowed; no other \
                     control characters (C0 and C1, a lone CR included), no bidi \
                     embeddings, overrides or isolates (U+202A–U+202E, U+2066–U+2069), \
                     and not only whitespace or invisible characters.";

/// The request fields whose text rules go into their description:
/// (component, property, or "" for the component itself, the rule's
/// sentences). A unit test checks that each names a schema the document has.
const TEXT_RULES: [(&str, &str, &[&str]); 7] = [
    ("AgentInitBody", "agent_name", &[ONE_LINE, NAME]),
    ("CapabilityText", "", &[ONE_LINE]),
    ("AgentInitBody", "description", &[PROSE]),
    ("CreateThreadBody", "subject", &[ONE_LINE]),
    ("SubmitMessage", "sender", &[ONE_LINE]),
    ("RecordEventBody", "sender", &[ONE_LINE]),
    // `WebhookDescription::parse_optional`: empty is none.
    (
        "CreateBody",
        "description",
        &["An empty string is no description.", ONE_LINE],
    ),
];

/// Appends each of [`TEXT_RULES`] to its field's description (after what
/// the field's doc comment says, if anything).
fn describe_text_rules(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Schema;
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (component, property, rule) in TEXT_RULES {
        let Some(RefOr::T(schema)) = components.schemas.get_mut(component) else {
            continue;
        };
        let target = match (property, schema) {
            ("", schema) => Some(schema),
            (name, Schema::Object(object)) => match object.properties.get_mut(name) {
                Some(RefOr::T(schema)) => Some(schema),
                _ => None,
            },
            _ => None,
        };
        let description = match target {
            Some(Schema::Object(o)) => &mut o.description,
            Some(Schema::OneOf(o)) => &mut o.description,
            Some(Schema::Array(a)) => &mut a.description,
            _ => continue,
        };
        let rule = rule.join(" ");
        *description = Some(match description.take() {
            Some(before) => format!("{before} {rule}"),
            None => rule,
        });
    }
}

fn add_shared_responses(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(envelope(description)));
    };
    if secured {
        add("401", "Missing, malformed, unknown or revoked login key.");
    }
    if has_body {
        add(
            "408",
            "The body did not arrive within `--body-timeout-secs`.",
        );
        add("413", "The body is over 64 KiB.");
    }
    if has_body || has_params {
        add(
            "422",
            "An input is malformed, of the wrong type, missing or out of range (`field` names it).",
        );
    }
    add(
        "429",
        "Over a rate limit or the per-IP connection cap (`Retry-After` says when to retry).",
    );
    add(
        "400",
        "`Host` missing (HTTP/1.1), given twice or not `host[:port]` (`field`: `Host`), \
         or a request head the HTTP layer cannot read.",
    );
    add("414", "Request target (path and query) over 65,534 bytes.");
    add("431", "Request headers over 16 KiB (or 96 fields).");
    add(
        "500",
        "A bug (logged with the request id; the body says nothing more).",
    );
    add(
        "503",
        "Shutting down, or the database stayed locked past its timeout.",
    );
}

/// Every answer names the database's generation (`http::middleware`):
/// each response of every operation lists the header.
fn name_the_generation(op: &mut Operation) {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    use utoipa::openapi::HeaderBuilder;
    let header = HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("uuid".to_owned()))),
        ))
        .description(Some(
            "The database's generation: an opaque id that stays through restarts and \
             changes only when the data may have gone back (a restore). Another one than \
             the one kept with what a client holds means that may be gone: read it again \
             (README, \"Resume\").",
        ))
        .build();
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .insert("Threadline-Generation".to_owned(), RefOr::T(header.clone()));
        }
    }
}

/// A header is absent or has a value; it cannot be null. (utoipa makes an
/// optional parameter nullable, outside the query string.)
fn headers_are_never_null(op: &mut Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for p in op.parameters.iter_mut().flatten() {
        let RefOr::T(p) = p else {
            continue;
        };
        if !matches!(p.parameter_in, ParameterIn::Header) {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(schema))) = &mut p.schema {
            if let SchemaType::Array(types) = &schema.schema_type {
                let kept: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                if let [only] = kept.as_slice() {
                    schema.schema_type = SchemaType::Type(only.clone());
                }
            }
        }
    }
}

/// A response with the error envelope as its JSON body.
fn envelope(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name(
                    "ErrorEnvelope",
                )))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route goes through `state::resource`, which records its path
    /// and methods (in tests) as the app is built: each path must be in the
    /// document or in [`UNDOCUMENTED`], each documented path must be
    /// registered, with the documented methods. (The black-box test also
    /// asks every documented path with every method.)
    #[actix_web::test]
    async fn every_registered_route_is_documented_and_every_documented_one_is_registered() {
        super::super::state::REGISTERED.with(|r| r.borrow_mut().clear());
        let _app =
            actix_web::test::init_service(actix_web::App::new().configure(super::super::routes))
                .await;
        let served = super::super::state::REGISTERED.with(|r| r.borrow().clone());
        let registered: Vec<&str> = served.iter().map(|(p, _)| *p).collect();
        assert!(
            registered.len() > 20,
            "routes were recorded: {registered:?}"
        );
        let doc = openapi();
        let excluded: Vec<&str> = UNDOCUMENTED.iter().map(|(p, _)| *p).collect();
        for path in &registered {
            assert!(
                doc.paths.paths.contains_key(*path) || excluded.contains(path),
                "{path} is registered but neither documented nor in UNDOCUMENTED"
            );
        }
        for path in doc.paths.paths.keys() {
            assert!(
                registered.contains(&path.as_str()),
                "{path} is documented but not registered"
            );
        }
        for path in excluded.iter().filter(|p| **p != "/mcp") {
            assert!(
                registered.contains(path),
                "{path} is excluded but not registered"
            );
        }
        // Every path that serves GET serves HEAD too (RFC 9110 §9.1), but
        // the WebSocket upgrade, which only a GET can open. The document
        // leaves HEAD implied by GET, as OpenAPI tools expect.
        for (path, methods) in &served {
            let get = methods.contains(&actix_web::http::Method::GET);
            let head = methods.contains(&actix_web::http::Method::HEAD);
            assert_eq!(head, get && *path != "/v1/ws", "HEAD on {path}");
        }
        // The other methods each path serves (and lists in a 405's
        // `Allow`) are the ones documented for it.
        let doc = serde_json::to_value(doc).unwrap();
        for (path, methods) in &served {
            let Some(item) = doc["paths"][*path].as_object() else {
                continue;
            };
            let mut documented: Vec<String> = item
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(|k| k.to_uppercase())
                .collect();
            let mut served: Vec<String> = methods
                .iter()
                .filter(|m| **m != actix_web::http::Method::HEAD)
                .map(|m| m.to_string())
                .collect();
            documented.sort();
            served.sort();
            assert_eq!(served, documented, "the methods of {path}");
        }
    }

    #[test]
    fn the_documented_webhook_event_types_are_the_ones_accepted() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let documented = &doc["components"]["schemas"]["WebhookEvent"]["enum"];
        assert_eq!(
            documented,
            &serde_json::json!(crate::webhooks::target::EVENT_TYPES)
        );
    }

    /// utoipa registers the schemas a body names, but not those only a
    /// parameter names: a `$ref` to one left out would dangle.
    #[test]
    fn every_schema_reference_names_a_component() {
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} names no component"
            );
        }
    }

    /// The black-box probes send each documented value and one more; this
    /// catches the other drift, a value the server takes that the
    /// document does not list.
    #[test]
    fn the_documented_enums_are_the_values_the_server_parses() {
        use crate::domain::{MsgType, StatusFilter, ThreadStatus};
        let doc = serde_json::to_value(openapi()).unwrap();
        let listed = |name: &str| doc["components"]["schemas"][name]["enum"].clone();
        let statuses = ThreadStatus::ALL.map(ThreadStatus::as_str);
        assert_eq!(
            listed("MsgTypeName"),
            serde_json::json!(MsgType::ALL.map(MsgType::as_str))
        );
        assert_eq!(listed("ThreadStatusName"), serde_json::json!(statuses));
        let filters: Vec<&str> = statuses.into_iter().chain(["all"]).collect();
        assert_eq!(listed("StatusFilterName"), serde_json::json!(filters));
        for f in filters {
            assert!(StatusFilter::parse("status", f).is_ok(), "{f}");
        }
    }

    /// A batch's decision and tags are closed sets (API.md names them):
    /// the document lists exactly what the policy returns.
    #[test]
    fn the_documented_decisions_and_tags_are_the_policys() {
        use crate::domain::{BatchTiming, TurnPolicy};
        use crate::turn::policy;
        let doc = serde_json::to_value(openapi()).unwrap();
        let listed = |name: &str| doc["components"]["schemas"][name]["enum"].clone();
        let decisions = [
            policy::decide(TurnPolicy::Heuristic, ["what now?"]),
            policy::decide(TurnPolicy::Heuristic, ["ok"]),
        ];
        assert_eq!(listed("DecisionName"), serde_json::json!(decisions));
        let every_tag = BatchTiming {
            previous_batch_ms: Some(1_000_000 - 1),
            batch_ms: 1_000_000,
            size: policy::BURST_SIZE,
            senders: vec![(1_000_000, Some(1_000_000 - policy::COMEBACK_AFTER_MS))],
        };
        assert_eq!(
            listed("TurnTagName"),
            serde_json::json!(policy::tags(&every_tag))
        );
    }

    /// Answers name the same enums as requests: a client generated from
    /// the document gets a closed type for a thread's status and a
    /// message's type, and schemathesis checks every answer against them.
    #[test]
    fn answers_give_status_and_msg_type_as_the_enums() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let enum_ref =
            |name: &str| serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
        for answer in ["Thread", "ThreadSummary", "StatusAnswer"] {
            assert_eq!(
                schemas[answer]["properties"]["status"],
                enum_ref("ThreadStatusName"),
                "{answer}"
            );
        }
        assert_eq!(
            schemas["Message"]["properties"]["msg_type"],
            enum_ref("MsgTypeName")
        );
    }

    /// Each text rule reaches the field it names: a renamed body or field
    /// would leave the rule out silently.
    #[test]
    fn every_text_rule_is_in_the_description_of_its_field() {
        let doc = serde_json::to_value(openapi()).unwrap();
        for (component, property, rule) in TEXT_RULES {
            let schema = &doc["components"]["schemas"][component];
            let field = match property {
                "" => schema,
                name => &schema["properties"][name],
            };
            let description = field["description"].as_str().unwrap_or_default();
            assert!(
                description.ends_with(&rule.join(" ")),
                "{component}.{property}: {description:?}"
            );
        }
    }

    #[test]
    fn every_link_joins_two_documented_operations() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let ops: Vec<&serde_json::Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .collect();
        let by_id = |id: &str| {
            ops.iter()
                .find(|op| op["operationId"] == id)
                .unwrap_or_else(|| panic!("no operation {id}"))
        };
        for (from, status, name, to, param, _) in LINKS {
            let link = &by_id(from)["responses"][status]["links"][name];
            assert_eq!(link["operationId"], to, "{from} {status} {name}");
            let params = by_id(to)["parameters"].as_array().unwrap();
            assert!(
                params.iter().any(|p| p["name"] == param),
                "{to} takes no {param}"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_the_error_envelope() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
        let missing_401: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, op)| op.get("security").is_some())
                    .filter(|(_, op)| op["responses"].get("401").is_none())
                    .map(move |(method, _)| format!("{method} {path}"))
            })
            .collect();
        assert!(
            missing_401.is_empty(),
            "secured without a 401: {missing_401:?}"
        );
    }
}
