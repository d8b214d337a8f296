//! Hostile input, round 13: what a probe of the running server found still
//! open, each pinned by a test. Query strings of thousands of parameters,
//! paths of tens of kilobytes in the log, event streams opened without a
//! quota, webhook hosts resolved for callers without a key, and IPv6 forms
//! of private IPv4 addresses as webhook targets.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::db::TestDb;
use crate::helpers::process::{provision_on, Server};
use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp, WAIT};

/// `n` distinct parameters, `p0=1&p1=1&…`.
fn params(n: usize) -> String {
    (0..n)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Alice's unread count on her one thread, as the list reports it.
async fn alice_unread(app: &TestApp) -> Value {
    let res = app
        .list_threads(&app.key, &format!("aid={}", app.alice.aid))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["threads"][0]["unread_count"].clone()
}

// ------------------------------------------------------------ query strings

/// Repeats are checked parameter against parameter: a URI of thousands of
/// parameters once cost a worker a third of a second, with no key at all.
/// Over 32 parameters is refused before any of them is looked at, and the
/// request reads (and marks read) nothing.
#[tokio::test]
async fn a_query_string_of_more_than_32_parameters_is_422_and_reads_nothing() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.bob, &app.alice).await;
    app.say(&app.bob, &thread, "unread by alice").await;
    assert_eq!(alice_unread(&app).await, 1);

    let over = params(33);
    let aid = &app.alice.aid;
    for (case, path, key) in [
        (
            "a thread read",
            format!("/api/acsp/thread/{thread}?aid={aid}&{over}"),
            Some(&app.key),
        ),
        (
            "a thread read by query",
            format!("/api/acsp/thread?thread_id={thread}&aid={aid}&{over}"),
            Some(&app.key),
        ),
        (
            "the thread list",
            format!("/api/acsp/threads?aid={aid}&{over}"),
            Some(&app.key),
        ),
        (
            "an event stream",
            format!("/v1/sse?thread_id={thread}&{over}"),
            Some(&app.key),
        ),
    ] {
        let mut req = app.client.get(app.url(&path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.expect("request");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("at most 32 parameters"), "{case}: {body}");
        assert_eq!(body["error"].get("field"), None, "{case}: {body}");
    }
    // A made-up key, or a socket without a grant, is refused for its
    // credentials first (README: "Which answer wins"), its thousands of
    // parameters still cut short at 33.
    let res = app
        .get(
            &format!("/api/acsp/threads?{}", params(8_000)),
            &format!("nk_{}", "A".repeat(43)),
        )
        .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    for path in [
        format!("/v1/ws?{over}"),
        format!("/v1/ws?{}", params(8_000)),
    ] {
        let res = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .expect("request");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    assert_eq!(alice_unread(&app).await, 1, "nothing was marked read");

    // 32 parameters, `aid` one of them, are served (and mark the page read).
    let res = app
        .get_thread(&app.key, &thread, &format!("aid={aid}&{}", params(31)))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice_unread(&app).await, 0);
}

// ------------------------------------------------------------ the request log

/// Any client, without a key, chooses the path of its request: its log line
/// shows the first 256 bytes of it and how much was left out, not 60 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_path_is_cut_in_its_request_log_line() {
    let db = TestDb::new();
    let _account = provision_on(&db);
    let mut server = Server::start_on(&db, &[], "info").await;
    let long = format!("/{}", "a".repeat(60_000));
    let res = server
        .api
        .client
        .get(server.api.url(&long))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let short = server.api.client.get(server.api.url("/no-such-route"));
    assert_eq!(short.send().await.expect("request").status(), 404);
    server.signal("TERM");
    assert_eq!(server.wait_exit().await.code(), Some(0));

    let logs = server.stderr();
    let line = logs
        .lines()
        .find(|l| l.contains(" GET /aaaa") && l.contains(" 404 "))
        .unwrap_or_else(|| {
            let start: String = logs.chars().take(2000).collect();
            panic!("no request line for the long path: {start}")
        });
    assert!(line.len() < 512, "a {}-byte log line", line.len());
    assert!(
        line.contains(&format!("/{}…(+59745 bytes) 404 ", "a".repeat(255))),
        "{line}"
    );
    assert!(
        logs.lines().any(|l| l.contains(" GET /no-such-route 404 ")),
        "a short path is shown whole: {logs}"
    );
}

// ------------------------------------------------------------ event streams

