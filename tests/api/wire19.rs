//! How the HTTP layer closes a connection after an answer, with a client
//! still sending, over raw TCP; and `Expect: 100-continue` with a key that
//! is well formed but unknown or revoked: the key is looked up before the
//! body is read, so the `401` comes alone and the client never sends its
//! body.
//!
//! A connection the server closes while bytes it has not read wait in its
//! socket is reset, not closed: the client's writes fail, and a client
//! slower to read than the reset is to arrive may lose the answer. So the
//! server lingers after such an answer: it reads and drops what the client
//! goes on sending until the client stops (or for 1 s), then closes. Here
//! each client goes on sending 4 MiB after the request the server refuses,
//! and must have every byte accepted, read the whole answer, and see the
//! connection end cleanly (EOF, no reset pending on its socket).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hardening_net::Raw;
use crate::helpers::{spawn_app, spawn_app_with, TestApp, WAIT};

/// What the client goes on sending once its request is refused.
const KEEP_SENDING: usize = 4 << 20;

fn message_body(app: &TestApp, thread: &str, content: &str) -> String {
    json!({"aid": app.alice.aid, "thread_id": thread, "content": content}).to_string()
}

/// How a connection ended, seen from the client.
#[derive(Debug)]
struct Ending {
    /// Bytes of the filler the kernel took (all of them, unless a write
    /// failed or stalled).
    written: usize,
    write_error: Option<String>,
    /// Everything the server sent.
    received: Vec<u8>,
    /// `None` once the server closed (EOF); else the read's error, or
    /// that it was still open after `WAIT`.
    read_error: Option<String>,
    /// An error left pending on the socket (`SO_ERROR`): a reset the
    /// client's reads did not report, as they end at the server's FIN.
    pending_error: Option<String>,
}

/// Sends `request`; with `await_answer`, reads the answer's head first;
/// then writes `filler` bytes (in 64 KiB writes, stopping at the first
/// that fails, which is noted), then reads until the server closes. On
/// loopback a reset does not take back what the client has received
/// (Linux keeps it readable), so the failed writes are what show it.
async fn refused_while_sending(
    app: &TestApp,
    request: &[u8],
    await_answer: bool,
    filler: usize,
) -> Ending {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    if await_answer {
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
                other => panic!("no answer to wait for: {other:?}"),
            }
        }
    }
    let piece = vec![b'x'; 64 * 1024];
    let mut written = 0;
    let mut write_error = None;
    while written < filler {
        let n = piece.len().min(filler - written);
        match tokio::time::timeout(WAIT, stream.write(&piece[..n])).await {
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => {
                write_error = Some(e.to_string());
                break;
            }
            Err(_) => {
                write_error = Some("the server took nothing for 10 s".into());
                break;
            }
        }
    }
    let read_error = loop {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break None,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break Some(e.to_string()),
            Err(_) => break Some("still open after 10 s".into()),
        }
    };
    let pending_error = match stream.take_error() {
        Ok(error) => error.map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    Ending {
        written,
        write_error,
        received,
        read_error,
        pending_error,
    }
}

impl Ending {
    /// Asserts the client's bytes were all taken and the connection ended
    /// cleanly; returns the answer's status, its head (lower-cased) and its
    /// body (as much as its `Content-Length` says, all of which must have
    /// arrived).
    fn assert_clean(&self, case: &str) -> (u16, String, Option<Value>) {
        assert_eq!(
            (self.written, &self.write_error),
            (KEEP_SENDING, &None),
            "{case}: the server stopped taking the client's bytes"
        );
        assert_eq!(self.read_error, None, "{case}: not closed cleanly");
        assert_eq!(self.pending_error, None, "{case}: the connection was reset");
        let text = String::from_utf8_lossy(&self.received);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{case}: no whole answer: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{case}: bad status line: {head}"));
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse().expect("content-length"));
        assert_eq!(body.len(), length, "{case}: one whole answer: {text:?}");
        (
            status,
            head.to_ascii_lowercase(),
            serde_json::from_str(body).ok(),
        )
    }
}

/// A refusal the client keeps sending after: the request, whether the
/// client must wait for the answer before sending on (else it is tried
/// both ways), and the status (and the envelope's code, where the answer
/// has one) it must read whole.
#[derive(Clone)]
struct Case {
    name: &'static str,
    request: Vec<u8>,
    await_answer: bool,
    status: u16,
    code: Option<&'static str>,
    /// Whether the answer says `Connection: close` (all do but one given
    /// before the body's framing broke, which could not know).
    says_close: bool,
}

