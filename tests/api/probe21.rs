//! Round twenty-one's hostile-input and conformance sweep: what it found in
//! the WebSocket handshake and the event stream's resume point.

use crate::hardening_net::Raw;
use crate::helpers::{assert_error, spawn_app_with, Ws, WAIT};

/// RFC 6455 allows one `Sec-WebSocket-Key` (§11.3.1: it "MUST NOT appear
/// more than once") and one version, 13 (§4.1). Sent twice, actix read the
/// first of each: a handshake with two nonces was upgraded with the
/// first's accept value, and `Sec-WebSocket-Version: 13` then `8` was
/// upgraded while `8` then `13` was refused. Which one the client meant is
/// a guess, as for every header the API refuses twice (`Authorization`,
/// `Idempotency-Key`, `Last-Event-ID`): each is now a 422 naming the
/// header (the version's with `Sec-WebSocket-Version: 13`, as for any
/// other refused version), in either order, and the grant stays usable.
#[tokio::test]
async fn a_handshake_with_a_websocket_header_given_twice_is_422_and_keeps_the_grant() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    const K1: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const K2: &str = "AAECAwQFBgcICQoLDA0ODw==";
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "Sec-WebSocket-Key",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Key", K2),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
        (
            "Sec-WebSocket-Key",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
        (
            "Sec-WebSocket-Version",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Version", "8"),
            ],
        ),
        (
            "Sec-WebSocket-Version",
            &[
                ("Sec-WebSocket-Key", K1),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
    ];
    for (field, headers) in cases {
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Raw::connect(&app).await;
        raw.send(head.as_bytes()).await;
        let res = raw.response(WAIT).await;
        let case = format!("{headers:?}");
        assert_eq!(res.status, 422, "{case}: {res:?}");
        let body = res.assert_envelope(422, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], field, "{case}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than one"), "{case}: {body}");
        if field == "Sec-WebSocket-Version" {
            assert_eq!(res.header("sec-websocket-version"), Some("13"), "{case}");
        }
    }
    // None of them used the grant up.
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws.close().await;
}

/// `Last-Event-ID` was read with Rust's integer parser after trimming, so
/// `+1` and `01` resumed from 1, where the same positions in the URL
/// (`after_position=+1`, `=01`) are 422 (README: integers are plain
/// decimal); and an empty `Last-Event-ID` was 422 although it names no
/// position (the HTML standard's EventSource holds an empty last event ID
/// when it has none, and sends no header then), so a client sending one
/// with `after_position` could not resume at all. Now a position in the
/// header is read as the query's are, and an empty header is no position:
/// `after_position` applies.
#[tokio::test]
async fn last_event_id_is_plain_decimal_like_after_position_and_empty_names_none() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let message = app.say(&app.alice, &thread, "before the stream").await;
    let open = |query: String, id: &'static str| {
        app.client
            .get(app.url(&format!("/v1/sse?thread_id={thread}{query}")))
            .bearer_auth(&app.key)
            .header("Last-Event-ID", id)
            .send()
    };
    for id in ["+1", "01", "00", "+0", "1 2", "1.0"] {
        let res = open(String::new(), id).await.expect("request");
        // The status first: a stream that opened would not end.
        assert_eq!(res.status(), 422, "Last-Event-ID: {id}");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "Last-Event-ID", "{id}: {body}");
        let query = id.replace('+', "%2B").replace(' ', "%20");
        let res = app
            .client
            .get(app.url(&format!(
                "/v1/sse?thread_id={thread}&after_position={query}"
            )))
            .bearer_auth(&app.key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 422, "after_position={id}: the query's rule");
    }
    // Plain decimal still resumes (and `-0`, 0 as in the query).
    for id in ["0", "-0"] {
        let res = open(String::new(), id).await.expect("request");
        assert_eq!(res.status(), 200, "Last-Event-ID: {id}");
    }
    // Empty: no position, so after_position=0 replays the thread's events.
    let mut res = open("&after_position=0".into(), "").await.expect("request");
    assert_eq!(
        res.status(),
        200,
        "an empty Last-Event-ID names no position"
    );
    let mut text = String::new();
    let id = message["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(WAIT, async {
        while !text.contains(&id) {
            let chunk = res.chunk().await.expect("read").expect("the stream ended");
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no replay from after_position=0: {text}"));
    assert!(text.contains("event: thread.message"), "{text}");
}

/// A request carrying `Upgrade: websocket` had its body read to the end of
/// the connection, its `Content-Length` ignored (actix's decoder took any
/// such request for a handshake): a `POST` with a well-formed body was
/// answered `408` once the body timeout ran out, and a request pipelined
/// behind it was read as part of its body, never answered. A server that
/// does not upgrade serves the request as framed (RFC 9110 §7.8, RFC 9112
/// §6.3): the thread is created at once and the next request answered.
/// A real handshake (no body; `Content-Length: 0` allowed) still upgrades.
#[tokio::test]
async fn a_request_naming_a_websocket_upgrade_keeps_its_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let body = serde_json::json!({
        "aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "upgrade"
    })
    .to_string();
    let upgrades: [&str; 3] = [
        "Upgrade: websocket\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n",
    ];
    let before = app.stored_threads();
    for (i, upgrade) in upgrades.into_iter().enumerate() {
        let request = format!(
            "POST /api/acsp/thread/create HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer {}\r\n{upgrade}Content-Length: {}\r\n\r\n{body}\
             GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            app.key,
            body.len()
        );
        let mut raw = Raw::connect(&app).await;
        raw.send(request.as_bytes()).await;
        // Well within the 10 s body timeout that answered it before.
        let created = raw.response(std::time::Duration::from_secs(3)).await;
        assert_eq!(created.status, 201, "{upgrade:?}: {created:?}");
        assert_eq!(created.json()["thread"]["subject"], "upgrade");
        assert_eq!(app.stored_threads(), before + i as i64 + 1, "{upgrade:?}");
        let health = raw.response(WAIT).await;
        assert_eq!(health.status, 200, "{upgrade:?}: the pipelined request");
        assert_eq!(health.json()["status"], "ok");
    }

    // A handshake still upgrades, with Content-Length: 0 too.
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Content-Length: 0\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&seen).contains("connection.ready") {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no connection.ready: {}", String::from_utf8_lossy(&seen)));
    assert!(
        seen.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

/// A body must be a JSON object, and only an empty one stands for "no
/// fields" where every field is optional (README). `open_thread` read the
/// JSON `null` as an empty body and opened a thread, where every other
/// route refuses it ("request body must be a JSON object, not null"). Now
/// it is refused there too, and nothing is created; an empty body still
/// opens a thread.
#[tokio::test]
async fn a_null_body_is_not_an_empty_one_for_open_thread() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let open = |body: &'static str| {
        app.client
            .post(app.url("/v1/turn-taking/actions/open_thread"))
            .bearer_auth(&app.key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let before = app.stored_threads();
    for body in ["null", " null\n"] {
        let res = open(body).await.expect("request");
        let refused = assert_error(res, 422, "VALIDATION_ERROR").await;
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("must be a JSON object"),
            "{body:?}: {refused}"
        );
        assert_eq!(app.stored_threads(), before, "{body:?}: nothing created");
    }
    for body in ["", " \n", "{}"] {
        let res = open(body).await.expect("request");
        assert_eq!(res.status(), 200, "{body:?}");
    }
    assert_eq!(app.stored_threads(), before + 3);
}
