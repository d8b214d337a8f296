//! Small gaps a user or an operator meets, round eighteen: fragmented text
//! a client sends is held to UTF-8 across its fragments (1007, RFC 6455
//! 8.1) without the server putting the message together; the webhook
//! receiver example takes its secret from a file or the environment (kept
//! out of `ps`); and a fresh server's `/metrics` shows the refusals of
//! every route a rate limit can refuse, at 0.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::json;

use crate::fuzz17::{frame, RawWs};
use crate::helpers::process::listening_port;
use crate::helpers::{spawn_app, spawn_app_with, TestApp, POLL, WAIT};

// ------------------------------------------------ fragmented text

/// Fragments of a message: the first with `opcode` (1 text, 2 binary),
/// the rest continuations, the last one final.
fn fragments(opcode: u8, parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| frame(i == last, 0, if i == 0 { opcode } else { 0 }, true, part))
        .collect()
}

/// Text a client sends is ignored, fragmented or not, as long as it is
/// UTF-8: characters split between fragments, control frames between
/// fragments, empty fragments. The socket stays open and keeps
/// delivering. (This held before the fix too; it guards the fix.)
#[tokio::test]
async fn fragmented_text_that_is_utf8_is_ignored_and_the_socket_keeps_delivering() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for after in ["", "&after=0"] {
        let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
        let mut ws = RawWs::connect(&format!("{url}{after}")).await;
        assert_eq!(ws.event().await["type"], "connection.ready");
        // "é" and "😀" split across fragments, a ping between two of them.
        let mut frames = vec![frame(false, 0, 1, true, b"{\"say\": \"caf\xc3")];
        frames.push(frame(true, 0, 9, true, b"between"));
        frames.push(frame(false, 0, 0, true, b"\xa9 \xf0\x9f"));
        frames.push(frame(false, 0, 0, true, b""));
        frames.push(frame(false, 0, 0, true, b"\x98"));
        frames.push(frame(true, 0, 0, true, b"\x80\"}"));
        // Another one right after, then a binary message, which may hold
        // any bytes.
        frames.extend(fragments(1, &[b"\xe2", b"\x82", b"\xac"]));
        frames.extend(fragments(2, &[b"\xff\xc3", b"\xfe"]));
        frames.push(frame(true, 0, 9, true, b"after"));
        ws.send(&frames).await;
        // The last ping's pong (during a replay only the last one is
        // owed), once everything before it was taken.
        ws.pong(b"after").await;
        let said = app
            .say(&app.alice, &thread, &format!("still here {after}"))
            .await;
        loop {
            let event = ws.event().await;
            if event["data"]["id"] == said["id"] {
                assert_eq!(event["type"], "thread.message", "{event}");
                break;
            }
        }
        ws.send(&[crate::fuzz17::close_frame(1000, b"")]).await;
        assert_eq!(ws.close().await, Some((1000, String::new())));
    }
}

/// A fragmented text message that is not UTF-8 fails the connection with
/// 1007 as soon as that is certain: bytes that are not UTF-8 in any
/// fragment (before the message ends), a character split between
/// fragments that turns out bad, a character unfinished at the last
/// fragment. A fragment out of sequence is a protocol error (1002). Live
/// and during a resume's replay alike; nothing is stored, and the server
/// goes on serving sockets. Before, a fragmented message was ignored
/// whatever it held (RFC 6455 8.1 wants the 1007).
#[tokio::test]
async fn fragmented_text_that_is_not_utf8_is_closed_with_1007_and_out_of_order_with_1002() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    app.say(&app.bob, &thread, "two").await;
    let not_utf8 = (1007, "text message is not UTF-8");
    let malformed = (1002, "malformed frame");
    // What is sent, its frames, and the close due (code, reason).
    type Case = (&'static str, Vec<Vec<u8>>, (u16, &'static str));
    let cases: Vec<Case> = vec![
        (
            "a character split between fragments that turns out bad",
            fragments(1, &[b"ab\xc3", b"\xff"]),
            not_utf8,
        ),
        (
            "bytes that are not UTF-8 in the first fragment, the message unfinished",
            vec![frame(false, 0, 1, true, b"ok \xff")],
            not_utf8,
        ),
        (
            "a surrogate split over three fragments, the message unfinished",
            vec![
                frame(false, 0, 1, true, b"a\xed"),
                frame(false, 0, 0, true, b"\xa0"),
                frame(false, 0, 0, true, b"\x80"),
            ],
            not_utf8,
        ),
        (
            "an overlong sequence split between fragments",
            fragments(1, &[b"\xe0", b"\x80\x80"]),
            not_utf8,
        ),
        (
            "a character unfinished at the last fragment",
            fragments(1, &[b"a", b"\xe2\x82"]),
            not_utf8,
        ),
        (
            "a continuation without a start, not final",
            vec![frame(false, 0, 0, true, b"x")],
            malformed,
        ),
        (
            "a new text message before the last one finished",
            vec![
                frame(false, 0, 1, true, b"a"),
                frame(false, 0, 1, true, b"b"),
            ],
            malformed,
        ),
        (
            "a binary message inside a text one",
            vec![
                frame(false, 0, 1, true, b"a"),
                frame(true, 0, 2, true, b"b"),
            ],
            malformed,
        ),
        (
            "a continuation after the message ended",
            vec![
                frame(false, 0, 1, true, b"a"),
                frame(true, 0, 0, true, b"b"),
                frame(true, 0, 0, true, b"c"),
            ],
            malformed,
        ),
    ];
    let stored = app.stored_messages();
    for (what, frames, (code, reason)) in &cases {
        for after in ["", "&after=0"] {
            let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
            let mut ws = RawWs::connect(&format!("{url}{after}")).await;
            ws.send(frames).await;
            assert_eq!(
                ws.close().await,
                Some((*code, (*reason).to_owned())),
                "{what} (query {after:?})"
            );
        }
    }
    assert_eq!(app.stored_messages(), stored, "nothing stored");
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = RawWs::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
}

