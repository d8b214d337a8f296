//! MCP: the `/mcp` endpoint driven by the official SDK's client (rmcp,
//! Streamable HTTP), and `threadline mcp` driven over stdio as a child
//! process. Every tool, the resources, tool errors carrying the API's code,
//! `wait_for_messages` woken by a post from another client, and refused keys.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

use crate::helpers::process::BIN;
use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp, POLL, WAIT};

type Client = RunningService<RoleClient, ()>;

const TOOLS: [&str; 7] = [
    "create_thread",
    "list_agents",
    "list_threads",
    "post_message",
    "read_thread",
    "set_thread_status",
    "wait_for_messages",
];

/// An MCP session with `/mcp`, initialized, acting with `key`.
async fn connect(app: &TestApp, key: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")).auth_header(key);
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.expect("MCP initialize over /mcp")
}

/// Calls a tool; the call itself must succeed (a tool error is a result).
async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().expect("arguments are an object").clone();
    tokio::time::timeout(
        WAIT,
        client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} did not answer within {WAIT:?}"))
    .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// A successful tool result's structured content.
fn ok(result: CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(false), "tool failed: {result:?}");
    result.structured_content.expect("structured content")
}

/// A tool error's `error` object; it must also say its code in the text.
fn tool_error(result: CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(true), "tool succeeded: {result:?}");
    let error = result.structured_content.expect("structured error")["error"].clone();
    let text = format!("{:?}", result.content);
    assert!(
        text.contains(error["code"].as_str().expect("code")),
        "the text names the code: {text}"
    );
    error
}

/// Waits (bounded) until `n` channel actors run: a socket has subscribed.
async fn wait_for_subscribers(app: &TestApp, n: usize) {
    let deadline = Instant::now() + WAIT;
    while app.hub.live_actors() != n {
        assert!(Instant::now() < deadline, "no subscriber appeared");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn an_mcp_client_initializes_and_lists_every_tool_with_schemas() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;

    let info = client.peer_info().expect("server info after initialize");
    let server = info.server_info.as_ref().expect("server info");
    assert_eq!(server.name, "threadline");
    assert!(info.capabilities.tools.is_some());
    assert!(info.capabilities.resources.is_some());

    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        let output = tool.output_schema.as_ref().expect("output schema");
        assert_eq!(output["type"], "object", "{}", tool.name);
        assert!(tool.description.is_some(), "{}", tool.name);
    }
    let post = tools.iter().find(|t| t.name == "post_message").unwrap();
    let required = post.input_schema["required"].as_array().unwrap();
    assert!(required.contains(&json!("thread_id")) && required.contains(&json!("content")));
    assert!(post.input_schema["properties"]["idempotency_key"].is_object());
    client.cancel().await.ok();
}

