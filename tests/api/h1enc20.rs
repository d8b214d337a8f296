//! HTTP/1.0 has no chunked coding (RFC 9112 §6.1: a server must not send
//! `Transfer-Encoding` to a 1.0 request). Round nineteen kept it out of
//! `/v1/sse` and `/mcp` at route level; every other streamed answer still
//! went out chunked. The HTTP layer (vendor/actix-http, `h1::codec`) now
//! sends any streamed answer to a 1.0 request raw and closes the
//! connection after it, answering nothing pipelined behind it; sized
//! answers keep `Content-Length` and keep-alive. And pipelined answers
//! are each encoded for their own request (version, `HEAD`, keep-alive),
//! not the last one decoded. Raw TCP clients speaking HTTP/1.0 and 1.1.

use std::convert::Infallible;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hardening_net::Raw;
use crate::helpers::{spawn_app_with, until_closed, WAIT};

/// The head of a response as lower-cased text.
fn head_of(bytes: &[u8]) -> (String, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    (head, bytes[end + 4..].to_vec())
}

/// `HEAD /v1/sse` (a streamed answer without a body: the stream's headers,
/// its empty stream ending at once) said `transfer-encoding: chunked` to an
/// HTTP/1.0 client: the route-level fix covered the GET only. It says
/// nothing of the kind now, and as it writes no body it keeps the
/// connection the client asked to keep; a sized answer on that connection
/// keeps `Content-Length` and keep-alive.
#[tokio::test]
async fn an_http_1_0_head_of_the_event_stream_has_no_transfer_encoding_and_keeps_alive() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut raw = Raw::connect(&app).await;
    raw.send(
        format!(
            "HEAD /v1/sse?thread_id={thread} HTTP/1.0\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nConnection: keep-alive\r\n\r\n",
            app.key
        )
        .as_bytes(),
    )
    .await;
    let head = raw.response(WAIT).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("transfer-encoding"), None, "{head:?}");
    assert_eq!(head.header("connection"), Some("keep-alive"), "{head:?}");

    // The same connection: a sized answer, kept alive.
    let healthz = b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
    raw.send(healthz).await;
    let sized = raw.response(WAIT).await;
    assert_eq!(sized.status, 200, "{sized:?}");
    assert_eq!(sized.header("transfer-encoding"), None, "{sized:?}");
    let length: usize = sized
        .header("content-length")
        .unwrap_or_else(|| panic!("no Content-Length: {sized:?}"))
        .parse()
        .expect("a number");
    assert!(length > 0, "{sized:?}");
    assert_eq!(sized.header("connection"), Some("keep-alive"), "{sized:?}");
    assert_eq!(sized.json()["status"], "ok", "{sized:?}");

    // And once more, without keep-alive: answered, then closed.
    raw.send(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let last = raw.response(WAIT).await;
    assert_eq!(last.status, 200, "{last:?}");
    assert!(last.header("content-length").is_some(), "{last:?}");
    raw.assert_closed_quietly("HTTP/1.0 without keep-alive")
        .await;
}

/// An HTTP/1.0 client that asked for keep-alive and pipelined two `/mcp`
/// calls read the second answer's head and event as the tail of the first
/// (`data: {…}\n\nHTTP/1.0 200 OK…`): the first answer's event stream
/// ends with the connection, yet the second was answered on it. Now the
/// connection ends with the first; the second is not answered (the
/// client retries it, RFC 9112 §9.3.2).
#[tokio::test]
async fn an_http_1_0_event_stream_is_not_followed_by_a_pipelined_answer() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let call = |id: u32| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        format!(
            "POST /mcp HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Connection: keep-alive\r\nAccept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            app.key,
            body.len()
        )
    };
    let seen = until_closed(
        app.base.trim_start_matches("http://"),
        format!("{}{}", call(1), call(2)).as_bytes(),
    )
    .await;
    let (head, body) = head_of(&seen);
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        !body.contains("HTTP/1.0"),
        "a second answer followed: {body:?}"
    );
    let data = body
        .strip_prefix("data: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one event, nothing after it: {body:?}"));
    let answer: serde_json::Value = serde_json::from_str(data).expect("JSON-RPC");
    assert_eq!(answer["id"], 1, "{answer}");
}

