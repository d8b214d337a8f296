//! The HTTP layer's answers to `Expect: 100-continue`, malformed chunked
//! bodies and `Transfer-Encoding`s other than `chunked`, over raw TCP:
//! `100 Continue` comes only once the handler reads the body (an answer
//! given without reading it comes first and alone); a chunked body whose
//! framing breaks is answered once (`422` in the envelope where the
//! handler reads it) and the connection closed, never dropped silently;
//! a `Transfer-Encoding` other than `chunked` is the HTTP layer's `400`
//! (`501` for a coding before a final `chunked`), the connection closed.
//! Nothing is stored in any refused case.

use std::time::Duration;

use crate::hardening_net::Raw;
use crate::helpers::{spawn_app, TestApp, WAIT};
use serde_json::json;

/// How long a client waits to be sure nothing more comes.
const QUIET: Duration = Duration::from_millis(500);

fn message_body(app: &TestApp, thread: &str, content: &str) -> String {
    json!({"aid": app.alice.aid, "thread_id": thread, "content": content}).to_string()
}

/// A message post's head with `Expect: 100-continue` and `extra` headers.
fn expect_head(authorization: Option<&str>, length: usize, extra: &str) -> Vec<u8> {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\n{extra}\r\n"
    )
    .into_bytes()
}

// ---- Expect: 100-continue ----

#[tokio::test]
async fn expect_continue_without_a_key_gets_the_401_and_no_100() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "never sent");
    let stored = app.stored_messages();
    for auth in [None, Some("Basic eDp5"), Some("Bearer not-a-key")] {
        let case = format!("Authorization {auth:?}");
        let mut conn = Raw::connect(&app).await;
        // The head only: a client that waits for `100` before its body.
        conn.send(&expect_head(auth, body.len(), "")).await;
        let res = conn.response(WAIT).await;
        res.assert_envelope(401, "UNAUTHORIZED");
        // The body was never sent: the connection cannot carry another
        // request, and says so.
        assert_eq!(res.header("connection"), Some("close"), "{case}: {res:?}");
        conn.assert_closed_quietly(&case).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
}

#[tokio::test]
async fn expect_continue_with_a_good_key_gets_100_before_the_body_then_201() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "after the 100");
    let stored = app.stored_messages();
    let mut conn = Raw::connect(&app).await;
    conn.send(&expect_head(
        Some(&format!("Bearer {}", app.key)),
        body.len(),
        "",
    ))
    .await;
    // Nothing of the body is sent until the 100 arrives.
    let first = conn.response(WAIT).await;
    assert_eq!(first.status, 100, "{first:?}");
    conn.send(body.as_bytes()).await;
    let res = conn.response(WAIT).await;
    assert_eq!(res.status, 201, "{res:?}");
    let posted = res.json();
    assert_eq!(posted["message"]["content"], "after the 100");
    assert_eq!(app.stored_messages(), stored + 1, "the message stored");
    // The connection is kept and serves the next request without a 100.
    let plain = message_body(&app, &thread, "plain");
    conn.send(
        format!(
            "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{plain}",
            app.key,
            plain.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.response(WAIT).await.status, 201);
    assert_eq!(app.stored_messages(), stored + 2);
}

#[tokio::test]
async fn expect_continue_answered_without_reading_the_body_gets_no_100() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "never sent");
    let key = format!("Bearer {}", app.key);
    let stored = app.stored_messages();
    let threads = app.stored_threads();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "an unknown path",
            format!(
                "POST /api/acsp/no-such-route HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: {key}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            404,
            "NOT_FOUND",
        ),
        (
            "a method the path does not serve",
            format!(
                "POST /api/acsp/threads HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: {key}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "a declared length over 64 KiB",
            expect_head(Some(&key), 70_000, ""),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "a Content-Encoding",
            expect_head(Some(&key), body.len(), "Content-Encoding: gzip\r\n"),
            422,
            "VALIDATION_ERROR",
        ),
    ];
    for (case, head, status, code) in cases {
        let mut conn = Raw::connect(&app).await;
        conn.send(&head).await;
        let res = conn.response(WAIT).await;
        assert_ne!(res.status, 100, "{case}: 100 before an answer given unread");
        res.assert_envelope(status, code);
        assert_eq!(res.header("connection"), Some("close"), "{case}: {res:?}");
        conn.assert_closed_quietly(case).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
    assert_eq!(app.stored_threads(), threads, "nothing stored");
}

