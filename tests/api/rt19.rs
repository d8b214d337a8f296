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

/// `threadline mcp` (stdio) answered a request it could not read (`params`
/// that are not an object, an `id` with a fraction, `jsonrpc` other than
/// "2.0", a batch) with `{"jsonrpc":"2.0","error":{...}}` and no `id` at
/// all: JSON-RPC 2.0 requires one (`null` when it cannot be read), and a
/// client waiting on id 5 never learnt its request was refused. Each is now
/// answered with its id (`-32602` for `params`, as over HTTP), the others
/// with `"id": null`; a notification is still not answered, and the
/// session goes on serving.
#[tokio::test]
async fn threadline_mcp_answers_what_it_cannot_read_with_the_request_s_id() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|_| {}).await;
    let (mut child, mut stdin, mut lines) = crate::helpers::process::mcp_stdio(&app.base, &app.key);
    let lines_in = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "probe", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": []}),
        json!({"jsonrpc": "2.0", "id": "six", "method": "tools/list", "params": 6}),
        json!({"jsonrpc": "2.0", "id": 7.5, "method": "ping"}),
        json!({"jsonrpc": "1.0", "id": 8, "method": "ping"}),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": []}),
        json!([{"jsonrpc": "2.0", "id": 9, "method": "ping"}]),
        json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}),
    ];
    for message in lines_in {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .expect("write");
    }
    let mut answers: Vec<Value> = Vec::new();
    tokio::time::timeout(WAIT, async {
        // initialize, 5, six, 7.5, 8, the batch (null), 10: seven answers.
        while answers.len() < 7 {
            let line = lines.next_line().await.expect("read").expect("a line");
            answers.push(serde_json::from_str(&line).expect("one JSON-RPC message a line"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("answers missing; got {answers:?}"));
    let of = |id: Value| {
        answers
            .iter()
            .find(|a| a.get("id") == Some(&id))
            .unwrap_or_else(|| panic!("no answer with id {id}: {answers:?}"))
    };
    for (id, code) in [
        (json!(5), -32602),
        (json!("six"), -32602),
        (json!(7.5), -32600),
        (json!(8), -32600),
        (json!(null), -32600),
    ] {
        assert_eq!(of(id.clone())["error"]["code"], code, "{id}: {answers:?}");
    }
    assert!(of(json!(10))["result"].is_object(), "{answers:?}");
    assert!(
        answers.iter().all(|a| a.get("id").is_some()),
        "every answer has an id: {answers:?}"
    );
    // Nothing more: the notification got no answer.
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), lines.next_line()).await;
    assert!(more.is_err(), "an answer too many: {more:?}");
    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits at the end of stdin")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// A handshake that is not one a WebSocket server may accept was refused
/// with "expected a WebSocket upgrade request" whatever was wrong, and a
/// `Sec-WebSocket-Version` other than 13 without the header naming the
/// version the server speaks (RFC 6455 §4.4: the server MUST send it).
/// An HTTP/1.0 request was upgraded (`HTTP/1.0 101`), though RFC 6455
/// §4.1 asks for HTTP/1.1 and an HTTP/1.0 server ignores `Upgrade`. Each
/// is now a 422 naming the header at fault (the version's with
/// `Sec-WebSocket-Version: 13`), and the grant stays usable.
#[tokio::test]
async fn a_handshake_the_server_cannot_take_names_the_header_and_keeps_the_grant() {
    use crate::hardening_net::Raw;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    let head = |version: &str, headers: &[(&str, &str)]| {
        let mut text = format!("GET {path} {version}\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    };
    const KEY: (&str, &str) = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    const UPGRADE: (&str, &str) = ("Upgrade", "websocket");
    const CONNECTION: (&str, &str) = ("Connection", "Upgrade");
    const V13: (&str, &str) = ("Sec-WebSocket-Version", "13");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: [Case; 7] = [
        ("HTTP/1.0", vec![UPGRADE, CONNECTION, KEY, V13], None),
        (
            "HTTP/1.1",
            vec![UPGRADE, CONNECTION, KEY, ("Sec-WebSocket-Version", "8")],
            Some("Sec-WebSocket-Version"),
        ),
        (
            "HTTP/1.1",
            vec![UPGRADE, CONNECTION, KEY],
            Some("Sec-WebSocket-Version"),
        ),
        (
            "HTTP/1.1",
            vec![UPGRADE, CONNECTION, V13],
            Some("Sec-WebSocket-Key"),
        ),
        (
            "HTTP/1.1",
            vec![UPGRADE, CONNECTION, ("Sec-WebSocket-Key", "short"), V13],
            Some("Sec-WebSocket-Key"),
        ),
        (
            "HTTP/1.1",
            vec![("Upgrade", "h2c"), CONNECTION, KEY, V13],
            Some("Upgrade"),
        ),
        ("HTTP/1.1", vec![UPGRADE, KEY, V13], Some("Connection")),
    ];
    for (version, headers, field) in cases {
        let mut raw = Raw::connect(&app).await;
        raw.send(&head(version, &headers)).await;
        let res = raw.response(WAIT).await;
        let body = res.assert_envelope(422, "VALIDATION_ERROR");
        let case = format!("{version} {headers:?}");
        assert_eq!(body["error"]["field"].as_str(), field, "{case}: {body}");
        if field == Some("Sec-WebSocket-Version") {
            assert_eq!(
                res.header("sec-websocket-version"),
                Some("13"),
                "{case}: {res:?}"
            );
        }
        if version == "HTTP/1.0" {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("HTTP/1.1"), "{case}: {body}");
        }
    }
    // The grant was not used up by any of them.
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws.close().await;
}

/// `/v1/sse` took `Last-Event-ID` given twice (two positions: which one
/// did the client mean?) by its first, and a malformed `after_position`
/// went unread beside a `Last-Event-ID`; a query parameter given twice, or
/// malformed, is `422` on every route. Both are `422` naming the field now,
/// and a grant refused that way stays usable.
#[tokio::test]
async fn an_event_stream_s_resume_point_given_twice_or_malformed_is_422() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let sse = |query: String, ids: &'static [&'static str]| {
        let mut request = app
            .client
            .get(app.url(&format!("/v1/sse?{query}")))
            .bearer_auth(&app.key);
        for id in ids {
            request = request.header("Last-Event-ID", *id);
        }
        request.send()
    };
    let cases: [(String, &[&str], &str); 3] = [
        (format!("thread_id={thread}"), &["1", "2"], "Last-Event-ID"),
        (format!("thread_id={thread}"), &["1", "1"], "Last-Event-ID"),
        (
            format!("thread_id={thread}&after_position=x"),
            &["1"],
            "after_position",
        ),
    ];
    for (query, ids, field) in cases {
        let res = sse(query.clone(), ids).await.expect("request");
        // The status first: a stream that opened would never end.
        assert_eq!(res.status(), 422, "{query} {ids:?}");
        let body = crate::helpers::assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], field, "{query} {ids:?}: {body}");
    }
    // With a grant: refused, and the grant still opens a stream.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let grant = url.split("c=").nth(1).expect("c=").to_owned();
    let res = sse(format!("c={grant}"), &["3", "4"])
        .await
        .expect("request");
    assert_eq!(res.status(), 422);
    crate::helpers::assert_error(res, 422, "VALIDATION_ERROR").await;
    let res = sse(format!("c={grant}"), &["3"]).await.expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
}

