//! A close the server starts (revoked key, lagging, shutdown ...) must reach
//! a client that is still sending while it reads: the server reads (and
//! discards) what the client sends after its close frame, instead of
//! closing the TCP connection on unread input, which makes the kernel reset
//! it and throw away the client's unread data, close frame included.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{spawn_app_with, TestApp, WAIT};

pub(crate) type Client = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client whose TCP receive buffer is small, so what the server
/// sends while it does not read stays on the server's side.
pub(crate) async fn small_window_client(app: &TestApp, url: &str) -> Client {
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .expect("ws handshake");
    stream
}

/// What a slow reader saw: the seqs of the messages, then how it ended.
#[derive(Debug, PartialEq)]
pub(crate) enum End {
    /// The server's close frame, with its code.
    Close(Option<u16>),
    /// The connection failed (reset) before a close frame was read.
    Error(String),
    /// The stream ended without a close frame.
    Eof,
}

/// Reads the socket one frame at a time, `pace` apart (an agent that does
/// some work per event), sending a ping after each: it keeps talking while
/// the server's close waits behind the frames it has not read yet.
pub(crate) async fn read_slowly_pinging(ws: &mut Client, pace: Duration) -> (Vec<i64>, End) {
    let mut seqs = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a WebSocket frame");
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                let event: serde_json::Value = serde_json::from_str(&t).unwrap();
                if event["type"] == "thread.message" {
                    seqs.push(event["seq"].as_i64().unwrap());
                }
                tokio::time::sleep(pace).await;
                // Sent while the close may already be on its way.
                let _ = ws.send(WsMessage::Ping(b"still here".to_vec())).await;
            }
            Some(Ok(WsMessage::Close(frame))) => {
                return (seqs, End::Close(frame.map(|f| f.code.into())));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return (seqs, End::Error(e.to_string())),
            None => return (seqs, End::Eof),
        }
    }
}

/// Why the server closes the socket in [`closed_behind_a_backlog`].
enum Closer {
    /// `key revoke` of the key that opened it: the session closes it.
    RevokeKey,
    /// `thread delete` of its thread: the channel queues the close.
    DeleteThread,
}

