//! A thread deleted by another process (`threadline thread delete`, `prune
//! --threads-older-than-days`, run as real child processes on the same
//! database): its sockets close with 4004 after what was queued, its SSE
//! streams end with an `event: closed`, sockets on other threads carry on,
//! and grants minted before the deletion are refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::process::run_cli;
use crate::helpers::{assert_error, spawn_app, TestApp, Ws, WAIT};

/// Runs `threadline ARGS` on the app's database as a child process.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let db = app.db_args();
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(db.iter().map(String::as_str))
        .collect();
    let out = run_cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "threadline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// A grant's `c=` token for an existing thread.
async fn token_for(app: &TestApp, thread: &str) -> String {
    let (_, url) = app.grant_for(&app.key, Some(thread)).await;
    url.split("c=").nth(1).expect("c= in url").to_owned()
}

/// Opens `/v1/sse?{query}` (with the dev key when `bearer`), expecting 200.
async fn open_sse(app: &TestApp, query: &str, bearer: bool) -> reqwest::Response {
    let mut req = app.client.get(app.url(&format!("/v1/sse?{query}")));
    if bearer {
        req = req.bearer_auth(&app.key);
    }
    let res = req.send().await.expect("request");
    assert_eq!(res.status(), 200, "stream refused");
    res
}

/// Everything a stream sends until it ends; fails if it has not ended
/// within `within`.
async fn read_to_end(mut res: reqwest::Response, within: Duration) -> String {
    let mut text = String::new();
    let ended = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = res.chunk().await {
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream is still open: {text}");
    text
}

/// The status a WebSocket handshake with this URL is refused with.
async fn refused_handshake(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        other => panic!(
            "the handshake was not refused: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

#[tokio::test]
async fn thread_delete_in_another_process_closes_its_sockets_and_ends_its_streams() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let other = app.thread_between(&app.alice, &app.bob).await;

    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    let by_grant = open_sse(
        &app,
        &format!("c={}", token_for(&app, &thread).await),
        false,
    )
    .await;
    let by_key = open_sse(&app, &format!("thread_id={thread}"), true).await;
    let (_, other_url) = app.grant_for(&app.key, Some(&other)).await;
    let mut other_ws = Ws::connect(&other_url).await;
    assert_eq!(other_ws.event().await["type"], "connection.ready");
    // Minted before the deletion, used after it.
    let (_, unused_ws) = app.grant_for(&app.key, Some(&thread)).await;
    let unused_sse = token_for(&app, &thread).await;

    app.say(&app.alice, &thread, "last words").await;
    let out = cli(&app, &["thread", "delete", &thread]);
    assert_eq!(out["deleted"]["threads"], 1, "{out}");

    // What was sent before the deletion arrives, then the close.
    let (contents, code) = ws.messages_until_closed().await;
    assert_eq!(contents, ["last words"]);
    assert_eq!(code, Some(4004), "closed as deleted");
    for stream in [by_grant, by_key] {
        let text = read_to_end(stream, WAIT).await;
        let message = text.find("last words").expect("the message came first");
        let closed = text
            .find("event: closed\ndata: {\"code\":4004,\"reason\":\"thread deleted\"}\n\n")
            .unwrap_or_else(|| panic!("no closed event: {text}"));
        assert!(message < closed, "{text}");
        assert!(
            text.ends_with("\n\n"),
            "the closed event is the last: {text}"
        );
    }

    // Another thread's socket stays open and hears its next message.
    app.say(&app.bob, &other, "still here").await;
    let e = other_ws.event_of("thread.message").await;
    assert_eq!(e["data"]["content"], "still here");

    // Grants minted before the deletion lead nowhere now.
    assert_eq!(refused_handshake(&unused_ws).await, 404);
    let res = app
        .client
        .get(app.url(&format!("/v1/sse?c={unused_sse}")))
        .send()
        .await
        .expect("request");
    assert_error(res, 404, "NOT_FOUND").await;
    // The deletion was recorded for the watchers.
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM thread_deletions WHERE thread_uuid = '{thread}'"
        )),
        1
    );
}

#[tokio::test]
async fn prune_of_an_old_closed_thread_closes_its_socket_and_leaves_the_others() {
    let app = spawn_app().await;
    let old = app.thread_between(&app.alice, &app.bob).await;
    let live = app.thread_between(&app.alice, &app.bob).await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": old, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    app.db_exec(&format!(
        "UPDATE threads SET updated_at = '2000-01-01T00:00:00.000Z' WHERE uuid = '{old}'"
    ));
    let (_, url) = app.grant_for(&app.key, Some(&old)).await;
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    let (_, live_url) = app.grant_for(&app.key, Some(&live)).await;
    let mut live_ws = Ws::connect(&live_url).await;
    assert_eq!(live_ws.event().await["type"], "connection.ready");

    let out = cli(&app, &["prune", "--threads-older-than-days", "30"]);
    assert_eq!(out["pruned"]["threads"], 1, "{out}");

    assert_eq!(ws.messages_until_closed().await, (vec![], Some(4004)));
    app.say(&app.alice, &live, "next").await;
    assert_eq!(
        live_ws.event_of("thread.message").await["data"]["content"],
        "next"
    );
}