/// `/v1/sse` opened with a key replays the event log from any position the
/// caller names; it counts against the key's quota like every other route
/// (a grant was counted when it was minted, so `c=` streams are not).
#[tokio::test]
async fn event_streams_opened_with_a_key_count_against_its_quota() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 3).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let stream = format!("/v1/sse?thread_id={thread}&after_position=0");
    let mut open = Vec::new();
    for i in 0..3 {
        let res = app.get(&stream, &app.key).await;
        assert_eq!(res.status(), 200, "stream {i}");
        assert_eq!(res.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            res.headers()["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
        open.push(res);
    }
    let res = app.get(&stream, &app.key).await;
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_error(res, 429, "RATE_LIMITED").await;

    // The key's other routes keep their own quota.
    let res = app
        .get_thread(&app.key, &thread, &format!("aid={}", app.alice.aid))
        .await;
    assert_eq!(res.status(), 200);
    // Another key of another account has a quota of its own.
    let eve = app.new_agent("eve");
    let res = app.get(&format!("/v1/sse?aid={}", eve.aid), &eve.key).await;
    assert_eq!(res.status(), 200);
    // A grant opens a stream whatever the key's stream quota says.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let token = url.split("c=").nth(1).expect("c= in the url");
    let res = app
        .client
        .get(app.url(&format!("/v1/sse?c={token}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    drop(open);
}

// ------------------------------------------------------------ webhooks

/// Creating an endpoint resolves its host. That happened before the key was
/// checked: anybody could ask which names resolve, and to private addresses,
/// and have the server look names up with no quota. A made-up key is now
/// refused first, whatever the url.
#[tokio::test]
async fn a_webhook_url_is_not_resolved_for_a_caller_without_a_valid_key() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = false).await;
    let made_up = format!("nk_{}", "A".repeat(43));
    for url in [
        "http://localhost:9/hook",
        "http://no-such-host.invalid/hook",
        "http://127.0.0.1:9/hook",
    ] {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &made_up,
                &json!({"url": url, "events": ["thread.message"]}),
            )
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    // With the key, the same url is judged (and refused) as before.
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://localhost:9/hook", "events": ["thread.message"]}),
        )
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "url");
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
}

/// An IPv6 address may carry an IPv4 one: a NAT64 gateway forwards
/// `64:ff9b::10.0.0.1` to 10.0.0.1 (and DNS64 answers a name whose A record
/// is private with such an address), a 6to4 relay `2002:0a00:0001::`.
/// Those, and the other ranges that are not on the public internet, are
/// refused like the plain private addresses; nothing is stored.
#[tokio::test]
async fn ipv6_forms_of_private_ipv4_addresses_are_refused_as_webhook_targets() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = false).await;
    for url in [
        "http://[64:ff9b::a00:1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest",
        "http://[64:ff9b:1::808:808]/hook",
        "http://[::127.0.0.1]:9/hook",
        "http://[::ffff:0:7f00:1]:9/hook",
        "http://[2002:7f00:1::]:9/hook",
        "http://[2002:c0a8:101::1]/hook",
        "http://[fec0::1]/hook",
        "http://192.0.0.8/hook",
        "http://240.0.0.1/hook",
    ] {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": url, "events": ["thread.message"]}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "url", "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("private"), "{url}: {body}");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
    // A public IPv4 address in the same forms is still a target.
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://[64:ff9b::808:808]/hook", "events": ["thread.message"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
}

// ------------------------------------------------------------ /mcp bodies

const MCP_ACCEPT: &str = "application/json, text/event-stream";

