//! Many addresses and unauthenticated floods. Twenty loopback addresses,
//! each under its per-address cap, held every connection the server could
//! take (19,700 of 19,744); an IPv6 /56 is 256 such addresses. The
//! addresses of one block (IPv4 /24, IPv6 /48) now share a cap. And every
//! request refused for want of a key wrote its own log line (~100 bytes,
//! ~1 MB per 10,000 requests): past a bound per address and minute those
//! lines are now counted and summed up in one.

use std::net::IpAddr;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::db::TestDb;
use crate::helpers::process::{provision_on, Server};
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

/// The JSON lines of a server's stderr.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_a_key_writes_at_most_the_bound_and_a_summary_that_counts_the_rest() {
    const BOUND: usize = 20;
    const FLOOD: usize = 300;
    const READS: usize = 30;
    let db = TestDb::new();
    let account = provision_on(&db);
    let bound = BOUND.to_string();
    let mut server = Server::start_on(
        &db,
        &[
            "--log-format",
            "json",
            "--log-unauthenticated-per-minute",
            &bound,
            "--rate-limit-per-minute",
            "0",
        ],
        "info",
    )
    .await;

    // From 127.0.0.2: a made-up key, again and again (401 for the first
    // 60 of the minute, then the per-IP quota's 429) ...
    let flooder = client_from("127.0.0.2");
    let made_up = format!("nk_{}", "F".repeat(43));
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..FLOOD {
        let res = flooder
            .get(server.api.url("/api/acsp/threads"))
            .bearer_auth(&made_up)
            .send()
            .await
            .expect("request");
        *statuses.entry(res.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [401, 429]);
    // ... while its authenticated requests keep a line each ...
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    for _ in 0..READS {
        let res = flooder
            .get(server.api.url(&list))
            .bearer_auth(&account.key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
    }
    // ... and another address's refusal is written too.
    let res = client_from("127.0.0.3")
        .get(server.api.url("/api/acsp/threads"))
        .bearer_auth(&made_up)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);

    // A scanner's unknown paths and a probe's /healthz from 127.0.0.4:
    // no key involved either, bounded alike.
    let scanner = client_from("127.0.0.4");
    for i in 0..FLOOD {
        let path = if i % 2 == 0 {
            "/healthz"
        } else {
            "/wp-login.php"
        };
        let res = scanner.get(server.api.url(path)).send().await.unwrap();
        assert_eq!(res.status(), if i % 2 == 0 { 200 } else { 404 });
    }

    // The summary of the minute under way is written at shutdown.
    server.signal("TERM");
    assert_eq!(server.wait_exit().await.code(), Some(0));
    let stderr = server.stderr();
    let lines = json_lines(&stderr);
    let from = |client: &str, target: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["client"] == client && l["target"] == target)
            .collect()
    };
    let requests = from("127.0.0.2", "threadline::request");
    let refused = requests
        .iter()
        .filter(|l| l["status"] == 401 || l["status"] == 429)
        .count();
    let summaries = from("127.0.0.2", "threadline::request::summary");
    // The flood may straddle a minute: a bound and a summary per minute.
    assert!(
        (1..=2).contains(&summaries.len()),
        "{} summaries: {stderr}",
        summaries.len()
    );
    assert!(
        refused <= BOUND * summaries.len(),
        "{refused} refusals written: {stderr}"
    );
    let left_out: u64 = summaries
        .iter()
        .map(|s| s["left_out"].as_u64().expect("left_out"))
        .sum();
    assert_eq!(refused as u64 + left_out, FLOOD as u64, "{stderr}");
    for summary in &summaries {
        let message = summary["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "127.0.0.2: {} request lines without a key left out in the minute from ",
                summary["left_out"]
            )),
            "{message}"
        );
        // A minute's summary counts what was left out in it: a flood that
        // straddles a minute may leave only 401s in one of them.
        assert!(
            message.contains("401: ") || message.contains("429: "),
            "{message}"
        );
        assert_eq!(summary["level"], "INFO");
    }
    assert!(
        summaries
            .iter()
            .any(|s| s["message"].as_str().unwrap().contains("429: ")),
        "the quota's 429s are counted: {summaries:?}"
    );
    let reads = requests
        .iter()
        .filter(|l| l["status"] == 200 && l["route"] == "/api/acsp/threads")
        .count();
    assert_eq!(reads, READS, "every authenticated request keeps its line");
    let scanned = from("127.0.0.4", "threadline::request").len();
    let summed: Vec<&Value> = from("127.0.0.4", "threadline::request::summary");
    assert!(
        !summed.is_empty() && scanned <= BOUND * summed.len(),
        "{stderr}"
    );
    let left_out: u64 = summed.iter().map(|s| s["left_out"].as_u64().unwrap()).sum();
    assert_eq!(scanned as u64 + left_out, FLOOD as u64, "{stderr}");
    let messages: Vec<&str> = summed
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    for status in ["200: ", "404: "] {
        assert!(messages.iter().any(|m| m.contains(status)), "{messages:?}");
    }
    let other = from("127.0.0.3", "threadline::request");
    assert_eq!(other.len(), 1, "{stderr}");
    assert_eq!(other[0]["status"], 401);
    assert!(from("127.0.0.3", "threadline::request::summary").is_empty());
}
