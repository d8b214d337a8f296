//! Small things a user meets, round 17: a compressed body answered
//! "malformed JSON", two `Authorization` headers of which the first was
//! used, MCP's bare `-32601` for an unknown method, `-1` for a numeric
//! flag read as an unknown argument, and each command of the binary given
//! bad input.

use std::path::Path;
use std::process::Output;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::conformance16::stored;
use crate::helpers::process::{non_log_lines, output_within, provision, run_cli, BIN};
use crate::helpers::{assert_error, spawn_app_with, TestApp, WAIT};
use crate::tidy16::{jsonrpc_answer, mcp_post};

/// A request with the given headers (each sent as given, repeats kept) and
/// a raw body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Response {
    let mut req = app.client.request(method, app.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    req.send().await.expect("request")
}

// ------------------------------------------------------------ Content-Encoding

/// Bodies are read as sent (`Content-Encoding` is not decoded), so a
/// gzipped body was answered `422` "malformed JSON": the client went
/// looking for a fault in its JSON. A body sent with any coding but
/// `identity` is now `422` on `Content-Encoding`, saying to send it
/// uncompressed, on every route that reads a body (the open registration
/// and `/mcp` too), and nothing is stored. `identity` is the body as sent.
#[tokio::test]
async fn a_compressed_body_is_refused_naming_content_encoding_and_nothing_is_stored() {
    let app = spawn_app_with(|c| {
        c.open_registration = true;
        c.ip_rate_limit_per_minute = 1_000;
        c.registration_rate_limit_per_minute = 1_000;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let message =
        json!({"aid": app.alice.aid, "thread_id": thread, "content": "hello"}).to_string();
    // Each route's body would be taken as it is: only the header is wrong.
    let bodies = [
        ("/api/acsp/thread/message", message.clone()),
        (
            "/api/acsp/thread/create",
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "s"}).to_string(),
        ),
        (
            "/v1/turn-taking/actions/submit_messages",
            json!({"thread_id": turn, "messages": [{"sender": "dana", "content": "Hi?"}]})
                .to_string(),
        ),
        (
            "/api/acsp/agent-init",
            json!({"agent_name": "zed", "capabilities": []}).to_string(),
        ),
        (
            "/mcp",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string(),
        ),
    ];
    let auth = format!("Bearer {}", app.key);
    let before = stored(&app);
    for coding in ["gzip", "br", "GZIP", "deflate", "identity, gzip", "zstd"] {
        for (path, body) in &bodies {
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("content-encoding", coding),
            ];
            let res = send(
                &app,
                Method::POST,
                path,
                &headers,
                Some(body.clone().into()),
            )
            .await;
            let error = assert_error(res, 422, "VALIDATION_ERROR").await;
            let said = error["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(
                error["error"]["field"], "Content-Encoding",
                "{coding} {path}: {error}"
            );
            assert!(
                said.contains("is not supported")
                    && said.contains("send the request body uncompressed"),
                "{coding} {path}: {error}"
            );
            assert!(!said.contains("malformed JSON"), "{coding} {path}: {error}");
        }
    }
    // A real gzip stream (its magic bytes, then anything), and a coding
    // that is not a short token: the value is not repeated then.
    let long = "x".repeat(3_000);
    for (coding, body) in [
        ("gzip", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]),
        (long.as_str(), message.clone().into_bytes()),
    ] {
        let headers = [
            ("authorization", auth.as_str()),
            ("content-encoding", coding),
        ];
        let res = send(
            &app,
            Method::POST,
            "/api/acsp/thread/message",
            &headers,
            Some(body),
        )
        .await;
        let error = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["field"], "Content-Encoding", "{error}");
        let said = error["error"]["message"].as_str().unwrap_or_default();
        assert!(said.len() < 200 && !said.contains("xxx"), "{said}");
    }
    // A made-up key is still refused for the key first.
    let made_up = format!("Bearer nk_{}", "Q".repeat(43));
    let headers = [
        ("authorization", made_up.as_str()),
        ("content-encoding", "gzip"),
    ];
    let res = send(
        &app,
        Method::POST,
        "/api/acsp/thread/message",
        &headers,
        Some(message.clone().into()),
    )
    .await;
    assert_error(res, 401, "UNAUTHORIZED").await;
    assert_eq!(stored(&app), before, "a refused body stored something");

    // `identity` (any case, or empty) is the body as sent.
    for coding in ["identity", "Identity", ""] {
        let headers = [
            ("authorization", auth.as_str()),
            ("content-encoding", coding),
        ];
        let res = send(
            &app,
            Method::POST,
            "/api/acsp/thread/message",
            &headers,
            Some(message.clone().into()),
        )
        .await;
        assert_eq!(
            res.status(),
            201,
            "{coding:?}: {}",
            res.text().await.unwrap()
        );
    }
}