/// `/mcp` handed its body to rmcp's transport, which reads it with no
/// deadline: a key holder's body that stopped halfway held the connection
/// for good. It is now read as every route reads its body: `408` past the
/// deadline, in the envelope.
#[tokio::test]
async fn an_mcp_body_that_stalls_is_answered_408_as_on_every_route() {
    let app = spawn_app_with(|c| c.body_timeout_secs = 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: {MCP_ACCEPT}\r\n\
         Content-Length: 1000\r\n\r\n{{\"jsonrpc\"",
        app.key
    );
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, socket.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}"))
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(answer.contains("x-request-id: req_"), "{answer}");
}

/// What is not JSON, valid all through, is `422` in the API's words at
/// `/mcp` too (it was rmcp's `415 Unsupported Media Type` for a body
/// declared `application/json`), and no tool runs. JSON that is not an
/// object is answered in JSON-RPC (round twenty-two; it was 422 too).
#[tokio::test]
async fn a_malformed_mcp_body_is_422_and_no_tool_runs() {
    let app = spawn_app().await;
    let create = |subject: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"create_thread","arguments":{{"aid":"{}","target_aid":"{}","subject":"{subject}"}}}}}}"#,
            app.alice.aid, app.bob.aid
        )
    };
    let nested = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"x":{}{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    // The body as sent, not as a client library would build it.
    let post_raw = |body: String| crate::tidy16::mcp_post_raw(&app, body);
    let threads = app.stored_threads();
    for (case, body) in [
        ("cut short", create("cut")[..60].to_owned()),
        ("a lone surrogate", create(r"\ud800")),
        ("nested 100 deep", nested),
        ("empty", String::new()),
    ] {
        let res = post_raw(body).await.expect("request");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
    }
    // A JSON object that is not a request the library reads is answered
    // in JSON-RPC (round twenty-one; it was 422 too), with no id to read.
    for (case, body) in [
        ("not JSON-RPC", r#"{"hello": "world"}"#.to_owned()),
        (
            "an id that is an array",
            r#"{"jsonrpc": "2.0", "id": [], "method": "tools/list"}"#.to_owned(),
        ),
        ("an array", format!("[{}]", create("batch"))),
        ("a string", r#""tools/list""#.to_owned()),
    ] {
        let res = post_raw(body).await.expect("request");
        let answer = crate::tidy16::jsonrpc_answer(res).await;
        assert_eq!(answer["id"], serde_json::Value::Null, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], -32600, "{case}: {answer}");
    }
    assert_eq!(app.stored_threads(), threads, "no tool ran");

    // A well-formed call is served as before.
    let res = post_raw(create("served")).await.expect("request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("body");
    assert!(text.contains("served"), "{text}");
    assert_eq!(app.stored_threads(), threads + 1);
}

// ------------------------------------------------------------ IPv6 clients

/// Sends `req` as if a trusted proxy forwarded it for `client`.
fn forwarded_for(req: reqwest::RequestBuilder, client: &str) -> reqwest::RequestBuilder {
    req.header("X-Forwarded-For", client)
}

/// A host given an IPv6 /64 (any rented server) has 2^64 addresses: counted
/// one by one, each got a fresh quota for bad keys and for registration.
/// A /64 now counts as one client; another /64, and IPv4 clients, keep
/// quotas of their own.
#[tokio::test]
async fn the_addresses_of_one_ipv6_slash_64_share_the_per_ip_quotas() {
    let app = spawn_app_with(|c| {
        c.ip_rate_limit_per_minute = 3;
        c.registration_rate_limit_per_minute = 2;
        c.open_registration = true;
        c.trust_proxy = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let made_up = format!("nk_{}", "D".repeat(43));
    let bad_key = |client: &str| {
        forwarded_for(app.client.get(app.url("/api/acsp/threads")), client)
            .bearer_auth(&made_up)
            .send()
    };
    for client in ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3"] {
        let res = bad_key(client).await.expect("request");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    let res = bad_key("2001:db8:7:7:abcd::4").await.expect("request");
    assert_error(res, 429, "RATE_LIMITED").await;
    for other in ["2001:db8:7:8::1", "203.0.113.9"] {
        let res = bad_key(other).await.expect("request");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }

    let register = |client: &str, name: &str| {
        forwarded_for(app.client.post(app.url("/api/acsp/agent-init")), client)
            .json(&json!({"agent_name": name, "capabilities": []}))
            .send()
    };
    let accounts = app.db_count("SELECT COUNT(*) FROM accounts");
    for (client, name) in [("2001:db8:9:9::1", "one"), ("2001:db8:9:9::2", "two")] {
        let res = register(client, name).await.expect("request");
        assert_eq!(res.status(), 201, "{name}");
    }
    let res = register("2001:db8:9:9::3", "three").await.expect("request");
    assert_error(res, 429, "RATE_LIMITED").await;
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM accounts"),
        accounts + 2,
        "the refused registration stored nothing"
    );
    let res = register("2001:db8:9:a::1", "four").await.expect("request");
    assert_eq!(res.status(), 201, "another /64");
}

// ------------------------------------------------------------ a stream nobody reads

/// The server's anonymous resident memory (heap; not the mapped database),
/// in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// Polls `/healthz` (bounded) until `live_actors` is `n`; `what` says why
/// it should be.
async fn wait_for_live_actors(api: &crate::helpers::process::Api, n: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = api.client.get(api.url("/healthz")).send().await;
        if let Ok(res) = res {
            let (_, body) = json_of(res).await;
            if body["realtime"]["live_actors"] == n {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live actors never reached {n}: {what}"
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

/// A stream resumed from position 0 by a client that never reads: the
/// server once queued up to 64 pages of 500 events for it (23 MB of short
/// messages, far more of long ones; a history under that was queued whole,
/// and the stream never gave up), held for as long as the client kept the
/// connection open, so a few such streams could exhaust its memory. What it
/// holds now is bounded in bytes: ten such streams over a 10 MB history
/// leave the server's heap within 40 MB of where it was (10 MB measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_nobody_reads_hold_a_bounded_amount_of_memory() {
    let db = TestDb::new();
    let account = provision_on(&db);
    // A stream that cannot send for a second gives up (and leaves its
    // channel), so the test can tell when each has queued all it will.
    let args = ["--rate-limit-per-minute", "0", "--ws-timeout-secs", "1"];
    let server = Server::start_on(&db, &args, "warn").await;
    let api = &server.api;
    let body = api.open_thread(&account.key, None).await;
    let thread = body["thread"]["id"].as_str().expect("thread id").to_owned();
    let content = "y".repeat(3000);
    let messages: Vec<Value> = (0..20)
        .map(|_| json!({"sender": "s", "content": content}))
        .collect();
    let batch = json!({"thread_id": thread, "messages": messages});
    for _ in 0..160 {
        let res = api
            .post(
                "/v1/turn-taking/actions/submit_messages",
                &account.key,
                &batch,
            )
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
    }
    if !db.on_postgres() {
        // Reads then come from the mapped file (not counted below), not
        // through the readers' page caches.
        let wal = db.path.with_extension("db-wal");
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the WAL was never checkpointed"
            );
            tokio::time::sleep(crate::helpers::POLL).await;
        }
    }
    let pid = server.child.id();
    let before = rss_anon_kib(pid);

    let addr = api
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut streams = Vec::new();
    for _ in 0..10 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut tcp = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/sse?thread_id={thread}&after_position=0 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\n\r\n",
            account.key
        );
        tcp.write_all(request.as_bytes()).await.expect("send");
        // Joined, then filled what it may and given up.
        wait_for_live_actors(api, 1, "the stream never joined").await;
        let gave_up = "the stream kept queuing for a client that does not read";
        wait_for_live_actors(api, 0, gave_up).await;
        streams.push(tcp);
    }
    let grown_mib = rss_anon_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 40,
        "ten unread streams hold {grown_mib} MiB of the server's heap"
    );
    drop(streams);
}

