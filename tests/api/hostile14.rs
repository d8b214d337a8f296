//! Hostile input, round 14: gaps the last round left open, each pinned by a
//! test. Made-up login keys that held rate-limiter memory, webhook
//! management without a quota, a few accounts' slow webhook receivers
//! starving everyone else's deliveries, IPv6 clients counted address by
//! address for connections, and public URLs with a query or fragment.

use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::process::{non_log_lines, provision, run_cli, Server};
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, WAIT};
use crate::webhooks::{Receiver, Reply};

/// A well-formed login key no account has.
fn made_up_key(i: usize) -> String {
    format!("nk_{:0>43}", i)
}

// ------------------------------------------------------------ made-up keys

/// Keys are counted before the store checks them; a key the store does
/// not know used to keep its per-key entry until the minute's shrink
/// (170,000 made-up keys in 15 s held 25 MB). Now it leaves none behind,
/// on reads, writes and the MCP endpoint alike, while a real key's count
/// stays.
#[tokio::test]
async fn made_up_keys_leave_no_rate_limit_state_behind() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1_000).await;
    let threads = app.stored_threads();
    for i in 0..30 {
        let key = made_up_key(i);
        let res = app.get("/api/acsp/threads", &key).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app
            .post_json(
                "/api/acsp/thread/create",
                &key,
                &json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "s"}),
            )
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.get("/api/acsp/me", &key).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app
            .get(&format!("/v1/sse?aid={}", app.alice.aid), &key)
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.post_json("/mcp", &key, &json!({})).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    assert_eq!(app.shutdown.rate_limited_keys(), 0);
    assert_eq!(app.stored_threads(), threads);

    // The count itself works: a real key's request is remembered.
    let res = app.get("/api/acsp/me", &app.key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.shutdown.rate_limited_keys(), 1);
}

// ------------------------------------------------------- webhook management

/// A request on the API with the app's key.
async fn send(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("request")
}

/// The app account's endpoints, as the list shows them.
async fn webhooks(app: &TestApp) -> Vec<Value> {
    let (status, body) = json_of(send(app, Method::GET, "/api/acsp/webhooks").await).await;
    assert_eq!(status, 200, "{body}");
    body["webhooks"].as_array().unwrap().clone()
}

