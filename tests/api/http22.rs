//! Round twenty-two's HTTP framing and MCP loose ends: `Host` is checked
//! (RFC 9112 §3.2), a target or head too long is answered in the envelope
//! (`414`, `431`), `Upgrade` lines given apart are one list, an answer
//! that does not switch protocols does not say `upgrade`, and `/mcp`
//! answers JSON that is not an object as stdio does. Raw sockets: these
//! are requests a well-behaved client never sends.

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::hardening_net::{Raw, RawResponse};
use crate::helpers::process::mcp_stdio_answers;
use crate::helpers::{assert_error, spawn_app_with, TestApp, WAIT};
use crate::tidy16::{mcp_post, mcp_post_raw};

/// The thread-creation request of the API's first example, with `host`
/// as its `Host` lines (each given, in order; none if empty) and `version`.
fn create_with_hosts(app: &TestApp, version: &str, hosts: &[&str]) -> Vec<u8> {
    let body = json!({"aid": app.alice.aid, "target_aid": app.bob.aid,
                      "subject": "host check", "first_message": "hello"})
    .to_string();
    let mut head = format!("POST /api/acsp/thread/create {version}\r\n");
    for host in hosts {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    head.push_str(&format!(
        "Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.key,
        body.len()
    ));
    head.into_bytes()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Asserts the `400` of a bad `Host`: the envelope, naming `Host`.
fn assert_host_refused(res: &RawResponse, case: &str) {
    assert_eq!(res.status, 400, "{case}: {res:?}");
    let body = res.assert_envelope(400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["field"], "Host", "{case}: {body}");
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
/// code to any HTTP/1.1 request message that lacks a Host header field and
/// to any request message that contains more than one Host header field
/// line or a Host header field with an invalid field value." `a b`, `x@y`,
/// `[::1` and an empty `Host` were served; two `Host` lines and none were a
/// bare `400` with no envelope and the connection closed. Each is now `400`
/// in the envelope naming `Host`, nothing stored, and the connection stays
/// usable (the request was framed: only its `Host` is wrong). Hosts as
/// RFC 3986 writes them are served, and HTTP/1.0 needs none.
#[tokio::test]
async fn a_missing_doubled_or_malformed_host_is_400_on_host_and_nothing_is_stored() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let threads = app.stored_threads();
    let refused: [(&str, &str, &[&str]); 11] = [
        ("a space", "HTTP/1.1", &["a b"]),
        ("user info", "HTTP/1.1", &["x@y"]),
        ("an unclosed IPv6 literal", "HTTP/1.1", &["[::1"]),
        ("an empty IPv6 literal", "HTTP/1.1", &["[]"]),
        ("empty", "HTTP/1.1", &[""]),
        ("two lines", "HTTP/1.1", &["localhost", "localhost"]),
        ("none", "HTTP/1.1", &[]),
        (
            "a port that is not a number",
            "HTTP/1.1",
            &["localhost:http"],
        ),
        ("a bad percent escape", "HTTP/1.1", &["a%2g"]),
        ("a path", "HTTP/1.1", &["localhost/x"]),
        ("HTTP/1.0, malformed", "HTTP/1.0", &["a b"]),
    ];
    for (case, version, hosts) in refused {
        let mut raw = Raw::connect(&app).await;
        raw.send(&create_with_hosts(&app, version, hosts)).await;
        let res = raw.response(WAIT).await;
        assert_host_refused(&res, case);
        if version == "HTTP/1.1" {
            // A request without a body: the same connection goes on (one
            // refused with its body unread is closed, as for any refusal).
            let mut head = format!("GET /healthz {version}\r\n");
            for host in hosts {
                head.push_str(&format!("Host: {host}\r\n"));
            }
            head.push_str("\r\n");
            let mut raw = Raw::connect(&app).await;
            raw.send(head.as_bytes()).await;
            assert_host_refused(&raw.response(WAIT).await, case);
            raw.send(HEALTHZ).await;
            let res = raw.response(WAIT).await;
            assert_eq!(res.status, 200, "{case}: the next request: {res:?}");
        }
    }
    assert_eq!(app.stored_threads(), threads, "nothing stored");

    let served: [(&str, &[&str]); 8] = [
        ("HTTP/1.1", &["localhost"]),
        ("HTTP/1.1", &["example.com:8080"]),
        ("HTTP/1.1", &["127.0.0.1:80"]),
        ("HTTP/1.1", &["[::1]:8080"]),
        ("HTTP/1.1", &["[v7.fe80::1]"]),
        ("HTTP/1.1", &["xn--bcher-kva.example"]),
        ("HTTP/1.1", &["a%20b"]),
        ("HTTP/1.0", &[]),
    ];
    for (version, hosts) in served {
        let mut raw = Raw::connect(&app).await;
        raw.send(&create_with_hosts(&app, version, hosts)).await;
        let res = raw.response(WAIT).await;
        assert_eq!(res.status, 201, "{version} {hosts:?}: {res:?}");
    }
    assert_eq!(app.stored_threads(), threads + served.len() as i64);
}

/// A request line over the `http` crate's URI limit (65,534 bytes) got a
/// bare `400`, and one over the head's 128 KiB a bare `431` (as if its
/// headers were too large), both without the envelope or `X-Request-Id`.
/// Both are now `414 URI_TOO_LONG` in the envelope. Headers too large
/// answer `431 HEADERS_TOO_LARGE` in the envelope at every size (over 16
/// KiB the application's, over 128 KiB or 96 fields the HTTP layer's,
/// which had none). The HTTP layer's other refusals carry it too.
#[tokio::test]
async fn a_target_or_head_too_long_is_answered_in_the_envelope() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let target = |n: usize| {
        format!(
            "GET /healthz?x={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "a".repeat(n)
        )
        .into_bytes()
    };
    let cases: [(&str, Vec<u8>, u16, &str); 7] = [
        ("a target of 70,000 bytes", target(70_000), 414, "URI_TOO_LONG"),
        ("a target of 140,000 bytes", target(140_000), 414, "URI_TOO_LONG"),
        (
            "a header of 20 KiB",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: {}\r\n\r\n",
                "a".repeat(20 * 1024)
            )
            .into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "a header of 140 KiB",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: {}\r\n\r\n",
                "a".repeat(140 * 1024)
            )
            .into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "100 headers",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
                (0..100).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "a control byte in a header",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "a coding before chunked",
            b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                .to_vec(),
            501,
            "NOT_IMPLEMENTED",
        ),
    ];
    for (case, request, status, code) in cases {
        let mut raw = Raw::connect(&app).await;
        raw.send(&request).await;
        let res = raw.response(WAIT).await;
        assert_eq!(res.status, status, "{case}: {res:?}");
        let body = res.assert_envelope(status, code);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}: {body}"
        );
        assert_eq!(
            res.header("content-type"),
            Some("application/json"),
            "{case}"
        );
    }
    // Just under the limit is served.
    let mut raw = Raw::connect(&app).await;
    raw.send(&target(65_000)).await;
    assert_eq!(raw.response(WAIT).await.status, 200);
    // After a HEAD's answer, the HTTP layer's own answer still has its body
    // (it went out as a HEAD's would: the length without the bytes).
    let seen = crate::helpers::until_closed(
        app.base.trim_start_matches("http://"),
        b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x01b\r\n\r\n",
    )
    .await;
    let seen = String::from_utf8_lossy(&seen);
    let refusal = &seen[seen.find("HTTP/1.1 400 ").expect("the 400")..];
    let body = &refusal[refusal.find("\r\n\r\n").expect("its head's end") + 4..];
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{seen}"));
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{seen}");
}

