//! Webhooks: endpoints over the API and the command line, signed
//! deliveries to a real HTTP receiver on port 0 (a small HTTP/1.1 server
//! below), retries, a receiver down while posting, a SIGKILLed server, a
//! hanging receiver beside a healthy one, and private targets refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadline::webhooks::sign;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::helpers::db::TestDb;
use crate::helpers::process::{cli_json, provision_on, run_cli, Server};
use crate::helpers::webhook;
use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp, WAIT};

/// How a receiver answers a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// One request the receiver took.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    pub(crate) json: Value,
}

impl Delivery {
    pub(crate) fn verifies_with(&self, secret: &str) -> bool {
        let ts: i64 = self.headers["webhook-timestamp"].parse().unwrap();
        sign::verify(
            secret,
            &self.headers["webhook-id"],
            ts,
            &self.body,
            &self.headers["webhook-signature"],
        )
    }
}

/// A tiny HTTP/1.1 receiver: answers each request with the next scripted
/// reply (then `fallback`), and reports every request it read. (The
/// inspector's tests use it too.)
pub(crate) struct Receiver {
    pub(crate) url: String,
    port: u16,
    rx: mpsc::UnboundedReceiver<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(script: &[Reply], fallback: Reply) -> Receiver {
        Receiver::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            script,
            fallback,
        )
    }

    fn on(listener: TcpListener, script: &[Reply], fallback: Reply) -> Receiver {
        Receiver::serve(listener, None, script, fallback)
    }

    /// A receiver speaking HTTPS with `tls`'s certificate.
    async fn tls(tls: TlsAcceptor, fallback: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener, Some(tls), &[], fallback)
    }

    fn serve(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        script: &[Reply],
        fallback: Reply,
    ) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script, tls) = (tx.clone(), script.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => answer(conn, tx, script, fallback).await,
                        // A client that refuses the certificate ends here.
                        Some(tls) => {
                            if let Ok(conn) = tls.accept(conn).await {
                                answer(conn, tx, script, fallback).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            url: format!("{scheme}://127.0.0.1:{port}/hook"),
            port,
            rx,
            task,
        }
    }

    /// The next request, within `WAIT`.
    pub(crate) async fn next(&mut self) -> Delivery {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a delivery")
            .expect("receiver running")
    }

    /// Stops accepting (the port is closed).
    fn stop(self) -> u16 {
        self.task.abort();
        self.port
    }
}

