//! The inspector after a restore, and what an operator meets in it (round
//! 23). The restore tests drive the real binary as docs/operations.md says:
//! messages, `threadline backup`, more messages, SIGTERM, the files moved
//! away and the copy put in place, and the server started again on the same
//! port, while a real browser keeps the thread open. Every wait is for a
//! condition in the page or the process, bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::process::{provision, run_cli, Account, Server};
use crate::helpers::{json_of, spawn_app, spawn_app_with, TestApp};
use crate::inspector::{create, run, thread_url, Browser};

/// How long the page may take to come back after the server did: its
/// reconnect backs off up to 15 s between tries.
const BACK_WAIT: Duration = Duration::from_secs(40);

/// What the page shows: `[seq, id, content]` of each message, in order.
const SHOWN: &str = "return Array.from(document.querySelectorAll('#messages li.msg')).map(li => \
                     [Number(li.dataset.seq), li.dataset.id, li.querySelector('.body').textContent])";

/// The thread's messages as the server has them, read as alice:
/// `[seq, id, content]` each, in seq order.
async fn served(server: &Server, account: &Account, thread: &str) -> Value {
    let path = format!("/api/acsp/thread/{thread}?aid={}&limit=200", account.alice);
    let res = server.api.get(&path, &account.key).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["has_more"], false, "{body}");
    Value::Array(
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| json!([m["seq"], m["id"], m["content"]]))
            .collect(),
    )
}

/// Posts `content` as `aid` and returns the stored message's seq.
async fn post(server: &Server, account: &Account, aid: &str, thread: &str, content: &str) -> i64 {
    let (status, body) = server
        .api
        .say(&account.key, aid, thread, content)
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}");
    body["message"]["seq"].as_i64().expect("seq")
}

/// The port a server (started on port 0) listens on.
fn port_of(server: &Server) -> u16 {
    server
        .api
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the base URL")
}

/// Stops the server as an operator does (SIGTERM), waits for it to exit
/// and hands back what it logged.
pub(crate) async fn stop(mut server: Server) -> String {
    server.signal("TERM");
    let status = server.wait_exit().await;
    assert!(status.success(), "the server exited with {status}");
    server.stderr()
}

/// Restore step 2 and 3 of docs/operations.md: the database and its `-wal`
/// and `-shm` moved away, the backup copied into place.
pub(crate) fn restore(db: &Path, backup: &Path, attempt: usize) {
    let aside = db.with_file_name(format!("before-restore-{attempt}"));
    std::fs::create_dir_all(&aside).expect("a directory for the old files");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        if file.exists() {
            let name = file.file_name().expect("a file name");
            std::fs::rename(&file, aside.join(name)).expect("move the file away");
        }
    }
    std::fs::copy(backup, db).expect("copy the backup into place");
}