/// `Upgrade` is one list however many lines carry it (RFC 9110 §5.3,
/// §7.8). The HTTP layer read it so (round twenty-one), but actix's
/// handshake check read the first line only: `Upgrade: h2c` and `Upgrade:
/// websocket` on two lines were `422` on `Upgrade`, the same on one line a
/// socket. Now both open a socket that serves.
#[tokio::test]
async fn upgrade_lines_given_apart_are_one_list() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    for lines in [
        ["h2c", "websocket"],
        ["websocket", "h2c"],
        ["h2c, foo", "WebSocket"],
    ] {
        let (_, url) = app.grant_for(&app.key, None).await;
        let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: {}\r\nUpgrade: {}\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            lines[0], lines[1]
        );
        let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        stream.write_all(handshake.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let (head, opcode, ready) = tokio::time::timeout(WAIT, async {
            use tokio::io::AsyncReadExt;
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "{lines:?}: closed before the answer");
                buf.extend_from_slice(&chunk[..n]);
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            if !head.starts_with("HTTP/1.1 101 ") {
                return (head, 0, Vec::new());
            }
            let (opcode, ready) = crate::probe21::server_frame(&mut stream, &mut buf).await;
            (head, opcode, ready)
        })
        .await
        .expect("answered in time");
        assert!(head.starts_with("HTTP/1.1 101 "), "{lines:?}: {head}");
        assert_eq!(opcode, 1, "{lines:?}: a text frame");
        let ready: Value = serde_json::from_slice(&ready).expect("JSON");
        assert_eq!(ready["type"], "connection.ready", "{lines:?}: {ready}");
    }
}

