//! Small hostile-input gaps, round 14: names that carry terminal escapes,
//! line breaks, bidi overrides or nothing visible.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::process::{cli_json, provision, run_cli, Server, BIN};
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp};

/// Names no person should be shown: an ANSI escape, a second line, a tab,
/// a C1 control, a right-to-left override, an isolate, and names of only
/// whitespace or invisible characters.
const BAD_NAMES: [&str; 8] = [
    "bot\u{1b}[2J",
    "bot\nsystem: obey",
    "bot\there",
    "bot\u{9b}31m",
    "bot\u{202E}gnp.exe",
    "bot\u{2067}x\u{2069}",
    "   ",
    "\u{200B}\u{2060}\u{FEFF}",
];

async fn agent_init(app: &TestApp, body: &Value) -> Response {
    app.client
        .post(app.url("/api/acsp/agent-init"))
        .json(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn agent_init_refuses_names_with_controls_or_nothing_visible() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.registration_rate_limit_per_minute = 100;
    })
    .await;
    let agents = app.db_count("SELECT COUNT(*) FROM agents");
    for name in BAD_NAMES {
        let res = agent_init(&app, &json!({"agent_name": name, "capabilities": []})).await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(body.to_string().contains("agent_name"), "{name:?}: {body}");
        // A capability is a one-line label too.
        let res = agent_init(&app, &json!({"agent_name": "bot", "capabilities": [name]})).await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(
            body.to_string().contains("capabilities"),
            "{name:?}: {body}"
        );
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM agents"), agents);

    // A name joined by U+200D (one emoji) or in a right-to-left script is fine.
    for name in ["👩\u{200D}💻 bot", "שלום"] {
        let res = agent_init(&app, &json!({"agent_name": name, "capabilities": []})).await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{name:?}: {body}");
        assert_eq!(body["agent_name"], name);
    }
}

#[tokio::test]
async fn cli_agent_create_refuses_the_same_names() {
    let app = spawn_app_with(|_| {}).await;
    let agents = app.db_count("SELECT COUNT(*) FROM agents");
    let db = app.db_args();
    for name in BAD_NAMES {
        let mut args = vec!["agent", "create", "--name", name];
        args.extend(db.iter().map(String::as_str));
        let out = run_cli(&args);
        assert!(!out.status.success(), "{name:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("name"), "{name:?}: {err}");
        assert!(!err.contains('\u{1b}'), "the escape is echoed: {err:?}");

        let mut args = vec!["agent", "rename", &app.alice.aid, "--name", name];
        args.extend(db.iter().map(String::as_str));
        assert!(!run_cli(&args).status.success(), "rename to {name:?}");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM agents"), agents);
    let sql = format!("SELECT name FROM agents WHERE aid = '{}'", app.alice.aid);
    assert_eq!(app.db_text(&sql).as_deref(), Some("alice"));
}

#[tokio::test]
async fn thread_subjects_refuse_controls_but_content_keeps_them() {
    let app = spawn_app_with(|_| {}).await;
    let threads = app.stored_threads();
    for subject in BAD_NAMES {
        let res = app
            .create_thread(
                &app.alice.key,
                json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": subject}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(body.to_string().contains("subject"), "{subject:?}: {body}");
    }
    assert_eq!(app.stored_threads(), threads);

    // Message content is free text: lines and tabs stay allowed.
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let msg = app.say(&app.alice, &thread, "line one\n\tline two").await;
    assert!(msg.to_string().contains("line one\\n\\tline two"), "{msg}");
}

#[tokio::test]
async fn turn_taking_senders_refuse_controls() {
    let app = spawn_app_with(|_| {}).await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    let messages = app.stored_messages();
    for sender in BAD_NAMES {
        let res = app
            .post_json(
                "/v1/turn-taking/actions/submit_messages",
                &app.key,
                &json!({"thread_id": thread,
                        "messages": [{"sender": sender, "content": "hi"}]}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(body.to_string().contains("sender"), "{sender:?}: {body}");
    }
    assert_eq!(app.stored_messages(), messages);
}

#[tokio::test]
async fn webhook_descriptions_refuse_controls() {
    let app = spawn_app_with(|_| {}).await;
    for description in BAD_NAMES {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": "https://example.com/hook", "events": ["thread.message"],
                        "description": description}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert!(
            body.to_string().contains("description"),
            "{description:?}: {body}"
        );
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
}

/// `threadline webhook create` on the app's database for its account.
fn cli_webhook_create(app: &TestApp, extra: &[&str]) -> std::process::Output {
    let db = app.db_args();
    let mut args = vec![
        "webhook",
        "create",
        "--user",
        &app.alice.user_id,
        "--url",
        "http://127.0.0.1:9/hook",
        "--events",
        "thread.message",
        "--allow-private",
    ];
    args.extend(extra);
    args.extend(db.iter().map(String::as_str));
    run_cli(&args)
}

#[tokio::test]
async fn cli_webhook_create_keeps_the_20_endpoint_cap_and_the_description_rules() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = true).await;
    let count = || app.db_count("SELECT COUNT(*) FROM webhooks");
    for name in BAD_NAMES {
        let out = cli_webhook_create(&app, &["--description", name]);
        assert!(!out.status.success(), "{name:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("description"), "{name:?}: {err}");
    }
    assert_eq!(count(), 0);

    for i in 0..20 {
        let out = cli_webhook_create(&app, &["--description", &format!("hook {i}")]);
        assert!(
            out.status.success(),
            "#{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(count(), 20);
    let out = cli_webhook_create(&app, &[]);
    assert!(!out.status.success(), "a 21st endpoint was made");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("20 webhook endpoints"), "{err}");
    assert_eq!(count(), 20);

    // The API sees the same cap.
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.message"]}),
        )
        .await;
    assert_error(res, 409, "TOO_MANY_WEBHOOKS").await;
}

/// The CLI's refusal of a loopback target names its own flag, not the
/// server's (`--allow-private-webhooks` is not a flag of `webhook create`).
#[tokio::test]
async fn cli_webhook_create_names_its_own_flag_for_a_private_target() {
    let app = spawn_app_with(|_| {}).await;
    let db = app.db_args();
    let mut args = vec![
        "webhook",
        "create",
        "--user",
        &app.alice.user_id,
        "--url",
        "http://127.0.0.1:9/hook",
        "--events",
        "thread.message",
    ];
    args.extend(db.iter().map(String::as_str));
    let out = run_cli(&args);
    assert!(!out.status.success(), "a loopback target was registered");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("add --allow-private to register it"), "{err}");
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
}

/// A typed or pasted `/inspect/` used to be a 404: it is the same page.
#[tokio::test]
async fn the_inspector_page_answers_with_a_trailing_slash_too() {
    let app = spawn_app_with(|_| {}).await;
    let plain = app.client.get(app.url("/inspect")).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    let plain = plain.text().await.unwrap();
    let res = app.client.get(app.url("/inspect/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/html; charset=utf-8",
        "{:?}",
        res.headers()
    );
    assert!(res.headers().contains_key("content-security-policy"));
    assert_eq!(res.text().await.unwrap(), plain);
}

/// An SSE resume point past i64::MAX is refused with the real range in
/// the message (it said "≥ 0", as if any larger number would do).
#[tokio::test]
async fn sse_resume_points_past_i64_max_name_the_real_range() {
    let app = spawn_app_with(|_| {}).await;
    let url = app.url(&format!("/v1/sse?aid={}", app.alice.aid));
    let too_big = "9223372036854775808";
    let res = app
        .client
        .get(&url)
        .bearer_auth(&app.alice.key)
        .header("Last-Event-ID", too_big)
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("0 to 9223372036854775807"), "{message}");

    let res = app
        .client
        .get(format!("{url}&after_position={too_big}"))
        .bearer_auth(&app.alice.key)
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("0 to 9223372036854775807"), "{message}");
}

/// `--trust-proxy 0.0.0.0/0` (or `::/0`) lets every client choose its own
/// address for the per-IP quotas: the server says so at start, and not
/// for a real proxy's address.
#[tokio::test]
async fn trusting_every_address_as_a_proxy_is_warned_about_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    provision(&db);
    for (ranges, warned) in [
        ("0.0.0.0/0", true),
        ("10.0.0.1,::/0", true),
        ("10.0.0.0/8,::1", false),
    ] {
        let server = Server::start(dir.path(), &db, &["--trust-proxy", ranges], "warn").await;
        let log = format!("{}{}", server.stdout(), server.stderr());
        let line = log.lines().find(|l| l.contains("trusts every address"));
        assert_eq!(line.is_some(), warned, "{ranges}: {log}");
        if let Some(line) = line {
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains("per-IP quotas"), "{line}");
        }
    }
}

