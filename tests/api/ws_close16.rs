//! Slow readers, round sixteen: what a client that stops reading leaves
//! behind once the server is done with it. A WebSocket session that ends
//! before its writes stall (pings unanswered) no longer leaves its unsent
//! bytes in an orphaned kernel socket for as long as the client goes on
//! acknowledging with a zero window, yet a client that reads again within
//! the bound gets what was queued and the close, and one that reads in
//! bursts is not cut off; an event stream (`/v1/sse`, not an upgrade)
//! whose client takes nothing is dropped after four heartbeats, and one
//! whose client reads is not.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use threadline::config::ServeConfig;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{spawn_app_with, TestApp, WAIT};
use crate::ws_close14::{
    messages_to_fill_a_connection, read_slowly_pinging, small_window_client, Client, End,
};
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

/// A server that pings sockets every second and closes one after
/// `timeout_secs` without a frame from its client (and whatever `tweak`
/// sets), with no rate limit; a thread between alice and bob; and a
/// client with a 4 KB receive window on it, past `connection.ready`.
async fn reader_past_ready(
    timeout_secs: u64,
    tweak: impl FnOnce(&mut ServeConfig),
) -> (TestApp, String, Client) {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.ws_ping_secs = 1;
        c.ws_timeout_secs = timeout_secs;
        tweak(c);
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }
    (app, thread, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_before_its_writes_stall_leaves_no_orphan() {
    const TIMEOUT_SECS: u64 = 2;
    let (app, thread, ws) = reader_past_ready(TIMEOUT_SECS, |_| {}).await;
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

/// `/proc/net/tcp`'s state of FIN_WAIT1: closed (or shut down for
/// writing) with a FIN not yet acknowledged.
const FIN_WAIT1: u8 = 4;

/// The server's end of the loopback connection from `client_port`, if it
/// exists: its TCP state (`/proc/net/tcp`'s `st`) and the bytes in its send
/// queue (`tx_queue`: sent but not yet acknowledged, and not yet sent).
fn server_socket(server_port: u16, client_port: u16) -> Option<(u8, u32)> {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() <= 4 || port(f[1]) != Some(server_port) || port(f[2]) != Some(client_port) {
            return None;
        }
        let state = u8::from_str_radix(f[3], 16).ok()?;
        let tx_queue = u32::from_str_radix(f[4].split(':').next()?, 16).ok()?;
        Some((state, tx_queue))
    })
}

/// The TCP state of the server's end of the connection from `client_port`.
fn server_state(server_port: u16, client_port: u16) -> Option<u8> {
    server_socket(server_port, client_port).map(|(state, _)| state)
}