/// Creating, deleting, pausing, resuming and rotating had no quota: one key
/// could rotate secrets or create and delete endpoints (a DNS lookup each)
/// at any speed. They now share the key's per-route quota; a change over it
/// is 429 and changes nothing. Reads (the inspector polls the list and each
/// endpoint's attempts every 5 s) have a quota of their own, roomier, that
/// the changes do not use up.
#[tokio::test]
async fn webhook_changes_share_a_per_key_quota_and_reads_keep_theirs() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 4;
        c.allow_private_webhooks = true;
    })
    .await;
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.message"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let id = body["webhook"]["id"].as_str().unwrap().to_owned();
    let secret = body["secret"].as_str().unwrap().to_owned();
    for action in ["pause", "resume", "rotate"] {
        let res = send(
            &app,
            Method::POST,
            &format!("/api/acsp/webhooks/{id}/{action}"),
        )
        .await;
        assert_eq!(res.status(), 200, "{action}");
    }
    let listed = webhooks(&app).await;
    let secret_sql = format!("SELECT secret FROM webhooks WHERE public_id = '{id}'");
    let rotated = app.db_text(&secret_sql);
    assert_ne!(rotated.as_deref(), Some(secret.as_str()), "rotated once");

    // The quota of 4 is used: each change is refused and changes nothing.
    for (method, path) in [
        (Method::POST, format!("/api/acsp/webhooks/{id}/pause")),
        (Method::POST, format!("/api/acsp/webhooks/{id}/rotate")),
        (Method::DELETE, format!("/api/acsp/webhooks/{id}")),
        (Method::POST, "/api/acsp/webhooks".to_owned()),
    ] {
        let res = send(&app, method.clone(), &path).await;
        assert!(res.headers().contains_key("retry-after"), "{method} {path}");
        assert_error(res, 429, "RATE_LIMITED").await;
    }
    assert_eq!(webhooks(&app).await, listed);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(app.db_text(&secret_sql), rotated, "not rotated again");

    // Reads go on: an inspector's minute of polling at this quota.
    for _ in 0..12 {
        assert_eq!(webhooks(&app).await.len(), 1);
        let res = send(
            &app,
            Method::GET,
            &format!("/api/acsp/webhooks/{id}/attempts"),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
}

// ------------------------------------------------------- webhook delivery slots

/// A receiver that accepts connections and never answers: each delivery
/// to it holds its slot for the whole delivery timeout. Reports each
/// connection it accepted (and keeps it open).
async fn silent_receiver() -> (String, mpsc::UnboundedReceiver<tokio::net::TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// 64 deliveries run at once over all endpoints, each held up to 10 s by a
/// silent receiver. Four accounts of 16 silent endpoints each (an account
/// may have 20) took every slot, and every other account's webhooks waited
/// for them; so did one account's 65 (the command line has no cap). An
/// account now has at most 8 at once: these four hold 32, and another
/// account's delivery goes out while they hang.
#[tokio::test]
async fn silent_receivers_of_a_few_accounts_do_not_hold_up_another_accounts_delivery() {
    use threadline::webhooks::{DELIVERY_TIMEOUT, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_ACCOUNT};
    const ACCOUNTS: usize = 4;
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        // No retry of the silent ones within the test.
        c.webhook_retry_schedule = vec![600];
    })
    .await;
    let (silent, mut accepted) = silent_receiver().await;
    let hostile: Vec<_> = (0..ACCOUNTS)
        .map(|i| app.new_agent(&format!("silent{i}")))
        .collect();
    for agent in &hostile {
        for _ in 0..MAX_IN_FLIGHT / ACCOUNTS {
            let res = app
                .post_json(
                    "/api/acsp/webhooks",
                    &agent.key,
                    &json!({"url": silent, "events": ["thread.message"]}),
                )
                .await;
            assert_eq!(res.status(), 201);
        }
    }
    // Another account, with a receiver that answers at once.
    let (carol, dave) = (app.new_agent("carol"), app.new_agent("dave"));
    let mut fast = Receiver::start(&[], Reply::Status(200)).await;
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &carol.key,
            &json!({"url": fast.url, "events": ["thread.message"]}),
        )
        .await;
    assert_eq!(res.status(), 201);

    // One message in a thread of two of them reaches both accounts' 16
    // silent endpoints.
    for pair in hostile.chunks(2) {
        let thread = app.thread_between(&pair[0], &pair[1]).await;
        app.say(&pair[0], &thread, "to the silent ones").await;
    }
    let shares = ACCOUNTS * MAX_IN_FLIGHT_PER_ACCOUNT;
    let mut held = Vec::new();
    while held.len() < shares {
        let conn = tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("the silent receiver's deliveries arrive")
            .unwrap();
        held.push(conn);
    }

    // With them hanging, the other account's delivery is prompt.
    let theirs = app.thread_between(&carol, &dave).await;
    let started = Instant::now();
    app.say(&carol, &theirs, "to the fast one").await;
    let delivery = fast.next().await;
    assert_eq!(delivery.json["data"]["content"], "to the fast one");
    assert!(
        started.elapsed() < DELIVERY_TIMEOUT / 2,
        "the other account's delivery waited {:?}",
        started.elapsed()
    );
    // And the silent ones held no more than their accounts' shares.
    while let Ok(conn) = accepted.try_recv() {
        held.push(conn);
    }
    assert_eq!(held.len(), shares);
}

// ------------------------------------------------------------ --public-url

/// Connect URLs are `--public-url` with `/v1/ws?c=…` appended: a query or
/// fragment in it made `wss://h?x=1/v1/ws?c=…`, which connects nowhere,
/// and a user name or password would go to every client. The server now
/// refuses such a URL at start, in one line, before it makes a database.
#[test]
fn a_public_url_with_a_query_fragment_or_password_stops_the_server_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    for (url, says) in [
        ("https://h.example?x=1", "query"),
        ("https://h.example/#top", "fragment"),
        ("https://user:hunter2@h.example", "password"),
        ("https://h.example/a b", "spaces"),
        ("https://h.example\n", "control characters"),
    ] {
        let out = run_cli(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--public-url",
            url,
            "--db",
            db_arg,
        ]);
        let line = one_line_failure(url, &out);
        assert!(line.contains("--public-url"), "{url}: {line}");
        assert!(line.contains(says), "{url}: {line}");
        assert!(!line.contains("hunter2"), "the password is not repeated");
        assert!(!db.exists(), "{url}: a database was made");
    }
}

