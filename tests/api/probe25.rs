//! Round 25's hostile-client probe, with raw TCP clients: what it found
//! still open in the HTTP layer and the request log.
//!
//! - A request that closes its connection (`Connection: close`, or
//!   HTTP/1.0 without keep-alive) had the requests pipelined behind it
//!   answered, and run: a thread was created after the server had said
//!   `connection: close`, and the connection then stayed open. RFC 9112
//!   §9.6: the server must not process any further request on it.
//! - A malformed request pipelined behind a well-formed one (answered,
//!   keep-alive) left the keep-alive timer running into the linger that
//!   follows the `400`: debug builds failed an assertion in the HTTP layer
//!   (a panic in the connection's task, which dropped the connection under
//!   a client still sending); release builds went on with the timer stale.
//! - The request log line showed the method whole: any token is a method,
//!   as long as the request line, so one request without a key wrote a log
//!   line of 120 KB (the path was already cut at 256 bytes).

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::db::TestDb;
use crate::helpers::process::{provision_on, Server};
use crate::helpers::{spawn_app_with, TestApp, WAIT};

/// What the client sends after its requests, while the server closes.
const KEEP_SENDING: usize = 1 << 20;

/// The status codes of every answer in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text[at..].split(' ').nth(1)?.parse().ok())
        .collect()
}

/// How a connection ended, seen from a client that sent `request`, read
/// until `answers` answers had come, then sent [`KEEP_SENDING`] bytes more
/// and read until the server closed.
#[derive(Debug)]
struct Ending {
    received: Vec<u8>,
    written: usize,
    write_error: Option<String>,
    /// `None` once the server closed (EOF).
    read_error: Option<String>,
    /// A reset left pending on the socket (`SO_ERROR`).
    pending_error: Option<String>,
}

