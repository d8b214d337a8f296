//! Rate limits: per login key and route (30 a minute, 10 for thread/status),
//! per client IP for requests without a valid key, and 0 turning a limit off.
//! A fresh key may burst its whole minute, so a test can hit the limit at once.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Requests a quota of `limit` a minute has regained `elapsed` after its
/// first: GCRA gives one back every `60 s / limit`. A burst that takes
/// longer than that (a loaded machine: 30 posts in over 2 s) has more left
/// than `limit - n`, and its request `limit + 1` may pass.
fn regained(limit: u64, elapsed: Duration) -> u64 {
    elapsed.as_millis() as u64 * limit / 60_000
}

/// Sends `send(i)` for i = 0, 1, ... until one is refused: the first
/// `limit` must succeed (a fresh key bursts its whole minute) with
/// `X-RateLimit-*` counting down, and any more only as far as the quota
/// regained since the first request; the refusal must be the 429 envelope.
/// Returns how many succeeded (`limit` when the burst took under `60 s /
/// limit`).
async fn exhaust<F, Fut>(limit: u64, success: u16, mut send: F) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    // Bounded: a machine slower than one request per `60 s / limit` would
    // never run out of quota.
    for n in 1..=2 * limit {
        let res = send(n - 1).await;
        let slack = regained(limit, started.elapsed());
        if n > limit && res.status() == 429 {
            assert_limited(res, limit).await;
            return n - 1;
        }
        assert_eq!(res.status(), success, "request {n} of {limit}");
        assert!(
            n <= limit + slack,
            "request {n} passed with {slack} regained since the first"
        );
        assert_eq!(int_header(&res, "x-ratelimit-limit"), limit);
        // `limit - n` left, plus what came back meanwhile (never a full minute).
        let fewest = limit.saturating_sub(n);
        let most = (limit + slack - n).min(limit - 1);
        let remaining = int_header(&res, "x-ratelimit-remaining");
        assert!(
            (fewest..=most).contains(&remaining),
            "{remaining} remaining after request {n} ({slack} regained)"
        );
        assert!(int_header(&res, "x-ratelimit-reset") >= unix_now());
    }
    panic!("none of {} requests was refused", 2 * limit)
}

#[tokio::test]
async fn thirty_messages_a_minute_pass_and_the_thirty_first_is_429() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let passed = exhaust(30, 201, |i| {
        let body = json!({"aid": app.alice.aid, "thread_id": thread, "content": format!("m{i}")});
        let app = &app;
        async move { app.post_message(&app.key, body).await }
    })
    .await;
    assert_eq!(
        app.stored_messages(),
        passed as i64,
        "the limited request stored nothing"
    );
}

#[tokio::test]
async fn the_quota_is_per_key_and_per_route() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");
    let made = exhaust(30, 201, |_| {
        let body = json!({"aid": app.alice.aid, "target_aid": app.bob.aid});
        let app = &app;
        async move { app.create_thread(&app.key, body).await }
    })
    .await as i64;
    assert_eq!(app.stored_threads(), made);

    // Another key on the same route has its own quota.
    let res = app
        .create_thread(
            &carol.key,
            json!({"aid": carol.aid, "target_aid": app.alice.aid}),
        )
        .await;
    let (status, created) = json_of(res).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(app.stored_threads(), made + 1);

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
    // Closed and active in turn: each change, the refused one too, asks
    // for the status the thread does not have.
    let status = |i: u64| {
        if i.is_multiple_of(2) {
            "closed"
        } else {
            "active"
        }
    };
    let changed = exhaust(10, 200, |i| {
        let body = json!({"aid": app.alice.aid, "thread_id": thread, "status": status(i)});
        let app = &app;
        async move { app.set_status(&app.key, body).await }
    })
    .await;
    // The limited request changed nothing: the last change that passed
    // (the tenth, active, on an unhurried machine) stands.
    let res = app
        .get_thread(&app.key, &thread, &format!("aid={}", app.alice.aid))
        .await;
    let (code, body) = json_of(res).await;
    assert_eq!(code, 200);
    assert_eq!(body["thread"]["status"], status(changed - 1));
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