/// `threadline backup --to BACKUP --db DB`, which must succeed.
pub(crate) fn backup(db: &Path, to: &Path) {
    let out = run_cli(&[
        "backup",
        "--to",
        to.to_str().expect("UTF-8 path"),
        "--db",
        db.to_str().expect("UTF-8 path"),
    ]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the server again on `port` (the page's origin) and waits until it answers.
async fn start_on_port(dir: &Path, db: &Path, port: u16) -> Server {
    let mut server = Server::spawn(dir, db, &format!("127.0.0.1:{port}"), &[], "warn");
    server.wait_ready().await;
    server
}

/// The page shows exactly `want` (`[seq, id, content]` each).
async fn wait_shown(b: &Browser, what: &str, want: &Value) {
    let script = format!(
        "const want = {want}; const got = (function () {{ {SHOWN} }})(); \
                          return JSON.stringify(got) === JSON.stringify(want)"
    );
    let deadline = std::time::Instant::now() + BACK_WAIT;
    loop {
        if b.js(&script).await == Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "{what}: the page shows {}, the server has {want}",
                b.js(SHOWN).await
            );
        }
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

/// How many threads the database holds under the API id `thread`.
fn threads_with_id(db: &Path, thread: &str) -> i64 {
    rusqlite::Connection::open(db)
        .expect("open the database")
        .query_row(
            "SELECT COUNT(*) FROM threads WHERE uuid = ?1",
            [thread],
            |r| r.get(0),
        )
        .expect("count")
}

/// A server on a fresh database with alice and bob, and a thread between
/// them; also the server's port and base URL.
async fn setup() -> (
    tempfile::TempDir,
    PathBuf,
    Account,
    Server,
    String,
    u16,
    String,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &[], "warn").await;
    let thread = server.api.thread(&account).await;
    let port = port_of(&server);
    let base = server.api.base.clone();
    (dir, db, account, server, thread, port, base)
}

/// Signs in at `base`, opens `thread` as alice and waits until message
/// `seq` shows and the thread is live.
async fn open_live(b: &Browser, base: &str, account: &Account, thread: &str, seq: i64) {
    b.sign_in_at(&format!("{base}/"), &account.key).await;
    b.goto(&format!("{base}/#/thread/{thread}/as/{}", account.alice))
        .await;
    b.wait_for(&format!("li.msg[data-seq='{seq}']")).await;
    b.wait_for("#thread-live[data-state='live']").await;
}

/// Marks the page (a reload would wipe the marker), backs `db` up to
/// `backup.db` in `dir`, then bob posts `lost N` for each N in `lost`
/// and the page shows them live. Returns the backup's path.
async fn back_up_then_post_lost(
    b: &Browser,
    dir: &Path,
    db: &Path,
    server: &Server,
    account: &Account,
    thread: &str,
    lost: std::ops::RangeInclusive<i64>,
) -> PathBuf {
    b.js("window.__noReload = true; return true").await;
    let copy = dir.join("backup.db");
    backup(db, &copy);
    for i in lost {
        post(server, account, &account.bob, thread, &format!("lost {i}")).await;
    }
    wait_shown(
        b,
        "before the restore",
        &served(server, account, thread).await,
    )
    .await;
    copy
}

/// Stops `server`, waits until the page is reconnecting and puts `copy`
/// in place of `db` (restore `attempt`); the server is not started again.
async fn stop_and_restore(server: Server, b: &Browser, db: &Path, copy: &Path, attempt: usize) {
    stop(server).await;
    b.wait_for("#thread-live[data-state='reconnecting']").await;
    restore(db, copy, attempt);
}

#[tokio::test]
async fn after_a_restore_the_open_thread_shows_exactly_the_servers_messages_without_a_reload() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let (dir, db, account, server, thread, port, base) = setup().await;
    for i in 1..=4 {
        let who = if i % 2 == 1 {
            &account.alice
        } else {
            &account.bob
        };
        assert_eq!(
            post(&server, &account, who, &thread, &format!("kept {i}")).await,
            i
        );
    }
    run("after_a_restore_the_open_thread_shows", |b| async move {
        open_live(&b, &base, &account, &thread, 4).await;
        // A marker a page reload would wipe, the backup, and three
        // messages after it: the page shows them live.
        let copy =
            back_up_then_post_lost(&b, dir.path(), &db, &server, &account, &thread, 5..=7).await;
        assert_eq!(
            b.count("#thread-notice:not([hidden])").await,
            0,
            "a notice before the restore"
        );

        stop_and_restore(server, &b, &db, &copy, 1).await;
        let server = start_on_port(dir.path(), &db, port).await;

        // The page notices on its own, says so, and shows what the server has.
        let want = served(&server, &account, &thread).await;
        assert_eq!(want.as_array().unwrap().len(), 4, "{want}");
        wait_shown(&b, "after the restore", &want).await;
        b.wait_for_within("#thread-notice:not([hidden])", BACK_WAIT)
            .await;
        let text = b.text("#thread-notice-text").await;
        assert!(
            text.contains("#4") && text.contains("#5–#7") && text.contains("restored"),
            "{text}"
        );
        b.wait_for("#thread-live[data-state='live']").await;

        // New messages take the lost ones' seqs, and the page shows them once.
        for i in 5..=6 {
            post(
                &server,
                &account,
                &account.alice,
                &thread,
                &format!("new {i}"),
            )
            .await;
        }
        let want = served(&server, &account, &thread).await;
        assert_eq!(want[4][2], "new 5", "{want}");
        wait_shown(&b, "new messages after the restore", &want).await;
        assert_eq!(
            b.js("return window.__noReload === true").await,
            true,
            "the page reloaded"
        );
        // The notice goes when dismissed.
        b.find("#thread-notice-dismiss")
            .await
            .click()
            .await
            .unwrap();
        b.wait_until(
            "the notice is hidden",
            "return document.getElementById('thread-notice').hidden",
        )
        .await;
        drop(server);
    })
    .await;
}

#[tokio::test]
async fn a_restore_whose_new_messages_took_the_lost_seqs_before_the_page_came_back_is_noticed() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let (dir, db, account, server, thread, port, base) = setup().await;
    for i in 1..=2 {
        post(
            &server,
            &account,
            &account.alice,
            &thread,
            &format!("kept {i}"),
        )
        .await;
    }
    run(
        "a_restore_whose_new_messages_took_the_lost_seqs",
        |b| async move {
            open_live(&b, &base, &account, &thread, 2).await;
            let copy =
                back_up_then_post_lost(&b, dir.path(), &db, &server, &account, &thread, 3..=4)
                    .await;

            stop_and_restore(server, &b, &db, &copy, 1).await;
            // The restored server runs where the page cannot reach it first, and
            // two new messages take seqs 3 and 4 there: when the page comes back,
            // `last_seq` is the 4 it resumes from, and only the ids differ.
            let elsewhere = Server::start(dir.path(), &db, &[], "warn").await;
            assert_ne!(
                port_of(&elsewhere),
                port,
                "the kernel gave the same port again"
            );
            for i in 3..=4 {
                post(
                    &elsewhere,
                    &account,
                    &account.alice,
                    &thread,
                    &format!("new {i}"),
                )
                .await;
            }
            let want = served(&elsewhere, &account, &thread).await;
            assert_eq!(want.as_array().unwrap().len(), 4, "{want}");
            stop(elsewhere).await;
            let server = start_on_port(dir.path(), &db, port).await;

            wait_shown(&b, "after the restore", &want).await;
            b.wait_for_within("#thread-notice:not([hidden])", BACK_WAIT)
                .await;
            let text = b.text("#thread-notice-text").await;
            assert!(text.contains("#4") && text.contains("restored"), "{text}");
            b.wait_for("#thread-live[data-state='live']").await;
            post(&server, &account, &account.bob, &thread, "after").await;
            wait_shown(
                &b,
                "a message after",
                &served(&server, &account, &thread).await,
            )
            .await;
            assert_eq!(
                b.js("return window.__noReload === true").await,
                true,
                "the page reloaded"
            );
            drop(server);
        },
    )
    .await;
}