// ------------------------------------------------------- out-of-range settings

/// The one non-log line a failed command printed (no panic trace).
fn one_line_failure(what: &str, out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: exit status {}", out.status);
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let lines = non_log_lines(&stderr);
    assert_eq!(lines.len(), 1, "{what}: one error line, got: {stderr}");
    lines[0].to_owned()
}

/// Duration settings are added to clocks: near u64::MAX they overflowed
/// and panicked every worker at its first request (the server ran on,
/// dropping each connection), and `prune --idempotency-days 4294967295`
/// panicked. Such values now stop the command at once, in one line.
#[test]
fn durations_past_their_range_stop_the_command_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    for (flag, value) in [
        ("--grant-ttl-secs", "18446744073709551615"),
        ("--keep-alive-secs", "18446744073709551615"),
        ("--sse-heartbeat-secs", "86401"),
        ("--ws-ping-secs", "18446744073709551615"),
        ("--event-retention-days", "36501"),
        ("--webhook-retry-schedule", "5,100000000000"),
    ] {
        let out = run_cli(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            flag,
            value,
            "--db",
            db_arg,
        ]);
        let line = one_line_failure(flag, &out);
        assert!(line.contains(flag), "{flag}: {line}");
        assert!(!db.exists(), "{flag}: a database was made");
    }

    // prune, on a real database: refused, and nothing deleted.
    let out = run_cli(&["agent", "create", "--name", "alice", "--db", db_arg]);
    assert!(out.status.success());
    let before = std::fs::read(&db).unwrap();
    for flag in ["--idempotency-days", "--threads-older-than-days"] {
        let out = run_cli(&["prune", flag, "4294967295", "--db", db_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag}: a usage error: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
        assert!(
            stderr.starts_with("error: invalid value"),
            "{flag}: {stderr}"
        );
        assert!(
            stderr.contains("must be a whole number from 0 to 36500"),
            "{flag}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "prune changed nothing");

    // healthcheck: 0 s was "cannot connect …: cannot set a 0 duration timeout".
    let out = run_cli(&[
        "healthcheck",
        "--url",
        "http://127.0.0.1:9",
        "--timeout-secs",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--timeout-secs"), "{stderr}");
    assert!(
        stderr.contains("must be a whole number from 1 to 3600"),
        "{stderr}"
    );
}

// ------------------------------------------------------------------- MCP

/// One JSON-RPC request to `/mcp` with `key`; the answer's JSON (from the
/// event stream's `data:` line).
async fn mcp_call(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or_else(|| panic!("no data line: {text}"));
    serde_json::from_str(data.trim()).unwrap()
}

/// A tool argument refused before the API is asked (an idempotency key of
/// 129 characters, a wait of 0 s) carried `"status": 0` in its error,
/// which the error object documents as "the server did not answer"; the
/// same refusal from the API says 422. It now says 422 too, and nothing
/// is posted.
#[tokio::test]
async fn an_mcp_argument_refused_before_the_api_says_422_like_the_api() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let messages = app.stored_messages();
    for (tool, args, field) in [
        (
            "post_message",
            json!({"thread_id": thread, "aid": app.alice.aid, "content": "x",
                   "idempotency_key": "k".repeat(129)}),
            "idempotency_key",
        ),
        (
            "wait_for_messages",
            json!({"thread_id": thread, "aid": app.alice.aid, "timeout_secs": 0}),
            "timeout_secs",
        ),
    ] {
        let answer = mcp_call(
            &app,
            &app.key,
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": tool, "arguments": args}}),
        )
        .await;
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{tool}: {answer}");
        let error = &result["structuredContent"]["error"];
        assert_eq!(error["code"], "VALIDATION_ERROR", "{tool}: {answer}");
        assert_eq!(error["field"], field, "{tool}: {answer}");
        assert_eq!(error["status"], 422, "{tool}: {answer}");
    }
    assert_eq!(app.stored_messages(), messages);
}

/// A client whose connections come from `ip` (any of 127.0.0.0/8 is this
/// machine).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The MCP tools call the server's own API on loopback, and a
/// `wait_for_messages` holds a socket there while it waits: all from
/// 127.0.0.1, counted against that address's connection cap. MCP users
/// together used it up (at the default 1024, about 35 keys waiting) and
/// then every tool call of every user failed. The server's own
/// connections are now marked and not counted. Here the cap is 2, and
/// three users (three addresses) wait at once: each wait is served, and
/// another user's tool call still works.
#[tokio::test]
async fn mcp_waits_on_the_servers_own_connections_do_not_use_up_the_loopback_cap() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_ip = 2;
        c.rate_limit_per_minute = 0;
    })
    .await;
    let thread = app.thread_between(&app.bob, &app.alice).await;
    let rpc = |tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": tool, "arguments": args}})
    };
    let mut waits = Vec::new();
    for i in 2..5 {
        let (url, key) = (app.url("/mcp"), app.key.clone());
        let body = rpc(
            "wait_for_messages",
            json!({"thread_id": thread, "aid": app.alice.aid, "timeout_secs": 30}),
        );
        waits.push(tokio::spawn(async move {
            let res = client_from(&format!("127.0.0.{i}"))
                .post(url)
                .bearer_auth(key)
                .header("accept", "application/json, text/event-stream")
                .json(&body)
                .send()
                .await
                .expect("request");
            res.text().await.unwrap()
        }));
    }
    // All three waits hold their socket on the server.
    let other = client_from("127.0.0.9");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = other.get(app.url("/healthz")).send().await.unwrap();
        let (_, health) = json_of(res).await;
        if health["realtime"]["sockets"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waits' sockets: {health}"
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }

    // Another user's tool call is served meanwhile.
    let res = other
        .post(app.url("/mcp"))
        .bearer_auth(&app.key)
        .header("accept", "application/json, text/event-stream")
        .json(&rpc("list_threads", json!({"aid": app.alice.aid})))
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(text.contains(&thread), "{text}");

    // And the waits return the message.
    let res = other
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&app.key)
        .json(&json!({"aid": app.bob.aid, "thread_id": thread, "content": "wake"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for wait in waits {
        let text = tokio::time::timeout(WAIT, wait).await.unwrap().unwrap();
        assert!(text.contains("wake"), "{text}");
        assert!(!text.contains("isError\":true"), "{text}");
    }
}

/// rmcp writes an error answer's method name and id into a WARN line: a
/// 60 KiB method name or string id made a 60 KiB log line per request
/// (the request log already cuts paths at 256 bytes). Names and string ids
/// over 128 characters are now refused (422) before rmcp sees them; the
/// WARN line of an ordinary unknown method is still written.
#[tokio::test]
async fn mcp_method_names_and_ids_cannot_make_log_lines_of_any_length() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "info").await;
    let long = "m".repeat(60_000);
    let mut request_ids = Vec::new();
    for (case, body, field) in [
        (
            "a long method",
            json!({"jsonrpc": "2.0", "id": 1, "method": long}),
            Some("method"),
        ),
        (
            "a long id",
            json!({"jsonrpc": "2.0", "id": long, "method": "no/such"}),
            Some("id"),
        ),
        (
            "an unknown method",
            json!({"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}),
            None,
        ),
    ] {
        let res = server
            .api
            .client
            .post(server.api.url("/mcp"))
            .bearer_auth(&account.key)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .expect("request");
        request_ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
        match field {
            Some(field) => {
                let error = assert_error(res, 422, "VALIDATION_ERROR").await;
                assert_eq!(error["error"]["field"], field, "{case}");
            }
            None => assert_eq!(res.status(), 200, "{case}"),
        }
    }
    // Every request's log line is out, and rmcp's WARN (which may come
    // after the last request's line: it was seen to, on a busy machine).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(request_ids
        .iter()
        .all(|id| server.stderr().contains(id.as_str()))
        && server.stderr().contains("no/such/method"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            server.stderr()
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
    let log = server.stderr();
    assert!(log.contains("no/such/method"), "rmcp's WARN line: {log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_000, "a log line of {longest} bytes");
}