async fn send_then_keep_sending(app: &TestApp, request: &[u8], answers: usize) -> Ending {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write the requests");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Each answer here is a head and a short body: wait for the last head.
    while received.windows(4).filter(|w| w == b"\r\n\r\n").count() < answers {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
            other => panic!(
                "{other:?} before {answers} answers: {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    let piece = vec![b'x'; 64 * 1024];
    let (mut written, mut write_error) = (0, None);
    while written < KEEP_SENDING {
        match tokio::time::timeout(WAIT, stream.write(&piece)).await {
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
        received,
        written,
        write_error,
        read_error,
        pending_error,
    }
}

impl Ending {
    fn assert_clean(&self, case: &str) {
        assert_eq!(
            (self.written, &self.write_error),
            (KEEP_SENDING, &None),
            "{case}: the server stopped taking the client's bytes"
        );
        assert_eq!(self.read_error, None, "{case}: not closed cleanly");
        assert_eq!(self.pending_error, None, "{case}: the connection was reset");
    }
}

fn create_request(app: &TestApp, subject: &str, version: &str) -> String {
    let body =
        json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": subject}).to_string();
    format!(
        "POST /api/acsp/thread/create {version}\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.key,
        body.len()
    )
}

/// A request that closes the connection is the last one answered on it:
/// a thread/create pipelined behind `Connection: close` (or behind an
/// HTTP/1.0 request without keep-alive, which closes too) is neither
/// answered nor run, and the connection ends after the one answer, also
/// with the client still sending. A request that keeps the connection
/// alive still has the one behind it answered.
#[tokio::test]
async fn nothing_pipelined_behind_a_request_that_closes_the_connection_is_answered_or_stored() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let before = app.stored_threads();
    let closing = [
        (
            "Connection: close",
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        ("HTTP/1.0", "GET /healthz HTTP/1.0\r\n\r\n"),
        (
            "a POST with Connection: close and a body",
            "POST /api/acsp/thread/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: 2\r\n\r\n{}",
        ),
    ];
    for (case, first) in closing {
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let then = create_request(&app, "pipelined after a close", version);
            let seen = crate::helpers::until_closed(
                app.base.trim_start_matches("http://"),
                format!("{first}{then}").as_bytes(),
            )
            .await;
            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
            assert_eq!(statuses(&seen).len(), 1, "{case}, then {version}: {text}");
            if first.contains("HTTP/1.1") {
                assert!(text.contains("\r\nconnection: close\r\n"), "{case}: {text}");
            }
            assert_eq!(
                app.stored_threads(),
                before,
                "{case}, then {version}: stored"
            );
        }
        // The client goes on sending after its requests: it is not reset.
        let then = create_request(&app, "pipelined after a close", "HTTP/1.1");
        let ending = send_then_keep_sending(&app, format!("{first}{then}").as_bytes(), 1).await;
        ending.assert_clean(case);
        assert_eq!(statuses(&ending.received).len(), 1, "{case}: {ending:?}");
        assert_eq!(app.stored_threads(), before, "{case}: stored");
    }

    // Kept alive (HTTP/1.1, or 1.0 asking for it): the next one is served.
    for first in [
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let then = create_request(&app, "pipelined after a keep-alive", "HTTP/1.0");
        let seen = crate::helpers::until_closed(
            app.base.trim_start_matches("http://"),
            format!("{first}{then}").as_bytes(),
        )
        .await;
        assert_eq!(
            statuses(&seen),
            [200, 201],
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    assert_eq!(app.stored_threads(), before + 2);

    // With keep-alive off on the server every answer closes: the same.
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.keep_alive_secs = 0;
    })
    .await;
    let before = app.stored_threads();
    let first = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let then = create_request(&app, "pipelined, keep-alive off", "HTTP/1.1");
    let seen = crate::helpers::until_closed(
        app.base.trim_start_matches("http://"),
        format!("{first}{then}").as_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert_eq!(statuses(&seen), [200], "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert_eq!(app.stored_threads(), before, "stored with keep-alive off");
}

/// A malformed request pipelined behind a well-formed one: both answered
/// (`200`, then `400` in the envelope), and the connection lingers for a
/// client still sending, then ends cleanly. The keep-alive timer the first
/// answer started ran on into the linger, where (in debug builds, as this
/// test runs) the HTTP layer's assertion panicked the connection's task
/// and the client's writes were reset.
#[tokio::test]
async fn a_malformed_request_pipelined_behind_a_good_one_is_refused_and_the_connection_lingers() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let good = [
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        create_request(&app, "before a malformed request", "HTTP/1.1"),
    ];
    let malformed = [
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n",
        "POST /api/acsp/thread/create HTTP/1.1\r\nHost: localhost\r\n\
         Transfer-Encoding: gzip\r\n\r\n",
    ];
    for first in &good {
        for second in malformed {
            let case = format!("{:?} then {second:?}", first.lines().next().unwrap_or(""));
            let ending =
                send_then_keep_sending(&app, format!("{first}{second}").as_bytes(), 2).await;
            ending.assert_clean(&case);
            let got = statuses(&ending.received);
            assert_eq!(got.len(), 2, "{case}: {ending:?}");
            assert!(matches!(got[0], 200 | 201), "{case}: {got:?}");
            assert_eq!(got[1], 400, "{case}: {got:?}");
            let text = String::from_utf8_lossy(&ending.received);
            assert!(text.contains("\"VALIDATION_ERROR\""), "{case}: {text}");
        }
    }
    // The server still serves.
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
}

/// One request without a key, with a method of 60,000 letters: its log
/// line shows the method's first 32 bytes and how much was left out, in
/// the text format and in JSON (where the method is also a member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_method_is_cut_in_its_request_log_line() {
    for format in ["text", "json"] {
        let db = TestDb::new();
        let _account = provision_on(&db);
        let mut server = Server::start_on(&db, &["--log-format", format], "info").await;
        let addr = server.api.base.trim_start_matches("http://").to_owned();
        let method = "G".repeat(60_000);
        let seen = crate::helpers::until_closed(
            addr.as_str(),
            format!("{method} /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(statuses(&seen), [405], "{}", String::from_utf8_lossy(&seen));
        let seen = crate::helpers::until_closed(
            addr.as_str(),
            b"PROPFIND /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&seen), [405]);
        server.signal("TERM");
        assert_eq!(server.wait_exit().await.code(), Some(0));

        let logs = server.stderr();
        let line = logs
            .lines()
            .find(|l| l.contains("GGGG") && l.contains("405"))
            .unwrap_or_else(|| {
                let start: String = logs.chars().take(2000).collect();
                panic!("{format}: no request line for the long method: {start}")
            });
        assert!(line.len() < 512, "{format}: a {}-byte log line", line.len());
        let shown = format!("{}…(+59968 bytes)", "G".repeat(32));
        assert!(
            line.contains(&format!("{shown} /healthz")),
            "{format}: {line}"
        );
        if format == "json" {
            assert!(line.contains(&format!("\"method\":\"{shown}\"")), "{line}");
        }
        assert!(
            logs.lines().any(|l| l.contains("PROPFIND /healthz 405")),
            "{format}: a short method is shown whole: {logs}"
        );
    }
}