#[tokio::test]
async fn a_thread_deleted_while_the_server_was_down_is_not_made_again_by_the_page() {
    if crate::helpers::pg::skip("the server is stopped and started on one SQLite file") {
        return;
    }
    let (dir, db, account, server, thread, port, base) = setup().await;
    post(&server, &account, &account.alice, &thread, "hello").await;
    run(
        "a_thread_deleted_while_the_server_was_down",
        |b| async move {
            open_live(&b, &base, &account, &thread, 1).await;

            stop(server).await;
            b.wait_for("#thread-live[data-state='reconnecting']").await;
            assert_eq!(
                threads_with_id(&db, &thread),
                1,
                "the thread is stored under its id"
            );
            let out = run_cli(&["thread", "delete", &thread, "--db", db.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "thread delete failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let server = start_on_port(dir.path(), &db, port).await;

            // The page says the thread is gone and stops; it takes no new message.
            b.wait_for_within("#thread-live[data-state='off']", BACK_WAIT)
                .await;
            let notice = b.wait_for("#thread-notice:not([hidden])").await;
            let text = notice.text().await.unwrap();
            assert!(text.contains("no longer exists"), "{text}");
            assert!(b
                .find("#post-send")
                .await
                .attr("disabled")
                .await
                .unwrap()
                .is_some());
            assert_eq!(
                b.count("li.msg[data-seq='1']").await,
                1,
                "what it had shown stays"
            );
            // And it made nothing under the thread's id (open_thread's default
            // would start a new, empty turn-taking thread there).
            let res = server
                .api
                .get(&format!("/api/acsp/thread/{thread}"), &account.key)
                .await;
            assert_eq!(res.status(), 404, "{}", res.text().await.unwrap());
            assert_eq!(
                threads_with_id(&db, &thread),
                0,
                "the page made the thread again"
            );
            drop(server);
        },
    )
    .await;
}

#[tokio::test]
async fn the_thread_list_goes_live_again_after_a_server_restart() {
    if crate::helpers::pg::skip("the server is stopped and started on one SQLite file") {
        return;
    }
    let (dir, db, account, server, thread, port, base) = setup().await;
    post(&server, &account, &account.bob, &thread, "hello").await;
    run("the_thread_list_goes_live_again", |b| async move {
        b.sign_in_at(&format!("{base}/"), &account.key).await;
        let unread = format!("tr[data-thread-id='{thread}'] td.unread");
        b.wait_for(&format!("{unread}[data-unread='1']")).await;
        b.wait_for("#threads-live[data-state='live']").await;

        stop(server).await;
        // The list's socket tried again while the server was down, and failed.
        b.wait_until_within(
            "a grant request failed",
            "return document.getElementById('threads-live').textContent.includes('did not answer')",
            BACK_WAIT,
        )
        .await;
        let server = start_on_port(dir.path(), &db, port).await;
        // It keeps trying, comes back live, and shows what happened since.
        b.wait_for_within("#threads-live[data-state='live']", BACK_WAIT)
            .await;
        post(
            &server,
            &account,
            &account.bob,
            &thread,
            "after the restart",
        )
        .await;
        b.wait_for_within(&format!("{unread}[data-unread='2']"), BACK_WAIT)
            .await;
        drop(server);
    })
    .await;
}

/// Runs `threadline ARGS` on the app's database; returns its JSON line.
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let db = app.db_args();
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(db.iter().map(String::as_str))
        .collect();
    let out = run_cli(&all);
    assert!(
        out.status.success(),
        "threadline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON line")
}

#[tokio::test]
async fn a_thread_deleted_while_open_says_so_and_offers_no_post() {
    let app = spawn_app().await;
    let thread = create(&app, &app.alice, &app.bob, "short-lived", "hello").await;
    run("a_thread_deleted_while_open", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("li.msg[data-seq='1']").await;
        b.wait_for("#thread-live[data-state='live']").await;
        assert!(b
            .find("#post-send")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_none());
        cli(&app, &["thread", "delete", &thread]);
        let notice = b.wait_for("#thread-notice:not([hidden])").await;
        let text = notice.text().await.unwrap();
        assert!(text.contains("deleted"), "{text}");
        b.wait_for("#thread-live[data-state='off']").await;
        assert_eq!(b.text("#thread-status").await, "deleted");
        assert!(b
            .find("#post-send")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some());
        assert!(!b
            .find("#thread-actions")
            .await
            .is_displayed()
            .await
            .unwrap());
        // What it had shown stays readable.
        assert_eq!(b.count("li.msg[data-seq='1']").await, 1);
    })
    .await;
}