/// Only an answer that switches protocols (`101`) is an upgrade. A request
/// that offered one (`Connection: Upgrade`, `Upgrade: h2c`) and was
/// answered `200` got `connection: upgrade` in that answer, and the
/// connection was then closed without a `Connection: close`: a client
/// reusing it lost its next request. Now such an answer says nothing
/// about an upgrade and the connection is kept (HTTP/1.1).
#[tokio::test]
async fn an_answer_that_does_not_switch_protocols_does_not_say_upgrade() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let offered = [
        "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        "Connection: keep-alive, Upgrade\r\nUpgrade: foo/2\r\n",
        "Connection: Upgrade\r\n",
    ];
    for headers in offered {
        let mut raw = Raw::connect(&app).await;
        for round in 0..2 {
            raw.send(
                format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").as_bytes(),
            )
            .await;
            let res = raw.response(WAIT).await;
            assert_eq!(res.status, 200, "{headers:?} #{round}: {res:?}");
            let connection = res.header("connection").unwrap_or("").to_ascii_lowercase();
            assert!(
                !connection.contains("upgrade") && !connection.contains("close"),
                "{headers:?} #{round}: connection: {connection}"
            );
        }
        // A POST whose body is read is answered and kept alike.
        let body = json!({"aid": app.alice.aid, "target_aid": app.bob.aid,
                          "subject": "offered an upgrade", "first_message": "hi"})
        .to_string();
        raw.send(
            format!(
                "POST /api/acsp/thread/create HTTP/1.1\r\nHost: localhost\r\n{headers}\
                 Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                app.key,
                body.len()
            )
            .as_bytes(),
        )
        .await;
        let res = raw.response(WAIT).await;
        assert_eq!(res.status, 201, "{headers:?}: {res:?}");
        assert!(
            !res.header("connection").unwrap_or("").contains("pgrade"),
            "{res:?}"
        );
        raw.send(HEALTHZ).await;
        assert_eq!(raw.response(WAIT).await.status, 200, "{headers:?}: kept");
    }
}

