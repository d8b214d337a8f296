//! Small gaps, round 16: integers refused in words that did not fit (`-0`,
//! numbers past 64 bits called "a number with a fraction or exponent"), MCP
//! refusals that named the wrong thing (rmcp's 400s as "malformed request",
//! `params` that is not an object as an unknown method, tool arguments in
//! serde's words with Rust's type names), and MCP tool schemas that did not
//! state the rules the server enforces.

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp};

const EPOCH_RANGE: &str = "turn_epoch must be an integer from 0 to 9223372036854775807";

/// `respond` with a raw JSON body (to send `-0` and numbers past 64 bits).
async fn respond_raw(app: &TestApp, body: String) -> Response {
    app.client
        .post(app.url("/v1/turn-taking/actions/respond"))
        .bearer_auth(&app.key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

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
        let error = assert_error(respond_raw(&app, body(epoch)).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(error["error"]["message"], EPOCH_RANGE, "{epoch}: {error}");
        assert_eq!(error["error"]["field"], "turn_epoch", "{epoch}: {error}");
    }
    // Written with a fraction or an exponent: that is what it says.
    for epoch in ["1.5", "1e2", "1.0"] {
        let error = assert_error(respond_raw(&app, body(epoch)).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            error["error"]["message"],
            "turn_epoch must be an integer, not a number with a fraction or exponent",
            "{epoch}: {error}"
        );
    }
    assert_eq!(app.stored_messages(), stored, "a refused reply stored nothing");
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
    let (status, page) =
        json_of(app.get_thread(&app.key, &thread, &format!("aid={aid}&after=-0&offset=-0")).await)
            .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
    for limit in ["-0", "0", "1e2", "99999999999999999999", "-99999999999999999999", "2.0"] {
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