/// An HTTP/1.0 client of `/v1/sse` got `Transfer-Encoding: chunked`, which
/// HTTP/1.0 does not have (RFC 9112 §6.1: a server must not send it to a
/// 1.0 request), so the chunk sizes were part of the stream it read
/// (`D\r\nretry: 3000…`). Its stream is now the rest of the connection,
/// no chunk framing, and its events arrive as an HTTP/1.1 client's do.
#[tokio::test]
async fn an_http_1_0_event_stream_carries_no_chunk_framing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/sse?thread_id={thread} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        app.key
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut said = false;
    let text = tokio::time::timeout(WAIT, async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if !said && text.contains("retry: 3000") {
                said = true;
                app.say(&app.bob, &thread, "over HTTP/1.0").await;
            }
            if text.contains("over HTTP/1.0") && text.ends_with("\n\n") {
                return text;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event: {}", String::from_utf8_lossy(&seen)));
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(body.starts_with("retry: 3000\n\n"), "{body:?}");
    let event = body
        .split("\n\n")
        .find(|block| block.contains("event: thread.message"))
        .unwrap_or_else(|| panic!("no message event: {body:?}"));
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    let data: Value = serde_json::from_str(data).expect("the data line is JSON, whole");
    assert_eq!(data["data"]["content"], "over HTTP/1.0");
}

/// The same for `/mcp`, whose answers are event streams too: an HTTP/1.0
/// client read `2C\r\ndata: {…}\n\n\r\n0\r\n\r\n`. It now reads the event
/// alone, to the end of the connection.
#[tokio::test]
async fn an_http_1_0_mcp_answer_carries_no_chunk_framing() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let request = format!(
        "POST /mcp HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.key,
        body.len()
    );
    // The answer ends with the connection.
    let seen =
        crate::helpers::until_closed(app.base.trim_start_matches("http://"), request.as_bytes())
            .await;
    let text = String::from_utf8_lossy(&seen);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let data = body
        .strip_prefix("data: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one event, unframed: {body:?}"));
    let answer: Value = serde_json::from_str(data).expect("JSON-RPC");
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"].is_object(), "{answer}");
}

