//! Round 23's probe of webhook delivery and the MCP tools, as a new user
//! with the contract, the README and real clients: a raw TCP receiver on
//! port 0 for webhooks, `/mcp` over HTTP for the tools.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use threadline::webhooks::sign;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::webhook;
use crate::helpers::{json_of, spawn_app_with, Agent, TestApp, WAIT};
use crate::mcp23::mcp_tool;

// ------------------------------------------------------------- receivers

/// One request a receiver read, with the Unix time its head arrived.
#[derive(Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    json: Value,
    at_unix: i64,
}

impl Received {
    fn verifies_with(&self, secret: &str) -> bool {
        sign::verify(
            secret,
            &self.headers["webhook-id"],
            self.timestamp(),
            &self.body,
            &self.headers["webhook-signature"],
        )
    }

    fn timestamp(&self) -> i64 {
        self.headers["webhook-timestamp"]
            .parse()
            .expect("a Unix time")
    }
}

/// A receiver that reads each request whole and answers `answer` (raw
/// bytes of an HTTP/1.1 response) on its connection; reports every request.
async fn receiver(answer: &'static str) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                while let Some(received) = read_request(&mut conn).await {
                    let _ = tx.send(received);
                    if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

async fn read_request(conn: &mut BufReader<tokio::net::TcpStream>) -> Option<Received> {
    let (_, headers, body) = webhook::read_request(conn).await?;
    let at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let json = serde_json::from_slice(&body).ok()?;
    Some(Received {
        headers,
        body,
        json,
        at_unix,
    })
}

/// A receiver that accepts connections and never answers; reports each.
async fn silent_receiver() -> (String, mpsc::UnboundedReceiver<tokio::net::TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, within: Duration) -> T {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("timed out waiting for the receiver")
        .expect("receiver running")
}

/// Registers an endpoint of `key`'s account for `thread.message`; returns
/// (id, secret).
async fn register(app: &TestApp, key: &str, url: &str) -> (String, String) {
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            key,
            &json!({"url": url, "events": ["thread.message"]}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    (
        body["webhook"]["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// The endpoint's attempts, newest first.
async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = json_of(
        app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["attempts"].as_array().unwrap().clone()
}

// ------------------------------------------------------------- webhooks

/// A delivery's `webhook-timestamp` (signed with it) was read before the
/// delivery waited for a slot among its account's 8 and the server's 64,
/// not when it was sent: a delivery that waited behind receivers that do
/// not answer (10 s each) went out stamped that much in the past. Behind
/// enough of them (other accounts' too, for the 64) a stamp is past the
/// 5 minutes receivers allow (the README tells them to refuse it), and an
/// endpoint that answers well is refused, retried with another stale
/// stamp and in the end disabled. The stamp is now taken when the slot is.
#[tokio::test]
async fn a_delivery_that_waited_for_a_slot_is_stamped_when_it_is_sent() {
    use threadline::webhooks::{DELIVERY_TIMEOUT, MAX_IN_FLIGHT_PER_ACCOUNT};
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        // The silent endpoints are not tried again within the test.
        c.webhook_retry_schedule = vec![600];
    })
    .await;
    let (silent, mut accepted) = silent_receiver().await;
    for _ in 0..MAX_IN_FLIGHT_PER_ACCOUNT {
        register(&app, &app.key, &silent).await;
    }
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "to the silent ones").await;
    // Each silent endpoint holds one of the account's slots, for up to
    // the delivery timeout.
    let mut held = Vec::new();
    while held.len() < MAX_IN_FLIGHT_PER_ACCOUNT {
        held.push(next(&mut accepted, WAIT).await);
    }

    // An endpoint that answers at once, made now (it hears what follows).
    let (url, mut got) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let (_, secret) = register(&app, &app.key, &url).await;
    let posted = Instant::now();
    app.say(&app.alice, &thread, "waits for a slot").await;
    let d = next(&mut got, DELIVERY_TIMEOUT + WAIT).await;
    assert_eq!(d.json["data"]["content"], "waits for a slot");
    // It did wait for a slot (else this test shows nothing)...
    assert!(
        posted.elapsed() >= DELIVERY_TIMEOUT / 2,
        "delivered after {:?}: it did not wait for a slot",
        posted.elapsed()
    );
    // ...and is stamped with when it was sent, and signed so.
    let late = d.at_unix - d.timestamp();
    assert!(
        (0..=2).contains(&late),
        "received at {} but stamped {} ({late} s earlier)",
        d.at_unix,
        d.timestamp()
    );
    assert!(d.verifies_with(&secret));
}

/// A receiver answering a redirect, here to another receiver that would
/// take it: the redirect is not followed (it could point anywhere, a
/// private address included), the attempt is recorded as the 3xx, and the
/// event is retried at the same endpoint until it answers 2xx.
#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.webhook_retry_schedule = vec![1; 3];
    })
    .await;
    let (elsewhere, mut followed) = receiver("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}\r\ncontent-length: 0\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (url, mut got) = receiver(redirect).await;
    let (id, _) = register(&app, &app.key, &url).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "moved?").await;
    let first = next(&mut got, WAIT).await;
    let again = next(&mut got, WAIT).await;
    assert_eq!(
        first.json["id"], again.json["id"],
        "the same event, retried"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let list = attempts(&app, &id).await;
        if list.len() >= 2 {
            for a in &list {
                assert_eq!(a["status"], 307, "{a}");
                assert_eq!(a["error"], "answered 307", "{a}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "attempts: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        followed.try_recv().is_err(),
        "the redirect's target got nothing"
    );
}

/// A receiver whose every answer the test gives: each request comes with
/// the sender of its answer (raw bytes of an HTTP/1.1 response).
type Held = (Received, oneshot::Sender<&'static str>);

async fn controlled_receiver() -> (String, mpsc::UnboundedReceiver<Held>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                while let Some(received) = read_request(&mut conn).await {
                    let (answer, given) = oneshot::channel::<&'static str>();
                    if tx.send((received, answer)).is_err() {
                        return;
                    }
                    let Ok(answer) = given.await else { return };
                    if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    // An answer cut short (not a whole head with an empty
                    // body) ends with the connection closed.
                    if !answer.ends_with("\r\n\r\n") {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// A server with no rate limit, private targets allowed and `schedule` as
/// its retry schedule; an endpoint of the app's account at a controlled
/// receiver; alice's "first" message in a thread with bob, held there.
/// Returns the app, the endpoint's id, the thread, the receiver and the
/// first request with its answer's sender.
async fn first_held(
    schedule: Vec<u64>,
) -> (TestApp, String, String, mpsc::UnboundedReceiver<Held>, Held) {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.webhook_retry_schedule = schedule;
    })
    .await;
    let (url, mut held) = controlled_receiver().await;
    let (id, _) = register(&app, &app.key, &url).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "first").await;
    let first = next(&mut held, WAIT).await;
    (app, id, thread, held, first)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const DOWN: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";

/// The endpoint as its attempts listing shows it, once `n` attempts are
/// recorded.
async fn after_attempts(app: &TestApp, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = json_of(
            app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["attempts"].as_array().unwrap().len() >= n {
            return body["webhook"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{n} attempts never recorded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn change(app: &TestApp, id: &str, action: &str) -> Value {
    let res = app
        .post_json(
            &format!("/api/acsp/webhooks/{id}/{action}"),
            &app.key,
            &json!({}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["webhook"].clone()
}

/// A receiver that closes the connection in the middle of its answer:
/// before the head is whole, it did not answer (retried, the attempt says
/// the request failed); after a 2xx head, it did (the README: a 2xx
/// counts; the body is not read), even with the body cut short, so the
/// next event follows.
#[tokio::test]
async fn a_receiver_closing_mid_answer_counts_once_its_2xx_head_is_whole() {
    let (app, id, thread, mut held, (first, answer)) = first_held(vec![1; 3]).await;
    answer.send("HTTP/1.1 200 OK\r\ncontent-le").unwrap();
    let (again, answer) = next(&mut held, WAIT).await;
    assert_eq!(again.json["id"], first.json["id"], "retried");
    answer
        .send("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ncut sh")
        .unwrap();
    app.say(&app.alice, &thread, "second").await;
    let (then, answer) = next(&mut held, WAIT).await;
    assert_eq!(then.json["data"]["content"], "second", "the first counted");
    answer.send(OK).unwrap();
    let endpoint = after_attempts(&app, &id, 3).await;
    assert_eq!(endpoint["failures"], 0, "{endpoint}");
    let list = attempts(&app, &id).await;
    assert_eq!(list[1]["status"], 200, "{list:?}");
    assert!(list[1]["error"].is_null(), "{list:?}");
    assert!(list[2]["status"].is_null(), "{list:?}");
    assert_eq!(list[2]["error"], "the request failed", "{list:?}");
}

/// One event for two endpoints, of the two accounts whose agents share the
/// thread: each gets it once, the same id and the same bytes, each signed
/// with its own secret only (a receiver cannot pass one endpoint's
/// deliveries off as the other's).
#[tokio::test]
async fn one_event_reaches_both_accounts_endpoints_alike_each_signed_with_its_own_secret() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
    })
    .await;
    let eve = app.new_agent("eve");
    let (ours, mut ours_got) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let (theirs, mut theirs_got) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let (_, our_secret) = register(&app, &app.key, &ours).await;
    let (_, their_secret) = register(&app, &eve.key, &theirs).await;
    let thread = app.thread_between(&app.alice, &eve).await;
    let message = app.say(&eve, &thread, "to both").await;
    let a = next(&mut ours_got, WAIT).await;
    let b = next(&mut theirs_got, WAIT).await;
    assert_eq!(a.json["id"], message["id"]);
    assert_eq!(a.body, b.body, "the same bytes");
    assert_eq!(a.headers["webhook-id"], b.headers["webhook-id"]);
    assert!(a.verifies_with(&our_secret) && !a.verifies_with(&their_secret));
    assert!(b.verifies_with(&their_secret) && !b.verifies_with(&our_secret));
    // Once each: the next delivery to either is the next event.
    let next_one = app.say(&app.alice, &thread, "again").await;
    assert_eq!(next(&mut ours_got, WAIT).await.json["id"], next_one["id"]);
    assert_eq!(next(&mut theirs_got, WAIT).await.json["id"], next_one["id"]);
}

/// Pausing keeps an endpoint's place (the README). An endpoint paused
/// while its last scheduled attempt was in flight (a receiver that is
/// down, the moment one pauses it) was disabled when that attempt failed,
/// and its cursor dropped: `resume` then started from the log's end, and
/// the failed event and everything posted while paused were never sent.
/// The failure now leaves a paused endpoint paused, with its place.
#[tokio::test]
async fn an_endpoint_paused_during_its_last_attempt_stays_paused_and_keeps_its_place() {
    let (app, id, thread, mut held, (first, answer)) = first_held(vec![1]).await;
    answer.send(DOWN).unwrap();
    // The last attempt the schedule allows: paused while it is in flight.
    let (last, answer) = next(&mut held, WAIT).await;
    assert_eq!(last.json["id"], first.json["id"]);
    assert_eq!(change(&app, &id, "pause").await["status"], "paused");
    answer.send(DOWN).unwrap();
    let endpoint = after_attempts(&app, &id, 2).await;
    assert_eq!(endpoint["status"], "paused", "{endpoint}");
    assert!(endpoint["disabled_reason"].is_null(), "{endpoint}");
    app.say(&app.alice, &thread, "while paused").await;
    assert_eq!(change(&app, &id, "resume").await["status"], "active");
    // Its place was kept: the failed event, then what came meanwhile.
    let (again, answer) = next(&mut held, WAIT).await;
    assert_eq!(again.json["id"], first.json["id"]);
    answer.send(OK).unwrap();
    let (then, answer) = next(&mut held, WAIT).await;
    assert_eq!(then.json["data"]["content"], "while paused");
    answer.send(OK).unwrap();
}

/// `resume` gives an endpoint a fresh retry schedule (its failures back to
/// 0), also an active one that is failing. Resumed while its last
/// attempt was in flight, it was disabled when that attempt failed, the
/// resume undone; the fresh schedule now stands.
#[tokio::test]
async fn an_endpoint_resumed_during_its_last_attempt_keeps_the_fresh_schedule() {
    let (app, id, _, mut held, (first, answer)) = first_held(vec![1]).await;
    answer.send(DOWN).unwrap();
    let (_, answer) = next(&mut held, WAIT).await;
    let resumed = change(&app, &id, "resume").await;
    assert_eq!(resumed["failures"], 0, "{resumed}");
    answer.send(DOWN).unwrap();
    // Tried again on the fresh schedule, not disabled.
    let (again, answer) = next(&mut held, WAIT).await;
    assert_eq!(again.json["id"], first.json["id"]);
    answer.send(OK).unwrap();
    let endpoint = after_attempts(&app, &id, 3).await;
    assert_eq!(endpoint["status"], "active", "{endpoint}");
    assert!(endpoint["disabled_reason"].is_null(), "{endpoint}");
}

/// An endpoint gets the `thread.message` events of the account's threads,
/// turn-taking threads among them. The agent's reply there (`respond`) is
/// stored as messages of the thread, which its history and a socket's
/// resume show as `thread.message`; the log holds each as the part's
/// `turn_taking.message`, and webhooks, reading the log for the three
/// types they know, never sent them: a receiver mirroring a thread had
/// the user's messages and none of the agent's. Each now comes as a
/// `thread.message` carrying the stored message, its id the event id.
#[tokio::test]
async fn an_agents_paced_reply_reaches_webhooks_as_the_messages_stored() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.allow_private_webhooks = true;
        c.pace_scale = 0.0;
        c.webhook_retry_schedule = vec![1; 3];
    })
    .await;
    let (url, mut got) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let (_, secret) = register(&app, &app.key, &url).await;
    let (thread, _) = app.grant_for(&app.key, None).await;
    let turn = app
        .submit(
            &thread,
            json!([{"sender": "user", "content": "What is the plan?"}]),
        )
        .await;
    let epoch = turn["turn_epoch"].as_i64().unwrap();
    let reply = "First we read the log. Then we answer every message in order.";
    let scheduled = app.respond(&thread, reply, epoch).await;
    let parts = scheduled["scheduled"].as_array().unwrap().len();
    assert!(parts >= 1, "{scheduled}");

    // The user's message, then each part of the reply, as stored.
    let mut heard = Vec::new();
    while heard.len() < 1 + parts {
        let d = next(&mut got, WAIT).await;
        assert!(d.verifies_with(&secret));
        assert_eq!(d.json["type"], "thread.message", "{}", d.json);
        assert_eq!(d.headers["webhook-id"], d.json["id"].as_str().unwrap());
        assert_eq!(d.json["id"], d.json["data"]["id"], "the message's id");
        heard.push(d.json["data"].clone());
    }
    let (_, history) = json_of(app.get_thread(&app.key, &thread, "limit=200").await).await;
    assert_eq!(
        Value::Array(heard),
        history["messages"],
        "every stored message, as the API returns it, in order"
    );
}

/// Deleting an endpoint while a delivery to it is under way is a normal
/// act (a receiver being retired); the delivery's record then failed its
/// foreign key and the server logged `WARN webhook wh_…: internal error:
/// sqlite: FOREIGN KEY constraint failed` each time, an alarm for
/// nothing. The attempt of a deleted endpoint is now not recorded, and
/// nothing is logged.
#[tokio::test]
async fn deleting_an_endpoint_during_a_delivery_logs_no_error() {
    use crate::helpers::db::TestDb;
    use crate::helpers::process::{provision_on, Server};
    let db = TestDb::new();
    let account = provision_on(&db);
    let args = ["--rate-limit-per-minute", "0", "--allow-private-webhooks"];
    let server = Server::start_on(&db, &args, "warn").await;
    let (url, mut held) = controlled_receiver().await;
    let res = server
        .api
        .post(
            "/api/acsp/webhooks",
            &account.key,
            &json!({"url": url, "events": ["thread.created"]}),
        )
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let id = body["webhook"]["id"].as_str().unwrap().to_owned();
    server.api.thread(&account).await;
    let (_, answer) = next(&mut held, WAIT).await;
    let res = server
        .api
        .client
        .delete(server.api.url(&format!("/api/acsp/webhooks/{id}")))
        .bearer_auth(&account.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The answer comes after the delete, and closes the connection: the
    // delivery is over once the server has read it.
    answer
        .send("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    // What the server logs about it follows at once (it was logged within
    // milliseconds); a few seconds with nothing logged tell the two apart.
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        let log = server.stderr();
        assert!(!log.contains("webhook"), "logged: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ MCP

/// A new login key of `agent`'s account (a quota of its own).
fn second_key(app: &TestApp, agent: &Agent) -> String {
    let out = threadline::cli::key_create(&app.db, &agent.user_id).expect("key create");
    serde_json::from_str::<Value>(&out).unwrap()["login_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `wait_for_messages` without a thread reads each thread with unread
/// messages in turn, and each read marks its messages read. When a later
/// read was refused (over the key's quota for thread reads), the tool
/// answered the refusal and dropped the messages it had already read:
/// they no longer counted as unread, and no later wait returned them.
/// It now answers with what it read; the rest stay unread for the next.
#[tokio::test]
async fn an_inbox_wait_cut_short_by_the_quota_returns_what_it_marked_read() {
    const QUOTA: u32 = 3;
    let app = spawn_app_with(|c| c.rate_limit_per_minute = QUOTA).await;
    let waiter = app.new_agent("waiter");
    // More threads with an unread message than the key may read a minute,
    // each opened by a peer of another account.
    let mut sent = Vec::new();
    for i in 0..=QUOTA {
        let peer = app.new_agent(&format!("peer{i}"));
        let res = app
            .create_thread(
                &peer.key,
                json!({"aid": peer.aid, "target_aid": waiter.aid,
                       "first_message": format!("hello {i}")}),
            )
            .await;
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{body}");
        sent.push(format!("hello {i}"));
    }

    let mut heard = Vec::new();
    for key in [waiter.key.clone(), second_key(&app, &waiter)] {
        let answer = mcp_tool(&app, &key, "wait_for_messages", json!({"timeout_secs": 1})).await;
        let result = &answer["result"];
        assert_eq!(result["isError"], false, "{answer}");
        for m in result["structuredContent"]["messages"].as_array().unwrap() {
            heard.push(m["content"].as_str().unwrap().to_owned());
        }
    }
    heard.sort();
    assert_eq!(
        heard, sent,
        "every message heard once, none marked read unheard"
    );
}

/// An unknown tool is a protocol error (`-32602`, as MCP has it), not a
/// tool result; rmcp said only "tool not found". It now names the tool it
/// was asked for (cut, as a method's name is) and the tools there are,
/// over `/mcp` and over stdio alike, and nothing runs.
#[tokio::test]
async fn an_unknown_tool_is_invalid_params_naming_it_and_the_tools() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let tools = "create_thread, list_agents, list_threads, post_message, read_thread, \
                 set_thread_status, wait_for_messages";
    let call = |id: u32, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": {"content": "x"}}})
    };
    let long = "t".repeat(500);
    let over_http = {
        let res = crate::tidy16::mcp_post(&app, &call(7, "post_mesage"), &[]).await;
        crate::tidy16::jsonrpc_answer(res).await
    };
    let over_stdio = crate::helpers::process::mcp_stdio_answers(
        &app.base,
        &app.key,
        &[
            call(7, "post_mesage").to_string(),
            call(8, &long).to_string(),
        ],
    )
    .await;
    assert_eq!(over_stdio.len(), 2, "{over_stdio:?}");
    for answer in [&over_http, &over_stdio[0]] {
        assert_eq!(answer["id"], 7, "{answer}");
        assert!(answer.get("result").is_none(), "{answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert_eq!(
            answer["error"]["message"],
            format!("unknown tool \"post_mesage\"; the tools are {tools}"),
        );
    }
    let message = over_stdio[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("unknown tool \"{}\"…;", "t".repeat(64))),
        "{message}"
    );
    assert_eq!(app.stored_messages(), 0, "nothing ran");
}

/// `post_message`'s `idempotency_key` travels to the API as a header. One
/// over 16 KiB (it fits in an `/mcp` body) was refused by the server's
/// HTTP layer as `HEADERS_TOO_LARGE` ("request headers are over 16 KiB"),
/// about headers the MCP client never sent, and no field; one of 129 to
/// 16 K characters got the API's 422. Every key the API would refuse is
/// now the API's 422 on `idempotency_key`, whatever its length, and
/// nothing is stored.
#[tokio::test]
async fn an_idempotency_key_too_long_is_refused_on_its_argument_at_any_length() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for chars in [129, 20_000, 60_000, 0] {
        let answer = mcp_tool(
            &app,
            &app.key,
            "post_message",
            json!({"thread_id": thread, "aid": app.alice.aid, "content": "once",
                   "idempotency_key": "k".repeat(chars)}),
        )
        .await;
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{chars}: {answer}");
        let error = &result["structuredContent"]["error"];
        assert_eq!(error["code"], "VALIDATION_ERROR", "{chars}: {error}");
        assert_eq!(error["status"], 422, "{chars}: {error}");
        assert_eq!(error["field"], "idempotency_key", "{chars}: {error}");
        assert_eq!(
            error["message"], "idempotency_key must be 1–128 printable ASCII characters",
            "{chars}: {error}"
        );
    }
    assert_eq!(app.stored_messages(), 0);
}

/// Each tool refuses what the API refuses, in the API's words: the same
/// bad input to a tool and to its route gives the same code, field and
/// message. A `null` argument counts as absent, as `null` in a body does:
/// a required one was "content must be a string, not null" from a tool
/// and "content is required" from the API.
#[tokio::test]
async fn a_tool_and_its_route_refuse_the_same_input_alike() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (alice, bob) = (app.alice.aid.as_str(), app.bob.aid.as_str());
    let cases = [
        (
            "post_message",
            "/api/acsp/thread/message",
            json!({"thread_id": thread, "aid": alice, "content": null}),
        ),
        (
            "post_message",
            "/api/acsp/thread/message",
            json!({"thread_id": null, "aid": alice, "content": "x"}),
        ),
        (
            "post_message",
            "/api/acsp/thread/message",
            json!({"thread_id": thread, "aid": alice, "content": "x", "msg_type": "memo"}),
        ),
        (
            "create_thread",
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": null}),
        ),
        (
            "create_thread",
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": bob, "metadata": ["not", "an", "object"]}),
        ),
        (
            "post_message",
            "/api/acsp/thread/message",
            json!({"thread_id": thread, "aid": alice, "content": "x", "metadata": "text"}),
        ),
        (
            "create_thread",
            "/api/acsp/thread/create",
            json!({"aid": alice, "target_aid": bob, "subject": ""}),
        ),
        (
            "set_thread_status",
            "/api/acsp/thread/status",
            json!({"thread_id": thread, "aid": alice, "status": null}),
        ),
    ];
    for (tool, route, args) in cases {
        let answer = mcp_tool(&app, &app.key, tool, args.clone()).await;
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{tool} {args}: {answer}");
        let from_tool = &result["structuredContent"]["error"];
        let (status, body) = json_of(app.post_json(route, &app.key, &args).await).await;
        let from_route = &body["error"];
        assert_eq!(from_tool["status"], status.as_u16(), "{tool} {args}");
        for part in ["code", "field", "message"] {
            assert_eq!(
                from_tool[part], from_route[part],
                "{tool} {args}: {from_tool} against {from_route}"
            );
        }
    }
    assert_eq!(app.stored_messages(), 0, "nothing stored");
}