/// JSON-RPC 2.0 answers a message that is not an object with `-32600` and
/// `"id": null` (a batch is an array: see the README's API notes for why
/// it is refused the same way). stdio did; `/mcp` answered `422` in the
/// API's envelope, which an MCP client does not read. Both answer alike
/// now, byte for byte; what is not JSON stays `422` over `/mcp`.
#[tokio::test]
async fn json_that_is_not_an_object_is_answered_alike_over_http_and_stdio() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let threads = app.stored_threads();
    let create = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "create_thread", "arguments": {
                            "aid": app.alice.aid, "target_aid": app.bob.aid,
                            "subject": "in a batch"}}});
    let not_objects = [
        json!([create]),
        json!([]),
        json!("tools/list"),
        json!(7),
        json!(null),
        json!(true),
    ];
    let mut over_http = Vec::new();
    for body in &not_objects {
        let res = mcp_post(&app, body, &[]).await;
        assert_eq!(res.status(), 200, "{body}");
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{body}"
        );
        let answer: Value = serde_json::from_str(&res.text().await.expect("body")).expect("JSON");
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer.get("id"), Some(&Value::Null), "{body}: {answer}");
        assert_eq!(answer["error"]["code"], -32600, "{body}: {answer}");
        over_http.push(answer);
    }
    assert!(
        over_http[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("batch")),
        "{}",
        over_http[0]
    );
    assert_eq!(app.stored_threads(), threads, "no tool ran");
    // Not JSON, or JSON the API refuses anywhere, is 422 as before.
    for body in ["[1,", "", "[\"\\ud800\"]", "\u{feff}[]"] {
        let res = mcp_post_raw(&app, body).await.expect("request");
        assert_error(res, 422, "VALIDATION_ERROR").await;
    }

    let lines: Vec<String> = not_objects.iter().map(Value::to_string).collect();
    let over_stdio = mcp_stdio_answers(&app.base, &app.key, &lines).await;
    assert_eq!(over_stdio, over_http);
    assert_eq!(app.stored_threads(), threads, "no tool ran");
}

/// `/mcp` reads a POST's JSON once before the MCP library does (it read it
/// twice: whole, then its members). The order of its refusals is kept:
/// what any route refuses in a body comes before a member given twice,
/// which comes before a `method` or `id` too long, and a `method` that is
/// not a string leaves the message to the library whatever else it holds.
#[tokio::test]
async fn an_mcp_body_s_refusals_keep_their_order() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let post_raw = |body: String| mcp_post_raw(&app, body);
    let long = "m".repeat(200);
    // A member given twice, then malformed JSON: the malformed JSON.
    let res = post_raw(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping" "x"}"#.to_owned())
        .await
        .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("malformed JSON"), "{body}");
    // ... and a lone surrogate after it: that one.
    let res = post_raw(r#"{"id":1,"id":2,"method":"ping","x":"\ud800"}"#.to_owned())
        .await
        .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("surrogate"), "{body}");
    // A member given twice before a method too long: the member.
    let res = post_raw(format!(
        r#"{{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"{long}"}}"#
    ))
    .await
    .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "jsonrpc", "{body}");
    // A method too long, an id too long.
    let res = post_raw(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{long}"}}"#))
        .await
        .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "method", "{body}");
    let res = post_raw(format!(
        r#"{{"jsonrpc":"2.0","id":"{long}","method":"ping"}}"#
    ))
    .await
    .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "id", "{body}");
    // A method that is not a string: the library's judgement, with the
    // long id left alone (it was never read as a request's).
    let res = post_raw(format!(r#"{{"jsonrpc":"2.0","id":"{long}","method":5}}"#))
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let answer: Value = serde_json::from_str(&res.text().await.expect("body")).expect("JSON");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(
        answer["error"]["message"], "method must be a string",
        "{answer}"
    );
    // Params that are not an object, and a request served.
    let res = post_raw(r#"{"jsonrpc":"2.0","id":9,"method":"tools/list","params":[]}"#.to_owned())
        .await
        .expect("request");
    let answer: Value = serde_json::from_str(&res.text().await.expect("body")).expect("JSON");
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let res = post_raw(r#"{"jsonrpc":"2.0","id":10,"method":"ping"}"#.to_owned())
        .await
        .expect("request");
    let answer = crate::tidy16::jsonrpc_answer(res).await;
    assert_eq!(answer["id"], 10, "{answer}");
    assert!(answer.get("result").is_some(), "{answer}");
}