fn chunked_head(authorization: &str) -> String {
    format!(
        "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n{authorization}\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
}

fn cases(app: &TestApp, body: &str) -> Vec<Case> {
    let key = format!("Authorization: Bearer {}\r\n", app.key);
    // Bodies declared longer than what the client sends: one sent whole
    // may be read (and dropped) before its answer, which then keeps the
    // connection, rightly.
    let sized = |length: usize, authorization: &str| {
        format!(
            "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n{authorization}\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    vec![
        Case {
            name: "a broken chunk size, the route reading the body",
            request: format!("{}zz\r\n{body}", chunked_head(&key)).into_bytes(),
            await_answer: false,
            status: 422,
            code: Some("VALIDATION_ERROR"),
            says_close: true,
        },
        Case {
            name: "no CRLF after a chunk's data, the route reading the body",
            request: format!("{}{:x}\r\n{body}XX", chunked_head(&key), body.len()).into_bytes(),
            await_answer: false,
            status: 422,
            code: Some("VALIDATION_ERROR"),
            says_close: true,
        },
        Case {
            name: "a broken chunk size after a 401 given unread",
            request: format!("{}zz\r\n{body}", chunked_head("")).into_bytes(),
            await_answer: false,
            status: 401,
            code: Some("UNAUTHORIZED"),
            says_close: false,
        },
        Case {
            name: "a head the parser refuses (two Content-Lengths): 400",
            request: format!(
                "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n{key}\
                 Content-Length: {}\r\nContent-Length: 3\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            await_answer: false,
            status: 400,
            code: None,
            says_close: true,
        },
        Case {
            name: "a transfer coding before chunked: 501",
            request: format!(
                "POST /api/acsp/thread/message HTTP/1.1\r\nHost: localhost\r\n{key}\
                 Transfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n",
                body.len()
            )
            .into_bytes(),
            await_answer: false,
            status: 501,
            code: None,
            says_close: true,
        },
        Case {
            name: "a head over 128 KiB: 431",
            request: format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}",
                "a".repeat(140 * 1024)
            )
            .into_bytes(),
            await_answer: false,
            status: 431,
            code: None,
            says_close: true,
        },
        Case {
            name: "a declared length over 64 KiB: 413",
            request: sized(2 * KEEP_SENDING, &key).into_bytes(),
            await_answer: false,
            status: 413,
            code: Some("PAYLOAD_TOO_LARGE"),
            says_close: true,
        },
        Case {
            name: "no key, the body unread: 401",
            request: sized(2 * KEEP_SENDING, "").into_bytes(),
            await_answer: false,
            status: 401,
            code: Some("UNAUTHORIZED"),
            says_close: true,
        },
        Case {
            name: "a body stalled past its deadline: 408",
            request: format!("{}{{", sized(60_000, &key)).into_bytes(),
            await_answer: true,
            status: 408,
            code: Some("REQUEST_TIMEOUT"),
            says_close: true,
        },
        Case {
            name: "a head stalled past its deadline: 408",
            request: b"POST /api/acsp/thread/message HTTP/1.1\r\nHost: local".to_vec(),
            await_answer: true,
            status: 408,
            code: None,
            says_close: true,
        },
    ]
}

#[tokio::test]
async fn a_client_still_sending_after_a_refusal_reads_it_whole_and_is_not_reset() {
    let app = spawn_app_with(|c| c.body_timeout_secs = 1).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = message_body(&app, &thread, "never stored");
    let stored = app.stored_messages();
    // Each sent on at once, and (the deterministic check) once the answer's
    // head has arrived, when the server has already written it and would
    // close next. All at once: the head timeout alone is 5 s.
    let runs: Vec<(Case, bool)> = cases(&app, &body)
        .into_iter()
        .flat_map(|case| {
            let waits: &[bool] = if case.await_answer {
                &[true]
            } else {
                &[false, true]
            };
            waits
                .iter()
                .map(move |&wait| (case.clone(), wait))
                .collect::<Vec<_>>()
        })
        .collect();
    let endings = futures_util::future::join_all(
        runs.iter()
            .map(|(case, wait)| refused_while_sending(&app, &case.request, *wait, KEEP_SENDING)),
    )
    .await;
    for ((case, wait), ending) in runs.iter().zip(endings) {
        let name = format!("{} (after the answer's head: {wait})", case.name);
        let (status, head, body) = ending.assert_clean(&name);
        assert_eq!(status, case.status, "{name}: {ending:?}");
        if case.says_close {
            assert!(head.contains("\r\nconnection: close"), "{name}: {head}");
        }
        if let Some(code) = case.code {
            let body = body.unwrap_or_else(|| panic!("{name}: no JSON body"));
            assert_eq!(body["error"]["code"], code, "{name}: {body}");
        }
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
}

// ---- a chunked body answered unread, then left unfinished ----

/// A chunked message post whose first chunk (256 bytes) has begun.
fn stalled_chunk(authorization: &str) -> Vec<u8> {
    format!("{}100\r\n{{", chunked_head(authorization)).into_bytes()
}

#[tokio::test]
async fn a_chunked_body_left_unfinished_after_its_answer_does_not_hold_the_connection() {
    // Before, neither connection was ever closed: the server waited for
    // the rest of a body nobody reads, with no timer, so a client without
    // a key could hold a connection for as long as it liked.
    let app = spawn_app_with(|c| c.body_timeout_secs = 1).await;
    let key = format!("Authorization: Bearer {}\r\n", app.key);
    let cases = [
        // Answered keep-alive: the rest is drained for the next request,
        // and must come within the 5 s a request head has.
        (
            "no key: 401 given unread, the body then stalls",
            String::new(),
            401,
            "UNAUTHORIZED",
            Duration::from_secs(8),
        ),
        // Answered `Connection: close`: nothing is drained.
        (
            "the body stalls past its deadline: 408",
            key,
            408,
            "REQUEST_TIMEOUT",
            Duration::from_secs(3),
        ),
    ];
    let runs = cases.iter().map(|(case, auth, status, code, within)| {
        let app = &app;
        async move {
            let mut conn = Raw::connect(app).await;
            conn.send(&stalled_chunk(auth)).await;
            conn.response(WAIT).await.assert_envelope(*status, code);
            assert!(
                conn.closed_within(*within).await,
                "{case}: the connection still open {within:?} after the answer"
            );
        }
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test]
async fn a_chunked_body_answered_unread_and_finished_in_time_keeps_the_connection() {
    let app = spawn_app().await;
    let mut conn = Raw::connect(&app).await;
    conn.send(&stalled_chunk("")).await;
    conn.response(WAIT)
        .await
        .assert_envelope(401, "UNAUTHORIZED");
    // The rest of the body, then another request on the same connection.
    let mut rest = "x".repeat(255).into_bytes();
    rest.extend_from_slice(b"\r\n0\r\n\r\n");
    rest.extend_from_slice(&crate::hardening_net::get("/healthz"));
    conn.send(&rest).await;
    assert_eq!(conn.response(WAIT).await.status, 200);
    // The drain's deadline, stopped with the drain, closes nothing.
    assert!(
        !conn.closed_within(Duration::from_secs(6)).await,
        "closed after its body was drained"
    );
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

#[tokio::test]
async fn near_its_connection_budget_the_server_closes_a_refused_connection_at_once() {
    // 16 connections at most, near the budget from 12 open: the linger
    // would hold a slot for up to 1 s that the server is short of.
    let app = spawn_app_with(|c| {
        c.max_connections = 16;
        c.max_connections_per_ip = 1024;
        c.max_connections_per_block = 4096;
        c.rate_limit_per_minute = 0;
    })
    .await;
    // Two /24s: a block may hold at most half the budget.
    let from: Vec<String> = (1..=12)
        .map(|i| format!("127.0.{}.{i}", 93 + i % 2))
        .collect();
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    // Event streams: requests in flight, which the pressure never cuts.
    let _busy = crate::flood17::streams(&app, &from[..6]).await;
    let _busy_too = crate::flood17::streams(&app, &from[6..]).await;
    let refused = b"POST /api/acsp/thread/create HTTP/1.1\r\nHost: localhost\r\n\
        Content-Length: 5\r\nContent-Length: 3\r\n\r\n{}";
    let ending = refused_while_sending(&app, refused, true, KEEP_SENDING).await;
    assert!(
        ending.received.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&ending.received)
    );
    assert!(
        ending.write_error.is_some(),
        "the refused connection was held (lingering) near the budget: {ending:?}"
    );
}
