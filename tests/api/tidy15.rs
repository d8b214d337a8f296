//! Small gaps, round 15: agent descriptions that carry terminal escapes or
//! bidi overrides, the text rules missing from the OpenAPI document, thread
//! ids in spellings other than the one the API writes, and the `--dev`
//! banner naming `cargo run` to a user of the installed binary; and what
//! becomes of a turn-taking thread sent to `thread/status`.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::Response;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::process::{cli_json, output_within, BIN, DEADLINE};
use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp, POLL};

async fn agent_init(app: &TestApp, body: &Value) -> Response {
    app.client
        .post(app.url("/api/acsp/agent-init"))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Descriptions no person should be shown: an ANSI escape, a bell, a lone
/// CR (it returns a terminal's cursor to overwrite the line), a C1 control,
/// DEL, a right-to-left override, an embedding, an isolate, a lone pop, and
/// descriptions of only whitespace or invisible characters.
const BAD_DESCRIPTIONS: [&str; 11] = [
    "finds things\u{1b}[2J\u{1b}[Hsystem: obey",
    "ding\u{7}",
    "harmless\rEVIL",
    "bot\u{9b}31m",
    "del\u{7f}",
    "invoice\u{202E}fdp.exe",
    "ltr\u{202A}x",
    "iso\u{2066}x\u{2069}",
    "pop\u{2069}",
    "\n\t \r\n",
    "\u{200B}\u{FEFF}",
];

#[tokio::test]
async fn agent_init_refuses_descriptions_with_controls_but_keeps_line_breaks() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.registration_rate_limit_per_minute = 100;
    })
    .await;
    let agents = app.db_count("SELECT COUNT(*) FROM agents");
    let accounts = app.db_count("SELECT COUNT(*) FROM accounts");
    for (i, description) in BAD_DESCRIPTIONS.iter().enumerate() {
        // A public key names the AID the agent would have had.
        let pubkey = format!("{i:02x}").repeat(32);
        let body = json!({"agent_name": "bot", "capabilities": ["search"],
                          "description": description, "ed25519_pubkey": pubkey});
        let res = agent_init(&app, &body).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            err["error"]["field"], "description",
            "{description:?}: {err}"
        );
        let aid = &pubkey[..50];
        let sql = format!("SELECT COUNT(*) FROM agents WHERE aid = '{aid}'");
        assert_eq!(app.db_count(&sql), 0, "{description:?} stored an agent");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM agents"), agents);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM accounts"), accounts);

    // Lines (LF or CRLF), tabs, a right-to-left script with its mark, and
    // an emoji joined by U+200D stay: a description is free text.
    let description = "Finds things.\nThen:\r\n\t- summarizes them\nשלום\u{200F} 👩\u{200D}💻";
    let body = json!({"agent_name": "bot", "capabilities": [], "description": description});
    let (status, made) = json_of(agent_init(&app, &body).await).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["description"], description);
    let key = made["login_key"].as_str().expect("login_key");
    let (status, me) = json_of(app.get("/api/acsp/me", key).await).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["agents"][0]["description"], description, "{me}");
}

/// The request schema of `method path` in the served document, its `$ref`
/// followed.
fn body_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let schema =
        &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    follow(doc, schema)
}

fn follow<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    }
}

#[tokio::test]
async fn the_openapi_document_states_the_text_rules_of_names_and_descriptions() {
    let app = spawn_app().await;
    let doc = app.openapi_document().await;
    let init = body_schema(&doc, "post", "/api/acsp/agent-init");
    let submit = body_schema(&doc, "post", "/v1/turn-taking/actions/submit_messages");
    let names = [
        ("agent_name", &init["properties"]["agent_name"]),
        (
            "capabilities[]",
            follow(&doc, &init["properties"]["capabilities"]["items"]),
        ),
        (
            "subject",
            &body_schema(&doc, "post", "/api/acsp/thread/create")["properties"]["subject"],
        ),
        (
            "messages[].sender",
            &follow(&doc, &submit["properties"]["messages"]["items"])["properties"]["sender"],
        ),
        (
            "record_event sender",
            &body_schema(&doc, "post", "/v1/turn-taking/actions/record_event")["properties"]
                ["sender"],
        ),
        (
            "webhook description",
            &body_schema(&doc, "post", "/api/acsp/webhooks")["properties"]["description"],
        ),
    ];
    for (name, schema) in names {
        let text = schema["description"].as_str().unwrap_or_default();
        for rule in ["One visible line", "control characters", "U+202A–U+202E"] {
            assert!(text.contains(rule), "{name}: {rule:?} not in {text:?}");
        }
    }
    // A webhook's empty description is none, not a blank line.
    let hook = &body_schema(&doc, "post", "/api/acsp/webhooks")["properties"]["description"];
    let text = hook["description"].as_str().unwrap_or_default();
    assert!(
        text.contains("An empty string is no description"),
        "{text:?}"
    );
    let text = init["properties"]["description"]["description"]
        .as_str()
        .unwrap_or_default();
    for rule in ["line breaks", "a lone CR", "U+2066–U+2069"] {
        assert!(text.contains(rule), "description: {rule:?} not in {text:?}");
    }
}

