//! MCP's `wait_for_messages` without a thread (the inbox wait) marks read
//! only what it returns. Read marks are a high-water mark: the wait used to
//! read a thread's last page (200 messages), which marked every older
//! unread message read without returning it. It now reads from the oldest
//! unread message, a page at a time, and says when more are waiting.

use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app_with, Agent, TestApp};

/// Sends one JSON-RPC request over `/mcp` with `key`: the answer.
async fn mcp_rpc(app: &TestApp, key: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let res = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("request");
    crate::tidy16::jsonrpc_answer(res).await
}

/// Calls `tool` over `/mcp` with `key`: the JSON-RPC answer.
pub(crate) async fn mcp_tool(app: &TestApp, key: &str, tool: &str, args: Value) -> Value {
    mcp_rpc(
        app,
        key,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await
}

/// The inbox wait's answer to `waiter`: its structured result.
async fn inbox_wait(app: &TestApp, waiter: &Agent) -> Value {
    let answer = mcp_tool(
        app,
        &waiter.key,
        "wait_for_messages",
        json!({"aid": waiter.aid, "timeout_secs": 1}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    answer["result"]["structuredContent"].clone()
}

fn contents(waited: &Value) -> Vec<String> {
    waited["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content").to_owned())
        .collect()
}

/// The agent's unread count in one thread, as the thread list gives it.
async fn unread_count(app: &TestApp, agent: &Agent, thread_id: &str) -> u64 {
    let (status, list) = json_of(
        app.list_threads(&agent.key, &format!("aid={}&status=all", agent.aid))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let thread = list["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == thread_id)
        .expect("the thread is listed");
    thread["unread_count"].as_u64().unwrap()
}

#[tokio::test]
async fn an_inbox_wait_returns_every_unread_message_of_a_long_thread_once_in_order() {
    const UNREAD: usize = 260;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 100_000).await;
    let waiter = app.new_agent("waiter");
    let peer = app.new_agent("peer");
    let thread = app.thread_between(&peer, &waiter).await;

    // Some history the waiter has read, and one of its own after it.
    for i in 0..5 {
        app.say(&peer, &thread, &format!("seen {i}")).await;
    }
    let (status, page) = json_of(
        app.get_thread(&waiter.key, &thread, &format!("aid={}", waiter.aid))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(unread_count(&app, &waiter, &thread).await, 0);
    app.say(&waiter, &thread, "mine before").await;

    // More unread messages from the peer than a page holds, with some of
    // the waiter's own among them (they are not unread to it).
    let mut expected = Vec::new();
    for i in 0..UNREAD {
        let text = format!("unread {i:03}");
        app.say(&peer, &thread, &text).await;
        expected.push(text);
        if i % 40 == 39 {
            app.say(&waiter, &thread, &format!("mine {i}")).await;
        }
    }
    assert_eq!(unread_count(&app, &waiter, &thread).await, UNREAD as u64);

    let mut heard = Vec::new();
    let mut answers = 0;
    loop {
        let waited = inbox_wait(&app, &waiter).await;
        answers += 1;
        assert!(answers <= 10, "the wait keeps answering: {waited}");
        let got = contents(&waited);
        if got.is_empty() {
            assert_eq!(waited["timed_out"], true, "{waited}");
            assert_eq!(waited["more"], false, "{waited}");
            break;
        }
        assert_eq!(waited["timed_out"], false, "{waited}");
        // What this answer holds and what is still unread add up: nothing
        // was marked read that was not returned.
        heard.extend(got);
        let left = unread_count(&app, &waiter, &thread).await;
        assert_eq!(
            left as usize,
            UNREAD - heard.len(),
            "after {answers} answers"
        );
        assert_eq!(waited["more"], left > 0, "{left} left; {waited}");
    }
    assert_eq!(heard, expected, "every unread message, once, oldest first");
    assert!(answers >= 3, "260 unread take two pages, then a timeout");
}

/// A resource read the key's quota refuses is the caller's to handle (wait
/// `retry_after`), not the server's failure: it was `-32603 internal
/// error`. It is now `-32003` with the API's error as `data.error`.
#[tokio::test]
async fn a_resource_read_over_the_keys_quota_is_rate_limited_not_an_internal_error() {
    const QUOTA: u32 = 3;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = QUOTA).await;
    let reader = app.new_agent("reader");
    let peer = app.new_agent("peer");
    let thread = app.thread_between(&peer, &reader).await;
    let uri = format!("threadline://thread/{thread}");

    // Each read makes several API reads with the key: within a quota's
    // worth of `/mcp` requests, a read is refused by the API's quota.
    let mut refused = None;
    for _ in 0..QUOTA {
        let answer = mcp_rpc(&app, &reader.key, "resources/read", json!({"uri": uri})).await;
        if answer.get("error").is_some() {
            refused = Some(answer);
            break;
        }
        assert!(answer["result"]["contents"].is_array(), "{answer}");
    }
    let answer = refused.expect("a read refused by the quota");
    let error = &answer["error"];
    assert_eq!(error["code"], -32003, "{answer}");
    assert_eq!(error["data"]["error"]["code"], "RATE_LIMITED", "{answer}");
    assert!(
        error["data"]["error"]["retry_after"].as_u64().is_some(),
        "{answer}"
    );
}

/// This server lists its tools and resources in one page and gives no
/// cursor, so a cursor is one it never gave: MCP asks for `-32602`. It was
/// ignored (the first page answered again, as if it were the next).
#[tokio::test]
async fn a_cursor_sent_to_a_list_is_invalid_params() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 100).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for method in ["tools/list", "resources/list"] {
        let answer = mcp_rpc(&app, &app.key, method, json!({"cursor": "page-2"})).await;
        assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cursor"),
            "{method}: {answer}"
        );
        assert!(answer.get("result").is_none(), "{method}: {answer}");

        // Without one, the whole list, and no cursor to follow.
        let answer = mcp_rpc(&app, &app.key, method, json!({})).await;
        let result = &answer["result"];
        assert!(result.get("nextCursor").is_none(), "{method}: {answer}");
        let listed = match method {
            "tools/list" => result["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "wait_for_messages"),
            _ => result["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["uri"].as_str().unwrap().ends_with(&thread)),
        };
        assert!(listed, "{method}: {answer}");
    }
}

/// Over stdio the key is checked at start; one revoked later reaches a
/// resource read, whose refusal was `-32603 internal error`. It is now
/// `-32001` (the key refused) with the API's `UNAUTHORIZED` as `data.error`.
#[tokio::test]
async fn a_resource_read_with_a_key_revoked_meanwhile_is_key_refused_not_internal() {
    use rmcp::model::ReadResourceRequestParams;
    use rmcp::service::ServiceError;
    use rmcp::transport::TokioChildProcess;
    use rmcp::ServiceExt;

    let app = spawn_app_with(|c| c.rate_limit_per_minute = 100).await;
    let carol = app.new_agent("carol");
    let peer = app.new_agent("peer");
    let thread = app.thread_between(&peer, &carol).await;
    let uri = format!("threadline://thread/{thread}");

    let mut command = tokio::process::Command::new(crate::helpers::process::BIN);
    command
        .args(["mcp", "--url", &app.base])
        .env("THREADLINE_KEY", &carol.key)
        .env_remove("RUST_LOG");
    let transport = TokioChildProcess::new(command).expect("spawn threadline mcp");
    let client = tokio::time::timeout(crate::helpers::WAIT, ().serve(transport))
        .await
        .expect("initialized in time")
        .expect("MCP initialize over stdio");
    let read = || client.read_resource(ReadResourceRequestParams::new(uri.clone()));
    read().await.expect("read while the key is live");

    threadline::cli::key_revoke(&app.db, &carol.key).expect("revoke");
    let error = match read().await {
        Err(ServiceError::McpError(error)) => error,
        other => panic!("not an MCP error: {other:?}"),
    };
    assert_eq!(error.code.0, -32001, "{error:?}");
    let data = error.data.expect("data");
    assert_eq!(data["error"]["code"], "UNAUTHORIZED", "{data}");
    assert_eq!(data["error"]["status"], 401, "{data}");
    client.cancel().await.ok();
}
