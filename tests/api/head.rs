//! HEAD (RFC 9110 §9.3.2): every path that serves GET answers HEAD with the
//! GET's status and headers and no body; the event stream's HEAD ends at
//! once; a path without GET refuses HEAD like any other method it does not
//! serve. The answers are read off a raw socket, because an HTTP client
//! knows a HEAD answer has no body and would skip one sent by mistake.

use reqwest::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, spawn_app, TestApp, WAIT};

/// What came back on the wire for one request.
struct Raw {
    status: u16,
    /// Header names lowercased, in the order sent.
    headers: Vec<(String, String)>,
    /// Every byte after the blank line that ends the headers.
    after_headers: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `HEAD path` on a fresh connection (closed after the answer) and
/// reads until the server closes it, at most [`WAIT`]: a HEAD whose answer
/// does not end fails here.
async fn raw_head(app: &TestApp, path: &str, key: Option<&str>) -> Raw {
    let addr = app.base.trim_start_matches("http://");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request =
        format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("HEAD {path}: the answer did not end"))
        .expect("read");
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("HEAD {path}: no end of headers in {bytes:?}"));
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("HEAD {path}: status line of {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        after_headers: bytes[end + 4..].to_vec(),
    }
}

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> Response {
    let mut req = app.client.get(app.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("request")
}

/// A GET's status, Content-Type and body length.
async fn get_summary(app: &TestApp, path: &str, key: Option<&str>) -> (u16, String, usize) {
    let res = get(app, path, key).await;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, res.bytes().await.unwrap().len())
}

#[tokio::test]
async fn a_head_answers_the_gets_status_content_type_and_length_without_a_body() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "something to make the page longer")
        .await;
    let thread_page = format!("/api/acsp/thread/{thread}?aid={}", app.alice.aid);
    let list = format!("/api/acsp/threads?aid={}", app.alice.aid);
    let key = Some(app.key.as_str());
    let cases = [
        ("/healthz", None),
        ("/openapi.json", None),
        ("/inspect", None),
        ("/inspect/app.js", None),
        (thread_page.as_str(), key),
        (list.as_str(), key),
        ("/api/acsp/me", key),
    ];
    for (path, key) in cases {
        // A GET before and after: a body that changes between requests
        // (/healthz's uptime) has the HEAD's length on one side of it.
        let before = get_summary(&app, path, key).await;
        let head = raw_head(&app, path, key).await;
        let after = get_summary(&app, path, key).await;
        assert_eq!(before.0, 200, "GET {path}");
        assert_eq!(head.status, before.0, "HEAD {path}: status");
        assert_eq!(
            head.header("content-type"),
            Some(before.1.as_str()),
            "HEAD {path}: Content-Type"
        );
        let length: usize = head
            .header("content-length")
            .unwrap_or_else(|| panic!("HEAD {path}: no Content-Length in {:?}", head.headers))
            .parse()
            .expect("a number");
        assert!(
            length > 0 && (length == before.2 || length == after.2),
            "HEAD {path}: Content-Length {length}, the GETs' bodies {} and {}",
            before.2,
            after.2
        );
        assert!(
            head.after_headers.is_empty(),
            "HEAD {path}: a body was sent: {:?}",
            String::from_utf8_lossy(&head.after_headers)
        );
    }
}

#[tokio::test]
async fn a_head_is_authenticated_like_the_get_and_its_refusal_has_no_body() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let unknown = format!("nk_{}", "A".repeat(43));
    let page = format!("/api/acsp/thread/{thread}");
    let cases = [
        ("/api/acsp/threads", None),
        ("/api/acsp/me", Some(unknown.as_str())),
        (page.as_str(), None),
    ];
    for (path, key) in cases {
        let res = get(&app, path, key).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let head = raw_head(&app, path, key).await;
        assert_eq!(head.status, 401, "HEAD {path}");
        assert_eq!(
            head.header("content-type"),
            Some("application/json"),
            "HEAD {path}"
        );
        assert!(
            head.after_headers.is_empty(),
            "HEAD {path}: a body was sent"
        );
    }
}

#[tokio::test]
async fn a_head_on_a_path_without_get_is_405_and_allow_lists_head_only_beside_get() {
    let app = spawn_app().await;
    let key = Some(app.key.as_str());
    let cases = [
        ("/api/acsp/thread/create", "POST"),
        ("/api/acsp/agent-init", "POST"),
        ("/api/acsp/webhooks/wh_x", "DELETE"),
        // The WebSocket upgrade is GET alone: a HEAD cannot upgrade.
        ("/v1/ws", "GET"),
    ];
    for (path, allow) in cases {
        let head = raw_head(&app, path, key).await;
        assert_eq!(head.status, 405, "HEAD {path}");
        assert_eq!(head.header("allow"), Some(allow), "HEAD {path}");
        assert!(
            head.after_headers.is_empty(),
            "HEAD {path}: a body was sent"
        );
    }
    // Where GET is served, Allow names HEAD with it.
    let res = app
        .client
        .post(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn a_head_on_the_event_stream_ends_at_once_and_leaves_the_grant_usable() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    // With the key: the stream's headers, then the end (raw_head fails if
    // the answer does not end).
    let head = raw_head(&app, &format!("/v1/sse?thread_id={thread}"), Some(&app.key)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert!(
        head.after_headers.is_empty(),
        "a body was sent: {:?}",
        String::from_utf8_lossy(&head.after_headers)
    );
    // Refused as the GET is: a thread the caller cannot see.
    let stranger = app.new_agent("stranger");
    let head = raw_head(
        &app,
        &format!("/v1/sse?thread_id={thread}"),
        Some(&stranger.key),
    )
    .await;
    assert_eq!(head.status, 404);
    // A grant: looked at, not used up; an unknown one is 401.
    let (_, url) = app.grant_for(&app.key, None).await;
    let token = url.split("c=").nth(1).expect("c= in the url").to_owned();
    let head = raw_head(&app, &format!("/v1/sse?c={token}"), None).await;
    assert_eq!(head.status, 200);
    assert!(head.after_headers.is_empty());
    let head = raw_head(&app, &format!("/v1/sse?c={token}x"), None).await;
    assert_eq!(head.status, 401);
    let res = get(&app, &format!("/v1/sse?c={token}"), None).await;
    assert_eq!(res.status(), 200, "the grant was used up by the HEAD");
    assert_eq!(res.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn a_head_on_the_event_stream_refuses_a_grant_whose_key_was_just_revoked() {
    let app = spawn_app().await;
    let eve = app.new_agent("eve");
    let (_, url) = app.grant_for(&eve.key, None).await;
    let token = url.split("c=").nth(1).expect("c= in the url").to_owned();
    let head = raw_head(&app, &format!("/v1/sse?c={token}"), None).await;
    assert_eq!(head.status, 200, "a live grant of a live key");
    // Revoked by another process: the HEAD asks the key at once, as the
    // GET does, instead of waiting for the watcher to void the grant.
    threadline::cli::key_revoke(&app.db, &eve.key).expect("revoke");
    let head = raw_head(&app, &format!("/v1/sse?c={token}"), None).await;
    assert_eq!(head.status, 401);
    assert!(head.after_headers.is_empty(), "a HEAD refusal has no body");
    let res = get(&app, &format!("/v1/sse?c={token}"), None).await;
    assert_error(res, 401, "UNAUTHORIZED").await;
}