#[tokio::test]
async fn every_tool_acts_through_the_api_as_the_keys_agents() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let (alice, bob) = (&app.alice.aid, &app.bob.aid);

    let agents = ok(call(&client, "list_agents", json!({})).await);
    assert_eq!(agents["user_id"], app.user_id.as_str());
    let aids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["aid"].as_str().unwrap())
        .collect();
    assert_eq!(aids, [alice.as_str(), bob.as_str()]);

    let created = ok(call(
        &client,
        "create_thread",
        json!({"aid": alice, "target_aid": bob, "subject": "Q4", "first_message": "Hi Bob"}),
    )
    .await);
    let thread = created["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["thread"]["creator_aid"], alice.as_str());
    assert_eq!(created["thread"]["message_count"], 1);

    // An idempotent retry returns the original message and stores nothing.
    let post = json!({
        "aid": bob, "thread_id": thread, "content": "Findings attached",
        "msg_type": "response", "idempotency_key": "reply-1",
    });
    let first = ok(call(&client, "post_message", post.clone()).await);
    let again = ok(call(&client, "post_message", post).await);
    assert_eq!(first["message"]["seq"], 2);
    assert_eq!(first["message"]["msg_type"], "response");
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    assert_eq!(app.stored_messages(), 2);

    let listed = ok(call(
        &client,
        "list_threads",
        json!({"aid": alice, "status": "all"}),
    )
    .await);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["threads"][0]["id"], thread.as_str());
    assert_eq!(listed["threads"][0]["unread_count"], 1, "{listed}");

    let page = ok(call(
        &client,
        "read_thread",
        json!({"thread_id": thread, "aid": alice, "after": 1}),
    )
    .await);
    assert_eq!(page["thread"]["subject"], "Q4");
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2]);
    // Reading marked it read, as over HTTP.
    let listed = ok(call(&client, "list_threads", json!({"aid": alice})).await);
    assert_eq!(listed["threads"][0]["unread_count"], 0);

    let closed = ok(call(
        &client,
        "set_thread_status",
        json!({"aid": alice, "thread_id": thread, "status": "closed"}),
    )
    .await);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["thread_id"], thread.as_str());

    // API errors are tool errors with the API's code, and store nothing.
    let refused = tool_error(
        call(
            &client,
            "post_message",
            json!({"aid": alice, "thread_id": thread, "content": "late"}),
        )
        .await,
    );
    assert_eq!(refused["code"], "THREAD_NOT_ACTIVE");
    assert_eq!(refused["status"], 409);
    let invalid = tool_error(
        call(
            &client,
            "create_thread",
            json!({"aid": alice, "target_aid": bob, "subject": ""}),
        )
        .await,
    );
    assert_eq!(invalid["code"], "VALIDATION_ERROR");
    assert_eq!(invalid["field"], "subject");
    for key in ["line\nbreak", "", &"k".repeat(129)] {
        let invalid = tool_error(
            call(
                &client,
                "post_message",
                json!({"aid": bob, "thread_id": thread, "content": "x", "idempotency_key": key}),
            )
            .await,
        );
        assert_eq!(invalid["code"], "VALIDATION_ERROR", "{key:?}: {invalid}");
        assert_eq!(invalid["field"], "idempotency_key", "{key:?}");
    }
    assert_eq!(app.stored_messages(), 2);
    assert_eq!(app.stored_threads(), 1);
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_thread_of_another_account_is_a_not_found_tool_error() {
    let app = spawn_app().await;
    let (carol, dave) = (app.new_agent("carol"), app.new_agent("dave"));
    let theirs = app.thread_between(&carol, &dave).await;
    let client = connect(&app, &app.key).await;
    let alice = &app.alice.aid;

    for (tool, args) in [
        ("read_thread", json!({"thread_id": theirs, "aid": alice})),
        (
            "post_message",
            json!({"thread_id": theirs, "aid": alice, "content": "hello?"}),
        ),
        (
            "set_thread_status",
            json!({"thread_id": theirs, "aid": alice, "status": "archived"}),
        ),
        (
            "wait_for_messages",
            json!({"thread_id": theirs, "aid": alice, "timeout_secs": 1}),
        ),
    ] {
        let error = tool_error(call(&client, tool, args).await);
        assert_eq!(error["code"], "NOT_FOUND", "{tool}: {error}");
        assert_eq!(error["status"], 404, "{tool}");
    }
    // Acting as another account's agent is FORBIDDEN, as over HTTP.
    let error = tool_error(call(&client, "list_threads", json!({"aid": carol.aid})).await);
    assert_eq!(error["code"], "FORBIDDEN");
    assert_eq!(app.stored_messages(), 0);
    let (_, thread) = json_of(app.get_thread(&carol.key, &theirs, "").await).await;
    assert_eq!(thread["thread"]["status"], "active");
    client.cancel().await.ok();
}

