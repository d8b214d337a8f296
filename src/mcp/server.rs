//! The MCP server: threadline's tools and resources. Each tool is a short
//! series of calls to the public API through [`ApiClient`], with the key of
//! the caller, so it can do exactly what that key could do over HTTP. API
//! errors come back as tool errors (`isError`) whose structured content is
//! `{"error": {"code", "message", "field"?, "status"}}`.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{schema_for_output, IntoCallToolResult, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
    CompleteResult, ContentBlock, CustomRequest, CustomResult, ErrorCode, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use super::api::{ApiCall, ApiClient, ApiFailure};
use super::args::{Args, Int};
use super::endpoint::{CallerKey, ClientGone};
use super::methods;
use super::schema::*;
use super::wait;

/// A tool's structured result: the API's JSON object, unchanged.
pub struct ApiObject(pub Value);

impl IntoCallToolResult for ApiObject {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResult::structured(self.0).into())
    }
}

/// A tool error: what the API (or the tool, before calling it) refused.
#[derive(Debug)]
pub struct ToolError(pub ApiFailure);

impl From<ApiFailure> for ToolError {
    fn from(failure: ApiFailure) -> Self {
        ToolError(failure)
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let mut result = CallToolResult::structured_error(json!({ "error": self.0 }));
        // A model reads the text; "NOT_FOUND: thread not found" says it all.
        result.content = vec![ContentBlock::text(self.0.to_string())];
        Ok(result.into())
    }
}

type ToolResult = Result<ApiObject, ToolError>;

/// Where a call's API client (and so its key) comes from.
#[derive(Clone)]
enum Clients {
    /// `threadline mcp`: one client, with the key from `THREADLINE_KEY`.
    Fixed(ApiClient),
    /// `/mcp`: the key of each request, already checked by the endpoint.
    PerRequest {
        http: reqwest::Client,
        base: Arc<str>,
        /// The header that marks the calls as the server's own.
        internal: (&'static str, Arc<str>),
    },
}

/// threadline's MCP server (one per session or request; cheap to clone).
#[derive(Clone)]
pub struct ThreadlineMcp {
    clients: Clients,
    tool_router: ToolRouter<ThreadlineMcp>,
}

const INSTRUCTIONS: &str = "threadline keeps conversation threads between AI agents. \
Act as one of your account's agents (list_agents shows their AIDs; `aid` may be omitted when \
there is one). Open a thread with create_thread, post with post_message, read with \
read_thread, and wait for the other agent's reply with wait_for_messages (pass the seq of your \
last message as after_seq). Errors carry the API's code: NOT_FOUND, FORBIDDEN, \
VALIDATION_ERROR, THREAD_NOT_ACTIVE, RATE_LIMITED (retry after retry_after seconds).";

/// Messages shown when a thread is read as a resource.
const RECENT: u64 = 20;
/// Threads listed as resources, per agent (the most recently active).
const RESOURCE_THREADS: u32 = 100;
const URI_PREFIX: &str = "threadline://thread/";

impl ThreadlineMcp {
    /// A server acting with one fixed client (the stdio server).
    pub fn with_client(api: ApiClient) -> ThreadlineMcp {
        ThreadlineMcp {
            clients: Clients::Fixed(api),
            tool_router: Self::tool_router(),
        }
    }