#[tokio::test]
async fn expect_continue_with_the_body_sent_anyway_is_served() {
    // A client may send its body without waiting (curl waits 1 s): the
    // request is served as any other, whether or not a 100 comes first.
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "sent at once");
    let stored = app.stored_messages();
    let mut conn = Raw::connect(&app).await;
    let mut request = expect_head(Some(&format!("Bearer {}", app.key)), body.len(), "");
    request.extend_from_slice(body.as_bytes());
    conn.send(&request).await;
    let mut res = conn.response(WAIT).await;
    if res.status == 100 {
        res = conn.response(WAIT).await;
    }
    assert_eq!(res.status, 201, "{res:?}");
    assert!(!conn.anything_within(QUIET).await, "nothing after the 201");
    assert_eq!(app.stored_messages(), stored + 1);
}

#[tokio::test]
async fn expect_continue_with_a_chunked_body_and_with_an_unknown_key() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "chunked after the 100");
    let stored = app.stored_messages();

    // A chunked body: the 100 comes, the chunks follow, the post is stored.
    let mut conn = Raw::connect(&app).await;
    conn.send(
        format!(
            "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\
             Expect: 100-continue\r\n\r\n",
            app.key
        )
        .as_bytes(),
    )
    .await;
    let first = conn.response(WAIT).await;
    assert_eq!(first.status, 100, "{first:?}");
    let (a, b) = body.split_at(body.len() / 2);
    conn.send(format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len()).as_bytes())
        .await;
    let res = conn.response(WAIT).await;
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(app.stored_messages(), stored + 1);

    // A well-formed key nobody registered is looked up before the body is
    // read (tests/api/wire19.rs): the 401 alone, no 100.
    let unknown = format!("Bearer nk_{}", "A".repeat(43));
    let mut conn = Raw::connect(&app).await;
    conn.send(&expect_head(Some(&unknown), body.len(), ""))
        .await;
    let first = conn.response(WAIT).await;
    first.assert_envelope(401, "UNAUTHORIZED");
    conn.assert_closed_quietly("an unknown key").await;
    assert_eq!(app.stored_messages(), stored + 1, "nothing more stored");
}

#[tokio::test]
async fn an_unknown_expectation_is_ignored_and_the_request_served() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "no expectation met");
    let stored = app.stored_messages();
    for expectation in ["something-else", "200-ok", "100-continue-not"] {
        let mut conn = Raw::connect(&app).await;
        conn.send(
            format!(
                "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {}\r\nContent-Length: {}\r\n\
                 Expect: {expectation}\r\n\r\n{body}",
                app.key,
                body.len()
            )
            .as_bytes(),
        )
        .await;
        let res = conn.response(WAIT).await;
        assert_eq!(res.status, 201, "{expectation}: {res:?}");
    }
    assert_eq!(app.stored_messages(), stored + 3);
}

// ---- malformed chunked bodies ----

/// A chunked message post whose framing after the head is `framing`.
fn chunked_post(key: &str, framing: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(framing);
    request
}