/// A session ended (1008, after `BACKLOG_TIMEOUT_SECS` without a frame from its
/// client) behind `BACKLOG_POSTS` 8 KB messages its 4 KB-window client has not
/// taken: returns once the server has shut down its side (FIN_WAIT1: its
/// FIN waits behind those bytes), with the client's port.
async fn session_ended_behind_a_backlog() -> (TestApp, Client, u16) {
    let (app, thread, ws) = reader_past_ready(BACKLOG_TIMEOUT_SECS, |_| {}).await;
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..BACKLOG_POSTS {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    let client_port = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("a plain TCP client"),
    };
    let deadline = tokio::time::Instant::now() + WAIT + Duration::from_secs(BACKLOG_TIMEOUT_SECS);
    loop {
        match server_state(server_port(&app), client_port) {
            Some(FIN_WAIT1) => break,
            Some(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not end the session"
            ),
            None => panic!("the server reset the connection before the client could read"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (app, ws, client_port)
}

/// The sessions of [`session_ended_behind_a_backlog`]: their heartbeat's
/// timeout, and the messages left behind.
const BACKLOG_TIMEOUT_SECS: u64 = 4;
const BACKLOG_POSTS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_again_after_the_close_gets_everything_and_the_close() {
    // The same session, ended (1008) with bytes the client has not taken;
    // the client then reads again, well within the bound: what was queued
    // and the close frame reach it (the socket is not reset while they go
    // out).
    let (_app, mut ws, _) = session_ended_behind_a_backlog().await;
    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::ZERO).await;
    assert_eq!(
        seqs,
        (1..=BACKLOG_POSTS).collect::<Vec<_>>(),
        "ended by {end:?}"
    );
    assert_eq!(end, End::Close(Some(1008)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_while_it_reads_the_last_bytes_is_not_reset() {
    // The session ended (1008) behind bytes the client had not taken; the
    // client takes them all, so the server has nothing left to send, but
    // it has not read the close yet and goes on writing (a ping every
    // 20 ms, as a client that answers each frame would). Closed as soon as
    // nothing was left to send, the server's socket met those pings with a
    // reset, and the client's next write failed before it read the close.
    let (app, mut ws, client_port) = session_ended_behind_a_backlog().await;

    // Every message, without writing anything.
    let mut seqs = Vec::new();
    while seqs.len() < BACKLOG_POSTS as usize {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(WsMessage::Text(t))) => {
                let event: serde_json::Value = serde_json::from_str(&t).unwrap();
                if event["type"] == "thread.message" {
                    seqs.push(event["seq"].as_i64().unwrap());
                }
            }
            Some(Ok(_)) => {}
            other => panic!("expected the backlog, got {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=BACKLOG_POSTS).collect::<Vec<_>>());
    // The server has sent everything, the close frame included.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server_socket(server_port(&app), client_port).is_some_and(|(_, queued)| queued > 0) {
        assert!(tokio::time::Instant::now() < deadline, "bytes left unsent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client writes on for a while before reading the close.
    for i in 0..15 {
        ws.send(WsMessage::Ping(b"still here".to_vec()))
            .await
            .unwrap_or_else(|e| panic!("ping {i} after the last bytes: {e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the close")
        {
            Some(Ok(WsMessage::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1008));
                break;
            }
            // The server's heartbeat pings, queued before its close.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected the close frame, got {other:?}"),
        }
    }
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
    let (app, thread, mut ws) = reader_past_ready(TIMEOUT_SECS, |c| c.ws_queue = 8192).await;
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

/// A raw HTTP client with a 4 KB receive buffer that asks for `path` and
/// then reads nothing. Returns it (kept open by the caller) and its port.
async fn sse_client_that_never_reads(app: &TestApp, path: &str) -> (tokio::net::TcpStream, u16) {
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        app.base.trim_start_matches("http://")
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    (tcp, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_whose_client_never_reads_is_dropped() {
    const HEARTBEAT_SECS: u64 = 1;
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.sse_heartbeat_secs = HEARTBEAT_SECS;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let grant = url.split("c=").nth(1).unwrap();
    let (tcp, client_port) = sse_client_that_never_reads(&app, &format!("/v1/sse?c={grant}")).await;
    app.wait_for_live_actors(1).await;
    assert!(
        server_holds(server_port(&app), client_port),
        "the stream is up"
    );

    // More than the kernel's buffers between server and client hold: the
    // server's writes stall and its own buffers fill.
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..messages_to_fill_a_connection() {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }

    // Dropped four heartbeats after it last took a byte (the stream's
    // subscription with it). Before, the server held the connection, the
    // stream's buffers and the subscription until the client went away.
    wait_until_let_go(
        &app,
        client_port,
        WAIT + Duration::from_secs(4 * HEARTBEAT_SECS),
        "the server still holds an event stream whose client reads nothing",
    )
    .await;
    app.wait_for_live_actors(0).await;
    drop(tcp);
}

/// What a reading client has seen of a stream so far.
#[derive(Default)]
struct Seen {
    /// Bytes not yet split into blocks (a chunk may end mid-block).
    pending: Vec<u8>,
    heartbeats: usize,
    /// The `content` of every message event, in order.
    contents: Vec<String>,
}

impl Seen {
    /// Reads one more chunk of `res` (failing after `WAIT`) and takes in
    /// the blocks it completes.
    async fn read(&mut self, res: &mut reqwest::Response, what: &str) {
        let chunk = tokio::time::timeout(WAIT, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("stream read")
            .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"));
        self.pending.extend_from_slice(&chunk);
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let block = String::from_utf8(block).expect("UTF-8 blocks");
            if block.starts_with(": heartbeat") {
                self.heartbeats += 1;
            }
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                if let Some(content) = data["data"]["content"].as_str() {
                    self.contents.push(content.to_owned());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_whose_client_reads_outlives_the_write_timeout() {
    const HEARTBEAT_SECS: u64 = 1;
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.sse_heartbeat_secs = HEARTBEAT_SECS;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut res = app
        .client
        .get(app.url(&format!("/v1/sse?thread_id={thread}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);

    // Quiet for longer than the write timeout (four heartbeats): a client
    // that reads takes every heartbeat, so nothing waits on it that long.
    let mut seen = Seen::default();
    while seen.heartbeats < 6 {
        seen.read(&mut res, "a heartbeat").await;
    }
    // Then a burst larger than what the connection holds, read as it comes.
    let posts = messages_to_fill_a_connection();
    let poster = post_in_background(&app, &thread, posts);
    while seen.contents.len() < posts {
        seen.read(&mut res, "the burst").await;
    }
    poster.await.expect("the posts");
    for (i, content) in seen.contents.iter().enumerate() {
        assert!(
            content.starts_with(&format!("{i} ")),
            "message {i} in order"
        );
    }
}
