//! Small gaps, round 16: integers refused in words that did not fit (`-0`,
//! numbers past 64 bits called "a number with a fraction or exponent"), MCP
//! refusals that named the wrong thing (rmcp's 400s as "malformed request",
//! `params` that is not an object as an unknown method, tool arguments in
//! serde's words with Rust's type names), and MCP tool schemas that did not
//! state the rules the server enforces.

use reqwest::Response;
use serde_json::{json, Value};

use threadline::domain::limits::{
    AID_PATTERN, CONTENT_CHARS, IDEMPOTENCY_KEY_CHARS, SUBJECT_CHARS, THREAD_ID_PATTERN,
};

use crate::conformance15::respond_raw;
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp};

const EPOCH_RANGE: &str = "turn_epoch must be an integer from 0 to 9223372036854775807";

/// `-0` is the integer zero (JSON's grammar allows it; parsers read it as
/// a double), and was refused as "a number with a fraction or exponent";
/// so were integers past 64 bits, which have neither. `-0` now reads as 0
/// (the same answer as `0`), and a number past 64 bits, either sign, gets
/// the range in words. Nothing is stored for a refusal.
#[tokio::test]
async fn a_turn_epoch_of_minus_zero_is_zero_and_one_past_64_bits_gets_the_range() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, _) = app.grant_for(&app.key, None).await;
    app.submit(&thread_id, json!([{"sender": "dana", "content": "Hi?"}]))
        .await;
    let body = |epoch: &str| {
        format!(r#"{{"thread_id": "{thread_id}", "content": "Hello.", "turn_epoch": {epoch}}}"#)
    };

    let (status, zero) = json_of(respond_raw(&app, body("0")).await).await;
    assert_eq!(status, 200, "{zero}");
    let (status, minus_zero) = json_of(respond_raw(&app, body("-0")).await).await;
    assert_eq!(status, 200, "-0: {minus_zero}");
    assert_eq!(minus_zero, zero, "-0 answers as 0 does");

    let stored = app.stored_messages();
    for epoch in [
        "99999999999999999999",
        "-99999999999999999999",
        "18446744073709551616",
        "-9223372036854775809",
    ] {
        let error = assert_error(
            respond_raw(&app, body(epoch)).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(error["error"]["message"], EPOCH_RANGE, "{epoch}: {error}");
        assert_eq!(error["error"]["field"], "turn_epoch", "{epoch}: {error}");
    }
    // Written with a fraction or an exponent: that is what it says.
    for epoch in ["1.5", "1e2", "1.0"] {
        let error = assert_error(
            respond_raw(&app, body(epoch)).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(
            error["error"]["message"],
            "turn_epoch must be an integer, not a number with a fraction or exponent",
            "{epoch}: {error}"
        );
    }
    assert_eq!(
        app.stored_messages(),
        stored,
        "a refused reply stored nothing"
    );
}

/// Query-string integers: `-0` is 0 there too, and `1e2` or a number past
/// 64 bits is refused with the range (a query string has no number type:
/// the message says what it must be).
#[tokio::test]
async fn query_integers_read_minus_zero_as_zero_and_refuse_the_rest_with_the_range() {
    let app = spawn_app_with(|_| {}).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    let aid = &app.alice.aid;
    let (status, page) = json_of(
        app.get_thread(&app.key, &thread, &format!("aid={aid}&after=-0&offset=-0"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
    for limit in [
        "-0",
        "0",
        "1e2",
        "99999999999999999999",
        "-99999999999999999999",
        "2.0",
    ] {
        let res = app
            .get_thread(&app.key, &thread, &format!("aid={aid}&limit={limit}"))
            .await;
        let error = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            error["error"]["message"], "limit must be an integer from 1 to 200",
            "{limit}: {error}"
        );
        assert_eq!(error["error"]["field"], "limit", "{limit}: {error}");
    }
}

// ------------------------------------------------------------------- MCP

/// A POST to `/mcp` with `key` and `body`, and extra headers.
pub(crate) async fn mcp_post(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> Response {
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&app.key)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

/// A POST of `body` to `/mcp` as given (not as a client library would build
/// it), with the headers MCP needs: the request's future.
pub(crate) fn mcp_post_raw(
    app: &TestApp,
    body: impl Into<reqwest::Body>,
) -> impl std::future::Future<Output = reqwest::Result<Response>> {
    app.client
        .post(app.url("/mcp"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
}

/// The JSON-RPC answer of a 200 from `/mcp` (a JSON body, or the event
/// stream's `data:` line).
pub(crate) async fn jsonrpc_answer(res: Response) -> Value {
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(&text);
    serde_json::from_str(data.trim()).unwrap_or_else(|_| panic!("not JSON-RPC: {text}"))
}

async fn tool_call(app: &TestApp, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}});
    jsonrpc_answer(mcp_post(app, &body, &[]).await).await
}

/// Tool arguments of the wrong type or out of range were answered in
/// serde's words, with Rust's type names and no field (`failed to
/// deserialize parameters: invalid type: floating point `-0.0`, expected
/// u32`), as a bare text. They are now the API's `VALIDATION_ERROR`, the
/// field named, the range the API takes in words; `-0` reads as 0; and
/// nothing is stored.
#[tokio::test]
async fn mcp_tool_arguments_are_refused_in_the_api_s_words_naming_the_field() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    let aid = app.alice.aid.clone();
    let stored = app.stored_messages();
    for (tool, args, field, message) in [
        (
            "read_thread",
            json!({"thread_id": thread, "aid": aid, "limit": -0.0}),
            "limit",
            "limit must be an integer from 1 to 200".to_owned(),
        ),
        (
            "read_thread",
            json!({"thread_id": thread, "aid": aid, "limit": 1e20}),
            "limit",
            "limit must be an integer from 1 to 200".to_owned(),
        ),
        (
            "read_thread",
            json!({"thread_id": thread, "aid": aid, "limit": "5"}),
            "limit",
            "limit must be an integer, not a string".to_owned(),
        ),
        (
            "list_threads",
            json!({"aid": aid, "offset": -1}),
            "offset",
            format!("offset must be an integer from 0 to {}", i64::MAX),
        ),
        (
            "wait_for_messages",
            json!({"thread_id": thread, "aid": aid, "timeout_secs": 1.5}),
            "timeout_secs",
            "timeout_secs must be an integer, not a number with a fraction or exponent".to_owned(),
        ),
        (
            "wait_for_messages",
            json!({"thread_id": thread, "aid": aid, "after_seq": 9_223_372_036_854_775_808_u64}),
            "after_seq",
            format!("after_seq must be an integer from 0 to {}", i64::MAX),
        ),
        (
            "post_message",
            json!({"thread_id": thread, "aid": aid, "content": 5}),
            "content",
            "content must be a string, not an integer".to_owned(),
        ),
        (
            "post_message",
            json!({"aid": aid, "content": "x"}),
            "thread_id",
            "thread_id is required".to_owned(),
        ),
    ] {
        let answer = tool_call(&app, tool, args.clone()).await;
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{tool} {args}: {answer}");
        let error = &result["structuredContent"]["error"];
        assert_eq!(error["code"], "VALIDATION_ERROR", "{tool} {args}: {answer}");
        assert_eq!(error["status"], 422, "{tool} {args}: {answer}");
        assert_eq!(error["field"], field, "{tool} {args}: {answer}");
        assert_eq!(
            error["message"],
            message.as_str(),
            "{tool} {args}: {answer}"
        );
    }
    assert_eq!(app.stored_messages(), stored, "nothing was posted");

    // `-0` is 0: reading after seq 0 returns the first message.
    let answer = tool_call(
        &app,
        "read_thread",
        json!({"thread_id": thread, "aid": aid, "after": -0.0}),
    )
    .await;
    let page = &answer["result"]["structuredContent"];
    assert_eq!(
        page["messages"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
}

/// rmcp's own refusals (a malformed `Host`, an `MCP-Protocol-Version` it
/// does not speak) came out of the envelope as "malformed request": they
/// now name the header and say what it must be (never echoing it), with
/// rmcp's status, 400.
#[tokio::test]
async fn mcp_transport_refusals_name_the_header_at_fault() {
    let app = spawn_app_with(|_| {}).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for (header, value, field, words) in [
        (
            "host",
            "a b",
            "Host",
            "Host must be a host name or an address",
        ),
        (
            "mcp-protocol-version",
            "1999-01-01",
            "MCP-Protocol-Version",
            "MCP-Protocol-Version must be one of the MCP versions this server speaks: ",
        ),
    ] {
        let res = mcp_post(&app, &ping, &[(header, value)]).await;
        let error = assert_error(res, 400, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["field"], field, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(words), "{message}");
        assert!(
            !message.contains(value),
            "echoes the client's value: {message}"
        );
    }
    // The version a client sends with its initialize must be that
    // initialize's own.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "1"}}});
    let res = mcp_post(&app, &initialize, &[("mcp-protocol-version", "2025-06-18")]).await;
    let error = assert_error(res, 400, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["field"], "MCP-Protocol-Version", "{error}");
}

/// `params` that do not fit a method that exists (`tools/call` without a
/// `name`, an `initialize` without its fields) were answered `-32601 method
/// not found`, the message only the method's name, which sent the client
/// looking for a typo in a method that was right; `params` that is not an
/// object was `422` "the body is not a JSON-RPC 2.0 message". Both are
/// JSON-RPC's `-32602 invalid params` now, saying what is wrong.
#[tokio::test]
async fn mcp_params_that_do_not_fit_their_method_are_invalid_params() {
    let app = spawn_app_with(|_| {}).await;
    for params in [json!([]), json!(["list_agents"]), json!(5), json!("x")] {
        for method in ["tools/list", "tools/call", "ping"] {
            let body = json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params});
            let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
            assert_eq!(answer["id"], 9, "{method} {params}: {answer}");
            assert_eq!(
                answer["error"]["code"], -32602,
                "{method} {params}: {answer}"
            );
            assert_eq!(answer["error"]["message"], "params must be a JSON object");
        }
    }
    for (method, params, message) in [
        (
            "tools/call",
            json!({}),
            "invalid params for tools/call: params.name is required",
        ),
        (
            "tools/call",
            json!({"name": 5}),
            "invalid params for tools/call: params.name must be a string, not an integer",
        ),
        (
            "initialize",
            json!({}),
            "invalid params for initialize: params.protocolVersion is required",
        ),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": "a", "method": method, "params": params});
        let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
        assert_eq!(answer["id"], "a", "{method} {params}: {answer}");
        assert_eq!(
            answer["error"]["code"], -32602,
            "{method} {params}: {answer}"
        );
        assert_eq!(
            answer["error"]["message"], message,
            "{method} {params}: {answer}"
        );
    }
    // An object still works, and an unknown method is still -32601.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "no/such", "params": {}});
    let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
}

/// The tools' input schemas did not state the rules the server enforces
/// (lengths, the one-line rule, id forms, ranges): a client or model could
/// only learn them from a refusal. They now do, from the same constants.
#[tokio::test]
async fn mcp_tool_schemas_state_the_rules_the_server_enforces() {
    let app = spawn_app_with(|_| {}).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let answer = jsonrpc_answer(mcp_post(&app, &body, &[]).await).await;
    let tools = answer["result"]["tools"].as_array().expect("tools");
    let input = |tool: &str, property: &str| -> Value {
        let tool = tools
            .iter()
            .find(|t| t["name"] == tool)
            .unwrap_or_else(|| panic!("no tool {tool}"));
        let schema = tool["inputSchema"]["properties"][property].clone();
        assert!(schema.is_object(), "{tool}.{property}: {schema}");
        schema
    };
    let create_subject = input("create_thread", "subject");
    assert_eq!(
        create_subject["maxLength"], SUBJECT_CHARS,
        "{create_subject}"
    );
    assert_eq!(create_subject["minLength"], 1, "{create_subject}");
    let description = create_subject["description"].as_str().unwrap_or_default();
    assert!(description.contains("One visible line"), "{description}");
    assert!(description.contains("U+202A"), "{description}");
    for (tool, property) in [
        ("post_message", "content"),
        ("create_thread", "first_message"),
    ] {
        let schema = input(tool, property);
        assert_eq!(
            schema["maxLength"], CONTENT_CHARS,
            "{tool}.{property}: {schema}"
        );
    }
    let key = input("post_message", "idempotency_key");
    assert_eq!(key["maxLength"], IDEMPOTENCY_KEY_CHARS, "{key}");
    assert_eq!(key["pattern"], "^[ -~]+$", "{key}");
    for tool in [
        "list_threads",
        "read_thread",
        "create_thread",
        "post_message",
        "set_thread_status",
        "wait_for_messages",
    ] {
        assert_eq!(input(tool, "aid")["pattern"], AID_PATTERN, "{tool}");
    }
    assert_eq!(input("create_thread", "target_aid")["pattern"], AID_PATTERN);
    for tool in [
        "read_thread",
        "post_message",
        "set_thread_status",
        "wait_for_messages",
    ] {
        assert_eq!(
            input(tool, "thread_id")["pattern"],
            THREAD_ID_PATTERN,
            "{tool}"
        );
    }
    for (tool, property, min, max) in [
        ("read_thread", "limit", 1, 200),
        ("list_threads", "limit", 1, 100),
        ("wait_for_messages", "timeout_secs", 1, 60),
        ("read_thread", "after", 0, i64::MAX),
    ] {
        let schema = input(tool, property);
        assert_eq!(schema["minimum"], min, "{tool}.{property}: {schema}");
        assert_eq!(schema["maximum"], max, "{tool}.{property}: {schema}");
    }
    let metadata = input("post_message", "metadata");
    assert!(
        metadata["description"]
            .as_str()
            .unwrap_or_default()
            .contains("16 KiB"),
        "{metadata}"
    );
}

// ------------------------------------------------------------------- CLI

/// A mistyped flag printed clap's whole block: the error, a tip to pass
/// the flag as a value (no command takes a value starting with `-`), the
/// usage line, blank lines between. It is now what is wrong, any "did you
/// mean", and where to read more, naming the command; exit 2 as before,
/// and nothing created.
#[test]
fn a_bad_command_line_says_what_is_wrong_and_which_help_to_read() {
    use crate::helpers::process::run_cli;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    for (args, first, help) in [
        (
            vec!["serve", "--nope", "--db", db_arg],
            "error: unexpected argument '--nope' found",
            "For more information, try 'threadline serve --help'.",
        ),
        (
            vec!["--nope"],
            "error: unexpected argument '--nope' found",
            "For more information, try 'threadline --help'.",
        ),
        (
            vec![
                "key",
                "create",
                "--user",
                "usr_0123456789abcdef",
                "--nope",
                "--db",
                db_arg,
            ],
            "error: unexpected argument '--nope' found",
            "For more information, try 'threadline key create --help'.",
        ),
        (
            vec![
                "--log-format",
                "text",
                "serve",
                "--workers",
                "lots",
                "--db",
                db_arg,
            ],
            "error: invalid value 'lots' for '--workers': must be a whole number",
            "For more information, try 'threadline serve --help'.",
        ),
    ] {
        let out = run_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines, [first, help], "{args:?}: {stderr}");
    }
    // A "did you mean" stays, on its own line.
    let out = run_cli(&["serve", "--dbb", db_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("similar argument exists: '--db'"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Usage:") && !stderr.contains("\n\n"),
        "{stderr}"
    );
    assert!(!db.exists(), "a command-line mistake created the database");
}