#[tokio::test]
async fn after_a_revoked_key_signing_in_again_returns_to_the_open_thread() {
    let app = spawn_app().await;
    let thread = create(&app, &app.alice, &app.bob, "where was I", "hello").await;
    let second = cli(&app, &["key", "create", "--user", &app.user_id]);
    let second = second["login_key"].as_str().expect("login_key").to_owned();
    run("after_a_revoked_key_signing_in_again", |b| async move {
        b.sign_in(&app, &second).await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("#thread-live[data-state='live']").await;
        cli(&app, &["key", "revoke", &second]);
        let error = b.wait_for("#signin-error:not([hidden])").await;
        assert!(error.text().await.unwrap().contains("revoked"));
        assert_eq!(
            b.js("return sessionStorage.getItem('threadline.key')")
                .await,
            Value::Null
        );
        // Signing in with a key that works opens the thread that was open.
        b.find("#signin-key")
            .await
            .send_keys(&app.key)
            .await
            .unwrap();
        b.find("#signin-submit").await.click().await.unwrap();
        b.wait_for("#view-thread:not([hidden])").await;
        b.wait_for("#thread-live[data-state='live']").await;
        assert_eq!(b.text("#thread-id").await, thread);
    })
    .await;
}

/// The left edge, in the page, of the first `needle` in the text of the
/// element `css` (a range over the text nodes, so a reordering by the bidi
/// algorithm shows).
async fn x_of(b: &Browser, css: &str, needle: &str) -> f64 {
    let script = "const root = document.querySelector(arguments[0]); \
                  const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT); \
                  for (let n = walk.nextNode(); n; n = walk.nextNode()) { \
                    const i = n.data.indexOf(arguments[1]); \
                    if (i < 0) continue; \
                    const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + arguments[1].length); \
                    return r.getBoundingClientRect().left; \
                  } \
                  return null";
    let x = b
        .client
        .execute(script, vec![json!(css), json!(needle)])
        .await
        .expect("script");
    x.as_f64()
        .unwrap_or_else(|| panic!("no {needle:?} in {css}"))
}

