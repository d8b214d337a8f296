//! Connection slots under pressure. The caps of round sixteen kept a flood
//! from taking the last quarter of the server's connections, but slots
//! already held idle stayed held (75 s each, refreshed by one request); a
//! connection refused by a cap held its slot for actix's 5 s head timeout
//! if it sent nothing; and every refusal said "from this address". Here
//! the budget is small (`max_connections`), so three quarters of it is a
//! few connections from loopback addresses (any of 127.0.0.0/8 is this
//! machine). Event streams stand for connections busy with a request: they
//! are never idle, and must not be cut.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::hardening_net::{get, post, Raw};
use crate::helpers::{spawn_app_with, TestApp, Ws, WAIT};

/// The tests' servers hold 16 connections (8 per worker): from 12 open
/// (three quarters) they are near the budget. Every cap is then at most 8
/// (half), and near the budget an address holding 1 (8 / 16, at least 1)
/// gets no new connection.
const BUDGET: usize = 16;

/// What a refusal says, by cap.
const ADDRESS_FULL: &str = "too many open connections from this address; close one and retry";
const BLOCK_FULL: &str = "too many open connections from this address's network (its IPv4 /24 \
                          or IPv6 /48); close one and retry";
const SHARE_HELD: &str = "the server is near its connection limit and this address holds its \
                          share of the rest; close one and retry";

/// A server with the small budget and the default caps (clamped to it).
async fn small_server() -> TestApp {
    spawn_app_with(|c| {
        c.max_connections = BUDGET;
        c.max_connections_per_ip = 1024;
        c.max_connections_per_block = 4096;
        c.rate_limit_per_minute = 0;
    })
    .await
}

/// Event streams of alice's inbox, one per address given: each holds its
/// connection with a request in flight.
pub(crate) async fn streams(app: &TestApp, from: &[&str]) -> Vec<Raw> {
    let request = format!(
        "GET /v1/sse?aid={} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        app.alice.aid, app.key
    );
    let mut held = Vec::new();
    for ip in from {
        let mut raw = Raw::connect_from(app, ip).await;
        raw.send(request.as_bytes()).await;
        let res = raw.response(WAIT).await;
        assert_eq!(res.status, 200, "{ip}: {res:?}");
        assert_eq!(res.header("content-type"), Some("text/event-stream"));
        held.push(raw);
    }
    held
}

/// A connection from `ip` that has been answered one `GET /healthz` and is
/// now idle (kept alive).
pub(crate) async fn idle_from(app: &TestApp, ip: &str) -> Raw {
    let mut raw = Raw::connect_from(app, ip).await;
    raw.send(&get("/healthz")).await;
    assert_eq!(raw.response(WAIT).await.status, 200, "{ip}");
    raw
}