/// A `POST /mcp` whose `Accept` does not list both media types of MCP's
/// Streamable HTTP (curl's default `*/*`, a plain JSON client) was answered
/// `406` with an `INTERNAL` envelope, and logged as an internal error. It is
/// `422` on the `Accept` header now, and no tool runs.
#[tokio::test]
async fn an_mcp_request_without_the_accept_mcp_needs_is_422_on_accept() {
    let app = spawn_app().await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_thread",
        "arguments": {"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "accept"}}});
    let threads = app.stored_threads();
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = app
            .client
            .post(app.url("/mcp"))
            .bearer_auth(&app.key)
            .json(&call);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let res = req.send().await.expect("request");
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "Accept", "{accept:?}: {body}");
    }
    assert_eq!(app.stored_threads(), threads, "no tool ran");
}

/// The `(event, frame)` pairs of a stream's text, in order.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((
                kind.to_owned(),
                serde_json::from_str(data).expect("JSON data"),
            ))
        })
        .collect()
}

/// A replay reads the log by the stream's channel in the database (it read
/// every account's events and kept the channel's): a thread's stream
/// resumed from 0 gets that thread's events, an inbox's those of its
/// agent's threads, then the live ones; nobody else's.
#[tokio::test]
async fn a_stream_resumed_from_0_replays_its_channel_s_events_and_no_other() {
    let app = spawn_app().await;
    let mine = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &mine, "mine").await;
    let eve = app.new_agent("eve");
    let frank = app.new_agent("frank");
    let theirs = app.thread_between(&eve, &frank).await;
    app.say(&eve, &theirs, "theirs").await;
    let without_bob = app.thread_between(&app.alice, &eve).await;
    app.say(&app.alice, &without_bob, "alice and eve").await;

    let mut posted = vec!["mine".to_owned()];
    for (case, query) in [
        ("the thread", format!("thread_id={mine}")),
        ("bob's inbox", format!("aid={}", app.bob.aid)),
    ] {
        let mut res = app
            .get(&format!("/v1/sse?{query}&after_position=0"), &app.key)
            .await;
        assert_eq!(res.status(), 200, "{case}");
        let live = format!("live for {case}");
        app.say(&app.bob, &mine, &live).await;
        posted.push(live.clone());
        let mut text = String::new();
        while !text.contains(&live) {
            let chunk = tokio::time::timeout(WAIT, res.chunk())
                .await
                .unwrap_or_else(|_| panic!("{case}: no live message: {text}"))
                .expect("read")
                .expect("the stream goes on");
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
        let mut events = sse_events(&text);
        // Every stream starts with the socket's connection.ready (round 25).
        assert_eq!(
            events.first().map(|(kind, _)| kind.as_str()),
            Some("connection.ready"),
            "{case}: {events:?}"
        );
        events.remove(0);
        let threads: Vec<&str> = events
            .iter()
            .map(|(_, frame)| {
                let data = &frame["data"];
                data["thread_id"]
                    .as_str()
                    .or(data["id"].as_str())
                    .unwrap_or("")
            })
            .collect();
        assert!(threads.iter().all(|t| *t == mine), "{case}: {events:?}");
        let said: Vec<&str> = events
            .iter()
            .filter(|(kind, _)| kind == "thread.message")
            .filter_map(|(_, frame)| frame["data"]["content"].as_str())
            .collect();
        assert_eq!(said, posted, "{case}");
        if case == "bob's inbox" {
            assert_eq!(events[0].0, "thread.created", "{events:?}");
        }
    }
}