#[tokio::test]
async fn hostile_long_and_right_to_left_content_stays_text_fits_and_reads_right_to_left() {
    let app = spawn_app().await;
    let html = r#"<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>&amp;"#;
    let long_subject = "W".repeat(256);
    let long_word = "M".repeat(2048);
    let arabic = "مرحبا بالعالم!";
    let hostile = create(&app, &app.alice, &app.bob, html, html).await;
    let long = create(&app, &app.alice, &app.bob, &long_subject, &long_word).await;
    let rtl = create(&app, &app.alice, &app.bob, arabic, "first").await;
    app.say(&app.bob, &rtl, "مرحبا! كيف حالك؟").await;
    // bob, renamed to a right-to-left name, is the peer in alice's list.
    cli(&app, &["agent", "rename", &app.bob.aid, "--name", "سامي"]);
    let no_overflow =
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth";
    run("hostile_long_and_right_to_left_content", |b| async move {
        // Each way the page falls short, all listed at the end.
        let mut problems: Vec<String> = Vec::new();
        b.sign_in(&app, &app.key).await;
        b.wait_for(&format!("tr[data-thread-id='{long}']")).await;
        // A 256-character word of a subject wraps in its cell.
        if b.js(no_overflow).await != true {
            problems.push("the thread list is wider than the window".into());
        }
        // Long words wrap, but a status badge is not broken inside a word.
        let badge_lines = "const n = document.querySelector('#threads-body td .badge').firstChild; \
                           const r = document.createRange(); r.selectNodeContents(n); \
                           return r.getClientRects().length";
        let lines = b.js(badge_lines).await;
        if lines != 1 {
            problems.push(format!("a status badge takes {lines} lines"));
        }
        // The peer's name is isolated from the AID beside it.
        let bidi = b
            .js("return getComputedStyle(document.querySelector('#threads-body .peer-name')).unicodeBidi")
            .await;
        if bidi != "isolate" {
            problems.push(format!("the peer's name is not isolated: unicode-bidi {bidi}"));
        }

        // Markup is shown as text and runs nowhere.
        b.goto(&thread_url(&app, &hostile, &app.alice.aid)).await;
        b.wait_for("li.msg[data-seq='1']").await;
        assert_eq!(b.text("li.msg[data-seq='1'] .body").await, html);
        assert!(b.text("#thread-title").await.starts_with(html));
        assert_eq!(b.count("#view-thread img, #view-thread script, #view-thread b").await, 0);
        assert_eq!(b.js("return window.__pwned === undefined").await, true);

        // A 2048-character word and a 256-character title wrap.
        b.goto(&thread_url(&app, &long, &app.alice.aid)).await;
        b.wait_for("li.msg[data-seq='1']").await;
        b.wait_for("#thread-live[data-state='live']").await;
        if b.js(no_overflow).await != true {
            problems.push("the thread view is wider than the window".into());
        }
        let title_fits = "const h = document.getElementById('thread-title'); return h.scrollWidth <= h.clientWidth";
        if b.js(title_fits).await != true {
            problems.push("the title overflows".into());
        }

        // Right-to-left text reads right to left: the message's direction,
        // and the subject's closing "!" at its left end, not after it.
        b.goto(&thread_url(&app, &rtl, &app.alice.aid)).await;
        b.wait_for("li.msg[data-seq='2']").await;
        let dir = b
            .js("return getComputedStyle(document.querySelector(\"li.msg[data-seq='2'] .body\")).direction")
            .await;
        if dir != "rtl" {
            problems.push(format!("a right-to-left message's direction is {dir}"));
        }
        b.wait_until(
            "the title is the thread's",
            &format!("return document.getElementById('thread-title').textContent.includes({})", json!(arabic)),
        )
        .await;
        let bang = x_of(&b, "#thread-title", "!").await;
        let first_word = x_of(&b, "#thread-title", "مرحبا").await;
        if bang >= first_word {
            problems.push(format!(
                "the subject's \"!\" ({bang}) is not left of its words ({first_word})"
            ));
        }
        // And the names after the subject stay in order: alice, then bob
        // (whose name is right-to-left now).
        let (_, body) = json_of(app.get_thread(&app.key, &rtl, &format!("aid={}", app.alice.aid)).await).await;
        assert_eq!(body["thread"]["subject"], arabic);
        let alice = x_of(&b, "#thread-title", "alice").await;
        let arrow = x_of(&b, "#thread-title", "↔").await;
        if alice >= arrow {
            problems.push(format!("alice ({alice}) is not before the arrow ({arrow})"));
        }
        assert!(problems.is_empty(), "{problems:#?}");
    })
    .await;
}