/// `/mcp/` and `/mcp//` were served as `/mcp` (the MCP transport is
/// mounted as a scope, which matches below its path), though paths are
/// matched exactly on every other route: a trailing or doubled slash is a
/// `404` saying so, before the key is looked at. Now `/mcp` too.
#[tokio::test]
async fn mcp_s_path_is_matched_exactly_like_every_route() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for (path, key) in [
        ("/mcp/", Some(app.key.as_str())),
        ("/mcp//", Some(app.key.as_str())),
        ("/mcp/", None),
    ] {
        let mut request = app
            .client
            .post(app.url(path))
            .header("accept", "application/json, text/event-stream")
            .json(&ping);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let res = request.send().await.expect("request");
        let body = crate::helpers::assert_error(res, 404, "NOT_FOUND").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("trailing or doubled slash"),
            "{path}: {body}"
        );
    }
    // `/mcp` itself, and its query string, are served as before.
    for path in ["/mcp", "/mcp?x=1"] {
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.key)
            .header("accept", "application/json, text/event-stream")
            .json(&ping)
            .send()
            .await
            .expect("request");
        let answer = jsonrpc_answer(res).await;
        assert_eq!(answer["id"], 1, "{path}: {answer}");
    }
}

/// The sockets the server holds open, from `/healthz`.
async fn open_sockets(app: &TestApp) -> u64 {
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    let (_, body) = crate::helpers::json_of(res).await;
    body["realtime"]["sockets"]
        .as_u64()
        .expect("realtime.sockets")
}

/// Waits (bounded) until the server holds `n` sockets.
async fn until_sockets(app: &TestApp, n: u64, why: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = open_sockets(app).await;
        if open == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{why}: {open} sockets open, want {n}"
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

/// An `/mcp` client that hung up during a `wait_for_messages` left the
/// wait running to its timeout (up to 60 s), holding a WebSocket on the
/// server's own loopback connections, which the per-IP cap does not count:
/// each abandoned call held one for a minute. The wait now ends when its
/// answer is dropped, and its socket with it; other clients are served.
#[tokio::test]
async fn an_mcp_wait_whose_client_hangs_up_lets_its_socket_go() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wait_for_messages",
                                 "arguments": {"aid": app.alice.aid, "thread_id": thread,
                                               "after_seq": 1, "timeout_secs": 60}}})
    .to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.key,
        body.len()
    );
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        clients.push(stream);
    }
    until_sockets(&app, 3, "three waits hold a socket each").await;
    drop(clients);
    until_sockets(&app, 0, "the waits of clients that hung up").await;
    // The server serves others as before, a wait included.
    let answer = wait_call_for(&app, &thread, 1).await;
    assert_eq!(
        answer["result"]["structuredContent"]["timed_out"], true,
        "{answer}"
    );
    until_sockets(&app, 0, "a wait that timed out").await;
}

/// A `wait_for_messages` of `timeout` seconds on `thread` with the app's key.
async fn wait_call_for(app: &TestApp, thread: &str, timeout: u64) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "wait_for_messages",
                                 "arguments": {"aid": app.alice.aid, "thread_id": thread,
                                               "after_seq": 1, "timeout_secs": timeout}}});
    jsonrpc_answer(mcp_post(app, &body, &[]).await).await
}

/// A stream whose login key was revoked ended without a word, where a
/// socket gets 4001 and a stream whose thread is deleted gets `event:
/// closed` with 4004: an EventSource saw a plain end, reconnected, and
/// met a 401 it could not tell from a bad grant. It now ends with `event:
/// closed` `{"code":4001,"reason":"login key revoked"}`.
#[tokio::test]
async fn an_event_stream_whose_key_is_revoked_says_so_as_it_ends() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let eve = app.new_agent("eve");
    let mut res = app
        .client
        .get(app.url(&format!("/v1/sse?aid={}", eve.aid)))
        .bearer_auth(&eve.key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while !text.contains("retry: 3000") {
            let chunk = res
                .chunk()
                .await
                .expect("read")
                .expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream starts");
    threadline::cli::key_revoke(&app.db, &eve.key).expect("revoke");
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = res.chunk().await.expect("read") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream outlived its key: {text:?}"));
    let last = text.trim_end().rsplit("\n\n").next().expect("an event");
    assert!(last.starts_with("event: closed\n"), "{text:?}");
    let data: Value = serde_json::from_str(
        last.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data"),
    )
    .expect("JSON");
    assert_eq!(data, json!({"code": 4001, "reason": "login key revoked"}));
}

/// A handshake sent with a body (`Content-Length: 5`, `hello`) was
/// upgraded, and the body's bytes were read as the client's first frames
/// (here: a malformed frame, closed with 1002): HTTP's framing and the
/// socket's disagreed. A handshake has no body (RFC 6455 §4.1): `422`, the
/// grant left usable.
#[tokio::test]
async fn a_handshake_with_a_body_is_refused_and_keeps_the_grant() {
    use crate::hardening_net::Raw;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    for (framing, body) in [
        ("Content-Length: 5\r\n", "hello"),
        ("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    ] {
        let mut raw = Raw::connect(&app).await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{framing}\r\n{body}"
        );
        raw.send(request.as_bytes()).await;
        let res = raw.response(WAIT).await;
        let error = res.assert_envelope(422, "VALIDATION_ERROR");
        assert!(
            error["error"]["message"].as_str().unwrap().contains("body"),
            "{framing}: {error}"
        );
    }
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws.close().await;
}
