//! MCP's `wait_for_messages` without a thread (the inbox wait) marks read
//! only what it returns. Read marks are a high-water mark: the wait used to
//! read a thread's last page (200 messages), which marked every older
//! unread message read without returning it. It now reads from the oldest
//! unread message, a page at a time, and says when more are waiting.

use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app_with, Agent, TestApp};

/// Calls `tool` over `/mcp` with `key`: the JSON-RPC answer.
async fn mcp_tool(app: &TestApp, key: &str, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}});
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
