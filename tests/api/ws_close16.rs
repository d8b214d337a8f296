//! Slow readers, round sixteen: what a client that stops reading leaves
//! behind once the server is done with it. A WebSocket session that ends
//! before its writes stall (pings unanswered) no longer leaves its unsent
//! bytes in an orphaned kernel socket for as long as the client goes on
//! acknowledging with a zero window, and a client that reads in bursts is
//! not cut off.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{spawn_app_with, TestApp, WAIT};
use crate::ws_close14::{messages_to_fill_a_connection, small_window_client};
use crate::ws_close15::server_holds;

fn server_port(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits until the server's end of the connection from `client_port` is
/// gone (neither held by the process nor orphaned in the kernel), failing
/// after `bound`.
async fn wait_until_let_go(app: &TestApp, client_port: u16, bound: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + bound;
    while server_holds(server_port(app), client_port) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_before_its_writes_stall_leaves_no_orphan() {
    const TIMEOUT_SECS: u64 = 2;
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_ping_secs = 1;
        c.ws_timeout_secs = TIMEOUT_SECS;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }
    let client_port = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("a plain TCP client"),
    };
    assert!(
        server_holds(server_port(&app), client_port),
        "the connection is up"
    );

    // 160 KB: far more than the client's 4 KB window, far less than the
    // kernel takes from the server, so the server's writes never stall
    // (its write timeout never starts). The client reads nothing more and
    // answers no ping: the session ends (1008) after the timeout, and the
    // kernel is left holding what the client has not taken.
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..20 {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    app.wait_for_live_actors(0).await;

    // Before, closed, the socket lived on orphaned (its unsent bytes and
    // close frame in the kernel) for minutes, as long as the client's stack
    // answered the window probes.
    wait_until_let_go(
        &app,
        client_port,
        WAIT + Duration::from_secs(2 * TIMEOUT_SECS),
        "the server's end of a closed session lingers with bytes the client never took",
    )
    .await;
    drop(ws);
}

/// Posts `posts` 8 KB messages as alice on `thread`, from a task of its
/// own (the test reads meanwhile).
fn post_in_background(app: &TestApp, thread: &str, posts: usize) -> tokio::task::JoinHandle<()> {
    let (base, key, aid, thread) = (
        app.base.clone(),
        app.alice.key.clone(),
        app.alice.aid.clone(),
        thread.to_owned(),
    );
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let big = "\u{1D11E}".repeat(2000);
        for i in 0..posts {
            let res = client
                .post(format!("{base}/api/acsp/thread/message"))
                .bearer_auth(&key)
                .json(&serde_json::json!({
                    "aid": aid, "thread_id": thread, "content": format!("{i} {big}")
                }))
                .send()
                .await
                .expect("post");
            assert!(res.status().is_success(), "post {i}: {}", res.status());
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_in_bursts_is_not_cut_off() {
    // The bound (twice the timeout: 4 s) is on each wait, not on the whole:
    // a client that pauses for a quarter of it, again and again, while a
    // backlog larger than the connection holds goes out, gets all of it.
    const TIMEOUT_SECS: u64 = 2;
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_ping_secs = 1;
        c.ws_timeout_secs = TIMEOUT_SECS;
        c.ws_queue = 8192;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }
    let posts = messages_to_fill_a_connection();
    let poster = post_in_background(&app, &thread, posts);
    let started = tokio::time::Instant::now();
    let mut seq = 0;
    while seq < posts {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message");
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                let event: serde_json::Value = serde_json::from_str(&t).unwrap();
                seq += 1;
                assert_eq!(event["seq"], seq as u64, "{}", event["type"]);
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("after {seq} of {posts} messages: {other:?}"),
        }
        // Heard from (its frames keep the session's timeout away) ...
        let _ = ws.send(WsMessage::Ping(b"busy".to_vec())).await;
        // ... but taking nothing for 1 s every 100 messages.
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    poster.await.expect("the posts");
    assert!(
        started.elapsed() > Duration::from_secs(2 * TIMEOUT_SECS),
        "the reading took longer than the bound"
    );
}