/// Any streamed answer, not only the routes round nineteen fixed: a
/// server of the same HTTP layer with a plain `HttpResponse::streaming`
/// route. To an HTTP/1.0 client that asked for keep-alive it went out as
/// `transfer-encoding: chunked` with the chunk sizes in the body and the
/// connection kept open (so the client, which reads to the end of the
/// connection, never saw its end). Now: the body raw, `connection: close`,
/// the connection closed after it, and a request pipelined behind it is
/// not answered. An HTTP/1.1 client still gets it chunked on a connection
/// kept alive.
#[tokio::test]
async fn any_streamed_answer_to_http_1_0_is_raw_and_ends_with_the_connection() {
    use actix_web::{web, App, HttpResponse, HttpServer};

    let server = HttpServer::new(|| {
        App::new().route(
            "/stream",
            web::get().to(|| async {
                let parts =
                    ["one\n", "two\n", "three\n"].map(|s| Ok::<_, Infallible>(Bytes::from(s)));
                HttpResponse::Ok()
                    .content_type("text/plain")
                    .streaming(futures_util::stream::iter(parts))
            }),
        )
    })
    .workers(1)
    // Longer than the wait below: a connection kept alive after the
    // stream shows as one.
    .keep_alive(std::time::Duration::from_secs(60))
    // And a linger longer than it: a body whose end waited for the
    // linger after a pipelined request shows as one kept open.
    .client_disconnect_timeout(std::time::Duration::from_secs(60))
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);

    // HTTP/1.0, keep-alive asked for: read to the end of the connection.
    let request = "GET /stream HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
    let seen = until_closed(addr, request.as_bytes()).await;
    let (head, body) = head_of(&seen);
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "one\ntwo\nthree\n");

    // Two pipelined: the first's body ends with the connection, so the
    // second is not answered on it (the client retries it, RFC 9112 §9.3.2);
    // answered, its head would have been read as the first body's tail.
    let seen = until_closed(addr, request.repeat(2).as_bytes()).await;
    let (head, body) = head_of(&seen);
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "one\ntwo\nthree\n");

    // HTTP/1.1: chunked as before, and the connection serves a second one.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for round in 0..2 {
        stream.write_all(request).await.expect("write");
        let mut seen = Vec::new();
        let whole = tokio::time::timeout(WAIT, async {
            while !seen.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(
            whole.is_ok(),
            "round {round}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let (head, body) = head_of(&seen);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n"
        );
    }
    handle.stop(false).await;
}

/// Pipelined requests were answered as if each were the last one decoded:
/// the HTTP layer decodes every request in hand before answering the first,
/// and took the version and the method (`HEAD` or not) for its answers
/// from the latest, and the connection's fate with them. A `GET` followed
/// by a `HEAD` got its `Content-Length` but not its body (the client then
/// read the next answer as that body); a `HEAD` followed by a `GET` got a
/// body; HTTP/1.1 requests followed by an HTTP/1.0 one were answered
/// `HTTP/1.0` without keep-alive (so the client took the connection for
/// closing, though the server went on), and the other way round a 1.0
/// request's stream would have gone out chunked. Each answer now follows
/// its own request.
#[tokio::test]
async fn pipelined_answers_follow_their_own_request() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    // (request line, answer's version, whether it has a body)
    let cases = [
        ("GET /healthz HTTP/1.1", "HTTP/1.1", true),
        ("HEAD /healthz HTTP/1.1", "HTTP/1.1", false),
        ("GET /healthz HTTP/1.1", "HTTP/1.1", true),
        ("GET /healthz HTTP/1.0", "HTTP/1.0", true),
    ];
    let requests: String = cases
        .iter()
        .map(|(line, _, _)| format!("{line}\r\nHost: localhost\r\n\r\n"))
        .collect();
    // The last (HTTP/1.0, no keep-alive) ends the connection.
    let seen = until_closed(app.base.trim_start_matches("http://"), requests.as_bytes()).await;
    let mut rest = &seen[..];
    for (line, version, has_body) in cases {
        let (head, after) = head_of(rest);
        assert!(
            head.starts_with(&format!("{} 200", version.to_ascii_lowercase())),
            "{line}: {head}"
        );
        // Kept alive for the next one: it said so.
        if version == "HTTP/1.1" {
            assert!(!head.contains("connection: close"), "{line}: {head}");
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap_or_else(|| panic!("{line}: no Content-Length: {head}"))
            .parse()
            .expect("a number");
        let body_len = if has_body { length } else { 0 };
        assert!(after.len() >= body_len, "{line}: short body: {head}");
        if has_body {
            let body: serde_json::Value =
                serde_json::from_slice(&after[..body_len]).expect("the body is JSON, whole");
            assert_eq!(body["status"], "ok", "{line}: {body}");
        }
        rest = &seen[seen.len() - after.len() + body_len..];
    }
    assert!(rest.is_empty(), "more: {:?}", String::from_utf8_lossy(rest));
}