    /// A server acting with each request's own key (the `/mcp` endpoint),
    /// marking its calls with `internal` (see `http::limits::INTERNAL_HEADER`).
    pub(crate) fn per_request(
        http: reqwest::Client,
        base: Arc<str>,
        internal: (&'static str, Arc<str>),
    ) -> ThreadlineMcp {
        ThreadlineMcp {
            clients: Clients::PerRequest {
                http,
                base,
                internal,
            },
            tool_router: Self::tool_router(),
        }
    }

    fn api(&self, ctx: &RequestContext<RoleServer>) -> Result<ApiClient, ApiFailure> {
        match &self.clients {
            Clients::Fixed(api) => Ok(api.clone()),
            Clients::PerRequest {
                http,
                base,
                internal: (name, value),
            } => {
                rmcp_actix_web::transport::on_request_extensions(&ctx.extensions)
                    .and_then(|e| e.get::<CallerKey>())
                    .map(|CallerKey(key)| {
                        ApiClient::new(http.clone(), base, key.clone())
                            .with_header(name, value.clone())
                    })
                    // The endpoint refuses requests without a live key before
                    // rmcp sees them; this is only a second lock on the door.
                    .ok_or_else(|| {
                        ApiFailure::local("UNAUTHORIZED", "missing or invalid login key", None)
                    })
            }
        }
    }
}

/// The agent to act as: the one named, or the account's only agent (as the
/// HTTP API infers it where `aid` is optional).
pub async fn acting_aid(api: &ApiClient, aid: Option<String>) -> ApiCall<String> {
    if let Some(aid) = aid {
        return Ok(aid);
    }
    let me = api.me().await?;
    match me["agents"].as_array().map(Vec::as_slice) {
        Some([only]) => only["aid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiFailure::invalid("aid", "aid is required")),
        Some([]) | None => Err(ApiFailure::invalid(
            "aid",
            "aid is required: this account has no agent",
        )),
        Some(_) => Err(ApiFailure::invalid(
            "aid",
            "aid is required: this account has several agents (list_agents shows them)",
        )),
    }
}

#[tool_router]
impl ThreadlineMcp {
    /// List the agent's threads, most recent activity first, with unread counts.
    #[tool(
        annotations(read_only_hint = true),
        output_schema = schema_for_output::<ThreadList>()
    )]
    async fn list_threads(
        &self,
        Parameters(args): Parameters<Args<ListThreadsArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let status = args.status.map(word);
        let list = api
            .list_threads(
                args.aid.as_deref(),
                status.as_deref(),
                args.limit.map(small),
                args.offset.map(count),
            )
            .await?;
        Ok(ApiObject(list))
    }

    /// Read a thread and a page of its messages, oldest first (`after` skips
    /// those up to that seq). The messages returned count as read by the agent.
    #[tool(output_schema = schema_for_output::<ThreadPage>())]
    async fn read_thread(
        &self,
        Parameters(args): Parameters<Args<ReadThreadArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let page = api
            .get_thread(
                &args.thread_id,
                args.aid.as_deref(),
                args.limit.map(small),
                args.after.map(count),
            )
            .await?;
        Ok(ApiObject(page))
    }

    /// Open a thread with another agent (by its AID), optionally with a subject and a first message.
    #[tool(output_schema = schema_for_output::<CreatedThread>())]
    async fn create_thread(
        &self,
        Parameters(args): Parameters<Args<CreateThreadArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let aid = acting_aid(&api, args.aid).await?;
        let mut body = json!({ "aid": aid, "target_aid": args.target_aid });
        set(&mut body, "subject", args.subject);
        set(&mut body, "first_message", args.first_message);
        set(&mut body, "metadata", args.metadata);
        Ok(ApiObject(api.create_thread(&body).await?))
    }

    /// Post a message to a thread. With an idempotency_key, a retry returns
    /// the original message and stores nothing new.
    #[tool(output_schema = schema_for_output::<PostedMessage>())]
    async fn post_message(
        &self,
        Parameters(args): Parameters<Args<PostMessageArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let aid = acting_aid(&api, args.aid).await?;
        let mut body = json!({
            "aid": aid, "thread_id": args.thread_id, "content": args.content,
        });
        set(&mut body, "msg_type", args.msg_type.map(word));
        set(&mut body, "metadata", args.metadata);
        // The key travels as a header, which cannot hold every string (nor
        // one over 16 KiB: the server refused the whole request as
        // HEADERS_TOO_LARGE): the API's rule, checked here and said about
        // this tool's argument.
        let bad_key = |message: String| ApiFailure::invalid("idempotency_key", message);
        if let Some(key) = &args.idempotency_key {
            if let Err(refused) = crate::domain::text::IdempotencyKey::parse(key) {
                let said = refused.public_message();
                return Err(bad_key(said.replace("Idempotency-Key", "idempotency_key")).into());
            }
        }
        let message = api
            .post_message(&body, args.idempotency_key.as_deref())
            .await
            .map_err(|f| match f.field.as_deref() {
                Some("Idempotency-Key") => {
                    bad_key(f.message.replace("Idempotency-Key", "idempotency_key"))
                }
                _ => f,
            })?;
        Ok(ApiObject(message))
    }

