//! Connections already idle when the server reaches three quarters of its
//! connection budget. Round seventeen gave a connection that goes idle past
//! that mark a short keep-alive, but one idle from before kept the
//! keep-alive it had (up to `--keep-alive-secs`): a pool parked before the
//! flood held its slots for minutes. Here the keep-alive is long (600 s),
//! the budget small (`max_connections`, three quarters of it a few
//! connections from loopback addresses, as in `flood17`), and event
//! streams stand for connections busy with a request, which are never cut.

use std::time::Duration;

use tokio::time::Instant;

use crate::flood17::{idle_from, streams};
use crate::hardening_net::{get, Raw};
use crate::helpers::{spawn_app_with, TestApp, Ws, WAIT};

/// 16 connections (8 per worker): from 12 open the server is near its budget.
const BUDGET: usize = 16;

/// Longer than any test here runs: a connection closed within it was
/// closed by the pressure, not by its keep-alive.
const LONG_KEEP_ALIVE_SECS: u64 = 600;

/// How long an idle connection is watched while the server is below the
/// mark: past the short keep-alive (1 s) with a margin, so that one closed
/// as if under pressure would be seen.
const BELOW_THE_MARK: Duration = Duration::from_millis(2500);

/// How soon an idle connection is to be closed once the server is past
/// the mark: at once if it was idle for the short keep-alive (1 s), else
/// once it has been; with a margin for a loaded machine.
const RECLAIMED_WITHIN: Duration = Duration::from_secs(3);

/// A server with the small budget and a keep-alive no test here outlives.
async fn small_server() -> TestApp {
    spawn_app_with(|c| {
        c.max_connections = BUDGET;
        c.max_connections_per_ip = 1024;
        c.max_connections_per_block = 4096;
        c.keep_alive_secs = LONG_KEEP_ALIVE_SECS;
        c.rate_limit_per_minute = 0;
    })
    .await
}

/// Asserts that none of `idle` is closed within `within` (one clock for
/// all of them).
async fn assert_kept(idle: &mut [Raw], within: Duration, what: &str) {
    let until = Instant::now() + within;
    for (i, raw) in idle.iter_mut().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !raw.closed_within(left).await,
            "{what}: idle connection {i} was closed within {within:?}"
        );
    }
}

/// Asserts that every one of `idle` is closed within `within` of `since`.
async fn assert_reclaimed(idle: &mut [Raw], since: Instant, within: Duration, what: &str) {
    for (i, raw) in idle.iter_mut().enumerate() {
        let left = (since + within).saturating_duration_since(Instant::now());
        assert!(
            raw.closed_within(left).await,
            "{what}: idle connection {i} still open {:?} after the mark was crossed",
            since.elapsed()
        );
    }
}

#[tokio::test]
async fn connections_idle_from_before_the_mark_are_closed_once_it_is_crossed() {
    let app = small_server().await;
    // The harness's client (127.0.0.1) asks for a grant and keeps its
    // connection (idle too), and a WebSocket of the thread: 2 open.
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&url).await;
    ws.event_of("connection.ready").await;

    // 4 idle connections (6 open), then 5 event streams (11 open): below
    // the mark, the idle ones keep the 600 s keep-alive, past the short one.
    let mut parked = Vec::new();
    for ip in ["127.0.90.1", "127.0.90.2", "127.0.90.3", "127.0.90.4"] {
        parked.push(idle_from(&app, ip).await);
    }
    let mut busy = streams(
        &app,
        &[
            "127.0.91.1",
            "127.0.91.2",
            "127.0.91.3",
            "127.0.91.4",
            "127.0.91.5",
        ],
    )
    .await;
    assert_kept(&mut parked, BELOW_THE_MARK, "11 of 16 open").await;

    // The 12th, a stream, crosses the mark: the idle ones (the harness's
    // too) are closed at once, not in 600 s.
    busy.extend(streams(&app, &["127.0.91.6"]).await);
    let crossed = Instant::now();
    assert_reclaimed(&mut parked, crossed, RECLAIMED_WITHIN, "idle before").await;
    let reclaimed_after = crossed.elapsed();

    // The event streams (requests in flight) and the WebSocket were not
    // cut. (The server is below the mark again: 7 open.)
    for (i, stream) in busy.iter_mut().enumerate() {
        assert!(
            !stream.closed_within(Duration::from_millis(50)).await,
            "event stream {i} was cut (the idle ones closed within {reclaimed_after:?})"
        );
    }
    app.say(&app.alice, &thread, "still there").await;
    let event = ws.event_of("thread.message").await;
    assert_eq!(event["data"]["content"], "still there");

    // The slots came back: a newcomer is served.
    let mut newcomer = Raw::connect_from(&app, "127.0.92.1").await;
    newcomer.send(&get("/healthz")).await;
    assert_eq!(newcomer.response(WAIT).await.status, 200);
}

#[tokio::test]
async fn below_the_mark_again_idle_connections_keep_their_keep_alive_until_the_next_crossing() {
    let app = small_server().await;
    // A first crossing: 6 idle connections, then 6 streams (12 open).
    let mut first = Vec::new();
    for i in 1..=6 {
        first.push(idle_from(&app, &format!("127.0.93.{i}")).await);
    }
    assert_kept(&mut first, BELOW_THE_MARK, "6 of 16 open").await;
    let from: Vec<String> = (1..=6).map(|i| format!("127.0.94.{i}")).collect();
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let mut busy = streams(&app, &from).await;
    let crossed = Instant::now();
    assert_reclaimed(&mut first, crossed, RECLAIMED_WITHIN, "first crossing").await;

    // Below the mark again (6 open, then 10): idle connections keep the
    // long keep-alive again.
    let mut second = Vec::new();
    for i in 1..=4 {
        second.push(idle_from(&app, &format!("127.0.95.{i}")).await);
    }
    assert_kept(
        &mut second,
        BELOW_THE_MARK,
        "10 of 16 open, after a crossing",
    )
    .await;

    // The next crossing (12 open) closes them too.
    busy.extend(streams(&app, &["127.0.96.1", "127.0.96.2"]).await);
    let crossed = Instant::now();
    assert_reclaimed(&mut second, crossed, RECLAIMED_WITHIN, "second crossing").await;
    for (i, stream) in busy.iter_mut().enumerate() {
        assert!(
            !stream.closed_within(Duration::from_millis(50)).await,
            "event stream {i} was cut"
        );
    }
}

#[tokio::test]
async fn a_connection_gone_idle_just_before_the_mark_is_closed_once_idle_for_a_second() {
    let app = small_server().await;
    let mut busy = streams(
        &app,
        &[
            "127.0.97.1",
            "127.0.97.2",
            "127.0.97.3",
            "127.0.97.4",
            "127.0.97.5",
            "127.0.98.1",
            "127.0.98.2",
            "127.0.98.3",
            "127.0.98.4",
            "127.0.98.5",
        ],
    )
    .await;
    // The 11th goes idle below the mark, the 12th (a stream) crosses it
    // within the short keep-alive, and the server stays past it: the idle
    // one is closed once it has been idle for the short keep-alive.
    let mut recent = [idle_from(&app, "127.0.99.1").await];
    busy.extend(streams(&app, &["127.0.99.2"]).await);
    let crossed = Instant::now();
    assert_reclaimed(&mut recent, crossed, RECLAIMED_WITHIN, "idle just before").await;
    for (i, stream) in busy.iter_mut().enumerate() {
        assert!(
            !stream.closed_within(Duration::from_millis(50)).await,
            "event stream {i} was cut"
        );
    }
}
