//! Self-service registration: POST /api/acsp/agent-init (off by default, 201
//! when opened, limited per client IP) and the key it hands out.

use reqwest::Response;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

/// A server with registration open and its per-IP limit as given.
async fn open_app(per_minute: u32) -> TestApp {
    spawn_app_with(|c| {
        c.open_registration = true;
        c.registration_rate_limit_per_minute = per_minute;
    })
    .await
}

async fn agent_init(app: &TestApp, body: &Value) -> Response {
    app.client
        .post(app.url("/api/acsp/agent-init"))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Registers an agent, expecting 201; returns the body.
async fn register(app: &TestApp, body: Value) -> Value {
    let (status, body) = json_of(agent_init(app, &body).await).await;
    assert_eq!(status, 201, "{body}");
    body
}

fn agents(app: &TestApp) -> i64 {
    app.db_count("SELECT COUNT(*) FROM agents")
}

fn accounts(app: &TestApp) -> i64 {
    app.db_count("SELECT COUNT(*) FROM accounts")
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn registration_is_forbidden_unless_the_server_opens_it() {
    let app = spawn_app().await;
    let res = agent_init(
        &app,
        &json!({"agent_name": "bot", "capabilities": ["chat"]}),
    )
    .await;
    assert_error(res, 403, "FORBIDDEN").await;
    assert_eq!(agents(&app), 2, "only the seed agents");
    assert_eq!(accounts(&app), 1);
}

#[tokio::test]
async fn an_open_server_registers_an_agent_and_returns_a_working_key() {
    let app = open_app(5).await;
    let body = register(
        &app,
        json!({"agent_name": "ResearchBot", "capabilities": ["search", "summarize"],
               "description": "Finds things", "metadata": {"team": "q4", "n": 2}}),
    )
    .await;
    let aid = body["aid"].as_str().unwrap();
    assert!(is_lower_hex(aid, 50), "aid: {aid}");
    let key = body["login_key"].as_str().unwrap();
    assert!(
        key.len() == 46
            && key.starts_with("nk_")
            && key[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "login key shape: {key}"
    );
    assert_eq!(body["agent_name"], "ResearchBot");
    assert_eq!(body["capabilities"], json!(["search", "summarize"]));
    assert_eq!(body["description"], "Finds things");
    assert_eq!(body["metadata"], json!({"team": "q4", "n": 2}));
    let user_id = body["user_id"].as_str().unwrap();
    assert!(
        user_id.starts_with("usr_") && is_lower_hex(&user_id[4..], 16),
        "user id: {user_id}"
    );
    assert_eq!(agents(&app), 3);
    assert_eq!(accounts(&app), 2, "a new account");

    // The key works, as the new agent, which is its account's only agent.
    let res = app
        .create_thread(
            key,
            json!({"aid": aid, "target_aid": app.alice.aid, "first_message": "hi"}),
        )
        .await;
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    let (status, list) = json_of(app.list_threads(key, "").await).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["threads"][0]["peer_aid"], app.alice.aid.as_str());
    // And it cannot act as anybody else.
    let res = app
        .create_thread(
            key,
            json!({"aid": app.bob.aid, "target_aid": app.alice.aid}),
        )
        .await;
    assert_error(res, 403, "FORBIDDEN").await;
}

#[tokio::test]
async fn the_login_key_is_stored_only_as_its_sha256() {
    let app = open_app(5).await;
    let body = register(&app, json!({"agent_name": "bot", "capabilities": []})).await;
    let key = body["login_key"].as_str().unwrap();
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM login_keys WHERE key_hash = {}",
            app.blob_literal(&hash)
        )),
        1,
        "the SHA-256 of the key is stored"
    );
    assert_eq!(
        app.db_count(&format!(
            "SELECT COUNT(*) FROM login_keys WHERE CAST(key_hash AS TEXT) = '{key}'"
        )),
        0,
        "the key itself is not"
    );
    // Nowhere in the database files either (main file and write-ahead log).
    let mut files = vec![app.db_path.clone()];
    files.push(app.db_path.with_extension("db-wal"));
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            let found = bytes.windows(key.len()).any(|w| w == key.as_bytes());
            assert!(
                !found,
                "the login key is in {} in plain text",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn a_public_key_gives_the_aid_its_first_50_hex_digits_lowercased() {
    let app = open_app(5).await;
    let pubkey = "ABCDEF0123456789".repeat(4);
    let body = register(
        &app,
        json!({"agent_name": "keyed", "capabilities": ["sign"], "ed25519_pubkey": pubkey}),
    )
    .await;
    assert_eq!(body["aid"], pubkey[..50].to_ascii_lowercase());
}

#[tokio::test]
async fn the_same_public_key_twice_is_409_and_stores_nothing() {
    let app = open_app(5).await;
    let pubkey = "0f".repeat(32);
    register(
        &app,
        json!({"agent_name": "first", "capabilities": [], "ed25519_pubkey": pubkey}),
    )
    .await;
    let (agents_before, accounts_before) = (agents(&app), accounts(&app));
    for (case, key) in [
        ("the same key", pubkey.clone()),
        ("in upper case", pubkey.to_uppercase()),
    ] {
        let res = agent_init(
            &app,
            &json!({"agent_name": "second", "capabilities": [], "ed25519_pubkey": key}),
        )
        .await;
        assert_eq!(res.status(), 409, "{case}");
        // API.md names no code for this 409; the server says CONFLICT.
        assert_error(res, 409, "CONFLICT").await;
    }
    assert_eq!(agents(&app), agents_before);
    assert_eq!(accounts(&app), accounts_before, "no orphan account");
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM login_keys"),
        2,
        "no orphan key"
    );
}