// ------------------------------------------------ the webhook receiver

/// The example as `cargo test` builds it (next to this test binary's
/// `deps/` folder); `cargo test --test api` does not build examples.
pub(crate) fn webhook_receiver() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join("webhook_receiver");
    path.is_file().then_some(path)
}

/// A running `webhook_receiver`, killed and reaped on drop; its stdout
/// and stderr in files of its own.
pub(crate) struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the example with `args`, and with the secret variable set
    /// to `env` (or unset).
    pub(crate) fn spawn(bin: &std::path::Path, args: &[&str], env: Option<&str>) -> Receiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("THREADLINE_WEBHOOK_SECRET")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"));
        if let Some(secret) = env {
            cmd.env("THREADLINE_WEBHOOK_SECRET", secret);
        }
        let child = cmd.spawn().expect("the example starts");
        Receiver { child, dir }
    }

    pub(crate) fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The port it listens on, once it does (bounded).
    pub(crate) async fn port(&mut self) -> u16 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(port) = listening_port(self.child.id()) {
                return port;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("exited ({status}): {}", self.output("stderr"));
            }
            assert!(
                Instant::now() < deadline,
                "not listening: {}",
                self.output("stderr")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Its exit status, once it exits (bounded).
    async fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (bounded) until its stdout holds `needle`.
    pub(crate) async fn printed(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.output("stdout");
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stdout: {out}; stderr: {}",
                self.output("stderr")
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A delivery to `port` signed with `secret`: the receiver's status.
async fn deliver(port: u16, secret: &str, body: &str) -> u16 {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let id = "msg_0190b0c0-0000-7000-8000-000000000018";
    let signature = threadline::webhooks::sign::signature(secret, id, timestamp, body.as_bytes());
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hook"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .timeout(WAIT)
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

/// The receiver takes its secret from a file (`--secret-file`, a
/// trailing newline allowed) or from `THREADLINE_WEBHOOK_SECRET`, and
/// verifies deliveries signed as the server signs them with it; one signed
/// with another secret is refused (401, not printed). The secret is not on
/// its command line. Before, it could only be given as `--secret` (still
/// taken), which every user of the machine sees in `ps`.
#[tokio::test]
async fn the_webhook_receiver_takes_its_secret_from_a_file_or_the_environment() {
    let Some(bin) = webhook_receiver() else {
        eprintln!("skipped: examples/webhook_receiver is not built (run the whole `cargo test`)");
        return;
    };
    let secret = threadline::webhooks::sign::new_secret();
    let other = threadline::webhooks::sign::new_secret();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("whsec.txt");
    // As `echo` leaves it: with a newline.
    std::fs::write(&file, format!("{secret}\n")).expect("the secret file");
    let path = file.to_str().expect("a UTF-8 path");
    let from_file = Receiver::spawn(
        &bin,
        &["--bind", "127.0.0.1:0", "--secret-file", path],
        None,
    );
    let from_env = Receiver::spawn(&bin, &["--bind", "127.0.0.1:0"], Some(&secret));
    // Still taken, for those who run it as before (and it is in `ps`).
    let from_flag = Receiver::spawn(&bin, &["--bind", "127.0.0.1:0", "--secret", &secret], None);
    for (how, mut receiver) in [
        ("--secret-file", from_file),
        ("the variable", from_env),
        ("--secret", from_flag),
    ] {
        let port = receiver.port().await;
        let body = format!(r#"{{"id":"evt","type":"thread.message","data":{{"via":"{how}"}}}}"#);
        assert_eq!(deliver(port, &secret, &body).await, 204, "{how}");
        receiver.printed(how).await;
        let forged = r#"{"id":"evt","type":"thread.message","data":{"forged":true}}"#;
        assert_eq!(deliver(port, &other, forged).await, 401, "{how}");
        assert!(!receiver.output("stdout").contains("forged"), "{how}");
        let argv = std::fs::read(format!("/proc/{}/cmdline", receiver.child.id()))
            .expect("its command line");
        let secret_key = &secret["whsec_".len()..];
        assert_eq!(
            String::from_utf8_lossy(&argv).contains(secret_key),
            how == "--secret",
            "{how}: the secret on the command line"
        );
    }
}

/// Without a secret (no flag, no variable) the receiver says where it
/// reads one from and exits 2, as it does for a secret file it cannot
/// read; `--help` says that `--secret` shows in `ps`.
#[tokio::test]
async fn the_webhook_receiver_without_a_secret_says_where_to_put_one() {
    let Some(bin) = webhook_receiver() else {
        eprintln!("skipped: examples/webhook_receiver is not built (run the whole `cargo test`)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.txt");
    let missing = missing.to_str().expect("a UTF-8 path");
    for (args, says) in [
        (vec!["--bind", "127.0.0.1:0"], "THREADLINE_WEBHOOK_SECRET"),
        (vec!["--secret-file", missing], "missing.txt"),
        (vec!["--secret", "not-a-secret"], "whsec_"),
    ] {
        let mut receiver = Receiver::spawn(&bin, &args, None);
        assert_eq!(receiver.exit().await.code(), Some(2), "{args:?}");
        let stderr = receiver.output("stderr");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("not-a-secret"),
            "{args:?} echoed: {stderr}"
        );
    }
    let mut help = Receiver::spawn(&bin, &["--help"], None);
    assert_eq!(help.exit().await.code(), Some(0));
    let usage = help.output("stdout");
    for needle in ["--secret-file", "THREADLINE_WEBHOOK_SECRET", "`ps`"] {
        assert!(usage.contains(needle), "{needle} in {usage}");
    }
}

// ------------------------------------------------ metrics at zero

/// A fresh server's `/metrics` has a refusal series at 0 for every route
/// a rate limit can refuse (an alert on refusals had no series to watch
/// before the first refusal); a refusal counts on its route only.
#[tokio::test]
async fn a_fresh_server_shows_every_limited_routes_refusals_at_0() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1).await;
    let series = |route: &str| format!("threadline_rate_limit_refusals_total{{route=\"{route}\"}}");
    let value = |text: &str, route: &str| {
        let name = series(route);
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .map(|v| v.trim().to_owned())
    };
    let text = scrape(&app).await;
    let routes = threadline::http::LIMITED_ROUTES;
    // Among them, those an operator would alert on first.
    for route in [
        "/api/acsp/thread/message",
        "/api/acsp/thread/{thread_id}",
        "/api/acsp/agent-init",
        "/v1/ws",
        "/mcp",
    ] {
        assert!(routes.contains(&route), "{route} is listed");
    }
    for &route in routes {
        assert_eq!(
            value(&text, route).as_deref(),
            Some("0"),
            "{route} in {text}"
        );
    }
    // Two requests with a made-up key: the second is refused.
    let bad = format!("nk_{}", "C".repeat(43));
    let body = json!({"aid": app.alice.aid, "target_aid": app.bob.aid});
    assert_eq!(app.create_thread(&bad, body.clone()).await.status(), 401);
    assert_eq!(app.create_thread(&bad, body).await.status(), 429);
    let text = scrape(&app).await;
    for &route in routes {
        let due = if route == "/api/acsp/thread/create" {
            "1"
        } else {
            "0"
        };
        assert_eq!(
            value(&text, route).as_deref(),
            Some(due),
            "{route} in {text}"
        );
    }
}

async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    res.text().await.expect("the exposition")
}
