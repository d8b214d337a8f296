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
/// The same for a `POST` with the handshake's headers and no body (a
/// handshake is a `GET`), which waited for the connection's end too. A
/// real handshake (no body; `Content-Length: 0` allowed) still upgrades.
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

    // Without a body (none declared, or Content-Length: 0) a POST is no
    // handshake either (one is a GET): answered at once, the next request too.
    for length in ["", "Content-Length: 0\r\n"] {
        let request = format!(
            "POST /v1/turn-taking/actions/open_thread HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{length}\r\n\
             GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            app.key
        );
        let mut raw = Raw::connect(&app).await;
        raw.send(request.as_bytes()).await;
        let opened = raw.response(std::time::Duration::from_secs(3)).await;
        assert_eq!(opened.status, 200, "{length:?}: {opened:?}");
        assert_eq!(
            raw.response(WAIT).await.status,
            200,
            "{length:?}: pipelined"
        );
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

/// Reads one WebSocket frame the server sent (unmasked): its opcode and
/// payload, from `buf` and then the stream.
pub(crate) async fn server_frame(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    async fn need(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, n: usize) {
        while buf.len() < n {
            let mut chunk = [0u8; 8192];
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "closed: {:?}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..read]);
        }
    }
    need(stream, buf, 2).await;
    assert_eq!(buf[1] & 0x80, 0, "a server frame is not masked: {buf:?}");
    let (len, at) = match buf[1] & 0x7f {
        126 => {
            need(stream, buf, 4).await;
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => panic!("no frame here is that long"),
        n => (n as usize, 2),
    };
    need(stream, buf, at + len).await;
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[0] & 0xf0, 0x80, "FIN and no RSV bits: {buf:?}");
    let payload = buf[at..at + len].to_vec();
    buf.drain(..at + len);
    (opcode, payload)
}

/// `Upgrade` is a list (RFC 9110 §7.8), and RFC 6455 asks for one that
/// holds `websocket`. actix's handshake check took any value containing
/// the word, while its HTTP layer handed the connection over only for a
/// bare `websocket`: `Upgrade: h2c, websocket` was answered 101 and the
/// socket ended at once (the client's bytes never reached it), and
/// `websocket, h2c` got its frames wrapped in chunked framing, so a client
/// read garbage. A list naming `websocket` now gets a working socket
/// (frames as sent, pings answered, messages delivered); a value that
/// only contains the word (`websocket/13`) is 422 on `Upgrade`, the grant
/// kept.
#[tokio::test]
async fn an_upgrade_list_naming_websocket_opens_a_working_socket() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let handshake = |path: &str, upgrade: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    for upgrade in ["h2c, websocket", "websocket, h2c", "WebSocket"] {
        let (thread, url) = app.grant_for(&app.key, None).await;
        let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
        let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        stream
            .write_all(handshake(path, upgrade).as_bytes())
            .await
            .expect("write");
        let mut buf = Vec::new();
        let (opcode, ready, pong, message) = tokio::time::timeout(WAIT, async {
            use tokio::io::AsyncReadExt;
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "{upgrade:?}: closed before the answer");
                buf.extend_from_slice(&chunk[..n]);
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            assert!(head.starts_with("HTTP/1.1 101 "), "{upgrade:?}: {head}");
            assert!(
                !head.to_ascii_lowercase().contains("transfer-encoding"),
                "{upgrade:?}: {head}"
            );
            buf.drain(..end);
            let (opcode, ready) = server_frame(&mut stream, &mut buf).await;
            // A masked ping: the socket must read what the client sends.
            let mask = [1u8, 2, 3, 4];
            let mut ping = vec![0x89, 0x80 | 4];
            ping.extend_from_slice(&mask);
            ping.extend(b"ping".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
            stream.write_all(&ping).await.expect("ping");
            let pong = server_frame(&mut stream, &mut buf).await;
            app.submit(
                &thread,
                serde_json::json!([{"sender": "dana", "content": "hello"}]),
            )
            .await;
            let message = server_frame(&mut stream, &mut buf).await;
            (opcode, ready, pong, message)
        })
        .await
        .unwrap_or_else(|_| panic!("{upgrade:?}: the socket stalled"));
        assert_eq!(opcode, 1, "{upgrade:?}: a text frame");
        let ready: serde_json::Value = serde_json::from_slice(&ready).expect("JSON");
        assert_eq!(ready["type"], "connection.ready", "{upgrade:?}");
        assert_eq!(pong, (0x0a, b"ping".to_vec()), "{upgrade:?}: the pong");
        assert_eq!(message.0, 1, "{upgrade:?}");
        let message: serde_json::Value = serde_json::from_slice(&message.1).expect("JSON");
        assert_eq!(message["type"], "thread.message", "{upgrade:?}");
        assert_eq!(message["data"]["content"], "hello", "{upgrade:?}");
    }

    // Only containing the word is no list naming it: refused, grant kept.
    let (_, url) = app.grant_for(&app.key, None).await;
    let path = &url[url.find("/v1/ws?").expect("a /v1/ws url")..];
    for upgrade in ["websocket/13", "xwebsocket"] {
        let mut raw = Raw::connect(&app).await;
        raw.send(handshake(path, upgrade).as_bytes()).await;
        let res = raw.response(WAIT).await;
        let body = res.assert_envelope(422, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], "Upgrade", "{upgrade:?}: {body}");
    }
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws.close().await;
}