#[tokio::test]
async fn the_aid_is_inferred_only_when_the_account_has_one_agent() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let client = connect(&app, &carol.key).await;
    let created = ok(call(
        &client,
        "create_thread",
        json!({"target_aid": app.alice.aid, "first_message": "Hi Alice"}),
    )
    .await);
    assert_eq!(created["thread"]["creator_aid"], carol.aid.as_str());
    let thread = created["thread"]["id"].as_str().unwrap();
    let posted = ok(call(
        &client,
        "post_message",
        json!({"thread_id": thread, "content": "still there?"}),
    )
    .await);
    assert_eq!(posted["message"]["sender_aid"], carol.aid.as_str());
    client.cancel().await.ok();

    // The dev account has alice and bob: it must say which.
    let client = connect(&app, &app.key).await;
    let error = tool_error(
        call(
            &client,
            "post_message",
            json!({"thread_id": thread, "content": "who am I?"}),
        )
        .await,
    );
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert_eq!(error["field"], "aid");
    assert_eq!(app.stored_messages(), 2);
    client.cancel().await.ok();
}

#[tokio::test]
async fn wait_for_messages_returns_as_soon_as_another_client_posts_in_the_thread() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "Question?").await;
    let client = connect(&app, &app.key).await;

    let started = Instant::now();
    let waiting = {
        let args = json!({
            "thread_id": thread, "aid": app.alice.aid, "after_seq": 1, "timeout_secs": 30,
        });
        let peer = client.peer().clone();
        tokio::spawn(async move { call_on(&peer, "wait_for_messages", args).await })
    };
    // The wait is subscribed to the thread's channel; then bob answers.
    wait_for_subscribers(&app, 1).await;
    let reply = app.say(&app.bob, &thread, "Answer.").await;

    let waited = ok(tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the wait returned after the post")
        .unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken, not timed out"
    );
    assert_eq!(waited["timed_out"], false);
    let messages = waited["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{waited}");
    assert_eq!(messages[0]["id"], reply["id"]);
    assert_eq!(messages[0]["seq"], 2);
    client.cancel().await.ok();
}