/// The spellings of a broken chunked body around `body`.
fn broken_chunks(body: &str) -> Vec<(&'static str, Vec<u8>)> {
    let sized = |size: &str| format!("{size}\r\n{body}\r\n0\r\n\r\n").into_bytes();
    vec![
        ("size zz", sized("zz")),
        ("size -1", sized("-1")),
        ("size of 20 hex digits", sized(&"f".repeat(20))),
        ("size 0x10", sized("0x10")),
        (
            "size with a leading space",
            sized(&format!(" {:x}", body.len())),
        ),
        (
            "no CRLF after the chunk data",
            format!("{:x}\r\n{body}XX0\r\n\r\n", body.len()).into_bytes(),
        ),
    ]
}

#[tokio::test]
async fn a_malformed_chunked_body_is_answered_422_once_and_the_connection_closed() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "framed badly");
    let stored = app.stored_messages();
    // Sent in one write, and as the head then the body: the handler is
    // then (most likely) waiting for the body when the framing breaks.
    // Before, the one was closed without an answer and the other answered
    // or not, depending on which poll the handler's answer came in.
    let cases = broken_chunks(&body)
        .into_iter()
        .flat_map(|(case, framing)| [(case, framing.clone(), false), (case, framing, true)]);
    for (case, framing, split) in cases {
        let case = format!("{case} (head and body apart: {split})");
        let case = case.as_str();
        let mut conn = Raw::connect(&app).await;
        let request = chunked_post(&app.key, &framing);
        if split {
            let head = request.len() - framing.len();
            conn.send(&request[..head]).await;
            conn.send(&request[head..]).await;
        } else {
            conn.send(&request).await;
        }
        let res = conn.response(WAIT).await;
        let error = res.assert_envelope(422, "VALIDATION_ERROR");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("chunked"),
            "{case}: the message names the framing: {error}"
        );
        assert_eq!(res.header("connection"), Some("close"), "{case}: {res:?}");
        conn.assert_closed_quietly(case).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");

    // The same framing, well formed, posts.
    let mut conn = Raw::connect(&app).await;
    let framing = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    conn.send(&chunked_post(&app.key, framing.as_bytes())).await;
    assert_eq!(conn.response(WAIT).await.status, 201);
    assert_eq!(app.stored_messages(), stored + 1);
}

#[tokio::test]
async fn a_malformed_chunked_body_answered_before_it_is_read_gets_that_answer_alone() {
    // Without a key the 401 comes before the body is read: that is the
    // answer, the broken framing after it only closes the connection.
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "framed badly");
    let stored = app.stored_messages();
    for (case, framing) in broken_chunks(&body) {
        let mut conn = Raw::connect(&app).await;
        let mut request = b"POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        request.extend_from_slice(&framing);
        conn.send(&request).await;
        let res = conn.response(WAIT).await;
        res.assert_envelope(401, "UNAUTHORIZED");
        conn.assert_closed_quietly(case).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
}

// ---- Transfer-Encoding other than chunked ----

#[tokio::test]
async fn a_transfer_encoding_other_than_chunked_is_400_or_501_and_closed() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "encoded");
    let framed = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let stored = app.stored_messages();
    // Where chunked is not the last coding the body's length is unknown:
    // 400 (RFC 9112 §6.3); chunked last after a coding the server does not
    // decode: 501 (§6.1); chunked twice, or the header twice: 400.
    for (coding, status) in [
        ("gzip", 400),
        ("identity", 400),
        ("chunked, gzip", 400),
        ("gzip, chunked", 501),
        ("identity, chunked", 501),
        ("deflate, gzip, chunked", 501),
        ("chunked, chunked", 400),
        ("gzip, chunked, chunked", 400),
        (", chunked", 400),
        ("chunked\r\nTransfer-Encoding: chunked", 400),
    ] {
        let mut conn = Raw::connect(&app).await;
        conn.send(
            format!(
                "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: {coding}\r\n\r\n{framed}",
                app.key
            )
            .as_bytes(),
        )
        .await;
        let res = conn.response(WAIT).await;
        assert_eq!(res.status, status, "{coding}: {res:?}");
        conn.assert_closed_quietly(coding).await;
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
}
