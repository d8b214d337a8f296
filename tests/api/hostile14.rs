//! Hostile input, round 14: gaps the last round left open, each pinned by a
//! test. Made-up login keys that held rate-limiter memory, webhook
//! management without a quota, one account's slow webhook receivers
//! starving everyone else's deliveries, IPv6 clients counted address by
//! address for connections, and public URLs with a query or fragment.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app_with};

/// A well-formed login key no account has.
fn made_up_key(i: usize) -> String {
    format!("nk_{:0>43}", i)
}

// ------------------------------------------------------------ made-up keys

/// Keys are counted before the store checks them; a key the store does
/// not know used to keep its per-key entry until the minute's shrink
/// (170,000 made-up keys in 15 s held 25 MB). Now it leaves none behind,
/// on reads, writes and the MCP endpoint alike, while a real key's count
/// stays.
#[tokio::test]
async fn made_up_keys_leave_no_rate_limit_state_behind() {
    let app = spawn_app_with(|c| c.ip_rate_limit_per_minute = 1_000).await;
    let threads = app.stored_threads();
    for i in 0..30 {
        let key = made_up_key(i);
        let res = app.get("/api/acsp/threads", &key).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app
            .post_json(
                "/api/acsp/thread/create",
                &key,
                &json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": "s"}),
            )
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.get("/api/acsp/me", &key).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app
            .get(&format!("/v1/sse?aid={}", app.alice.aid), &key)
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
        let res = app.post_json("/mcp", &key, &json!({})).await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    assert_eq!(app.shutdown.rate_limited_keys(), 0);
    assert_eq!(app.stored_threads(), threads);

    // The count itself works: a real key's request is remembered.
    let res = app.get("/api/acsp/me", &app.key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.shutdown.rate_limited_keys(), 1);
}