#[tokio::test]
async fn near_the_budget_an_idle_connection_is_closed_within_a_second_or_two() {
    let app = small_server().await;
    // 10 busy connections: the harness's client (127.0.0.1) asks for a
    // grant and keeps its connection, a WebSocket of the thread, and event
    // streams (two /24s: a block holds at most 8).
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&url).await;
    ws.event_of("connection.ready").await;
    let mut busy = streams(
        &app,
        &[
            "127.0.40.1",
            "127.0.40.1",
            "127.0.40.2",
            "127.0.40.2",
            "127.0.40.3",
            "127.0.40.3",
            "127.0.40.4",
            "127.0.41.1",
        ],
    )
    .await;

    // The 11th, idle: below three quarters, it keeps --keep-alive-secs.
    let mut below = idle_from(&app, "127.0.42.1").await;
    assert!(
        !below.closed_within(Duration::from_millis(2500)).await,
        "an idle connection below the mark was closed"
    );

    // The 12th crosses the mark, which closes the idle ones (that one, and
    // the harness's: see idle18), and two more keep the server past it:
    // from here on it is near its budget. A newcomer (holding nothing, so
    // not refused) is answered, and once idle it is closed within the
    // short keep-alive, not 75 s.
    busy.extend(streams(&app, &["127.0.41.2"]).await);
    assert!(
        below.closed_within(Duration::from_secs(3)).await,
        "an idle connection was kept past 3 s after the mark"
    );
    busy.extend(streams(&app, &["127.0.41.3", "127.0.41.4"]).await);
    let mut newcomer = Raw::connect_from(&app, "127.0.43.1").await;
    newcomer.send(&get("/healthz")).await;
    assert_eq!(newcomer.response(WAIT).await.status, 200);
    let idle_since = Instant::now();
    assert!(
        newcomer.closed_within(Duration::from_secs(3)).await,
        "an idle connection near the budget was kept past 3 s"
    );
    let closed_after = idle_since.elapsed();

    // The busy connections (requests in flight, a WebSocket) were not
    // cut; they were near the budget for longer than the newcomer took to
    // close.
    for (i, stream) in busy.iter_mut().enumerate() {
        assert!(
            !stream.closed_within(Duration::from_millis(50)).await,
            "event stream {i} was cut (the newcomer closed after {closed_after:?})"
        );
    }
    // (From a new address: 127.0.0.1 holds the WebSocket, its share near
    // the budget.)
    let mut poster = Raw::connect_from(&app, "127.0.43.2").await;
    let message =
        json!({"aid": app.alice.aid, "thread_id": thread, "content": "still there"}).to_string();
    poster
        .send(&post("/api/acsp/thread/message", &app.key, &message))
        .await;
    assert_eq!(poster.response(WAIT).await.status, 201);
    let event = ws.event_of("thread.message").await;
    assert_eq!(event["data"]["content"], "still there");
}

#[tokio::test]
async fn a_refused_connection_that_sends_nothing_is_closed_within_a_second_and_frees_its_slot() {
    // 4 connections in all (2 per worker); each block at most 2.
    let app = spawn_app_with(|c| {
        c.max_connections = 4;
        c.max_connections_per_ip = 1024;
        c.max_connections_per_block = 4096;
    })
    .await;
    let _held = [
        idle_from(&app, "127.0.50.1").await,
        idle_from(&app, "127.0.50.2").await,
    ];
    // Two more of the same /24: over the block cap, and silent. With them
    // the server holds all it can, so the next connection waits in the
    // listen backlog until one of them is closed.
    let refused_at = Instant::now();
    let mut silent = [
        Raw::connect_from(&app, "127.0.50.3").await,
        Raw::connect_from(&app, "127.0.50.4").await,
    ];
    let mut newcomer = Raw::connect_from(&app, "127.0.51.1").await;
    newcomer.send(&get("/healthz")).await;
    let res = tokio::time::timeout(Duration::from_secs(3), newcomer.response(WAIT))
        .await
        .unwrap_or_else(|_| {
            panic!("the newcomer was not let in within 3 s: the refused kept their slots")
        });
    assert_eq!(res.status, 200, "{res:?}");
    for (i, raw) in silent.iter_mut().enumerate() {
        let within = Duration::from_secs(3).saturating_sub(refused_at.elapsed());
        assert!(
            raw.closed_within(within).await,
            "refused connection {i} open after {:?}",
            refused_at.elapsed()
        );
    }
}