#[tokio::test]
async fn a_turn_taking_thread_resumed_after_a_delivered_reply_is_not_taken_for_a_restore() {
    let app = spawn_app_with(|c| c.pace_scale = 0.05).await;
    let (status, body) = json_of(app.open_thread(&app.key, json!({})).await).await;
    assert_eq!(status, 200, "{body}");
    let thread = body["thread"]["id"].as_str().unwrap().to_owned();
    run(
        "a_turn_taking_thread_resumed_after_a_delivered_reply",
        |b| async move {
            b.sign_in(&app, &app.key).await;
            b.goto(&app.url(&format!("/#/thread/{thread}"))).await;
            b.wait_for("#thread-live[data-state='live']").await;
            app.submit(
                &thread,
                json!([{"sender": "dana", "content": "How did Q1 go?"}]),
            )
            .await;
            let reply = app
                .respond(
                    &thread,
                    "Q1 went well overall, better than the plan. Revenue grew four percent. \
                 Costs stayed flat while we hired two engineers.",
                    1,
                )
                .await;
            let parts = reply["scheduled"].as_array().unwrap().len();
            assert!(parts >= 2, "{reply}");
            // The reply's parts came live; the newest shown is the last part.
            b.wait_for(&format!("li.msg[data-seq='{}']", 1 + parts))
                .await;
            let (_, read) = json_of(app.get_thread(&app.key, &thread, "limit=50").await).await;
            let want: Vec<Value> = read["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| json!([m["seq"], m["id"], m["content"]]))
                .collect();
            assert_eq!(want.len(), 1 + parts, "{read}");
            wait_shown(&b, "the live reply", &Value::Array(want.clone())).await;

            // A dropped socket resumes; the check of the resumed seq finds the
            // same message, and nothing is read again.
            b.js("window.threadlineInspector.dropSockets(); return true")
                .await;
            b.wait_until(
                "the resumed seq was checked",
                "return window.threadlineInspector.seamChecks() >= 1",
            )
            .await;
            assert!(b
                .find("#thread-notice")
                .await
                .attr("hidden")
                .await
                .unwrap()
                .is_some());
            wait_shown(&b, "after the resume", &Value::Array(want)).await;
        },
    )
    .await;
}

#[tokio::test]
async fn last_activity_in_the_thread_list_keeps_counting_while_nothing_happens() {
    let app = spawn_app().await;
    run("last_activity_keeps_counting", |b| async move {
        // Made once the browser is ours (Firefox tests take turns), so its
        // age is counted in seconds while the test looks.
        let thread = create(&app, &app.alice, &app.bob, "quiet", "hello").await;
        b.sign_in(&app, &app.key).await;
        let cell = format!("tr[data-thread-id='{thread}'] td.activity");
        b.wait_for(&cell).await;
        let first = b.text(&cell).await;
        assert!(first == "just now" || first.ends_with(" s ago"), "{first}");
        // Nothing is posted and nothing is read: the relative time must
        // still move on (the page redraws it every 10 s).
        b.wait_until_within(
            &format!("the last activity is no longer {first:?}"),
            &format!(
                "return document.querySelector({}).textContent !== {}",
                json!(cell),
                json!(first)
            ),
            Duration::from_secs(30),
        )
        .await;
    })
    .await;
}

/// Sets the thread's status as alice over the API.
async fn set_status(server: &Server, account: &Account, thread: &str, status: &str) {
    let body = json!({"aid": account.alice, "thread_id": thread, "status": status});
    let res = server
        .api
        .post("/api/acsp/thread/status", &account.key, &body)
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn a_status_the_restored_server_has_is_shown_after_the_page_reconnects() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let (dir, db, account, server, thread, port, base) = setup().await;
    post(&server, &account, &account.alice, &thread, "hello").await;
    // The backup has the thread closed; it is reopened after.
    set_status(&server, &account, &thread, "closed").await;
    let copy = dir.path().join("backup.db");
    backup(&db, &copy);
    set_status(&server, &account, &thread, "active").await;
    run("a_status_the_restored_server_has", |b| async move {
        b.sign_in_at(&format!("{base}/"), &account.key).await;
        b.goto(&format!("{base}/#/thread/{thread}/as/{}", account.alice))
            .await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.wait_for("#thread-status[data-status='active']").await;
        assert!(b
            .find("#post-send")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_none());

        stop_and_restore(server, &b, &db, &copy, 1).await;
        let server = start_on_port(dir.path(), &db, port).await;
        // No message was lost, so nothing is read again; the status is the
        // restored one (a resume replays messages, not status changes).
        b.wait_for_within("#thread-status[data-status='closed']", BACK_WAIT)
            .await;
        assert!(b
            .find("#post-send")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            b.count("#thread-notice:not([hidden])").await,
            0,
            "a notice for no loss"
        );
        wait_shown(
            &b,
            "after the restart",
            &served(&server, &account, &thread).await,
        )
        .await;
        drop(server);
    })
    .await;
}

/// A turn-taking action over the API; asserts the 200 and returns its body.
async fn turn_action(server: &Server, account: &Account, action: &str, body: Value) -> Value {
    let res = server
        .api
        .post(
            &format!("/v1/turn-taking/actions/{action}"),
            &account.key,
            &body,
        )
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// One inbound message and the agent's reply to its turn (delivered at once
/// under `--pace-scale 0`); returns the turn's epoch.
async fn turn_exchange(server: &Server, account: &Account, thread: &str, said: &str) -> i64 {
    let body = json!({"thread_id": thread, "messages": [{"sender": "dana", "content": said}]});
    let submitted = turn_action(server, account, "submit_messages", body).await;
    let epoch = submitted["turn_epoch"].as_i64().expect("turn_epoch");
    let body = json!({"thread_id": thread, "turn_epoch": epoch, "content": format!("re: {said}")});
    turn_action(server, account, "respond", body).await;
    epoch
}

#[tokio::test]
async fn after_a_restore_a_turn_taking_threads_batches_and_parts_are_the_servers() {
    if crate::helpers::pg::skip("a restore copies the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    let server = Server::start(dir.path(), &db, &["--pace-scale", "0"], "warn").await;
    let port = port_of(&server);
    let base = server.api.base.clone();
    let opened = server.api.open_thread(&account.key, None).await;
    let thread = opened["thread"]["id"].as_str().expect("id").to_owned();
    assert_eq!(turn_exchange(&server, &account, &thread, "kept").await, 1);
    run("after_a_restore_a_turn_taking_thread", |b| async move {
        b.sign_in_at(&format!("{base}/"), &account.key).await;
        b.goto(&format!("{base}/#/thread/{thread}")).await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.wait_for("li.msg[data-seq='2']").await;
        b.wait_for("#batches li.batch[data-epoch='1']").await;
        b.js("window.__noReload = true; return true").await;
        let copy = dir.path().join("backup.db");
        backup(&db, &copy);
        assert_eq!(turn_exchange(&server, &account, &thread, "lost").await, 2);
        b.wait_for("li.msg[data-seq='4']").await;
        b.wait_for("#batches li.batch[data-epoch='2']").await;
        b.wait_for("#timeline li.part[data-epoch='2']").await;

        stop_and_restore(server, &b, &db, &copy, 1).await;
        let bind = format!("127.0.0.1:{port}");
        let mut server = Server::spawn(dir.path(), &db, &bind, &["--pace-scale", "0"], "warn");
        server.wait_ready().await;

        // The turn the restore lost is gone from the page too.
        let path = format!("/api/acsp/thread/{thread}?limit=50");
        let (_, read) = json_of(server.api.get(&path, &account.key).await).await;
        let want: Vec<Value> = read["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| json!([m["seq"], m["id"], m["content"]]))
            .collect();
        assert_eq!(want.len(), 2, "{read}");
        wait_shown(&b, "after the restore", &Value::Array(want)).await;
        b.wait_for("#thread-notice:not([hidden])").await;
        b.wait_for("#batches li.batch[data-epoch='1']").await;
        b.wait_for("#thread-live[data-state='live']").await;
        assert_eq!(b.count("#batches li.batch[data-epoch='2']").await, 0, "a lost turn's batch");
        assert_eq!(b.count("#timeline li.part[data-epoch='2']").await, 0, "a lost turn's part");

        // The restored server's next turn is epoch 2 again, and shows as its own.
        assert_eq!(turn_exchange(&server, &account, &thread, "new").await, 2);
        b.wait_for("li.msg[data-seq='4']").await;
        b.wait_for("#batches li.batch[data-epoch='2']").await;
        b.wait_until(
            "the new turn's text",
            "const b = document.querySelector(\"#batches li.batch[data-epoch='2'] .batch-text\"); \
             return Boolean(b) && b.textContent.includes('new') && !b.textContent.includes('lost')",
        )
        .await;
        let bodies = b
            .js("return Array.from(document.querySelectorAll('#messages li.msg .body')).map(n => n.textContent)")
            .await;
        assert_eq!(bodies, json!(["kept", "re: kept", "new", "re: new"]));
        assert_eq!(b.js("return window.__noReload === true").await, true, "the page reloaded");
        drop(server);
    })
    .await;
}

#[tokio::test]
async fn a_long_word_in_a_reply_part_or_a_batch_wraps_in_the_turn_panel() {
    let app = spawn_app_with(|c| c.pace_scale = 0.05).await;
    let (status, body) = json_of(app.open_thread(&app.key, json!({})).await).await;
    assert_eq!(status, 200, "{body}");
    let thread = body["thread"]["id"].as_str().unwrap().to_owned();
    let said = app
        .submit(
            &thread,
            json!([{"sender": "dana", "content": "Z".repeat(2000)}]),
        )
        .await;
    let epoch = said["turn_epoch"].as_i64().unwrap();
    app.respond(&thread, &"W".repeat(1500), epoch).await;
    run("a_long_word_in_a_reply_part", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&app.url(&format!("/#/thread/{thread}"))).await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.wait_for("#timeline li.part").await;
        b.wait_for("#batches li.batch").await;
        let overflow =
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth";
        assert_eq!(b.js(overflow).await, 0, "the page is wider than the window");
    })
    .await;
}