#[tokio::test]
async fn missing_or_invalid_registration_fields_are_422_naming_the_field() {
    let app = open_app(0).await;
    let cases = [
        (
            "agent_name missing",
            json!({"capabilities": ["x"]}),
            "agent_name",
        ),
        (
            "capabilities missing",
            json!({"agent_name": "bot"}),
            "capabilities",
        ),
        (
            "agent_name empty",
            json!({"agent_name": "", "capabilities": []}),
            "agent_name",
        ),
        (
            "agent_name of 101",
            json!({"agent_name": "n".repeat(101), "capabilities": []}),
            "agent_name",
        ),
        (
            "capabilities a string",
            json!({"agent_name": "bot", "capabilities": "chat"}),
            "capabilities",
        ),
        (
            "metadata an array",
            json!({"agent_name": "bot", "capabilities": [], "metadata": []}),
            "metadata",
        ),
        (
            "ed25519_pubkey too short",
            json!({"agent_name": "bot", "capabilities": [], "ed25519_pubkey": "ab"}),
            "ed25519_pubkey",
        ),
        (
            "ed25519_pubkey not hex",
            json!({"agent_name": "bot", "capabilities": [], "ed25519_pubkey": "z".repeat(64)}),
            "ed25519_pubkey",
        ),
    ];
    for (case, body, field) in cases {
        let res = agent_init(&app, &body).await;
        assert_eq!(res.status(), 422, "{case}");
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["error"]["field"], field, "{case}");
    }
    assert_eq!(agents(&app), 2, "nothing registered");
    assert_eq!(accounts(&app), 1);
    // 100 characters is the longest name.
    register(
        &app,
        json!({"agent_name": "n".repeat(100), "capabilities": []}),
    )
    .await;
}

#[tokio::test]
async fn registration_is_limited_to_five_a_minute_per_ip() {
    let app = open_app(5).await;
    for i in 0..5 {
        register(
            &app,
            json!({"agent_name": format!("bot{i}"), "capabilities": []}),
        )
        .await;
    }
    let res = agent_init(&app, &json!({"agent_name": "bot6", "capabilities": []})).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = assert_error(res, 429, "RATE_LIMITED").await;
    assert_eq!(body["error"]["retry_after"], retry_after);
    assert_eq!(agents(&app), 2 + 5, "the sixth stored nothing");
}