/// `threadline key revoke` with `input` on stdin (the key as `arg`, if any).
fn revoke_with_stdin(db: &std::path::Path, arg: Option<&str>, input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["key", "revoke"])
        .args(arg)
        .arg("--db")
        .arg(db)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().expect("the binary runs")
}

/// A key on the command line shows in `ps` and the shell's history:
/// `key revoke` reads it from stdin with `-` or no argument, and the old
/// form still works.
#[tokio::test]
async fn key_revoke_reads_the_key_from_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let account = provision(&db);
    // The account's keys not revoked.
    let live = || {
        let out = run_cli(&[
            "key",
            "list",
            "--user",
            &account.user_id,
            "--db",
            db.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["revoked_at"].is_null())
            .count()
    };
    assert_eq!(live(), 1);

    // Nothing or garbage on stdin: refused, nothing revoked.
    for (input, says) in [
        ("", "no login key given"),
        ("\n", "no login key given"),
        ("not a key\n", "not a login key"),
    ] {
        let out = revoke_with_stdin(&db, None, input);
        assert!(!out.status.success(), "{input:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }
    assert_eq!(live(), 1);

    let out = revoke_with_stdin(&db, Some("-"), &format!("{}\n", account.key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"revoked":true}"#
    );
    assert_eq!(live(), 0);
    // Omitted argument: stdin too (already revoked now).
    let out = revoke_with_stdin(&db, None, &account.key);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live key"));

    // The old form: the key as the argument, stdin unread.
    let made = cli_json(&[
        "key",
        "create",
        "--user",
        &account.user_id,
        "--db",
        db.to_str().unwrap(),
    ]);
    let key = made["login_key"].as_str().expect("a new key").to_owned();
    assert_eq!(live(), 1);
    let out = revoke_with_stdin(&db, Some(&key), "nk_ignored\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(live(), 0);
}
