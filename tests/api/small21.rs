//! Round twenty-one's small items: `/mcp` answers a request it cannot read
//! in JSON-RPC (as stdio does), a capability listed twice is kept once,
//! webhook URLs the parser would repair are refused, each route's success
//! is in `/metrics` from the start, and a connection closes at once when
//! no client-disconnect timeout is set.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::process::mcp_stdio_answers;
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, WAIT};
use crate::tidy16::{jsonrpc_answer, mcp_post, mcp_post_raw};

// ------------------------------------------------------------------ MCP

/// Requests the MCP library cannot read, with the `id` each is answered
/// with: the request's own, or `null` where it has none to read.
fn unreadable_requests() -> Vec<(Value, Value)> {
    vec![
        (
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!(null),
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!(1.5),
        ),
        (
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
            json!(null),
        ),
        (
            json!({"jsonrpc": "1.0", "id": 2, "method": "ping"}),
            json!(2),
        ),
        (json!({"id": "three", "method": "ping"}), json!("three")),
    ]
}

/// `/mcp` refused a request with a `null` or fractional `id` (or another
/// it could not read) with the API's `422` envelope, which no MCP client
/// reads; stdio answered the same lines in JSON-RPC. Both answer alike now:
/// JSON-RPC's `-32600` error object, with the `id` where there is one.
#[tokio::test]
async fn an_unreadable_mcp_request_is_answered_in_json_rpc_over_http_as_over_stdio() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let mut over_http = Vec::new();
    for (body, id) in unreadable_requests() {
        let res = mcp_post(&app, &body, &[]).await;
        let status = res.status();
        let text = res.text().await.expect("a body");
        assert_eq!(status, 200, "{body}: {text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer.get("id"), Some(&id), "{body}: {answer}");
        assert_eq!(answer["error"]["code"], -32600, "{body}: {answer}");
        assert!(answer.get("result").is_none(), "{answer}");
        over_http.push(answer);
    }
    // A notification is never answered in JSON-RPC: refused in the
    // envelope, saying what is wrong.
    let body = json!({"jsonrpc": "2.0", "method": "notifications/initialized", "params": []});
    let error = assert_error(mcp_post(&app, &body, &[]).await, 422, "VALIDATION_ERROR").await;
    assert_eq!(
        error["error"]["message"], "params must be a JSON object",
        "{error}"
    );
    // A member given twice is 422 naming it, as a field given twice is on
    // every route (which of the two was meant, the id's too, is a guess).
    let twice = r#"{"jsonrpc":"2.0","id":1,"method":"ping","id":2}"#;
    let res = mcp_post_raw(&app, twice).await.expect("request");
    let error = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "id", "{error}");
    // The server still answers what it reads.
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    let answer = jsonrpc_answer(mcp_post(&app, &ping, &[]).await).await;
    assert_eq!(answer["id"], 7, "{answer}");

    // The same lines over stdio: the same answers, and none to the
    // notification (the next answer is the ping's).
    let mut lines: Vec<String> = unreadable_requests()
        .iter()
        .map(|(body, _)| body.to_string())
        .collect();
    // Over stdio, where there is no envelope, the member given twice is
    // JSON-RPC's -32600 with a null id.
    lines.extend([twice.to_owned(), body.to_string()]);
    let over_stdio = mcp_stdio_answers(&app.base, &app.key, &lines).await;
    let (given_twice, over_stdio) = over_stdio.split_last().expect("answers");
    assert_eq!(over_stdio, over_http);
    assert_eq!(given_twice["id"], Value::Null, "{given_twice}");
    assert_eq!(given_twice["error"]["code"], -32600, "{given_twice}");
}

// --------------------------------------------------------- registration

/// A capability listed twice was stored twice, where a webhook's event
/// type listed twice is kept once. Both keep the first, in order.
#[tokio::test]
async fn a_capability_listed_twice_is_kept_once_where_first_listed() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.registration_rate_limit_per_minute = 0;
    })
    .await;
    let res = app
        .client
        .post(app.url("/api/acsp/agent-init"))
        .json(&json!({"agent_name": "dup",
                      "capabilities": ["search", "Search", "search", "summarize", "Search"]}))
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let kept = json!(["search", "Search", "summarize"]);
    assert_eq!(body["capabilities"], kept, "{body}");
    // As stored: the new account's agent, read back with its key.
    let key = body["login_key"].as_str().expect("a key");
    let res = app
        .client
        .get(app.url("/api/acsp/me"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let (status, me) = json_of(res).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["agents"][0]["capabilities"], kept, "{me}");
}

// ------------------------------------------------------------- webhooks

async fn create_webhook(app: &TestApp, url: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/acsp/webhooks"))
        .bearer_auth(&app.key)
        .json(&json!({"url": url, "events": ["thread.message"]}))
        .send()
        .await
        .expect("request")
}

async fn webhook_urls(app: &TestApp) -> Vec<Value> {
    let res = app
        .client
        .get(app.url("/api/acsp/webhooks"))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["webhooks"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["url"].clone())
        .collect()
}