/// Answers the requests of one connection with the script's replies.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    conn: S,
    tx: mpsc::UnboundedSender<Delivery>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Reply,
) {
    let mut conn = BufReader::new(conn);
    loop {
        let Some(delivery) = read_request(&mut conn).await else {
            return;
        };
        let reply = script.lock().unwrap().pop_front().unwrap_or(fallback);
        let _ = tx.send(delivery);
        match reply {
            Reply::Hang => {
                std::future::pending::<()>().await;
            }
            Reply::Status(code) => {
                let res = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                if conn.get_mut().write_all(res.as_bytes()).await.is_err() {
                    return;
                }
                let _ = conn.get_mut().flush().await;
            }
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(conn: &mut BufReader<S>) -> Option<Delivery> {
    let (_, headers, body) = webhook::read_request(conn).await?;
    let json = serde_json::from_slice(&body).ok()?;
    Some(Delivery {
        headers,
        body,
        json,
    })
}

/// A server with no rate limit, a one-second retry schedule (`retries`
/// delays) and private targets allowed.
pub(crate) async fn app_with_retries(retries: usize) -> TestApp {
    spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.webhook_retry_schedule = vec![1; retries];
        c.allow_private_webhooks = true;
    })
    .await
}

/// Registers an endpoint for `events`; returns (id, secret).
pub(crate) async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let res = app
        .post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": url, "events": events}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (body["webhook"]["id"].as_str().unwrap().to_owned(), secret)
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    let (status, body) = json_of(
        app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_delivery_is_signed_with_the_endpoints_secret_and_carries_the_api_object() {
    let app = app_with_retries(3).await;
    let mut rx = Receiver::start(&[], Reply::Status(204)).await;
    let (_, secret) = register(&app, &rx.url, &["thread.created", "thread.message"]).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let message = app.say(&app.alice, &thread, "signed").await;

    let created = rx.next().await;
    assert_eq!(created.json["type"], "thread.created");
    assert_eq!(created.json["data"]["id"], thread.as_str());
    let d = rx.next().await;
    assert_eq!(d.json["type"], "thread.message");
    assert_eq!(
        d.json["id"], message["id"],
        "the event id is the message id"
    );
    assert_eq!(d.headers["webhook-id"], message["id"].as_str().unwrap());
    assert_eq!(d.json["data"], message, "the object the API returned");
    assert!(d.json["position"].as_i64().unwrap() > created.json["position"].as_i64().unwrap());
    assert!(d.json["created_at"].is_string());
    assert!(
        d.verifies_with(&secret),
        "verifies with the endpoint's secret"
    );
    assert!(!d.verifies_with(&sign::new_secret()), "fails with another");
    let ts: i64 = d.headers["webhook-timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
}

#[tokio::test]
async fn an_answer_of_500_is_retried_with_the_same_id_until_a_200() {
    let app = app_with_retries(3).await;
    let mut rx = Receiver::start(&[Reply::Status(500)], Reply::Status(200)).await;
    let (id, _) = register(&app, &rx.url, &["thread.message"]).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "again").await;
    let first = rx.next().await;
    let second = rx.next().await;
    assert_eq!(first.json["id"], second.json["id"], "same event, same id");
    assert_eq!(first.body, second.body);
    // The attempts are listed, newest first, once the success is recorded.
    let deadline = Instant::now() + WAIT;
    loop {
        let body = endpoint(&app, &id).await;
        let attempts = body["attempts"].as_array().unwrap().clone();
        if attempts.len() == 2 {
            assert_eq!(attempts[0]["status"], 200);
            assert_eq!(attempts[0]["attempt"], 2);
            assert!(attempts[0]["error"].is_null());
            assert_eq!(attempts[1]["status"], 500);
            assert_eq!(attempts[1]["error"], "answered 500");
            assert!(attempts[1]["latency_ms"].is_i64());
            assert_eq!(body["webhook"]["status"], "active");
            assert_eq!(body["webhook"]["failures"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "attempts: {attempts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_the_whole_schedule_is_disabled_and_says_so() {
    let app = app_with_retries(1).await;
    let mut rx = Receiver::start(&[], Reply::Status(503)).await;
    let (id, _) = register(&app, &rx.url, &["thread.message"]).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "nobody home").await;
    rx.next().await;
    rx.next().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = endpoint(&app, &id).await;
        if body["webhook"]["status"] == "disabled" {
            let reason = body["webhook"]["disabled_reason"].as_str().unwrap();
            assert!(reason.contains("2 failed attempts"), "{reason}");
            break;
        }
        assert!(Instant::now() < deadline, "never disabled: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its cursor is gone, so pruning no longer keeps the log for it.
    assert_eq!(
        app.db_count("SELECT COUNT(*) FROM event_cursors WHERE consumer LIKE 'webhook:%'"),
        0
    );
}

#[tokio::test]
async fn a_receiver_down_while_200_messages_are_posted_gets_all_in_order_once_up() {
    let app = app_with_retries(50).await;
    let rx = Receiver::start(&[], Reply::Status(200)).await;
    let (_, secret) = register(&app, &rx.url, &["thread.message"]).await;
    let port = rx.stop();
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let mut posted = Vec::new();
    for i in 0..200 {
        posted.push(app.say(&app.alice, &thread, &format!("m{i}")).await["id"].clone());
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port again");
    let mut rx = Receiver::on(listener, &[], Reply::Status(200));
    let mut got = Vec::new();
    while got.len() < 200 {
        let d = rx.next().await;
        assert!(d.verifies_with(&secret));
        // A retry of the event at the head may repeat it: same id.
        if got.last() != Some(&d.json["id"]) {
            got.push(d.json["id"].clone());
        }
    }
    assert_eq!(got, posted, "every message, in order");
}

#[tokio::test]
async fn a_hanging_receiver_delays_neither_another_endpoint_nor_posting() {
    let app = app_with_retries(3).await;
    let hang = Receiver::start(&[], Reply::Hang).await;
    let mut fast = Receiver::start(&[], Reply::Status(200)).await;
    register(&app, &hang.url, &["thread.message"]).await;
    register(&app, &fast.url, &["thread.message"]).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    // Waiting on the hanging receiver would take its whole delivery
    // timeout (10 s); half of it tells that apart from a loaded machine.
    let waited = threadline::webhooks::DELIVERY_TIMEOUT / 2;
    for i in 0..5 {
        let started = Instant::now();
        app.say(&app.alice, &thread, &format!("m{i}")).await;
        assert!(
            started.elapsed() < waited,
            "post {i} waited {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let d = fast.next().await;
        assert_eq!(d.json["data"]["content"], format!("m{i}"));
        assert!(
            started.elapsed() < waited,
            "the healthy endpoint waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn loopback_targets_are_refused_without_the_flag_and_nothing_is_stored() {
    let app = spawn_app_with(|c| c.allow_private_webhooks = false).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/hook",
    ] {
        let res = app
            .post_json(
                "/api/acsp/webhooks",
                &app.key,
                &json!({"url": url, "events": ["thread.message"]}),
            )
            .await;
        let body = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(body["error"]["field"], "url", "{url}");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
}

#[tokio::test]
async fn a_loopback_target_made_elsewhere_is_refused_at_delivery_without_the_flag() {
    let app = spawn_app_with(|c| {
        c.allow_private_webhooks = false;
        c.webhook_retry_schedule = vec![30];
    })
    .await;
    let mut rx = Receiver::start(&[], Reply::Status(200)).await;
    // The command line may register it (it cannot know the server's flags).
    let made = threadline::cli::webhook_create(
        &app.db,
        &app.user_id,
        &rx.url,
        vec!["thread.message".into()],
        None,
        true,
    )
    .unwrap();
    let id = serde_json::from_str::<Value>(&made).unwrap()["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "not for you").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let attempts = endpoint(&app, &id).await["attempts"].clone();
        if let Some(a) = attempts.as_array().unwrap().first() {
            assert!(a["status"].is_null());
            assert!(a["error"].as_str().unwrap().contains("private"), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rx.rx.try_recv().is_err(), "nothing reached the receiver");
}

#[tokio::test]
async fn endpoints_are_listed_paused_resumed_rotated_and_deleted_by_their_account_only() {
    let app = app_with_retries(3).await;
    let mut rx = Receiver::start(&[], Reply::Status(200)).await;
    let (id, old) = register(&app, &rx.url, &["thread.message"]).await;
    let stranger = app.new_agent("eve");
    for (method, path) in [
        ("GET", format!("/api/acsp/webhooks/{id}/attempts")),
        ("POST", format!("/api/acsp/webhooks/{id}/pause")),
        ("POST", format!("/api/acsp/webhooks/{id}/rotate")),
        ("DELETE", format!("/api/acsp/webhooks/{id}")),
    ] {
        let res = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(&stranger.key)
            .send()
            .await
            .unwrap();
        assert_error(res, 404, "NOT_FOUND").await;
    }
    let (_, list) = json_of(app.get("/api/acsp/webhooks", &app.key).await).await;
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "secret shown once only"
    );
    let (_, list) = json_of(app.get("/api/acsp/webhooks", &stranger.key).await).await;
    assert_eq!(list["webhooks"], json!([]));

    // Paused: nothing is sent; resumed: what happened meanwhile arrives.
    let (status, body) = json_of(
        app.post_json(
            &format!("/api/acsp/webhooks/{id}/pause"),
            &app.key,
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["webhook"]["status"].clone()),
        (200, json!("paused"))
    );
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "while paused").await;
    // Keeping no previous secret (the window of the default is tested in
    // webhook24.rs).
    let (_, body) = json_of(
        app.post_json(
            &format!("/api/acsp/webhooks/{id}/rotate"),
            &app.key,
            &json!({"keep_previous_hours": 0}),
        )
        .await,
    )
    .await;
    let new = body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rx.rx.try_recv().is_err(), "a paused endpoint gets nothing");
    let (_, body) = json_of(
        app.post_json(
            &format!("/api/acsp/webhooks/{id}/resume"),
            &app.key,
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(body["webhook"]["status"], "active");
    let d = rx.next().await;
    assert_eq!(d.json["data"]["content"], "while paused");
    assert!(
        d.verifies_with(&new) && !d.verifies_with(&old),
        "signed with the new secret"
    );

    let res = app
        .client
        .delete(app.url(&format!("/api/acsp/webhooks/{id}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
    assert_eq!(app.db_count("SELECT COUNT(*) FROM event_cursors"), 0);
    assert_error(endpoint_res(&app, &id).await, 404, "NOT_FOUND").await;
}

async fn endpoint_res(app: &TestApp, id: &str) -> reqwest::Response {
    app.get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
        .await
}

#[tokio::test]
async fn bad_endpoints_are_422_naming_the_field_and_nothing_is_stored() {
    let app = app_with_retries(3).await;
    let cases = [
        (json!({"events": ["thread.message"]}), "url", "no url"),
        (
            json!({"url": "ftp://x/y", "events": ["thread.message"]}),
            "url",
            "not http",
        ),
        (
            json!({"url": "https://", "events": ["thread.message"]}),
            "url",
            "https without a host",
        ),
        (json!({"url": "http://127.0.0.1:9/"}), "events", "no events"),
        (
            json!({"url": "http://127.0.0.1:9/", "events": []}),
            "events",
            "empty events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["turn_taking.typing"]}),
            "events",
            "unknown type",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["thread.message"], "description": "d".repeat(501)}),
            "description",
            "long description",
        ),
        (
            json!({"url": long_url('a', 2049), "events": ["thread.message"]}),
            "url",
            "a url of 2049 characters",
        ),
    ];
    for (body, field, why) in cases {
        let res = app.post_json("/api/acsp/webhooks", &app.key, &body).await;
        let err = assert_error(res, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["error"]["field"], field, "{why}");
    }
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 0);
    let res = app
        .client
        .post(app.url("/api/acsp/webhooks"))
        .json(&json!({"url": "http://127.0.0.1:9/", "events": ["thread.message"]}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
}

/// `http://127.0.0.1:9/` and then `fill` up to `chars` characters.
fn long_url(fill: char, chars: usize) -> String {
    let mut url = String::from("http://127.0.0.1:9/");
    url.extend(std::iter::repeat_n(fill, chars - url.len()));
    url
}

#[tokio::test]
async fn a_url_of_2048_characters_is_taken_even_when_it_is_longer_in_bytes() {
    let app = app_with_retries(3).await;
    // 2,048 characters, 4,077 bytes: lengths count characters, as everywhere.
    let url = long_url('é', 2048);
    assert!(url.len() > 2048);
    let body = json!({"url": url, "events": ["thread.message"]});
    let (status, made) = json_of(app.post_json("/api/acsp/webhooks", &app.key, &body).await).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(app.db_count("SELECT COUNT(*) FROM webhooks"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_delivery_delivers_every_event_after_its_restart() {
    // On the harness's backend: a SQLite file, or a PostgreSQL database.
    let db = TestDb::new();
    let account = provision_on(&db);
    let mut rx = Receiver::start(&[], Reply::Status(200)).await;
    let db_args = db.args();
    let made = cli_json(&db.with_args(
        &[
            "webhook",
            "create",
            "--user",
            &account.user_id,
            "--url",
            &rx.url,
            "--events",
            "thread.message",
            "--allow-private",
        ],
        &db_args,
    ));
    let secret = made["secret"].as_str().unwrap().to_owned();
    let listed =
        cli_json(&db.with_args(&["webhook", "list", "--user", &account.user_id], &db_args));
    assert_eq!(listed["webhooks"][0]["id"], made["webhook"]["id"]);
    assert!(listed["webhooks"][0].get("secret").is_none());

    let args = ["--rate-limit-per-minute", "0", "--allow-private-webhooks"];
    let server = Server::start_on(&db, &args, "warn").await;
    let thread = server.api.thread(&account).await;
    let mut posted = Vec::new();
    for i in 0..100 {
        let (status, body) = server
            .api
            .say(&account.key, &account.alice, &thread, &format!("m{i}"))
            .await
            .expect("answered");
        assert_eq!(status, 201);
        posted.push(body["message"]["id"].as_str().unwrap().to_owned());
    }
    // Kill it once deliveries are under way.
    let mut got: Vec<String> = Vec::new();
    for _ in 0..10 {
        got.push(rx.next().await.json["id"].as_str().unwrap().to_owned());
    }
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    drop(server);
    // Whatever was in flight arrives now or after the restart.
    while let Ok(d) = rx.rx.try_recv() {
        got.push(d.json["id"].as_str().unwrap().to_owned());
    }
    let _server = Server::start_on(&db, &args, "warn").await;
    let mut seen: std::collections::HashSet<String> = got.iter().cloned().collect();
    while !posted.iter().all(|id| seen.contains(id)) {
        let d = rx.next().await;
        assert!(d.verifies_with(&secret));
        let id = d.json["id"].as_str().unwrap().to_owned();
        seen.insert(id.clone());
        got.push(id);
    }
    // In order: the first arrival of each event follows the log's order.
    let mut first = Vec::new();
    for id in &got {
        if !first.contains(id) {
            first.push(id.clone());
        }
    }
    assert_eq!(
        first, posted,
        "every event, in order; repeats only with the same id"
    );
    let deleted = cli_json(&db.with_args(
        &[
            "webhook",
            "delete",
            "--user",
            &account.user_id,
            made["webhook"]["id"].as_str().unwrap(),
        ],
        &db_args,
    ));
    assert_eq!(deleted["deleted"], true);
    let out = run_cli(&db.with_args(
        &["webhook", "delete", "--user", &account.user_id, "wh_nope"],
        &db_args,
    ));
    assert!(!out.status.success());
}

#[tokio::test]
async fn an_endpoint_hears_only_its_accounts_threads_and_the_types_it_chose() {
    let app = app_with_retries(3).await;
    let mut rx = Receiver::start(&[], Reply::Status(200)).await;
    register(&app, &rx.url, &["thread.message", "thread.status"]).await;
    // Two other accounts talk to each other: none of it is ours.
    let (eve, mallory) = (app.new_agent("eve"), app.new_agent("mallory"));
    let theirs = app.thread_between(&eve, &mallory).await;
    app.say(&eve, &theirs, "private to them").await;
    // Ours: created (not subscribed), a message, a status change.
    let ours = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.bob, &ours, "ours").await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": ours, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let d = rx.next().await;
    assert_eq!(d.json["type"], "thread.message");
    assert_eq!(d.json["data"]["content"], "ours");
    let d = rx.next().await;
    assert_eq!(d.json["type"], "thread.status");
    assert_eq!(d.json["data"]["status"], "closed");
    assert_eq!(d.json["data"]["thread_id"], ours.as_str());
}

/// A TLS acceptor presenting `cert` (with its key) for 127.0.0.1.
fn acceptor(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("a valid certificate and key");
    TlsAcceptor::from(Arc::new(config))
}

/// A CA, and a certificate for 127.0.0.1 that it signed.
fn ca_and_leaf() -> (String, TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), acceptor(&leaf, &leaf_key))
}

#[tokio::test]
async fn an_https_target_with_a_self_signed_certificate_fails_with_a_tls_error() {
    let app = app_with_retries(3).await;
    let self_signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let rx = Receiver::tls(
        acceptor(&self_signed.cert, &self_signed.signing_key),
        Reply::Status(200),
    )
    .await;
    assert!(rx.url.starts_with("https://"));
    let (id, _) = register(&app, &rx.url, &["thread.created"]).await;
    app.thread_between(&app.alice, &app.bob).await;
    let deadline = Instant::now() + WAIT;
    let attempt = loop {
        let body = endpoint(&app, &id).await;
        if let Some(first) = body["attempts"].as_array().and_then(|a| a.last()) {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(attempt["status"].is_null(), "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.starts_with("TLS handshake failed") && error.contains("certificate"),
        "the certificate is verified and the failure says so: {error}"
    );
    let mut rx = rx;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.rx.recv())
            .await
            .is_err(),
        "nothing was sent over the untrusted connection"
    );
}

#[tokio::test]
async fn an_https_target_signed_by_the_configured_ca_gets_signed_deliveries() {
    let (ca_pem, tls) = ca_and_leaf();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 0;
        c.webhook_retry_schedule = vec![1; 3];
        c.allow_private_webhooks = true;
        c.webhook_ca_file = Some(ca_file);
    })
    .await;
    let mut rx = Receiver::tls(tls, Reply::Status(200)).await;
    let (_, secret) = register(&app, &rx.url, &["thread.message"]).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let message = app.say(&app.alice, &thread, "over TLS").await;
    let d = rx.next().await;
    assert_eq!(d.json["type"], "thread.message");
    assert_eq!(d.json["data"], message);
    assert!(d.verifies_with(&secret), "the signature verifies");
}

#[tokio::test]
async fn a_webhook_ca_file_without_a_certificate_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let mut config = threadline::config::ServeConfig::for_tests(dir.path().join("t.db"));
    config.webhook_ca_file = Some(ca_file);
    let err = threadline::startup::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("--webhook-ca-file"), "{err}");
}

#[tokio::test]
async fn with_two_nodes_each_event_is_delivered_once_per_endpoint() {
    if crate::helpers::pg::needs_postgres() {
        return;
    }
    let a = app_with_retries(3).await;
    let b = a
        .another_node(|c| {
            c.rate_limit_per_minute = 0;
            c.webhook_retry_schedule = vec![1; 3];
            c.allow_private_webhooks = true;
        })
        .await;
    let mut rx = Receiver::start(&[], Reply::Status(204)).await;
    register(&a, &rx.url, &["thread.message"]).await;
    let thread = a.thread_between(&a.alice, &a.bob).await;
    // Both nodes run a task for the endpoint; posts go through both.
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.say(&node.alice, &thread, &format!("m{i}")).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..10 {
        seqs.push(rx.next().await.json["data"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "once each, in order");
    // No second copy from the other node: a further post is the next one.
    a.say(&a.bob, &thread, "sentinel").await;
    assert_eq!(rx.next().await.json["data"]["seq"], 11);
}