// ------------------------------------------------------------ refused grants

/// A bad key counts against the client IP's quota (60 a minute); a bad
/// grant at `/v1/ws` or `/v1/sse` did not, so a client with no credentials
/// could make the server look grants up without limit (a query each on
/// PostgreSQL). Refused grants count now, in the same quota; a live grant
/// still connects whatever the quota says.
#[tokio::test]
async fn refused_grants_count_against_the_client_ip_like_bad_keys() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 3).await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let bogus = "A".repeat(43);
    for path in [
        format!("/v1/ws?c={bogus}"),
        format!("/v1/sse?c={bogus}"),
        "/v1/ws".to_owned(),
    ] {
        let res = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .expect("request");
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    for path in [format!("/v1/sse?c={bogus}"), format!("/v1/ws?c={bogus}")] {
        let res = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .expect("request");
        assert!(res.headers().contains_key("retry-after"), "{path}");
        assert_error(res, 429, "RATE_LIMITED").await;
    }
    // One quota with bad keys.
    let res = app
        .get("/api/acsp/me", &format!("nk_{}", "B".repeat(43)))
        .await;
    assert_error(res, 429, "RATE_LIMITED").await;
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
}

// ------------------------------------------------------------ NUL in text

/// JSON carries U+0000 as `\u0000`; PostgreSQL's `text` cannot store it.
/// There, a subject with one was a `500`, and a message with one failed the
/// writer's whole batch (`503` for every post committed with it, other
/// clients' too). Every stored text field now refuses it with `422` naming
/// the field, on either backend, and stores nothing.
#[tokio::test]
async fn text_holding_u0000_is_422_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app_with(|c| c.open_registration = true).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let (alice, bob) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let nul = "a\u{0}b";
    let cases = [
        (
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": bob, "subject": nul}),
            "subject",
        ),
        (
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": bob, "first_message": nul}),
            "first_message",
        ),
        (
            "/api/acsp/thread/message",
            json!({"aid": alice, "thread_id": thread, "content": nul}),
            "content",
        ),
        (
            "/v1/turn-taking/actions/submit_messages",
            json!({"thread_id": turn, "messages": [{"sender": "s", "content": nul}]}),
            "content",
        ),
        (
            "/v1/turn-taking/actions/submit_messages",
            json!({"thread_id": turn, "messages": [{"sender": nul, "content": "c"}]}),
            "sender",
        ),
        (
            "/v1/turn-taking/actions/respond",
            json!({"thread_id": turn, "turn_epoch": 0, "content": nul}),
            "content",
        ),
        (
            "/api/acsp/agent-init",
            json!({"agent_name": nul, "capabilities": []}),
            "agent_name",
        ),
        (
            "/api/acsp/agent-init",
            json!({"agent_name": "n", "capabilities": [nul]}),
            "capabilities[0]",
        ),
        (
            "/api/acsp/webhooks",
            json!({"url": "http://127.0.0.1:9/", "events": ["thread.message"], "description": nul}),
            "description",
        ),
    ];
    let (threads, messages) = (app.stored_threads(), app.stored_messages());
    let accounts = app.db_count("SELECT COUNT(*) FROM accounts");
    for (path, body, field) in cases {
        let res = app.post_json(path, &app.key, &body).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        let named = err["error"]["field"].as_str().unwrap_or_default();
        assert!(named.ends_with(field), "{path} {field}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("U+0000"), "{path} {field}: {err}");
    }
    assert_eq!(app.stored_threads(), threads);
    assert_eq!(app.stored_messages(), messages);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM accounts"), accounts);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
}
