//! Many addresses and unauthenticated floods. Twenty loopback addresses,
//! each under its per-address cap, held every connection the server could
//! take (19,700 of 19,744); an IPv6 /56 is 256 such addresses. The
//! addresses of one block (IPv4 /24, IPv6 /48) now share a cap.

use std::net::IpAddr;

use serde_json::json;
use tokio::time::Instant;

use crate::helpers::{assert_error, spawn_app_with, TestApp, POLL, WAIT};

/// A client whose connections come from `ip` (any of 127.0.0.0/8 is this
/// machine). Its pool keeps the connection open after each answer.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

/// A post by alice from `client`: one connection, held open afterwards.
async fn post_from(app: &TestApp, client: &reqwest::Client, thread: &str) -> reqwest::Response {
    client
        .post(app.url("/api/acsp/thread/message"))
        .bearer_auth(&app.key)
        .json(&json!({"aid": app.alice.aid, "thread_id": thread, "content": "hello"}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn the_addresses_of_one_block_share_its_cap_and_another_block_still_gets_in() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_ip = 2;
        c.max_connections_per_block = 3;
        c.rate_limit_per_minute = 0;
    })
    .await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let stored = app.stored_messages();

    // 127.0.5.0/24 (the harness's own client is 127.0.0.1, in another
    // block): 127.0.5.2 takes its 2, 127.0.5.3 one more, and the block's 3
    // are taken.
    let mut held = Vec::new();
    for ip in ["127.0.5.2", "127.0.5.2", "127.0.5.3"] {
        let client = client_from(ip);
        let res = post_from(&app, &client, &thread).await;
        assert_eq!(res.status(), 201, "{ip}");
        held.push(client);
    }
    assert_eq!(app.stored_messages(), stored + 3);

    // A fourth address of the block holds nothing itself, and is refused.
    let res = post_from(&app, &client_from("127.0.5.4"), &thread).await;
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["connection"], "close");
    assert_error(res, 429, "RATE_LIMITED").await;
    assert_eq!(app.stored_messages(), stored + 3, "nothing stored");

    // Another /24 is another block.
    let other = client_from("127.0.6.2");
    assert_eq!(post_from(&app, &other, &thread).await.status(), 201);
    assert_eq!(app.stored_messages(), stored + 4);

    // A connection of the block closing lets the fourth address in (once
    // the server has seen the close).
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let res = post_from(&app, &client_from("127.0.5.4"), &thread).await;
        if res.status() == 201 {
            break;
        }
        assert_error(res, 429, "RATE_LIMITED").await;
        assert!(Instant::now() < deadline, "no place freed in the block");
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(app.stored_messages(), stored + 5);
}
