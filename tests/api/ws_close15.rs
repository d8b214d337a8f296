//! The rest of the WebSocket closes and stalls: a 1009 (frame too big) and a
//! 1011 (the replay could not read the thread) linger like the server's
//! other closes, so they reach a client that is still sending; a ping sent
//! during a resume's replay is answered before the replay ends; and a
//! client that stops reading is dropped once nothing written to it has
//! moved for twice the heartbeat's timeout, instead of holding its
//! connection, buffers and file descriptor forever.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{spawn_app_with, TestApp, WAIT};
use crate::ws_close14::{
    messages_to_fill_a_connection, read_slowly_pinging, small_window_client, Client, End,
};

async fn expect_ready(ws: &mut Client) {
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("timed out waiting for connection.ready");
    match msg {
        Some(Ok(WsMessage::Text(t))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }
}

/// 2 KB messages, far more than a small window client's 4 KB: the server
/// holds most of them, and whatever close comes after them.
async fn post_backlog(app: &TestApp, thread: &str, posts: i64) {
    let text = "x".repeat(2000);
    for i in 0..posts {
        app.say(&app.alice, thread, &format!("{i} {text}")).await;
    }
}

/// Waits (bounded) until the hub has queued `n` frames for sockets: a
/// post's answer may come before its event reaches the socket's queue.
async fn wait_for_deliveries(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.hub.snapshot().deliveries < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} frames queued",
            app.hub.snapshot().deliveries
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_too_big_gets_1009_while_the_client_reads_a_backlog_and_pings() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_queue = 1024;
    })
    .await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.alice).await;
    let (_, url) = app.grant_for(&carol.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    expect_ready(&mut ws).await;
    const POSTS: i64 = 150;
    post_backlog(&app, &thread, POSTS).await;
    wait_for_deliveries(&app, POSTS as u64).await;

    // One frame over the 64 KiB limit: the server decides to close with
    // 1009 (and leaves the channel), behind the backlog.
    ws.send(WsMessage::Text("y".repeat(70_000)))
        .await
        .expect("send the frame");
    app.wait_for_live_actors(0).await;

    // Reading the backlog takes the client ~1.5 s, pinging all along.
    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::from_millis(10)).await;
    assert_eq!(
        seqs,
        (1..=POSTS).collect::<Vec<_>>(),
        "the whole backlog before the end ({end:?})"
    );
    assert_eq!(end, End::Close(Some(1009)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_cannot_read_the_thread_gets_1011_while_the_client_reads_and_pings() {
    if crate::helpers::pg::skip("a message is made unreadable by a blob in a text column") {
        return;
    }
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_queue = 1024;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    const POSTS: i64 = 300;
    const BROKEN: i64 = 250;
    post_backlog(&app, &thread, POSTS).await;
    // The replay's page holding this seq fails to read: its stored JSON
    // (what a replay sends) is not JSON.
    app.db_exec(&format!(
        "UPDATE messages SET json = X'FF' WHERE seq = {BROKEN}
         AND thread_id = (SELECT id FROM threads WHERE uuid = '{thread}')"
    ));

    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &format!("{url}&after=0")).await;
    expect_ready(&mut ws).await;
    // The replay has failed (the session left the channel): its 1011 waits
    // behind the pages replayed before.
    app.wait_for_live_actors(0).await;

    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::from_millis(10)).await;
    let k = seqs.len() as i64;
    assert_eq!(end, End::Close(Some(1011)), "after {k} messages");
    assert!(k < BROKEN, "{k} messages replayed");
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>(), "a gap-free prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_during_a_long_replay_is_answered_before_the_replay_ends() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    // More than the connection holds between server and client: the replay
    // cannot be over before the client has read most of it.
    let posts = messages_to_fill_a_connection() as i64;
    // 2000 four-byte characters: 8 KB a frame.
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..posts {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &format!("{url}&after=0")).await;
    expect_ready(&mut ws).await;
    ws.send(WsMessage::Ping(b"are you there".to_vec()))
        .await
        .expect("send the ping");

    // A client with a pong timeout shorter than the replay would give up
    // on the connection if the pong waited for the replay's end.
    let mut seq = 0;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for the pong");
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                let event: serde_json::Value = serde_json::from_str(&t).unwrap();
                seq += 1;
                assert_eq!(event["seq"], seq, "{}", event["type"]);
            }
            Some(Ok(WsMessage::Pong(payload))) => {
                assert_eq!(payload, b"are you there");
                break;
            }
            other => panic!("expected the replay or the pong, got {other:?}"),
        }
    }
    assert!(
        seq < posts,
        "the pong came only after the whole replay ({seq} of {posts} messages)"
    );
    // The rest of the replay follows, gap-free.
    while seq < posts {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for the replay");
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                let event: serde_json::Value = serde_json::from_str(&t).unwrap();
                seq += 1;
                assert_eq!(event["seq"], seq);
            }
            other => panic!("expected the replay, got {other:?}"),
        }
    }
}