// --------------------------------------------------- two Authorization headers

const ONE_AUTHORIZATION: &str = "send one Authorization header: this request has more than one";

/// A request with two `Authorization` headers was served with the first
/// (and refused or served by a proxy that keeps the last): which key a
/// client meant is a guess (RFC 9110 allows a header twice only where its
/// value is a list). It is now `401` saying to send one, on every route
/// that takes a key, whether the keys are the same, differ, or the other
/// is not a key; nothing is stored. One header works as before.
#[tokio::test]
async fn two_authorization_headers_are_401_on_every_keyed_route_and_store_nothing() {
    let app = spawn_app_with(|c| {
        c.ip_rate_limit_per_minute = 1_000;
        c.rate_limit_per_minute = 1_000;
        c.metrics_token = Some("metrics-token-for-tidy17".parse().expect("a token"));
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (turn, _) = app.grant_for(&app.key, None).await;
    let carol = app.new_agent("carol");
    let (alice, key) = (app.alice.aid.as_str(), app.key.as_str());
    let post = |path: &str, body: Value| (Method::POST, path.to_owned(), Some(body.to_string()));
    let get = |path: String| (Method::GET, path, None);
    // Requests that succeed with one header.
    let requests = vec![
        get("/api/acsp/me".into()),
        get(format!("/api/acsp/threads?aid={alice}")),
        get(format!("/api/acsp/thread/{thread}?aid={alice}")),
        post(
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": app.bob.aid, "subject": "s"}),
        ),
        post(
            "/api/acsp/thread/message",
            json!({"aid": alice, "thread_id": thread, "content": "hi"}),
        ),
        post(
            "/api/acsp/thread/status",
            json!({"aid": alice, "thread_id": thread, "status": "closed"}),
        ),
        post("/api/acsp/realtime/open", json!({"aid": alice})),
        post("/v1/turn-taking/actions/open_thread", json!({})),
        post(
            "/v1/turn-taking/actions/submit_messages",
            json!({"thread_id": turn, "messages": [{"sender": "dana", "content": "Hi?"}]}),
        ),
        post(
            "/v1/turn-taking/actions/respond",
            json!({"thread_id": turn, "content": "Hello.", "turn_epoch": 0}),
        ),
        post(
            "/v1/turn-taking/actions/record_event",
            json!({"thread_id": turn, "type": "typing_start", "sender": "dana"}),
        ),
        get(format!("/v1/turn-taking/threads/{turn}/turns")),
        get(format!("/v1/sse?thread_id={turn}")),
        get("/api/acsp/webhooks".into()),
        post(
            "/api/acsp/webhooks",
            json!({"url": "https://example.com/hook", "events": ["thread.message"]}),
        ),
        post(
            "/mcp",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
        ),
        // Wrong in what they send too: refused for the headers first.
        post(
            "/api/acsp/thread/message",
            json!({"aid": alice, "thread_id": thread, "content": ""}),
        ),
        get(format!("/api/acsp/thread/{thread}?aid={alice}&limit=0")),
    ];
    let bearer = |k: &str| format!("Bearer {k}");
    let pairs = [
        (bearer(key), bearer(key)),
        (bearer(key), bearer(&carol.key)),
        (bearer(key), "Basic dXNlcjpwYXNz".to_owned()),
        ("Bearer nope".to_owned(), bearer(key)),
    ];
    let before = stored(&app);
    for (method, path, body) in &requests {
        for (first, second) in &pairs {
            let headers = [
                ("authorization", first.as_str()),
                ("authorization", second.as_str()),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ];
            let res = send(
                &app,
                method.clone(),
                path,
                &headers,
                body.clone().map(String::into_bytes),
            )
            .await;
            // Checked before the body is read: a served event stream never ends.
            assert_eq!(
                res.status(),
                401,
                "{method} {path} with {first:?}, {second:?}"
            );
            let error = assert_error(res, 401, "UNAUTHORIZED").await;
            assert_eq!(
                error["error"]["message"], ONE_AUTHORIZATION,
                "{method} {path}: {error}"
            );
        }
    }
    assert_eq!(stored(&app), before, "a refused request stored something");

    // `/metrics` with its token: the same.
    let token = bearer("metrics-token-for-tidy17");
    let headers = [
        ("authorization", token.as_str()),
        ("authorization", token.as_str()),
    ];
    let error = assert_error(
        send(&app, Method::GET, "/metrics", &headers, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(error["error"]["message"], ONE_AUTHORIZATION, "{error}");
    let res = send(&app, Method::GET, "/metrics", &headers[..1], None).await;
    assert_eq!(res.status(), 200);

    // One header: served.
    for (method, path, body) in &requests[..2] {
        let auth = bearer(key);
        let headers = [("authorization", auth.as_str())];
        let res = send(
            &app,
            method.clone(),
            path,
            &headers,
            body.clone().map(String::into_bytes),
        )
        .await;
        assert_eq!(res.status(), 200, "{method} {path}");
    }
}

// ----------------------------------------------------------------------- MCP

/// An unknown method was answered with rmcp's bare `-32601`, its message
/// only the method's name: nothing said that the name was the problem or
/// what would be right. It now names the method (cut short when long) and
/// lists the methods this server speaks; so do MCP's own methods that
/// this server does not serve (`prompts/list`, which some clients call
/// unasked). A method that is right with `params` that do not fit is
/// still `-32602` saying why.
#[tokio::test]
async fn an_unknown_mcp_method_is_named_with_the_methods_the_server_speaks() {
    let app = spawn_app_with(|_| {}).await;
    let long = "m".repeat(120);
    for method in ["tool/call", "tools/calls", "prompts/list", long.as_str()] {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": {}});
        let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
        assert_eq!(answer["id"], 7, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], -32601, "{method}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        let shown: String = method.chars().take(64).collect();
        assert!(
            message.starts_with(&format!("method not found: \"{shown}\"")),
            "{method}: {message}"
        );
        assert!(message.len() < 300, "{method}: {message}");
        for spoken in ["initialize", "tools/list", "tools/call", "resources/read"] {
            assert!(message.contains(spoken), "{method}: {message}");
        }
    }
    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {}});
    let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(
        answer["error"]["message"], "invalid params for tools/call: params.name is required",
        "{answer}"
    );

    // A client of MCP 2026-07-28 gets the transport's 404 for an unknown
    // method, which the envelope called "no such route": it says the
    // same as the JSON-RPC error now. And the header that version asks
    // for is named when it is left out (was "the MCP transport refused
    // the request").
    const V: &str = "2026-07-28";
    let meta = json!({"io.modelcontextprotocol/protocolVersion": V,
                      "io.modelcontextprotocol/clientInfo": {"name": "probe", "version": "1"},
                      "io.modelcontextprotocol/clientCapabilities": {}});
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "no/such", "params": {"_meta": meta}});
    let headers = [("mcp-protocol-version", V), ("mcp-method", "no/such")];
    let error = assert_error(mcp_post(&app, &body, &headers).await, 404, "NOT_FOUND").await;
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("method not found: \"no/such\"") && message.contains("tools/call"),
        "{error}"
    );
    let error = assert_error(
        mcp_post(&app, &body, &headers[..1]).await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(error["error"]["field"], "Mcp-Method", "{error}");
    // The same request with a method served is answered.
    let body =
        json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"_meta": meta}});
    let headers = [("mcp-protocol-version", V), ("mcp-method", "tools/list")];
    let answer = jsonrpc_answer(mcp_post(&app, &body, &headers).await).await;
    assert!(answer["result"]["tools"].is_array(), "{answer}");
}