#[tokio::test]
async fn near_the_budget_an_address_holding_its_share_is_refused_and_says_so() {
    let app = small_server().await;
    // The harness's own client (127.0.0.1) holds one connection from here.
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let stored = app.stored_messages();
    let message = |content: &str| {
        json!({"aid": app.alice.aid, "thread_id": thread, "content": content}).to_string()
    };
    let _busy = streams(
        &app,
        &[
            "127.0.60.1",
            "127.0.60.1",
            "127.0.60.2",
            "127.0.60.2",
            "127.0.60.3",
            "127.0.60.3",
            "127.0.60.4",
            "127.0.60.4",
            "127.0.61.1",
            "127.0.61.2",
            "127.0.61.3",
        ],
    )
    .await;

    // 12 open: 127.0.61.1 holds its share (1), and its post is refused
    // with the share's message; nothing is stored.
    let mut refused = Raw::connect_from(&app, "127.0.61.1").await;
    refused
        .send(&post(
            "/api/acsp/thread/message",
            &app.key,
            &message("refused"),
        ))
        .await;
    let res = refused.response(WAIT).await;
    let body = res.assert_envelope(429, "RATE_LIMITED");
    assert_eq!(body["error"]["message"], SHARE_HELD, "{body}");
    assert_eq!(res.header("retry-after"), Some("1"), "{res:?}");
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    assert!(
        refused.closed_within(WAIT).await,
        "refused connection left open"
    );
    assert_eq!(app.stored_messages(), stored, "nothing stored");

    // 127.0.60.0/24 holds 8, its block's cap: that refusal says so.
    let mut block = Raw::connect_from(&app, "127.0.60.9").await;
    block.send(&get("/healthz")).await;
    let res = block.response(WAIT).await;
    let body = res.assert_envelope(429, "RATE_LIMITED");
    assert_eq!(body["error"]["message"], BLOCK_FULL, "{body}");
    assert_eq!(res.header("retry-after"), Some("1"), "{res:?}");

    // A newcomer, holding nothing, still gets in, and its post is stored.
    let mut newcomer = Raw::connect_from(&app, "127.0.62.1").await;
    newcomer
        .send(&post(
            "/api/acsp/thread/message",
            &app.key,
            &message("newcomer"),
        ))
        .await;
    assert_eq!(newcomer.response(WAIT).await.status, 201);
    assert_eq!(app.stored_messages(), stored + 1);
}

#[tokio::test]
async fn an_address_over_its_own_cap_is_told_it_is_the_address() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_ip = 2;
        c.max_connections_per_block = 3;
    })
    .await;
    let _held = [
        idle_from(&app, "127.0.70.1").await,
        idle_from(&app, "127.0.70.1").await,
    ];
    let mut third = Raw::connect_from(&app, "127.0.70.1").await;
    third.send(&get("/healthz")).await;
    let res = third.response(WAIT).await;
    let body = res.assert_envelope(429, "RATE_LIMITED");
    assert_eq!(body["error"]["message"], ADDRESS_FULL, "{body}");
    assert_eq!(res.header("retry-after"), Some("1"), "{res:?}");
    assert_ne!(ADDRESS_FULL, BLOCK_FULL);
    assert_ne!(ADDRESS_FULL, SHARE_HELD);
}

#[tokio::test]
async fn near_the_budget_a_new_connection_that_sends_nothing_is_closed_within_a_second() {
    let app = small_server().await;
    let mut busy = streams(
        &app,
        &[
            "127.0.80.1",
            "127.0.80.1",
            "127.0.80.2",
            "127.0.80.2",
            "127.0.80.3",
            "127.0.80.3",
            "127.0.80.4",
            "127.0.80.4",
            "127.0.81.1",
            "127.0.81.2",
        ],
    )
    .await;
    // The 11th, silent, comes below the mark: it has the usual 5 s for
    // its request.
    let mut below = Raw::connect_from(&app, "127.0.82.1").await;
    assert!(
        !below.closed_within(Duration::from_secs(2)).await,
        "a silent connection below the mark was closed within 2 s"
    );
    // With the 12th the server is near its budget. A newcomer that sends
    // nothing (from an address holding nothing: not refused) gets 1 s.
    busy.extend(streams(&app, &["127.0.81.3"]).await);
    let mut near = Raw::connect_from(&app, "127.0.84.1").await;
    let opened = Instant::now();
    assert!(
        near.closed_within(Duration::from_secs(3)).await,
        "a silent connection near the budget was kept past 3 s"
    );
    assert!(opened.elapsed() < Duration::from_secs(3));
}