/// `call` on a client handle moved into a task.
async fn call_on(client: &rmcp::Peer<RoleClient>, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().unwrap().clone();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

#[tokio::test]
async fn wait_for_messages_on_the_inbox_returns_a_new_message_of_any_thread() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&app.bob, &carol).await;
    let client = connect(&app, &carol.key).await;

    let waiting = {
        let peer = client.peer().clone();
        // No thread and no aid: carol's only agent, every thread of hers.
        let args = json!({ "timeout_secs": 30 });
        tokio::spawn(async move { call_on(&peer, "wait_for_messages", args).await })
    };
    wait_for_subscribers(&app, 1).await;
    let sent = app.say(&app.bob, &thread, "Ping from bob").await;

    let waited = ok(tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the wait returned after the post")
        .unwrap());
    let messages = waited["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{waited}");
    assert_eq!(messages[0]["id"], sent["id"]);
    assert_eq!(messages[0]["thread_id"], thread.as_str());

    // Returned means read: the next wait has nothing and times out.
    let again = ok(call(&client, "wait_for_messages", json!({"timeout_secs": 1})).await);
    assert_eq!(again["timed_out"], true, "{again}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn wait_for_messages_returns_history_at_once_and_times_out_when_nobody_posts() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let early = app.say(&app.bob, &thread, "Already here").await;
    let client = connect(&app, &app.key).await;
    let alice = &app.alice.aid;

    // Committed before the call: returned from history, no waiting.
    let started = Instant::now();
    let waited = ok(call(
        &client,
        "wait_for_messages",
        json!({"thread_id": thread, "aid": alice, "after_seq": 0, "timeout_secs": 30}),
    )
    .await);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(waited["messages"][0]["id"], early["id"]);

    // Nothing after seq 1: an empty answer at the (short) timeout.
    let started = Instant::now();
    let waited = ok(call(
        &client,
        "wait_for_messages",
        json!({"thread_id": thread, "aid": alice, "after_seq": 1, "timeout_secs": 1}),
    )
    .await);
    let took = started.elapsed();
    // With the generation it was read in (round 25), the database's.
    let generation = app
        .db_text("SELECT id FROM generation")
        .expect("a generation");
    assert_eq!(
        waited,
        json!({"messages": [], "timed_out": true, "more": false, "generation": generation})
    );
    assert!(
        took >= Duration::from_secs(1),
        "waited the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "not much longer: {took:?}");

    // More than 60 s is refused before anything is opened.
    let error = tool_error(
        call(
            &client,
            "wait_for_messages",
            json!({"thread_id": thread, "aid": alice, "timeout_secs": 61}),
        )
        .await,
    );
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert_eq!(error["field"], "timeout_secs");
    client.cancel().await.ok();
}

#[tokio::test]
async fn resources_are_the_agents_threads_listed_and_readable() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.alice).await;
    app.say(&carol, &thread, "First").await;
    app.say(&app.alice, &thread, "Second").await;
    let (dave, erin) = (app.new_agent("dave"), app.new_agent("erin"));
    let foreign = app.thread_between(&dave, &erin).await;

    let client = connect(&app, &carol.key).await;
    let resources = client.list_all_resources().await.expect("resources/list");
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, [format!("threadline://thread/{thread}")]);

    let read = client
        .read_resource(ReadResourceRequestParams::new(uris[0].to_owned()))
        .await
        .expect("resources/read");
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("not text: {other:?}"),
    };
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["thread"]["id"], thread.as_str());
    assert_eq!(body["thread"]["subject"], "test");
    let participants: Vec<&str> = body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(participants, ["carol", "alice"]);
    let contents: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["First", "Second"]);

    // Another account's thread is not a resource of hers.
    let refused = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "threadline://thread/{foreign}"
        )))
        .await;
    assert!(refused.is_err(), "read a foreign thread: {refused:?}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_missing_bad_or_revoked_key_is_refused_at_mcp() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let client = connect(&app, &carol.key).await;
    ok(call(&client, "list_threads", json!({})).await);

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "1"}},
    });
    let post = |key: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_error(post(None).await.unwrap(), 401, "UNAUTHORIZED").await;
    let unknown = format!("nk_{}", "A".repeat(43));
    assert_error(post(Some(&unknown)).await.unwrap(), 401, "UNAUTHORIZED").await;
    // A live key passes the same request on to MCP.
    let res = post(Some(&carol.key)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    let res = post(Some(&carol.key)).await.unwrap();
    let body = assert_error(res, 401, "UNAUTHORIZED").await;
    assert!(
        !body.to_string().contains(&carol.key),
        "the key is not echoed"
    );
    // The session opened before is refused from its next request.
    let after = client
        .call_tool(CallToolRequestParams::new("list_threads").with_arguments(Default::default()))
        .await;
    assert!(
        after.is_err(),
        "a revoked key's call went through: {after:?}"
    );
}

/// rmcp's own 405 is plain text; the request middleware puts it in the
/// envelope, as every non-2xx answer, and rmcp's `Allow` goes through (POST
/// alone: the endpoint is stateless).
#[tokio::test]
async fn a_method_mcp_does_not_serve_is_405_in_the_envelope_with_allow() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
        reqwest::Method::HEAD,
    ] {
        let res = app
            .client
            .request(method.clone(), app.url("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} /mcp");
        assert_eq!(res.headers()["allow"], "POST", "{method} /mcp");
        if method != reqwest::Method::HEAD {
            assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
        }
    }
    assert_eq!(app.stored_threads(), 0);
}

#[tokio::test]
async fn mcp_requests_count_against_their_own_quota_not_another_routes() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 3).await;
    let rpc = || {
        app.client
            .post(app.url("/mcp"))
            .bearer_auth(&app.key)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
    };
    for _ in 0..3 {
        let res = rpc().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "3");
    }
    let res = rpc().await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "RATE_LIMITED").await;
    // The key's quota on every other route is whole.
    let me = app
        .client
        .get(app.url("/api/acsp/me"))
        .bearer_auth(&app.key);
    let res = me.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining"], "2");
}