/// The same over stdio (`threadline mcp`), where a client speaks JSON-RPC
/// lines to the binary: an unknown method is named, with the methods.
#[tokio::test]
async fn an_unknown_method_over_stdio_is_named_with_the_methods_the_server_speaks() {
    let app = spawn_app_with(|_| {}).await;
    let (_child, mut stdin, mut lines) = crate::helpers::process::mcp_stdio(&app.base, &app.key);
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "probe", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "no/such/method", "params": {}}),
    ] {
        let line = format!("{message}\n");
        stdin.write_all(line.as_bytes()).await.expect("write");
    }
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.expect("read").expect("a line");
            let answer: Value = serde_json::from_str(&line).expect("JSON-RPC");
            if answer["id"] == 2 {
                return answer;
            }
        }
    })
    .await
    .expect("answered in time");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("method not found: \"no/such/method\"")
            && message.contains("tools/call"),
        "{message}"
    );
}

// -------------------------------------------------------------- command line

/// The flags of every subcommand that take a number, by the type they are
/// read into, as (subcommand words, flag): found from the command line's
/// own definition, so a new numeric flag is checked too.
fn numeric_flags() -> Vec<(Vec<String>, String)> {
    use clap::CommandFactory;
    use std::any::TypeId;
    let numeric = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<f64>(),
    ];
    fn walk(
        command: &clap::Command,
        path: Vec<String>,
        numeric: &[TypeId],
        out: &mut Vec<(Vec<String>, String)>,
    ) {
        for arg in command.get_arguments() {
            let id = arg.get_value_parser().type_id();
            if let Some(long) = arg.get_long() {
                if numeric.iter().any(|t| id == *t) {
                    out.push((path.clone(), format!("--{long}")));
                }
            }
        }
        for sub in command.get_subcommands() {
            let mut path = path.clone();
            path.push(sub.get_name().to_owned());
            walk(sub, path, numeric, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &threadline::config::Cli::command(),
        Vec::new(),
        &numeric,
        &mut out,
    );
    out
}

/// `--idempotency-days -1` was "unexpected argument '-1' found" (clap
/// reads anything that starts with `-` as a flag): the user was told the
/// number was a stray argument, not that it was out of range. Every
/// numeric flag of every subcommand now answers a negative number as a
/// bad value for that flag, in the one-line form (exit 2), and says what
/// the flag takes; a fraction or a number too large likewise.
#[test]
fn a_negative_number_for_a_numeric_flag_is_a_bad_value_for_that_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db = db.to_str().expect("UTF-8 path");
    let flags = numeric_flags();
    let names: Vec<&str> = flags.iter().map(|(_, f)| f.as_str()).collect();
    for expected in [
        "--idempotency-days",
        "--threads-older-than-days",
        "--timeout-secs",
        "--grant-ttl-secs",
        "--rate-limit-per-minute",
        "--workers",
        "--pace-scale",
        "--webhook-retry-schedule",
    ] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    let mut wrong = Vec::new();
    for (path, flag) in &flags {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.extend([flag.as_str(), "-1", "--db", db]);
        if path.first().map(String::as_str) != Some("serve")
            && path.first().map(String::as_str) != Some("prune")
        {
            // healthcheck takes no --db.
            args.truncate(args.len() - 2);
        }
        let out = run_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines = non_log_lines(&stderr);
        let first = lines.first().copied().unwrap_or_default();
        let fine = if flag == "--pace-scale" {
            // A float: read, then refused by its range (exit 1).
            out.status.code() == Some(1)
                && first.contains("--pace-scale must be between 0 and 100 (got -1)")
        } else {
            out.status.code() == Some(2)
                && first.starts_with(&format!("error: invalid value '-1' for '{flag}': "))
                && (first.ends_with("not negative") || first.contains(" from "))
        };
        if !fine || stderr.contains("unexpected argument") || stderr.contains("panicked") {
            wrong.push(format!("{args:?}: {:?} {stderr}", out.status.code()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    for (value, says) in [
        ("1.5", "must be a whole number"),
        ("99999999999999999999999", "too large a number"),
        ("-1", "must be a whole number, not negative"),
        ("lots", "must be a whole number"),
    ] {
        let out = run_cli(&["serve", "--grant-ttl-secs", value, "--db", db]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(
            non_log_lines(&stderr)[0],
            format!("error: invalid value '{value}' for '--grant-ttl-secs': {says}"),
            "{stderr}"
        );
    }
    // A flag read by a parser of ours says it the same way.
    let out = run_cli(&["serve", "--thread-slice-us", "-1", "--db", db]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        non_log_lines(&stderr)[0]
            .starts_with("error: invalid value '-1' for '--thread-slice-us': "),
        "{stderr}"
    );
    let out = run_cli(&["prune", "--idempotency-days", "-1", "--db", db]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        non_log_lines(&stderr),
        [
            "error: invalid value '-1' for '--idempotency-days': must be a whole number from 0 to 36500",
            "For more information, try 'threadline prune --help'."
        ],
        "{stderr}"
    );
    assert!(
        !Path::new(db).exists(),
        "a bad command line made a database"
    );
}

/// What a failed command printed: its exit code and the lines of stderr
/// that are not log records, or why it does not count as a clear failure.
fn one_clear_line(out: &Output) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = non_log_lines(&stderr);
    if out.status.success() {
        return Err(format!("succeeded: {stderr}"));
    }
    if [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "Error {",
        "Os {",
    ]
    .iter()
    .any(|n| stderr.contains(n))
    {
        return Err(format!("a panic or a debug dump: {stderr}"));
    }
    match lines.as_slice() {
        [line] if line.starts_with("error: ") && line.len() < 400 => Ok((*line).to_owned()),
        _ => Err(format!("not one error line: {stderr}")),
    }
}

/// Every command, given what a new user gets wrong (a database path that
/// is a directory, not SQLite, or cannot be written; ids of the wrong form
/// or of nothing; a server that is not there), fails with one line on
/// stderr that says what is wrong, and a non-zero exit: no panic, no Rust
/// debug output.
#[test]
fn every_command_given_bad_input_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("threadline.db");
    let account = provision(&db_path);
    let db = db_path.to_str().expect("UTF-8 path");
    let folder = dir.path().to_str().expect("UTF-8 path");
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some text\n".repeat(200),
    )
    .expect("write");
    let junk = junk.to_str().expect("UTF-8 path");
    let missing = dir.path().join("missing.db");
    let missing = missing.to_str().expect("UTF-8 path");
    let backup = dir.path().join("copy.db");
    let backup = backup.to_str().expect("UTF-8 path");
    let (_held, port) = crate::helpers::process::refusing_port();
    let down = format!("http://127.0.0.1:{port}");
    let down_health = format!("{down}/healthz");
    let no_thread = "01890a5d-ac96-774b-bcce-b302099a8057";
    let no_aid = "0".repeat(50);
    let no_user = "usr_0000000000000000";

    // (what, args, a word the line must hold)
    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    let mut case = |what: &str, args: &[&str], says: &'static str| {
        cases.push((
            what.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
            says,
        ))
    };
    // A database path that is a directory, not SQLite, unwritable (under
    // /proc even for root), or missing, for every command that takes one.
    let commands: Vec<Vec<&str>> = vec![
        vec!["serve", "--bind", "127.0.0.1:0"],
        vec!["agent", "create", "--name", "x"],
        vec!["agent", "list"],
        vec!["agent", "rename", &no_aid, "--name", "y"],
        vec!["key", "create", "--user", &account.user_id],
        vec!["key", "list", "--user", &account.user_id],
        vec!["key", "revoke", &account.key],
        vec!["key", "revoke-all", "--user", &account.user_id],
        vec!["thread", "delete", no_thread],
        vec!["backup", "--to", backup],
        vec!["prune"],
        vec!["webhook", "list", "--user", &account.user_id],
        vec![
            "webhook",
            "create",
            "--user",
            &account.user_id,
            "--url",
            "http://127.0.0.1:9/h",
            "--allow-private",
        ],
        vec!["webhook", "delete", "--user", &account.user_id, "wh_x"],
    ];
    for command in &commands {
        for (what, path, says) in [
            ("a directory", folder, "is a directory"),
            ("not SQLite", junk, "database"),
            ("unwritable", "/proc/version", "database"),
        ] {
            let mut args = command.clone();
            args.extend(["--db", path]);
            case(&format!("{} on {what}", command.join(" ")), &args, says);
        }
        if !(command.starts_with(&["agent", "create"]) || command[0] == "serve") {
            let mut args = command.clone();
            args.extend(["--db", missing]);
            case(
                &format!("{} on a missing file", command.join(" ")),
                &args,
                "no database",
            );
        }
    }
    // Ids of the wrong form, and of nothing.
    for (what, args, says) in [
        (
            "agent create, unknown user",
            vec!["agent", "create", "--name", "x", "--user", no_user],
            "no account",
        ),
        (
            "agent create, not a user id",
            vec!["agent", "create", "--name", "x", "--user", "bob"],
            "usr_",
        ),
        (
            "agent create, long name",
            vec!["agent", "create", "--name", &"n".repeat(300)],
            "name",
        ),
        (
            "agent list, unknown user",
            vec!["agent", "list", "--user", no_user],
            "no account",
        ),
        (
            "agent rename, unknown aid",
            vec!["agent", "rename", &no_aid, "--name", "y"],
            "no agent",
        ),
        (
            "agent rename, not an aid",
            vec!["agent", "rename", "abc", "--name", "y"],
            "aid",
        ),
        (
            "agent rename, empty name",
            vec!["agent", "rename", &account.alice, "--name", ""],
            "name",
        ),
        (
            "key create, unknown user",
            vec!["key", "create", "--user", no_user],
            "no account",
        ),
        (
            "key list, not a user id",
            vec!["key", "list", "--user", "x"],
            "usr_",
        ),
        (
            "key revoke, not a key",
            vec!["key", "revoke", "nk_short"],
            "login key",
        ),
        (
            "key revoke-all, unknown user",
            vec!["key", "revoke-all", "--user", no_user],
            "no account",
        ),
        (
            "thread delete, unknown",
            vec!["thread", "delete", no_thread],
            "no thread",
        ),
        (
            "thread delete, not an id",
            vec!["thread", "delete", "42"],
            "thread_id",
        ),
        (
            "webhook list, unknown user",
            vec!["webhook", "list", "--user", no_user],
            "no account",
        ),
        (
            "webhook delete, unknown",
            vec!["webhook", "delete", "--user", &account.user_id, "wh_nope"],
            "no webhook",
        ),
        (
            "webhook create, bad url",
            vec![
                "webhook",
                "create",
                "--user",
                &account.user_id,
                "--url",
                "not a url",
            ],
            "url",
        ),
        (
            "webhook create, bad event",
            vec![
                "webhook",
                "create",
                "--user",
                &account.user_id,
                "--url",
                "http://127.0.0.1:9/h",
                "--allow-private",
                "--events",
                "thread.nope",
            ],
            "event",
        ),
        (
            "backup onto the database",
            vec!["backup", "--to", db],
            "backup",
        ),
        (
            "backup into a missing directory",
            vec!["backup", "--to", "/nonexistent/dir/copy.db"],
            "directory /nonexistent/dir does not exist",
        ),
        (
            "key revoke, nothing on stdin",
            vec!["key", "revoke"],
            "no login key given",
        ),
        (
            "backup onto a directory",
            vec!["backup", "--to", folder],
            "is a directory",
        ),
    ] {
        let mut args = args;
        args.extend(["--db", db]);
        case(what, &args, says);
    }
    // A server that is not there, or a URL that is not one.
    case(
        "healthcheck, down",
        &["healthcheck", "--url", &down_health],
        "127.0.0.1",
    );
    case(
        "healthcheck, not http",
        &["healthcheck", "--url", "https://x/healthz"],
        "http://",
    );
    case(
        "healthcheck, no host",
        &["healthcheck", "--url", "http://:80/healthz"],
        "host",
    );
    case(
        "healthcheck, bad port",
        &["healthcheck", "--url", "http://127.0.0.1:99999/healthz"],
        "127.0.0.1",
    );
    case("mcp, down", &["mcp", "--url", &down], "did not answer");
    case(
        "agent list, PostgreSQL down",
        &[
            "agent",
            "list",
            "--database-url",
            &format!("postgres://postgres@127.0.0.1:{port}/x"),
        ],
        "cannot connect",
    );
    case(
        "agent list, not a database URL",
        &["agent", "list", "--database-url", "not a url"],
        "database",
    );
    case(
        "mcp, not a url",
        &["mcp", "--url", "localhost:8080"],
        "http://",
    );
    case(
        "serve, bad bind",
        &["serve", "--bind", "nowhere", "--db", db],
        "nowhere",
    );
    case(
        "serve, bad public url",
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--public-url",
            "http://",
            "--db",
            db,
        ],
        "public-url",
    );

    let mut wrong = Vec::new();
    for (what, args, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = std::process::Command::new(BIN);
        command
            .args(&args)
            .env_remove("RUST_LOG")
            .env("THREADLINE_KEY", &account.key);
        let out = output_within(command);
        match one_clear_line(&out) {
            Ok(line) if line.to_lowercase().contains(&says.to_lowercase()) => {
                println!("{what}: {line}");
            }
            Ok(line) => wrong.push(format!("{what}: does not say {says:?}: {line}")),
            Err(why) => wrong.push(format!("{what}: {why}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