/// `http:127.0.0.1:9/hook` (no `//`) was stored as `http://127.0.0.1:9/hook`,
/// the parser's guess at a typo; so were other repairs (`http:/`, `http:///`,
/// backslashes, spaces around, a tab inside), and a user name and password
/// were stored and shown in every list. Each is `422` on `url` now, its
/// password never echoed, and nothing is stored.
#[tokio::test]
async fn a_webhook_url_the_parser_would_repair_is_refused_and_not_stored() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = true).await;
    for url in [
        "http:127.0.0.1:9/hook",
        "http:/127.0.0.1:9/hook",
        "http:///127.0.0.1:9/hook",
        "https:127.0.0.1:9/hook",
        "http:\\\\127.0.0.1:9\\hook",
        "http://127.0.0.1:9\\hook",
        " http://127.0.0.1:9/hook",
        "http://127.0.0.1:9/hook\n",
        "http://127.0.0.1:9/ho\tok",
        "http://user:secret@127.0.0.1:9/hook",
        "http://user@127.0.0.1:9/hook",
        "http://127.0.0.1:9/hook#secret",
        "http://",
    ] {
        let error = assert_error(create_webhook(&app, url).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["field"], "url", "{url:?}: {error}");
        assert!(!error.to_string().contains("secret"), "{url:?}: {error}");
    }
    assert_eq!(webhook_urls(&app).await, Vec::<Value>::new());
    // What is written out in full is taken (a scheme in capitals too).
    for (url, stored) in [
        ("HTTP://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),
        ("http://127.0.0.1:9/a?b=c", "http://127.0.0.1:9/a?b=c"),
    ] {
        let (status, body) = json_of(create_webhook(&app, url).await).await;
        assert_eq!(status, 201, "{url}: {body}");
        assert_eq!(body["webhook"]["url"], stored, "{body}");
    }
    assert_eq!(webhook_urls(&app).await.len(), 2);
}

// -------------------------------------------------------------- metrics

/// `threadline_http_requests_total` had no series until a route was
/// answered, so a dashboard's `rate()` showed nothing on a fresh server.
/// Each route's success reads 0 from the start (its latency histogram too).
#[tokio::test]
async fn each_route_s_success_is_in_metrics_at_0_before_any_request() {
    let app = spawn_app_with(|_| {}).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for (route, status) in [
        ("/api/acsp/thread/create", 201),
        ("/api/acsp/thread/message", 201),
        ("/api/acsp/thread/{thread_id}", 200),
        ("/api/acsp/webhooks", 200),
        ("/api/acsp/webhooks", 201),
        ("/v1/ws", 101),
        ("/v1/sse", 200),
        ("/mcp", 200),
        ("/healthz", 200),
    ] {
        let series =
            format!("threadline_http_requests_total{{route=\"{route}\",status=\"{status}\"}} 0");
        assert!(text.lines().any(|l| l == series), "no {series} in:\n{text}");
        let latency =
            format!("threadline_http_request_duration_seconds_count{{route=\"{route}\"}} 0");
        assert!(
            text.lines().any(|l| l == latency),
            "no {latency} in:\n{text}"
        );
    }
    // Other statuses still appear only once answered.
    assert!(!text.contains("status=\"422\""), "{text}");
}

// ------------------------------------------------- closing without linger

/// A server on the vendored HTTP/1 dispatcher with `disconnect` as its
/// client-disconnect timeout and `keep_alive`; its address.
async fn plain_server(disconnect: Duration, keep_alive: Duration) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().route(
            "/",
            actix_web::web::get().to(|| async { actix_web::HttpResponse::Ok().body("ok") }),
        )
    })
    .workers(1)
    .disable_signals()
    .keep_alive(keep_alive)
    .client_disconnect_timeout(disconnect)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    addr
}

/// Sends `request` on a new connection and reads until the server closes
/// it, the client's write half left open (a client that neither sends more
/// nor hangs up); what it read, or `None` if it was still open at `within`.
async fn read_until_closed(
    addr: std::net::SocketAddr,
    request: &[u8],
    within: Duration,
) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut seen)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&seen).into_owned())
}

/// threadline's server always has a client-disconnect timeout (actix-web's
/// 1 s; no flag changes it), so the dispatcher's branch for none was never
/// run: a connection that is to close (after a head it could not read, or
/// idle past its keep-alive) closes at once, without lingering for the
/// client to stop. Run here on a plain server of the same dispatcher, with
/// a lingering one (a timeout of a minute) to show what it spares.
#[tokio::test]
async fn without_a_client_disconnect_timeout_a_connection_closes_at_once() {
    let malformed = b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n";
    // Closed well before its keep-alive (a minute) would end it.
    let minute = Duration::from_secs(60);
    let at_once = plain_server(Duration::ZERO, minute).await;
    let answer = read_until_closed(at_once, malformed, WAIT)
        .await
        .expect("closed after the 400, the client still connected");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Idle past its keep-alive (1 s here), after an answer: dropped.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let short = plain_server(Duration::ZERO, Duration::from_secs(1)).await;
    let answer = read_until_closed(short, request, WAIT)
        .await
        .expect("closed once idle past its keep-alive");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );

    // With a timeout, the same connection lingers: still open long after
    // the first server's had closed.
    let lingering = plain_server(minute, minute).await;
    let still_open = read_until_closed(lingering, malformed, Duration::from_secs(3)).await;
    assert_eq!(still_open, None, "closed without lingering");
}
