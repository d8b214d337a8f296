//! What a new user meets first: error messages that say what to do next.

use serde_json::json;

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, Ws};

#[tokio::test]
async fn a_used_inbox_grant_is_refused_with_the_route_that_gives_a_new_one() {
    let app = spawn_app().await;
    let res = app
        .post_json(
            "/api/acsp/realtime/open",
            &app.key,
            &json!({"aid": app.bob.aid}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let url = body["realtime"]["connect_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let ws = Ws::connect(&url).await;
    let res = app
        .client
        .get(url.replacen("ws://", "http://", 1))
        .send()
        .await
        .expect("request");
    let body = assert_error(res, 401, "UNAUTHORIZED").await;
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("/api/acsp/realtime/open"), "{message}");
    assert!(message.contains("open_thread"), "{message}");
    ws.close().await;
}

#[tokio::test]
async fn agent_init_without_capabilities_says_it_is_required_and_what_to_send() {
    let app = spawn_app_with(|c| c.open_registration = true).await;
    let res = app
        .client
        .post(app.url("/api/acsp/agent-init"))
        .json(&json!({"agent_name": "bot"}))
        .send()
        .await
        .expect("request");
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "capabilities");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("required") && message.contains("[]"),
        "{message}"
    );
}

/// The examples a user copies, as `cargo test` builds them (next to this
/// test binary's `deps/` folder).
fn example_binary(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

#[test]
fn every_examples_help_exits_0_with_its_usage_and_never_shows_the_key() {
    for name in ["chat", "conversation", "listen"] {
        let Some(bin) = example_binary(name) else {
            // `cargo test --test api` does not build examples; `cargo test` does.
            eprintln!("skipped: examples/{name} is not built (run the whole `cargo test`)");
            continue;
        };
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--help")
            .env("THREADLINE_KEY", "nk_do-not-print-me");
        let out = crate::helpers::process::output_within(cmd);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} --help: {stdout}");
        assert!(
            stdout.contains(&format!("Usage: {name}")),
            "{name}: {stdout}"
        );
        assert!(
            stdout.contains("THREADLINE_KEY"),
            "{name} names the variable: {stdout}"
        );
        assert!(
            !stdout.contains("do-not-print-me"),
            "{name} printed the key: {stdout}"
        );
    }
}