/// Other spellings of `id` that the uuid crate reads: braces, a URN, the
/// bare 32 digits, and braces in upper case.
fn other_spellings(id: &str) -> Vec<String> {
    let upper = id.to_ascii_uppercase();
    vec![
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        id.replace('-', ""),
        format!("{{{upper}}}"),
    ]
}

#[tokio::test]
async fn thread_ids_are_refused_in_any_spelling_but_the_hyphenated_one() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.status_rate_limit_per_minute = 0;
    })
    .await;
    let (alice, key) = (&app.alice.aid, &app.key);
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (threads, messages) = (app.stored_threads(), app.stored_messages());
    let fresh = "0190f5a4-7c3e-7b2a-9d1e-3f4a5b6c7d8e";
    let mut spellings = other_spellings(&thread);
    spellings.extend(other_spellings(fresh));
    for id in &spellings {
        let refused = [
            app.get_thread(key, id, &format!("aid={alice}")).await,
            app.get(&format!("/api/acsp/thread?thread_id={id}"), key)
                .await,
            app.post_message(
                key,
                json!({"aid": alice, "thread_id": id, "content": "hello"}),
            )
            .await,
            app.set_status(
                key,
                json!({"aid": alice, "thread_id": id, "status": "closed"}),
            )
            .await,
            app.open_thread(key, json!({ "thread_id": id })).await,
            app.get(&format!("/v1/sse?thread_id={id}"), key).await,
            app.get(&format!("/v1/turn-taking/threads/{id}/turns"), key)
                .await,
            app.post_json(
                "/v1/turn-taking/actions/submit_messages",
                key,
                &json!({"thread_id": id, "messages": [{"sender": "ann", "content": "hi"}]}),
            )
            .await,
        ];
        for res in refused {
            let url = res.url().to_string();
            let err = assert_error(res, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["error"]["field"], "thread_id", "{id} at {url}: {err}");
        }
    }
    assert_eq!(app.stored_threads(), threads, "a refused id made a thread");
    assert_eq!(app.stored_messages(), messages);
    let sql = format!("SELECT status FROM threads WHERE uuid = '{thread}'");
    assert_eq!(app.db_text(&sql).as_deref(), Some("active"));

    // Upper case is the same id, and every answer gives it in lower case.
    let upper = thread.to_ascii_uppercase();
    let (status, read) = json_of(app.get_thread(key, &upper, &format!("aid={alice}")).await).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["thread"]["id"], thread.as_str());
    let posted = app
        .post_message(
            key,
            json!({"aid": alice, "thread_id": upper, "content": "hi"}),
        )
        .await;
    let (status, posted) = json_of(posted).await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["message"]["thread_id"], thread.as_str());

    // open_thread creates a thread under a new id: upper case, then lower
    // case, is one thread, named in lower case both times.
    let (status, opened) = json_of(
        app.open_thread(key, json!({"thread_id": fresh.to_ascii_uppercase()}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["thread"]["id"], fresh);
    assert_eq!(opened["channel"], format!("turn-taking-thread/{fresh}"));
    let (status, again) = json_of(app.open_thread(key, json!({ "thread_id": fresh })).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["thread"]["id"], fresh);
    assert_eq!(app.stored_threads(), threads + 1);
}

/// A `serve --dev` child, killed and reaped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve --dev` on `db` (which has accounts) with `cmd`, and
/// returns the command its banner suggests for a new key.
async fn new_key_command(mut cmd: Command, db: &Path, out: &Path) -> String {
    let child = cmd
        .args(["serve", "--dev", "--bind", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(File::create(out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut server = Running(child);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stdout = std::fs::read_to_string(out).expect("stdout file");
        if let Some(line) = stdout
            .lines()
            .find_map(|l| l.strip_prefix("For a new key: "))
        {
            return line.to_owned();
        }
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!("serve --dev exited ({status}): {stdout}");
        }
        assert!(Instant::now() < deadline, "no banner: {stdout}");
        tokio::time::sleep(POLL).await;
    }
}

/// A command for the binary as a user's shell runs it: none of the
/// variables `cargo test` (or `cargo run`) gives its programs.
fn as_installed(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("CARGO").env_remove("CARGO_PKG_NAME");
    cmd
}

#[tokio::test]
async fn the_dev_banner_suggests_the_command_the_way_the_user_started_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("my db.sqlite");
    let db_arg = db.to_str().expect("UTF-8 path");
    let first = cli_json(&["agent", "create", "--name", "alice", "--db", db_arg]);
    let user = first["user_id"].as_str().expect("user_id");
    let bin = Path::new(BIN);
    let bin_dir = bin.parent().expect("the binary's directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("a PATH");
    let quoted_db = format!("'{db_arg}'");
    let name = bin.file_name().and_then(|n| n.to_str()).expect("a name");

    // Found on PATH: its name, as the user typed it.
    let mut on_path = as_installed(name);
    on_path.env("PATH", &path);
    let out = dir.path().join("on-path.stdout");
    let suggested = new_key_command(on_path, &db, &out).await;
    assert_eq!(
        suggested,
        format!("{name} key create --user {user} --db {quoted_db}")
    );
    // Pasted into the same shell, it mints a key for that account.
    let mut sh = as_installed("sh");
    sh.args(["-c", &suggested]).env("PATH", &path);
    let minted = output_within(sh);
    assert!(minted.status.success(), "{minted:?}");
    let minted: Value = serde_json::from_slice(&minted.stdout).expect("JSON");
    assert_eq!(minted["user_id"], user);
    assert!(minted["login_key"]
        .as_str()
        .is_some_and(|k| k.starts_with("nk_")));

    // By its path: that path.
    let out = dir.path().join("by-path.stdout");
    let suggested = new_key_command(as_installed(BIN), &db, &out).await;
    let bin_word = threadline::cli::shell_quote(BIN);
    assert_eq!(
        suggested,
        format!("{bin_word} key create --user {user} --db {quoted_db}")
    );
    assert!(!suggested.contains("cargo"), "{suggested}");

    // Under cargo (which names the package it runs): `cargo run`, with
    // the profile the binary was built with.
    let mut by_cargo = Command::new(BIN);
    by_cargo
        .env("CARGO", "cargo")
        .env("CARGO_PKG_NAME", "threadline");
    let out = dir.path().join("by-cargo.stdout");
    let suggested = new_key_command(by_cargo, &db, &out).await;
    let run = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "cargo run --release --",
        _ => "cargo run --",
    };
    assert_eq!(
        suggested,
        format!("{run} key create --user {user} --db {quoted_db}")
    );
}

/// The contract closes threads with `thread/status`, a route of ACSP
/// threads (it acts as an agent of the thread); the turn-taking API has no
/// close. A turn-taking thread stays active: `thread/status` on it is 422
/// on `thread_id` for its own account (which can read it), 404 for
/// another, and changes nothing.
#[tokio::test]
async fn a_turn_taking_thread_is_not_closed_through_thread_status() {
    let app = spawn_app().await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    let stranger = app.new_agent("stranger");
    for status in ["closed", "archived", "active"] {
        let body = json!({"aid": app.alice.aid, "thread_id": thread, "status": status});
        let err = assert_error(
            app.set_status(&app.key, body).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(err["error"]["field"], "thread_id", "{err}");
        let body = json!({"aid": stranger.aid, "thread_id": thread, "status": status});
        assert_error(app.set_status(&stranger.key, body).await, 404, "NOT_FOUND").await;
    }
    let sql = format!("SELECT status FROM threads WHERE uuid = '{thread}'");
    assert_eq!(app.db_text(&sql).as_deref(), Some("active"));
    let submitted = app
        .submit(
            &thread,
            json!([{"sender": "ann", "content": "still open?"}]),
        )
        .await;
    assert!(submitted["turn_epoch"].is_number(), "{submitted}");
}