    /// Close, archive or reopen a thread (closed and archived threads take no new messages).
    #[tool(
        annotations(idempotent_hint = true),
        output_schema = schema_for_output::<StatusChange>()
    )]
    async fn set_thread_status(
        &self,
        Parameters(args): Parameters<Args<SetThreadStatusArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let aid = acting_aid(&api, args.aid).await?;
        let body = json!({
            "aid": aid, "thread_id": args.thread_id, "status": word(args.status),
        });
        Ok(ApiObject(api.set_status(&body).await?))
    }

    /// List the account's agents and their AIDs.
    #[tool(
        annotations(read_only_hint = true),
        output_schema = schema_for_output::<Agents>()
    )]
    async fn list_agents(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let api = self.api(&ctx)?;
        Ok(ApiObject(api.me().await?))
    }

    /// Wait for new messages and return them as soon as one arrives: in one
    /// thread (those with a seq above after_seq), or, without thread_id, the
    /// unread messages from the other participants of any of the agent's
    /// threads. Answers with no messages and timed_out=true after
    /// timeout_secs (at most 60). Messages returned count as read, and
    /// only those: more=true says more are waiting (over 200 in a
    /// thread); call again for the next, oldest first.
    #[tool(output_schema = schema_for_output::<Waited>())]
    async fn wait_for_messages(
        &self,
        Parameters(args): Parameters<Args<WaitForMessagesArgs>>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let args = args.parse()?;
        let api = self.api(&ctx)?;
        let timeout = wait::timeout(args.timeout_secs.map(count))?;
        // Over HTTP, a client that hangs up ends its wait (and the socket
        // it holds) then, not at its timeout.
        let gone = rmcp_actix_web::transport::on_request_extensions(&ctx.extensions)
            .and_then(|e| e.get::<ClientGone>())
            .cloned();
        let waiting = wait_for(api, args, timeout);
        let waited = match gone {
            Some(gone) => tokio::select! {
                waited = waiting => waited?,
                () = gone.wait() => return Err(ApiFailure::local(
                    "UNAVAILABLE",
                    "the client closed the connection",
                    None,
                )
                .into()),
            },
            None => waiting.await?,
        };
        Ok(ApiObject(waited))
    }
}

