//! Round nineteen's hostile-client probe of the streaming surfaces: the
//! WebSocket handshake, the event stream's resume header, MCP's
//! `wait_for_messages` cut short by the server, and `threadline mcp`'s
//! answers to messages it cannot take.

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, WAIT};
use crate::tidy16::{jsonrpc_answer, mcp_post};

/// A `wait_for_messages` on `thread`, acting with `key`, as a raw `/mcp`
/// request; its JSON-RPC answer.
async fn wait_call(app: &TestApp, key: &str, thread: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wait_for_messages",
                                 "arguments": {"aid": app.alice.aid, "thread_id": thread,
                                               "after_seq": 1, "timeout_secs": 30}}});
    let res = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("request");
    jsonrpc_answer(res).await
}

/// A wait whose socket the server closed because the key was revoked
/// (4001) or the thread deleted (4004) answered `UNAVAILABLE` "the server
/// may be restarting; call again", `status` 0: a client told to call again
/// would only meet the 401 or 404 then. It now says what happened, in the
/// API's words: `UNAUTHORIZED` (401) and `NOT_FOUND` (404). The server
/// keeps serving, and the wait's socket is gone.
#[tokio::test]
async fn a_wait_cut_short_by_revocation_or_deletion_says_so() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    for cause in ["revoked", "deleted"] {
        // A second key of alice's account, to revoke.
        let key = threadline::cli::key_create(&app.db, &app.user_id).expect("key create");
        let key: Value = serde_json::from_str(&key).unwrap();
        let key = key["login_key"].as_str().unwrap().to_owned();
        let thread = app.thread_between(&app.alice, &app.bob).await;
        let waiting = {
            let (app, key, thread) = (&app, key.clone(), thread.clone());
            async move { wait_call(app, &key, &thread).await }
        };
        let cut = async {
            app.wait_for_live_actors(1).await;
            match cause {
                "revoked" => {
                    threadline::cli::key_revoke(&app.db, &key).expect("revoke");
                }
                _ => {
                    threadline::cli::thread_delete(&app.db, &thread).expect("delete");
                }
            }
        };
        let (answer, ()) = tokio::time::timeout(WAIT, async { tokio::join!(waiting, cut) })
            .await
            .unwrap_or_else(|_| panic!("{cause}: the wait did not end"));
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{cause}: {answer}");
        let error = &result["structuredContent"]["error"];
        let (code, status) = match cause {
            "revoked" => ("UNAUTHORIZED", 401),
            _ => ("NOT_FOUND", 404),
        };
        assert_eq!(error["code"], code, "{cause}: {answer}");
        assert_eq!(error["status"], status, "{cause}: {answer}");
        assert!(
            !error["message"].as_str().unwrap().contains("call again"),
            "{cause}: {answer}"
        );
        app.wait_for_live_actors(0).await;
        // Others are served as before.
        let other = mcp_post(
            &app,
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "list_agents", "arguments": {}}}),
            &[],
        )
        .await;
        let other = jsonrpc_answer(other).await;
        assert_eq!(other["result"]["isError"], false, "{other}");
    }
}