/// A retry with an `Idempotency-Key` "returns the original message (201,
/// identical body)" (API.md). It was serialized again from the rows, with
/// the sender's name of now: once the agent was renamed (`threadline agent
/// rename`), the retry said `"sender_name": "Robert"` where the original
/// 201 (and the thread's history, which keeps each message as posted) said
/// `"bob"`. The retry now answers the stored message itself, byte for byte.
#[tokio::test]
async fn an_idempotent_retry_answers_the_original_body_after_a_rename() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let post = || {
        app.client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "retry-after-rename")
            .json(&serde_json::json!({
                "aid": app.bob.aid, "thread_id": thread, "content": "once",
                "metadata": {"n": 1.50}
            }))
            .send()
    };
    let first = post().await.expect("request");
    assert_eq!(first.status(), 201);
    let original = first.bytes().await.expect("body");
    let renamed = threadline::cli::agent_rename(&app.db, &app.bob.aid, "Robert");
    assert!(renamed.is_ok(), "{renamed:?}");
    let retry = post().await.expect("request");
    assert_eq!(retry.status(), 201);
    let again = retry.bytes().await.expect("body");
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&original),
        "the retry's body is the original's"
    );
    assert_eq!(app.stored_seqs(&thread), vec![1], "nothing stored twice");
    // The history keeps the message as posted too.
    let (_, page) = crate::helpers::json_of(
        app.get_thread(&app.key, &thread, &format!("aid={}", app.alice.aid))
            .await,
    )
    .await;
    assert_eq!(page["messages"][0]["sender_name"], "bob", "{page}");
}

/// A resume's replay sent each stored message rebuilt from the rows, with
/// the sender's name of now, where its live event, the 201 and the
/// thread's history all keep the message as posted: after `threadline
/// agent rename`, one message read two ways on one socket. The replay now
/// sends the stored message itself.
#[tokio::test]
async fn a_resume_replays_each_message_as_it_was_posted() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let posted = app.say(&app.bob, &thread, "before the rename").await;
    let renamed = threadline::cli::agent_rename(&app.db, &app.bob.aid, "Robert");
    assert!(renamed.is_ok(), "{renamed:?}");
    let after = app.say(&app.bob, &thread, "after the rename").await;
    assert_eq!(after["sender_name"], "Robert");

    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&format!("{url}&after=0")).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    let first = ws.event().await;
    assert_eq!(first["type"], "thread.message");
    assert_eq!(first["id"], posted["id"]);
    assert_eq!(first["data"], posted, "replayed as it was posted");
    let second = ws.event().await;
    assert_eq!(second["data"], after);
    ws.close().await;
}

/// `If-None-Match` compares entity tags weakly (RFC 9110 §13.1.2), and is
/// a list that may come in several lines. The inspector's assets answered
/// 304 only to the strong tag in the first line: a proxy that compresses
/// them and weakens the tag (`W/"…"`, as nginx's gzip does) made every
/// revalidation a full download. Both now get the 304.
#[tokio::test]
async fn the_inspector_assets_revalidate_with_a_weak_or_listed_etag() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .client
        .get(app.url("/inspect/app.js"))
        .send()
        .await
        .unwrap();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    for value in [
        format!("W/{etag}"),
        format!("\"other\", W/{etag}"),
        etag.clone(),
    ] {
        let again = app
            .client
            .get(app.url("/inspect/app.js"))
            .header("If-None-Match", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "If-None-Match: {value}");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("If-None-Match", "\"other\"".parse().unwrap());
    headers.append("If-None-Match", etag.parse().unwrap());
    let again = app
        .client
        .get(app.url("/inspect/app.js"))
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "the tag in a second line");
    let other = app
        .client
        .get(app.url("/inspect/app.js"))
        .header("If-None-Match", "W/\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another tag is another version");
}