#[tokio::test]
async fn missing_keys_at_mcp_count_against_the_client_ip() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 2).await;
    let post = || app.client.post(app.url("/mcp")).json(&json!({})).send();
    assert_error(post().await.unwrap(), 401, "UNAUTHORIZED").await;
    assert_error(post().await.unwrap(), 401, "UNAUTHORIZED").await;
    let res = post().await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "RATE_LIMITED").await;
    // /metrics names the route.
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"threadline_http_requests_total{route="/mcp",status="401"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn threadline_mcp_serves_the_tools_over_stdio() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["mcp", "--url", &app.base])
        .env("THREADLINE_KEY", &carol.key)
        .env_remove("RUST_LOG");
    let transport = TokioChildProcess::new(command).expect("spawn threadline mcp");
    let client = tokio::time::timeout(WAIT, ().serve(transport))
        .await
        .expect("initialized in time")
        .expect("MCP initialize over stdio");

    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), TOOLS.len());
    let created = ok(call(
        &client,
        "create_thread",
        json!({"target_aid": app.alice.aid, "subject": "over stdio", "first_message": "hello"}),
    )
    .await);
    let thread = created["thread"]["id"].as_str().unwrap();
    // What the stdio server did is there over HTTP.
    let (status, page) = json_of(
        app.get_thread(&app.key, thread, &format!("aid={}", app.alice.aid))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["content"], "hello");
    assert_eq!(page["messages"][0]["sender_aid"], carol.aid.as_str());

    let error = tool_error(
        call(
            &client,
            "read_thread",
            json!({"thread_id": uuid_nobody_has()}),
        )
        .await,
    );
    assert_eq!(error["code"], "NOT_FOUND");
    client.cancel().await.ok();
}

fn uuid_nobody_has() -> String {
    "01900000-0000-7000-8000-000000000000".to_owned()
}

#[tokio::test]
async fn threadline_mcp_refuses_a_missing_or_revoked_key_at_start() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    for key in [None, Some(carol.key.as_str())] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["mcp", "--url", &app.base])
            .env_remove("THREADLINE_KEY")
            .env_remove("RUST_LOG");
        if let Some(key) = key {
            cmd.env("THREADLINE_KEY", key);
        }
        let out = tokio::task::spawn_blocking(move || crate::helpers::process::output_within(cmd))
            .await
            .unwrap();
        assert!(!out.status.success(), "{key:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("THREADLINE_KEY"), "{stderr}");
        assert!(
            !stderr.contains(&carol.key),
            "the key is not echoed: {stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing on the protocol stream");
    }
    // https is spoken (rustls): a URL where nothing listens fails the key
    // check at start, saying so; another scheme is refused before that.
    for (url, says) in [
        ("https://127.0.0.1:1", "did not answer"),
        ("ftp://127.0.0.1:1", "must start with http:// or https://"),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["mcp", "--url", url])
            .env("THREADLINE_KEY", &app.key);
        let out = tokio::task::spawn_blocking(move || crate::helpers::process::output_within(cmd))
            .await
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
}

#[tokio::test]
async fn a_wait_in_progress_ends_promptly_when_the_server_shuts_down() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let client = connect(&app, &app.key).await;
    let waiting = {
        let peer = client.peer().clone();
        let args = json!({
            "thread_id": thread, "aid": app.alice.aid, "after_seq": 0, "timeout_secs": 60,
        });
        tokio::spawn(async move {
            let args = args.as_object().unwrap().clone();
            peer.call_tool(CallToolRequestParams::new("wait_for_messages").with_arguments(args))
                .await
        })
    };
    wait_for_subscribers(&app, 1).await;
    let started = Instant::now();
    let shutdown = app.shutdown.clone();
    let stopping = tokio::spawn(async move { shutdown.shutdown().await });

    // The socket closes (1001): the wait answers at once, as an error to
    // retry, rather than holding the shutdown for its whole minute.
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the wait ended with the server")
        .unwrap();
    let result = answer.expect("answered before the server stopped");
    assert_eq!(tool_error(result)["code"], "UNAVAILABLE");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the server stopped")
        .unwrap();
    assert!(started.elapsed() < WAIT);
}