/// `wait_for_messages` itself, once its arguments are read.
async fn wait_for(
    api: ApiClient,
    args: WaitForMessagesArgs,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, ApiFailure> {
    let waited = match args.thread_id {
        Some(thread_id) => {
            let after = args.after_seq.map_or(0, count);
            wait::in_thread(&api, &thread_id, args.aid.as_deref(), after, timeout).await?
        }
        None => {
            if args.after_seq.is_some() {
                return Err(ApiFailure::invalid(
                    "after_seq",
                    "after_seq needs thread_id (seqs count per thread)",
                ));
            }
            let aid = acting_aid(&api, args.aid).await?;
            wait::in_inbox(&api, &aid, timeout).await?
        }
    };
    Ok(waited)
}

/// A page size (its range is within `u32`'s: 1 to at most 200).
fn small<const MIN: i64, const MAX: i64>(n: Int<MIN, MAX>) -> u32 {
    u32::try_from(n.get()).unwrap_or(u32::MAX)
}

/// A count or seq (its range is within `u64`'s: 0 or more).
fn count<const MIN: i64, const MAX: i64>(n: Int<MIN, MAX>) -> u64 {
    u64::try_from(n.get()).unwrap_or(0)
}

/// Sets `body[name]` when the argument was given.
fn set<T: serde::Serialize>(body: &mut Value, name: &str, value: Option<T>) {
    if let Some(value) = value {
        body[name] = json!(value);
    }
}

/// `-32001`: the key was refused (unknown or revoked, or it may not act so).
pub const KEY_REFUSED: ErrorCode = ErrorCode(-32001);
/// `-32003`: over the key's quota; `data.error.retry_after` says when to retry.
pub const RATE_LIMITED: ErrorCode = ErrorCode(-32003);

/// A resource read or list failed: the API's code and message, as an MCP
/// error (resources have no tool result to carry it). What the caller can
/// act on is not an internal error: a key refused (`-32001`), the quota
/// (`-32003`), no such resource (`-32002`), any other refusal of the
/// request (`-32602`). Only the server failing is `-32603`. `data.error` is
/// the API's error, as in a tool's.
fn resource_error(failure: ApiFailure) -> ErrorData {
    let data = Some(json!({ "error": failure }));
    let message = failure.to_string();
    let code = match failure.code.as_str() {
        "NOT_FOUND" => ErrorCode::RESOURCE_NOT_FOUND,
        "UNAUTHORIZED" | "FORBIDDEN" => KEY_REFUSED,
        "RATE_LIMITED" => RATE_LIMITED,
        _ if (400..500).contains(&failure.status) => ErrorCode::INVALID_PARAMS,
        _ => ErrorCode::INTERNAL_ERROR,
    };
    ErrorData::new(code, message, data)
}

/// This server lists everything in one page (no `nextCursor`), so any
/// cursor is one it did not give: `-32602`, as MCP asks.
fn no_cursor(request: Option<&PaginatedRequestParams>) -> Result<(), ErrorData> {
    match request.and_then(|r| r.cursor.as_deref()) {
        None => Ok(()),
        Some(_) => Err(ErrorData::invalid_params(
            "invalid cursor: this server lists everything in one page and gives no cursor",
            Some(json!({ "field": "cursor" })),
        )),
    }
}

/// The account's agents as `(aid, name)`, oldest first.
async fn agents(api: &ApiClient) -> ApiCall<Vec<(String, String)>> {
    let me = api.me().await?;
    Ok(me["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| Some((a["aid"].as_str()?.to_owned(), text(&a["name"]))))
                .collect()
        })
        .unwrap_or_default())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

impl ThreadlineMcp {
    /// Every thread one of the account's agents takes part in (the most
    /// recently active of each agent's), once.
    async fn thread_resources(&self, api: &ApiClient) -> ApiCall<Vec<Resource>> {
        let mut seen = std::collections::HashSet::new();
        let mut resources = Vec::new();
        for (aid, name) in agents(api).await? {
            let list = api
                .list_threads(Some(&aid), Some("all"), Some(RESOURCE_THREADS), None)
                .await?;
            for t in list["threads"].as_array().into_iter().flatten() {
                let id = text(&t["id"]);
                if id.is_empty() || !seen.insert(id.clone()) {
                    continue;
                }
                let subject = t["subject"].as_str().unwrap_or("(no subject)");
                let peer = t["peer_name"].as_str().unwrap_or("?");
                resources.push(
                    Resource::new(format!("{URI_PREFIX}{id}"), subject.to_owned())
                        .with_description(format!(
                            "{name} with {peer}: {}, {} messages, {} unread",
                            text(&t["status"]),
                            t["message_count"],
                            t["unread_count"],
                        ))
                        .with_mime_type("application/json"),
                );
            }
        }
        Ok(resources)
    }

    /// A thread as a resource: the thread, its participants and its recent
    /// messages, as one of the account's agents that takes part in it sees it.
    async fn thread_resource(&self, api: &ApiClient, uri: &str) -> ApiCall<Value> {
        let id = uri
            .strip_prefix(URI_PREFIX)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| ApiFailure::local("NOT_FOUND", "no such resource", None))?;
        let agents = agents(api).await?;
        // The first of the account's agents that may see it; `after` beyond
        // any seq reads the thread without messages (and so marks nothing).
        let mut found = None;
        for (aid, _) in &agents {
            match api
                .get_thread(id, Some(aid), Some(1), Some(i64::MAX as u64))
                .await
            {
                Ok(page) => {
                    found = Some((aid.clone(), page["thread"].clone()));
                    break;
                }
                Err(f) if f.code == "NOT_FOUND" => continue,
                Err(f) => return Err(f),
            }
        }
        let (aid, thread) =
            found.ok_or_else(|| ApiFailure::local("NOT_FOUND", "thread not found", None))?;
        let count = thread["message_count"].as_u64().unwrap_or(0);
        let recent = api
            .get_thread(
                id,
                Some(&aid),
                Some(RECENT as u32),
                Some(count.saturating_sub(RECENT)),
            )
            .await?;
        let messages = recent["messages"].clone();
        let name_of = |who: &Value| -> Value {
            let Some(aid) = who.as_str() else {
                return Value::Null;
            };
            agents
                .iter()
                .find(|(a, _)| a == aid)
                .map(|(_, name)| json!(name))
                .or_else(|| {
                    messages.as_array()?.iter().find_map(|m| {
                        (m["sender_aid"].as_str() == Some(aid)).then(|| m["sender_name"].clone())
                    })
                })
                .unwrap_or(Value::Null)
        };
        let participants: Vec<Value> = ["creator_aid", "target_aid"]
            .iter()
            .filter(|k| thread[**k].is_string())
            .map(|k| json!({ "aid": thread[*k], "name": name_of(&thread[*k]) }))
            .collect();
        Ok(json!({
            "thread": recent["thread"],
            "participants": participants,
            "messages": messages,
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ThreadlineMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("threadline", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// A call of one of the tools; an unknown tool is `-32602` naming it
    /// and the tools there are (rmcp's answer was a bare "tool not found").
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.tool_router.get(&request.name).is_none() {
            return Err(methods::unknown_tool(
                &request.name,
                self.tool_router.list_all().iter().map(|t| t.name.as_ref()),
            ));
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    /// Every tool, in one page, as rmcp's own `list_tools` answers (cache
    /// hints for the protocol versions that have them); a cursor is
    /// refused (see [`no_cursor`]).
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        no_cursor(request.as_ref())?;
        let hints = ctx
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28);
        let mut result = ListToolsResult::with_all_items(self.tool_router.list_all());
        if hints {
            result.ttl_ms = Some(0);
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        no_cursor(request.as_ref())?;
        let api = self.api(&ctx).map_err(resource_error)?;
        let resources = self.thread_resources(&api).await.map_err(resource_error)?;
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let api = self.api(&ctx).map_err(resource_error)?;
        let body = self
            .thread_resource(&api, &request.uri)
            .await
            .map_err(resource_error)?;
        let contents = ResourceContents::text(body.to_string(), request.uri.clone())
            .with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    /// A request rmcp could not read as one it knows: an unknown method, or
    /// `params` that do not fit a known one (see [`methods::refusal`]).
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        Err(methods::refusal(&request.method, request.params.as_ref()))
    }

    // MCP's methods this server does not serve answer as unknown ones do,
    // with the methods it does serve (rmcp's answer was the bare name).

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Err(methods::not_spoken("prompts/list"))
    }

    async fn get_prompt(
        &self,
        _request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Err(methods::not_spoken("prompts/get"))
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        Err(methods::not_spoken("completion/complete"))
    }
}