/// Whether the server's end of the TCP connection between `server_port` and
/// `client_port` (loopback) still exists: held by this process (its line in
/// /proc/net/tcp names an inode), or closed but orphaned (inode 0), the
/// kernel keeping its unsent bytes while the client acknowledges with a
/// zero window. A reset connection is gone.
pub(crate) fn server_holds(server_port: u16, client_port: u16) -> bool {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        let table = std::fs::read_to_string(path).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && port(f[1]) == Some(server_port) && port(f[2]) == Some(client_port)
        })
    })
}

/// A client that reads `connection.ready` and then nothing, while messages
/// fill everything between it and the server; then the thread is quiet.
/// Returns once the server has let go of the connection (fails if it still
/// holds it after `WAIT`).
async fn a_client_that_stops_reading_is_let_go(ws_queue: usize, ws_timeout_secs: u64) -> TestApp {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_ping_secs = 1;
        c.ws_timeout_secs = ws_timeout_secs;
        c.ws_queue = ws_queue;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    expect_ready(&mut ws).await;
    let client_port = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("a plain TCP client"),
    };
    let server_port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        server_holds(server_port, client_port),
        "the connection is up"
    );

    let posts = messages_to_fill_a_connection();
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..posts {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    // Quiet from here on. The server closes the socket (4008 for a full
    // queue, 1008 for pings unanswered), but the close cannot be written:
    // the kernel's buffers are full and the client takes nothing.
    // The write timeout is twice the heartbeat's.
    let deadline = tokio::time::Instant::now() + WAIT + Duration::from_secs(2 * ws_timeout_secs);
    while server_holds(server_port, client_port) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds the connection of a client that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ws);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_on_a_quiet_thread_is_let_go() {
    // Room for every message: the socket never lags; its session gives up
    // on pings unanswered. The heartbeat outlasts the posts, so the writes
    // stall first. With 2 s, posting slowly under load (the CI's
    // PostgreSQL run) once ended the session before they stalled; the
    // unsent bytes then sat in the kernel behind a plain close, held for
    // as long as the client acknowledged with a zero window. That case has
    // its own test now (ws_close16); this one is about writes that stall.
    let app = a_client_that_stops_reading_is_let_go(8192, 8).await;
    assert_eq!(app.hub.snapshot().slow_closes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_while_messages_flow_lags_and_is_let_go() {
    // A heartbeat long enough that the queue overflows first, however
    // slowly the posts go in (with 2 s, a loaded machine let the pings
    // time out first now and then: 1008, not counted as lagging).
    let app = a_client_that_stops_reading_is_let_go(64, 5).await;
    assert_eq!(app.hub.snapshot().slow_closes, 1, "counted as too slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_during_a_long_replay_ends_it_with_1000() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let posts = messages_to_fill_a_connection() as i64;
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..posts {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &format!("{url}&after=0")).await;
    expect_ready(&mut ws).await;
    ws.send(WsMessage::Close(None))
        .await
        .expect("send the close");

    // The replay stops: what was already on its way, then the answer (it
    // used to go on to the end of the replay first).
    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::ZERO).await;
    let k = seqs.len() as i64;
    assert_eq!(end, End::Close(Some(1000)), "after {k} messages");
    assert!(
        k < posts,
        "the whole replay ({k} messages) before the answer"
    );
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>(), "a gap-free prefix");
}
