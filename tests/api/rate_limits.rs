//! Rate limits: per login key and route (30 a minute, 10 for thread/status),
//! per client IP for requests without a valid key, and 0 turning a limit off.
//! A fresh key may burst its whole minute, so a test can hit the limit at once.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Response;
use serde_json::json;

use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with};

/// A header parsed as an integer.
fn int_header(res: &Response, name: &str) -> u64 {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header on a {}", res.status()))
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts a 429 in the envelope with consistent `Retry-After`, `retry_after`
/// and `X-RateLimit-*` for a quota of `limit`.
async fn assert_limited(res: Response, limit: u64) {
    let retry_after = int_header(&res, "retry-after");
    assert!(
        retry_after >= 1,
        "Retry-After is at least 1 s (got {retry_after})"
    );
    assert_eq!(int_header(&res, "x-ratelimit-limit"), limit);
    assert_eq!(int_header(&res, "x-ratelimit-remaining"), 0);
    let reset = int_header(&res, "x-ratelimit-reset");
    assert!(
        reset >= unix_now(),
        "X-RateLimit-Reset is a future Unix time: {reset}"
    );
    let body = assert_error(res, 429, "RATE_LIMITED").await;
    assert_eq!(
        body["error"]["retry_after"], retry_after,
        "retry_after in the body matches the header"
    );
}

#[tokio::test]
async fn thirty_messages_a_minute_pass_and_the_thirty_first_is_429() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..30u64 {
        let res = app
            .post_message(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "content": format!("m{i}")}),
            )
            .await;
        assert_eq!(res.status(), 201, "request {} of 30", i + 1);
        assert_eq!(int_header(&res, "x-ratelimit-limit"), 30);
        assert_eq!(
            int_header(&res, "x-ratelimit-remaining"),
            29 - i,
            "after request {}",
            i + 1
        );
        assert!(int_header(&res, "x-ratelimit-reset") >= unix_now());
    }
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": thread, "content": "one more"}),
        )
        .await;
    assert_limited(res, 30).await;
    assert_eq!(
        app.stored_messages(),
        30,
        "the limited request stored nothing"
    );
}

#[tokio::test]
async fn the_quota_is_per_key_and_per_route() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    for i in 0..30 {
        let res = app
            .create_thread(
                &app.key,
                json!({"aid": app.alice.aid, "target_aid": app.bob.aid}),
            )
            .await;
        assert_eq!(res.status(), 201, "create {}", i + 1);
    }
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid}),
        )
        .await;
    assert_limited(res, 30).await;
    assert_eq!(app.stored_threads(), 30);

    // Another key on the same route has its own quota.
    let res = app
        .create_thread(
            &carol.key,
            json!({"aid": carol.aid, "target_aid": app.alice.aid}),
        )
        .await;
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(app.stored_threads(), 31);

    // The same key on other routes is unaffected.
    let res = app
        .list_threads(&app.key, &format!("aid={}&limit=1", app.alice.aid))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        int_header(&res, "x-ratelimit-remaining"),
        29,
        "a fresh quota for the list"
    );
    let thread = created["thread"]["id"].as_str().unwrap();
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": thread, "content": "hi"}),
        )
        .await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn thread_status_allows_ten_a_minute() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..10u64 {
        let status = if i % 2 == 0 { "closed" } else { "active" };
        let res = app
            .set_status(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "status": status}),
            )
            .await;
        assert_eq!(res.status(), 200, "status change {}", i + 1);
        assert_eq!(int_header(&res, "x-ratelimit-limit"), 10);
        assert_eq!(int_header(&res, "x-ratelimit-remaining"), 9 - i);
    }
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": thread, "status": "archived"}),
        )
        .await;
    assert_limited(res, 10).await;
    // The limited request changed nothing: the tenth change (active) stands.
    let res = app
        .get_thread(&app.key, &thread, &format!("aid={}", app.alice.aid))
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["thread"]["status"], "active");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_limited_per_ip() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 3).await;
    let body = json!({"aid": app.alice.aid, "target_aid": app.bob.aid});
    let bad = format!("nk_{}", "B".repeat(43));
    for i in 0..3 {
        let res = app.create_thread(&bad, body.clone()).await;
        assert_eq!(res.status(), 401, "bad key {}", i + 1);
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    let res = app.create_thread(&bad, body.clone()).await;
    assert_limited(res, 3).await;
    // A request with no key at all counts against the same address.
    let res = app
        .client
        .get(app.url("/api/acsp/threads"))
        .send()
        .await
        .unwrap();
    assert_limited(res, 3).await;
    assert_eq!(app.stored_threads(), 0);
    // A valid key from the same address is not held back.
    let res = app.create_thread(&app.key, body).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_quota_of_zero_turns_the_limit_off() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.status_rate_limit_per_minute = 0;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for i in 0..40 {
        let res = app
            .post_message(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "content": format!("m{i}")}),
            )
            .await;
        assert_eq!(res.status(), 201, "message {}", i + 1);
    }
    for i in 0..15 {
        let status = if i % 2 == 0 { "closed" } else { "active" };
        let res = app
            .set_status(
                &app.key,
                json!({"aid": app.alice.aid, "thread_id": thread, "status": status}),
            )
            .await;
        assert_eq!(res.status(), 200, "status change {}", i + 1);
    }
    assert_eq!(app.stored_messages(), 40);
}
