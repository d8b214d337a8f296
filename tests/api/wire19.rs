//! `Expect: 100-continue` with a key that is well formed but unknown or
//! revoked, over raw TCP: the key is looked up before the body is read, so
//! the `401` comes alone and the client never sends its body.

use serde_json::json;

use crate::hardening_net::Raw;
use crate::helpers::{spawn_app, TestApp, WAIT};

fn message_body(app: &TestApp, thread: &str, content: &str) -> String {
    json!({"aid": app.alice.aid, "thread_id": thread, "content": content}).to_string()
}

// ---- Expect: 100-continue with a key nobody can use ----

/// A message post's head with `Expect: 100-continue`.
fn expect_head(key: &str, length: usize) -> Vec<u8> {
    format!(
        "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn expect_continue_with_an_unknown_or_revoked_key_gets_the_401_alone() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.bob).await;
    let body = json!({"aid": carol.aid, "thread_id": thread, "content": "never sent"}).to_string();
    threadline::cli::key_revoke(&app.db, &carol.key).expect("key revoke");
    let stored = app.stored_messages();
    let unknown = format!("nk_{}", "A".repeat(43));
    for (case, key) in [("an unknown key", &unknown), ("a revoked key", &carol.key)] {
        let mut conn = Raw::connect(&app).await;
        // The head only: a client that waits for `100` before its body.
        conn.send(&expect_head(key, body.len())).await;
        let res = conn.response(WAIT).await;
        assert_ne!(res.status, 100, "{case}: 100 for a key that cannot post");
        res.assert_envelope(401, "UNAUTHORIZED");
        assert_eq!(res.header("connection"), Some("close"), "{case}: {res:?}");
        conn.assert_closed_quietly(case).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");

    // A good key still gets its 100, then its 201, on a connection kept.
    let body = message_body(&app, &thread_of(&app).await, "after the 100");
    let mut conn = Raw::connect(&app).await;
    conn.send(&expect_head(&app.key, body.len())).await;
    let first = conn.response(WAIT).await;
    assert_eq!(first.status, 100, "{first:?}");
    conn.send(body.as_bytes()).await;
    let res = conn.response(WAIT).await;
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(res.json()["message"]["content"], "after the 100");
    assert_eq!(app.stored_messages(), stored + 1, "the message stored");
}

async fn thread_of(app: &TestApp) -> String {
    app.thread_between(&app.alice, &app.bob).await
}