/// A socket with a backlog of 150 messages it has not read, closed by the
/// server for `closer`, then read slowly while it pings: how it ended, after
/// the whole backlog.
async fn closed_behind_a_backlog(closer: Closer) -> End {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        // Room for the whole backlog: the socket is closed for `closer`,
        // never for lagging.
        c.ws_queue = 1024;
    })
    .await;
    let carol = app.new_agent("carol");
    let thread = app.thread_between(&carol, &app.alice).await;
    let (_, url) = app.grant_for(&carol.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &url).await;
    match ws.next().await {
        Some(Ok(WsMessage::Text(t))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }

    // A backlog the client has not read: 2 KB messages, far more than its
    // 4 KB window, so the server holds most of them, and the close after them.
    const POSTS: i64 = 150;
    let text = "x".repeat(2000);
    for i in 0..POSTS {
        app.say(&app.alice, &thread, &format!("{i} {text}")).await;
    }
    match closer {
        Closer::RevokeKey => {
            threadline::cli::key_revoke(&app.db, &carol.key).expect("key revoke");
        }
        Closer::DeleteThread => {
            threadline::cli::thread_delete(&app.db, &thread).expect("thread delete");
        }
    }
    // The socket's session has left the channel: the server has decided
    // to close it, behind the backlog.
    app.wait_for_live_actors(0).await;

    // Reading the backlog takes the client ~1.5 s, pinging all along.
    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::from_millis(10)).await;
    assert_eq!(
        seqs,
        (1..=POSTS).collect::<Vec<_>>(),
        "the whole backlog before the end ({end:?})"
    );
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_socket_gets_4001_while_it_reads_a_backlog_and_pings() {
    assert_eq!(
        closed_behind_a_backlog(Closer::RevokeKey).await,
        End::Close(Some(4001))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_threads_socket_gets_4004_while_it_reads_a_backlog_and_pings() {
    assert_eq!(
        closed_behind_a_backlog(Closer::DeleteThread).await,
        End::Close(Some(4004))
    );
}

/// Sends pings of `payload` bytes, `pace` apart, never reading, until a send
/// fails (the server has dropped the connection), within `WAIT`.
async fn stream_pings_until_cut_off(mut ws: Client, payload: usize, pace: Duration) {
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    loop {
        if ws.send(WsMessage::Ping(vec![b'p'; payload])).await.is_err() {
            return;
        }
        sent += payload;
        assert!(
            start.elapsed() < WAIT,
            "still connected {:?} after the close, {sent} bytes sent",
            start.elapsed()
        );
        tokio::time::sleep(pace).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_streaming_at_a_closing_socket_cannot_keep_it_open() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let carol = app.new_agent("carol");
    let mut clients = Vec::new();
    for _ in 0..2 {
        let thread = app.thread_between(&carol, &app.alice).await;
        let (_, url) = app.grant_for(&carol.key, Some(&thread)).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => assert!(t.contains("connection.ready"), "{t}"),
            other => panic!("expected connection.ready, got {other:?}"),
        }
        clients.push(ws);
    }
    threadline::cli::key_revoke(&app.db, &carol.key).expect("key revoke");
    app.wait_for_live_actors(0).await;

    // Neither reads the close. One streams 4 KB pings flat out: the bytes
    // the server reads after its close are bounded. The other sends a
    // small ping every 100 ms, never idle long: the time is bounded (here
    // ~0.8 s and ~6 s: 5 s of lingering, then actix's 1 s).
    let slow = clients.pop().unwrap();
    let fast = clients.pop().unwrap();
    tokio::join!(
        stream_pings_until_cut_off(fast, 4096, Duration::ZERO),
        stream_pings_until_cut_off(slow, 8, Duration::from_millis(100)),
    );
}

/// How many 8 KB messages surely fill everything between the server and a
/// client that does not read: the kernel's send buffer (autotuned up to
/// `tcp_wmem`'s maximum), the client's receive buffer, and what the server
/// itself holds for the socket.
pub(crate) fn messages_to_fill_a_connection() -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    ((wmem_max + (2 << 20)) / 8000).clamp(500, 3500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_client_does_not_read_gives_up_with_4008() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        // A replay the client takes nothing of for 2 s gives up.
        c.ws_timeout_secs = 2;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let posts = messages_to_fill_a_connection() as i64;
    // 2000 four-byte characters: 8 KB a frame.
    let big = "\u{1D11E}".repeat(2000);
    for i in 0..posts {
        app.say(&app.alice, &thread, &format!("{i} {big}")).await;
    }
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = small_window_client(&app, &format!("{url}&after=0")).await;
    // The server fills what it may, then gives up and leaves the channel
    // (it once held a page of up to 500 messages until the connection went,
    // and ended it without a close frame).
    app.wait_for_live_actors(0).await;
    assert_eq!(app.hub.snapshot().slow_closes, 1, "counted as too slow");

    let (seqs, end) = read_slowly_pinging(&mut ws, Duration::ZERO).await;
    let k = seqs.len() as i64;
    assert_eq!(end, End::Close(Some(4008)), "after {k} of {posts} messages");
    assert!(k < posts, "the whole replay fit: nothing was held back");
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>(), "a gap-free prefix");

    // It resumes where it stopped.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut rest = crate::helpers::Ws::connect(&format!("{url}&after={k}")).await;
    let ready = rest.event().await;
    assert_eq!(ready["type"], "connection.ready", "{ready}");
    for seq in k + 1..=posts {
        assert_eq!(rest.event().await["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_its_drain_while_a_client_streams_at_its_1001() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    match ws.next().await {
        Some(Ok(WsMessage::Text(t))) => assert!(t.contains("connection.ready"), "{t}"),
        other => panic!("expected connection.ready, got {other:?}"),
    }
    // Never reads its 1001, never idle for long: only the linger's bounds
    // end the connection.
    let streaming = tokio::spawn(stream_pings_until_cut_off(
        ws,
        8,
        Duration::from_millis(100),
    ));
    let started = tokio::time::Instant::now();
    app.shutdown.shutdown().await;
    let took = started.elapsed();
    // actix stops waiting for connections after 10 s (`shutdown_timeout`);
    // lingering ends this one after at most 5 s (then actix's own 1 s).
    assert!(
        took < Duration::from_secs(9),
        "shutdown took {took:?}: the drain was exhausted"
    );
    streaming.await.expect("the streaming client");
}