#[tokio::test]
async fn deletions_older_than_a_day_are_forgotten_by_the_next_delete() {
    let app = spawn_app().await;
    let first = app.thread_between(&app.alice, &app.bob).await;
    let second = app.thread_between(&app.alice, &app.bob).await;
    cli(&app, &["thread", "delete", &first]);
    app.db_exec("UPDATE thread_deletions SET deleted_at = '2000-01-01T00:00:00.000Z'");
    cli(&app, &["thread", "delete", &second]);
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM thread_deletions"),
        1,
        "the old row stayed"
    );
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM thread_deletions WHERE thread_uuid = '{second}'"
        )),
        1
    );
}

#[tokio::test]
async fn a_thread_opened_again_under_a_deleted_id_and_deleted_again_closes_again() {
    let app = spawn_app().await;
    let (thread, url) = app.grant_for(&app.key, None).await;
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    cli(&app, &["thread", "delete", &thread]);
    assert_eq!(ws.messages_until_closed().await.1, Some(4004));

    // open_thread with the old id starts a new thread under it (within the
    // watcher's lookback, so the first deletion is still returned).
    let (again, url) = app.grant_for(&app.key, Some(&thread)).await;
    assert_eq!(again, thread);
    let mut ws = Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    cli(&app, &["thread", "delete", &thread]);
    assert_eq!(
        ws.messages_until_closed().await.1,
        Some(4004),
        "the second deletion was missed"
    );
}

/// Submits one message to a turn-taking thread with `key`.
async fn submit(app: &TestApp, key: &str, thread: &str, content: &str) {
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            key,
            &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": content}]}),
        )
        .await;
    assert_eq!(res.status(), 200, "submit refused");
}

/// Opens a socket with a connect URL, past its connection.ready.
async fn listen(url: &str) -> Ws {
    let mut ws = Ws::connect(url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws
}

/// Deletes a thread of its own with a socket on it and waits for that
/// socket's close: the watcher has then acted on every deletion made
/// before (the look that found this one returned them too, and it acts in
/// the order they were made).
async fn wait_for_the_watcher(app: &TestApp) {
    let (other, url) = app.grant_for(&app.key, None).await;
    let mut ws = listen(&url).await;
    cli(app, &["thread", "delete", &other]);
    assert_eq!(ws.messages_until_closed().await.1, Some(4004));
}

/// After the watcher's next look, `ws` (on the thread opened again under
/// `thread`) is still open and hears a new post.
async fn still_served_after_the_watchers_look(app: &TestApp, thread: &str, ws: &mut Ws) {
    wait_for_the_watcher(app).await;
    submit(app, &app.key, thread, "still here").await;
    let e = ws.event_of("thread.message").await;
    assert_eq!(e["data"]["content"], "still here", "{e}");
}

#[tokio::test]
async fn a_socket_on_a_thread_opened_again_under_a_deleted_id_outlives_the_old_deletion() {
    let app = spawn_app().await;
    let (thread, url) = app.grant_for(&app.key, None).await;
    let mut old = listen(&url).await;
    cli(&app, &["thread", "delete", &thread]);
    // Opened again at once, most often before the watcher's next look.
    let (again, url) = app.grant_for(&app.key, Some(&thread)).await;
    assert_eq!(again, thread);
    let mut new = listen(&url).await;

    assert_eq!(old.messages_until_closed().await, (vec![], Some(4004)));
    still_served_after_the_watchers_look(&app, &thread, &mut new).await;
}

#[tokio::test]
async fn a_deletion_the_watcher_sees_after_the_thread_was_opened_again_leaves_it_open() {
    let app = spawn_app().await;
    let (thread, url) = app.grant_for(&app.key, None).await;
    let mut old = listen(&url).await;
    cli(&app, &["thread", "delete", &thread]);
    assert_eq!(old.messages_until_closed().await.1, Some(4004));
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut new = listen(&url).await;
    // The old thread's deletion as a watcher sees it when its look comes
    // after the new thread's socket joined (the row is committed only now,
    // so the next look finds it whatever the timing).
    app.db_exec(&format!(
        "INSERT INTO thread_deletions (thread_uuid, deleted_at) VALUES ('{thread}', '{}')",
        threadline::domain::now()
    ));

    still_served_after_the_watchers_look(&app, &thread, &mut new).await;
}

#[tokio::test]
async fn a_socket_on_a_deleted_thread_hears_nothing_of_another_accounts_thread_under_its_id() {
    let app = spawn_app().await;
    let (thread, url) = app.grant_for(&app.key, None).await;
    let mut old = listen(&url).await;
    let by_key = open_sse(&app, &format!("thread_id={thread}"), true).await;
    cli(&app, &["thread", "delete", &thread]);
    // Another account opens a thread under the deleted id and writes in it
    // at once, most often before the watcher's next look.
    let carol = app.new_agent("carol");
    let (again, url) = app.grant_for(&carol.key, Some(&thread)).await;
    assert_eq!(again, thread);
    let mut carols = listen(&url).await;
    submit(&app, &carol.key, &thread, "carol's secret").await;

    assert_eq!(old.messages_until_closed().await, (vec![], Some(4004)));
    let text = read_to_end(by_key, WAIT).await;
    assert!(!text.contains("carol's secret"), "{text}");
    assert!(text.contains("event: closed"), "{text}");
    let e = carols.event_of("thread.message").await;
    assert_eq!(e["data"]["content"], "carol's secret");
}
