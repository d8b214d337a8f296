//! PostgreSQL operations, round 25: a database host that takes connections
//! and never answers (at start, mid-run, for a command), the turn-taking
//! scheduler and the log's pruner after an outage.
//!
//! The silent host is a listener in the test that accepts and stays quiet
//! (what a stuck server, or a proxy whose backend is gone, looks like);
//! mid-run it is a proxy in front of the test cluster that cuts its
//! connections and then goes quiet. The outages of the scheduler and the
//! pruner are a throwaway cluster's restarts (probe24's helpers).

use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::process::{output_within, BIN};

/// A TCP listener that accepts every connection and never says a word
/// (the sockets are held open until it is dropped).
struct Silent {
    port: u16,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::downgrade(&held);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Some(keep) = keep.upgrade() else { return };
                if let Ok(conn) = conn {
                    keep.lock().unwrap().push(conn);
                }
            }
        });
        Silent { port, held }
    }

    /// How many connections it took.
    fn taken(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://tl:s3cret-pw@127.0.0.1:{}/threadline{query}",
            self.port
        )
    }
}

/// Runs `threadline ARGS` (bounded by `output_within`); its exit code,
/// stderr, and how long it ran.
fn run(args: &[&str]) -> (Option<i32>, String, Duration) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    let started = Instant::now();
    let out = output_within(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// A database host that accepts the connection and never answers: `serve`
/// with `--pg-start-wait-secs 0` gives up after the connect timeout (5 s by
/// default) with exit 1 and one clear line, no password; with a wait, it
/// says once that it waits, tries again, and gives up once the wait is
/// over; a command (`agent create`) ends with exit 1 and the same words.
/// Each hung until killed: the driver's `connect_timeout` bounds only the
/// TCP connection, not the server's greeting.
#[test]
fn a_host_that_accepts_and_never_answers_ends_start_and_commands_within_the_timeout() {
    let silent = Silent::start();

    // The default timeout, no wait.
    let url = silent.url("");
    let (code, stderr, took) = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--pg-start-wait-secs",
        "0",
    ]);
    eprintln!("serve, no wait: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(silent.taken() >= 1, "it never connected");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("cannot connect to postgres://…@127.0.0.1:")
            && errors[0].contains("no answer within 5 s"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    assert!(took >= Duration::from_secs(4), "gave up early: {took:?}");

    // The URL's own timeout, and a wait of 3 s: several attempts, one line
    // about waiting, then exit 1.
    let url = silent.url("?connect_timeout=1");
    let before = silent.taken();
    let (code, stderr, took) = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--pg-start-wait-secs",
        "3",
    ]);
    eprintln!("serve, 3 s wait: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        silent.taken() >= before + 2,
        "one attempt only: {}",
        silent.taken() - before
    );
    assert_eq!(
        stderr.matches("waiting up to 3 s for it").count(),
        1,
        "{stderr}"
    );
    let last = stderr.lines().rfind(|l| l.starts_with("error:"));
    assert!(
        last.is_some_and(
            |l| l.contains("no answer within 1 s") && l.contains("after waiting 3 s for it")
        ),
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(3), "gave up early: {took:?}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    // A command: exit 1, the reason, no hang.
    let (code, stderr, took) = run(&["agent", "create", "--name", "x", "--database-url", &url]);
    eprintln!("agent create: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no answer within 1 s"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

/// A test database on PostgreSQL and a [`Proxy`] in front of it: the
/// database, its direct URL, the proxy and the URL through the proxy with
/// `connect_timeout` seconds. `None` (the test skips) without PostgreSQL
/// or when the cluster is not reached over TCP.
async fn behind_a_proxy(
    connect_timeout: u32,
) -> Option<(crate::helpers::db::TestDb, String, Proxy, String)> {
    if crate::helpers::pg::needs_postgres() {
        return None;
    }
    let db = crate::helpers::db::TestDb::new();
    let direct = db.arg.database_url.clone().expect("on PostgreSQL");
    let config: postgres::Config = direct.parse().expect("a URL");
    let (Some(postgres::config::Host::Tcp(host)), Some(port)) =
        (config.get_hosts().first(), config.get_ports().first())
    else {
        eprintln!("skipped: the test cluster is not reached over TCP ({direct})");
        return None;
    };
    let hostport = format!("{host}:{port}");
    let proxy = Proxy::start(hostport.clone()).await;
    let proxied = direct.replacen(&hostport, &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, direct, "the host:port is in the URL: {direct}");
    let separator = if proxied.contains('?') { '&' } else { '?' };
    let proxied = format!("{proxied}{separator}connect_timeout={connect_timeout}");
    Some((db, direct, proxy, proxied))
}

/// A TCP proxy in front of the test cluster: it forwards until told to go
/// quiet, then cuts every connection it forwards and takes new ones
/// without a word (the database host replaced by one that never answers),
/// until told to forward again.
struct Proxy {
    port: u16,
    quiet: Arc<std::sync::atomic::AtomicBool>,
    forwarding: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarding = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (q, f, h) = (quiet.clone(), forwarding.clone(), held.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if q.load(std::sync::atomic::Ordering::SeqCst) {
                    h.lock().unwrap().push(conn);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                });
                f.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            quiet,
            forwarding,
            held,
            accept,
        }
    }

    /// Cuts what it forwards; takes new connections without a word.
    fn go_quiet(&self) {
        self.quiet.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.forwarding.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Forwards again (what it held is closed).
    fn forward_again(&self) {
        self.quiet.store(false, std::sync::atomic::Ordering::SeqCst);
        self.held.lock().unwrap().clear();
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.go_quiet();
    }
}

/// The 503 envelope (UNAVAILABLE, no internals), or why not.
fn is_unavailable(answer: &Result<(reqwest::StatusCode, serde_json::Value), String>) -> bool {
    let Ok((status, body)) = answer else {
        return false;
    };
    let text = body.to_string().to_lowercase();
    *status == 503
        && body["error"]["code"] == "UNAVAILABLE"
        && !["postgres", "pool", "connect", "socket", "timeout"]
            .iter()
            .any(|w| text.contains(w))
}

/// `GET`/`POST` through `client`: the status and body, or why none came.
async fn ask(
    client: &reqwest::Client,
    req: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, serde_json::Value), String> {
    let res = client
        .execute(req.build().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = res.status();
    let body = res.json().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The node's database host stops answering mid-run (its connections cut,
/// new ones taken and never answered): every post, read and `/healthz` is
/// answered 503 UNAVAILABLE within 5 s (the URL's connect_timeout is 2 s),
/// none hangs; once the host answers again the node serves 201s by itself.
/// Without a bound on the whole connection attempt (the driver's bounds
/// only the TCP connect), the pool's, the writer's and the follower's
/// attempts hung on the quiet host, and this failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_answering_mid_run_is_answered_503_in_time_and_recovered_from() {
    use crate::helpers::process::Server;
    use serde_json::json;
    let Some((db, _, proxy, proxied)) = behind_a_proxy(2).await else {
        return;
    };
    let account = crate::helpers::process::provision_on(&db);
    let node = Server::start(
        db.dir.path(),
        &db.path,
        &[
            "--database-url",
            &proxied,
            "--rate-limit-per-minute",
            "0",
            "--pg-pool-size",
            "2",
        ],
        "warn",
    )
    .await;
    let api = &node.api;
    let thread = api.thread(&account).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()
        .expect("client");
    let post = |content: &str| {
        client
            .post(api.url("/api/acsp/thread/message"))
            .bearer_auth(&account.key)
            .json(&json!({"aid": account.alice, "thread_id": thread, "content": content}))
    };
    let read = format!("/api/acsp/thread/{thread}?aid={}", account.alice);
    let (status, body) = ask(&client, post("before")).await.expect("answered");
    assert_eq!(status, 201, "{body}");

    proxy.go_quiet();
    let quiet_since = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while quiet_since.elapsed() < Duration::from_secs(8) {
        for (what, req) in [
            ("a post", post(&format!("during {asked}"))),
            (
                "a read",
                client.get(api.url(&read)).bearer_auth(&account.key),
            ),
            ("/healthz", client.get(api.url("/healthz"))),
        ] {
            let started = Instant::now();
            let answer = ask(&client, req).await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert!(
                is_unavailable(&answer),
                "{what} while the host is quiet, after {took:?}: {answer:?}"
            );
            assert!(
                took <= Duration::from_secs(5),
                "{what} answered 503 only after {took:?}"
            );
            asked += 1;
        }
    }
    assert!(proxy.held() >= 1, "the node never tried to connect again");
    eprintln!(
        "{asked} requests answered 503 while the host was quiet, the slowest in {slowest:?}; \
         {} connections taken and left unanswered",
        proxy.held()
    );

    proxy.forward_again();
    let back = Instant::now();
    let recovered = loop {
        let answer = ask(&client, post("after")).await;
        match &answer {
            Ok((status, _)) if *status == 201 => break back.elapsed(),
            _ => assert!(is_unavailable(&answer), "after: {answer:?}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "no 201 within 20 s of the host answering again: {}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("first 201 {recovered:?} after the host answered again");
    let (status, body) = ask(&client, client.get(api.url("/healthz")))
        .await
        .expect("answered");
    assert_eq!(status, 200, "{body}");
    // Nothing of the refused posts was stored.
    let (stored, _) = api.messages(&account, &thread).await;
    let contents: Vec<String> = stored.values().cloned().collect();
    assert!(
        !contents.iter().any(|c| c.starts_with("during")),
        "{contents:?}"
    );
    let lines: Vec<String> = node
        .stderr()
        .lines()
        .filter(|l| l.starts_with('['))
        .map(str::to_owned)
        .collect();
    eprintln!("the node logged:\n{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
    assert!(lines.len() <= 12, "{} lines: {lines:#?}", lines.len());
}

/// The scheduler's and the pruner's log lines among a node's.
fn lines_of(server: &crate::helpers::process::Server, module: &str) -> Vec<String> {
    crate::probe24::log_lines(server)
        .into_iter()
        .filter(|l| l.contains(module))
        .collect()
}

/// A paced reply whose parts fall due during a 20 s PostgreSQL outage:
/// its first part goes out within 4 s of PostgreSQL's return (the
/// scheduler tries every second while the database is away), every part
/// once and in order; the scheduler logs the outage once and its end
/// once. Its pause doubled to 30 s, so the parts went out up to 30 s
/// late (some 15 s after this outage), and it logged every try.
#[tokio::test]
async fn paced_replies_go_out_within_seconds_of_the_end_of_a_long_outage() {
    use crate::probe24::{action, listen, log_lines, node, provision, Cluster};
    use serde_json::json;
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = node(dir.path(), &url, &[]).await;
    let opened = a.api.open_thread(&account.key, None).await;
    let tt = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut on_a = listen(&a.api, &account.key, &tt).await;
    let submit = json!({"thread_id": tt, "messages": [{"sender": "dana", "content": "Q1?"}]});
    let first = action(&a.api, &account.key, "submit_messages", submit).await;
    let reply = "Revenue is up four percent on the quarter, mostly from the new region. \
                 Costs are flat, which is better than the plan expected.";
    let body = json!({"thread_id": tt, "content": reply, "turn_epoch": first["turn_epoch"]});
    let answer = action(&a.api, &account.key, "respond", body).await;
    let parts = answer["scheduled"].as_array().expect("scheduled").len();
    assert!(parts >= 2, "{answer}");
    let logged_before = log_lines(&a).len();

    cluster.stop();
    let down = Instant::now();
    // Wait out the outage while watching the node's log grow: the
    // scheduler fails its tries meanwhile (wall-clock time is the point).
    while down.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.start_again();
    let back = Instant::now();
    let mut delivered = Vec::new();
    let mut first_after = None;
    while delivered.len() < parts {
        let e = on_a.event_of("turn_taking.message").await;
        first_after.get_or_insert_with(|| back.elapsed());
        delivered.push(e["data"]["index"].as_i64().unwrap());
    }
    let first_after = first_after.expect("a part");
    eprintln!("first part delivered {first_after:?} after PostgreSQL's start");
    assert_eq!(delivered, (0..parts as i64).collect::<Vec<_>>());
    assert!(
        first_after <= Duration::from_secs(4),
        "the first part went out {first_after:?} after PostgreSQL's return"
    );
    let admin = crate::helpers::pg::Session::new(&url);
    assert_eq!(
        admin.ints_of_row(
            "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM scheduled_replies"
        ),
        vec![parts as i64, parts as i64]
    );
    // Its log: once when the database went, once when it was back.
    let lines: Vec<String> = lines_of(&a, "threadline::turn::scheduler");
    eprintln!(
        "the node logged:\n{}",
        log_lines(&a)[logged_before..].join("\n")
    );
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("while the database is away"),
        "{lines:#?}"
    );
    assert!(lines[1].contains("works again"), "{lines:#?}");
}

/// The log's pruner after a PostgreSQL restart: a node whose first pass
/// (a second after its start) meets PostgreSQL down tries again every 2 s,
/// quietly, and prunes the old events within seconds of its return. It
/// logged "pruning the event log failed" and waited five minutes.
#[tokio::test]
async fn the_pruner_tries_again_soon_after_a_pass_the_database_was_away_for() {
    use crate::probe24::{log_lines, node, provision, Cluster};
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    // Events to prune: posted through a first node, then aged.
    {
        let first = node(dir.path(), &url, &[]).await;
        let thread = first.api.thread(&account).await;
        for i in 0..5 {
            let (status, body) = first
                .api
                .say(&account.key, &account.alice, &thread, &format!("old {i}"))
                .await
                .expect("answered");
            assert_eq!(status, 201, "{body}");
        }
    }
    let old = "SELECT count(*) FROM events WHERE created_at < '2001'";
    crate::helpers::pg::exec(
        &url,
        "UPDATE events SET created_at = '2000-01-01T00:00:00.000Z'",
    );
    let aged = crate::helpers::pg::scalar(&url, old);
    assert!(aged >= 5, "{aged} events aged");

    // A node whose first pass comes while PostgreSQL is down.
    let a = node(dir.path(), &url, &[]).await;
    cluster.stop();
    let down = Instant::now();
    let pruner = "pruning the event log";
    while !log_lines(&a).iter().any(|l| l.contains(pruner)) {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "the first pass did not meet the outage (it ran before it?): {:#?}",
            log_lines(&a)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Down a while longer: several of its tries fail, quietly.
    while down.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.start_again();
    let back = Instant::now();
    let admin = crate::helpers::pg::Session::new(&url);
    // The newest event stays (the log's head); the others go.
    while admin.scalar(old) > 1 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "{} old events still there {:?} after PostgreSQL's return: {:#?}",
            admin.scalar(old),
            back.elapsed(),
            log_lines(&a)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "old events pruned {:?} after PostgreSQL's return",
        back.elapsed()
    );
    let lines: Vec<String> = log_lines(&a)
        .into_iter()
        .filter(|l| l.contains(pruner))
        .collect();
    eprintln!("the pruner logged:\n{}", lines.join("\n"));
    assert_eq!(lines.len(), 2, "once down, once back: {lines:#?}");
    assert!(lines[1].contains("answers again"), "{lines:#?}");
}

/// Webhook delivery leases when the node that holds one is cut off from
/// the database mid-delivery (its sessions gone from `pg_stat_activity`,
/// as after `pg_terminate_backend` with no way back in): the other node
/// takes the lease within seconds and delivers the event in flight again,
/// with the same id (at-least-once: one repeat per take-over), then the
/// rest, in order; the first node, back, does not take the lease back
/// while the other's session lives. Its late failure (the receiver never
/// answered it) is not held against the endpoint: it paused the new
/// holder's deliveries for the first retry delay (5 s) and counted a
/// failure on an event delivered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_mid_delivery_hands_its_lease_over_with_one_repeat_at_most() {
    use crate::helpers::process::{cli_json, Server};
    use crate::webhooks::{Receiver, Reply};
    let Some((db, direct, proxy, proxied)) = behind_a_proxy(1).await else {
        return;
    };
    let account = crate::helpers::process::provision_on(&db);
    // The fourth request (the first node's, when it is cut off) is never
    // answered; every other one is a 200.
    let ok = Reply::Status(200);
    let mut rx = Receiver::start(&[ok, ok, ok, Reply::Hang], ok).await;
    cli_json(&[
        "webhook",
        "create",
        "--user",
        &account.user_id,
        "--url",
        &rx.url,
        "--events",
        "thread.message",
        "--allow-private",
        "--database-url",
        &direct,
    ]);
    let common = [
        "--rate-limit-per-minute",
        "0",
        "--allow-private-webhooks",
        "--pg-pool-size",
        "2",
    ];
    let a_args: Vec<&str> = ["--database-url", proxied.as_str()]
        .into_iter()
        .chain(common)
        .collect();
    let a = Server::start(db.dir.path(), &db.path, &a_args, "warn").await;
    let thread = a.api.thread(&account).await;
    let say = |api: &crate::helpers::process::Api, content: String| {
        let api = api.clone();
        let (key, aid, thread) = (account.key.clone(), account.alice.clone(), thread.clone());
        async move {
            let (status, body) = api
                .say(&key, &aid, &thread, &content)
                .await
                .expect("answered");
            assert_eq!(status, 201, "{body}");
            body["message"]["id"].as_str().unwrap().to_owned()
        }
    };
    let mut posted = Vec::new();
    let mut arrived: Vec<String> = Vec::new();
    /// The message id of the next delivery.
    async fn arrival(rx: &mut Receiver) -> String {
        let d = rx.next().await;
        d.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("not a message: {}", d.json))
            .to_owned()
    }
    for i in 1..=3 {
        posted.push(say(&a.api, format!("m{i}")).await);
    }
    while arrived.len() < 3 {
        arrived.push(arrival(&mut rx).await);
    }
    let admin = crate::helpers::pg::Session::new(&direct);
    let owner_a = admin
        .text("SELECT lease_owner FROM webhooks")
        .expect("a holds the lease");

    let b_args: Vec<&str> = ["--database-url", direct.as_str()]
        .into_iter()
        .chain(common)
        .collect();
    let b = Server::start(db.dir.path(), &db.path, &b_args, "warn").await;
    // m4, through b, delivered by a, whose request is never answered.
    posted.push(say(&b.api, "m4".into()).await);
    arrived.push(arrival(&mut rx).await);
    let hung_at = Instant::now();
    assert_eq!(
        admin.text("SELECT lease_owner FROM webhooks").as_deref(),
        Some(owner_a.as_str()),
        "a delivered m4"
    );

    proxy.go_quiet();
    let cut = Instant::now();
    // b takes over: m4 again, same id.
    arrived.push(arrival(&mut rx).await);
    eprintln!(
        "b delivered the event in flight again {:?} after the cut",
        cut.elapsed()
    );
    let owner_b = admin
        .text("SELECT lease_owner FROM webhooks")
        .expect("an owner");
    assert_ne!(owner_b, owner_a, "b holds the lease");
    for i in 5..=6 {
        posted.push(say(&b.api, format!("m{i}")).await);
    }
    while arrived.len() < 7 {
        arrived.push(arrival(&mut rx).await);
    }
    proxy.forward_again();
    // a's hung request ends at its delivery timeout (10 s), a reaching
    // the database again by then.
    let a_back = Instant::now();
    let (status, body) = loop {
        let answer = a
            .api
            .say(&account.key, &account.alice, &thread, "m7")
            .await
            .expect("answered");
        if answer.0 == 201 || a_back.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 201, "a posts again: {body}");
    posted.push(body["message"]["id"].as_str().unwrap().to_owned());
    arrived.push(arrival(&mut rx).await);
    while hung_at.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After a's timeout: nothing counted against the endpoint, and the
    // next event goes out at once.
    assert_eq!(
        admin.ints_of_row(
            "SELECT failures, (next_attempt_at IS NOT NULL)::int, \
             (SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL) FROM webhooks"
        ),
        vec![0, 0, 0],
        "a's late failure was held against the endpoint"
    );
    let sent = Instant::now();
    posted.push(say(&b.api, "m8".into()).await);
    arrived.push(arrival(&mut rx).await);
    let took = sent.elapsed();
    eprintln!("m8 delivered {took:?} after its post; arrivals {arrived:?}");
    assert_eq!(
        admin.text("SELECT lease_owner FROM webhooks").as_deref(),
        Some(owner_b.as_str()),
        "a took the lease back"
    );
    assert_eq!(
        admin.ints_of_row("SELECT failures, (status = 'active')::int FROM webhooks"),
        vec![0, 1],
        "a's late failure was held against the endpoint"
    );
    assert!(
        took <= Duration::from_secs(3),
        "m8 was delivered {took:?} after its post"
    );
    // First arrivals in the order posted; one repeat, of the event in flight.
    let mut first: Vec<String> = Vec::new();
    for id in &arrived {
        if !first.contains(id) {
            first.push(id.clone());
        }
    }
    assert_eq!(first, posted, "{arrived:?}");
    assert_eq!(arrived.len(), posted.len() + 1, "{arrived:?}");
    assert_eq!(arrived[3], arrived[4], "{arrived:?}");
    for (name, server) in [("a", &a), ("b", &b)] {
        let lines = crate::probe24::log_lines(server);
        eprintln!("node {name} logged:\n{}", lines.join("\n"));
    }
    drop(proxy);
}

/// Every session of the nodes' database terminated again and again
/// (`pg_terminate_backend`, as an operator or a failover does) while two
/// nodes deliver one endpoint's events: each follower session is gone for
/// a moment, so the lease may pass from node to node. Every event arrives,
/// the first arrivals in log order; a repeat (same id) only of an event a
/// node had in flight as it lost the lease: at most one per termination,
/// and no event more than twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_move_a_webhook_lease_without_a_burst_of_repeats() {
    use crate::helpers::process::{cli_json, Server};
    use crate::webhooks::{Receiver, Reply};
    if crate::helpers::pg::needs_postgres() {
        return;
    }
    let db = crate::helpers::db::TestDb::new();
    let url = db.arg.database_url.clone().expect("on PostgreSQL");
    let account = crate::helpers::process::provision_on(&db);
    let mut rx = Receiver::start(&[], Reply::Status(200)).await;
    cli_json(&[
        "webhook",
        "create",
        "--user",
        &account.user_id,
        "--url",
        &rx.url,
        "--events",
        "thread.message",
        "--allow-private",
        "--database-url",
        &url,
    ]);
    let args = [
        "--database-url",
        url.as_str(),
        "--rate-limit-per-minute",
        "0",
        "--allow-private-webhooks",
        "--pg-pool-size",
        "2",
    ];
    let a = Server::start(db.dir.path(), &db.path, &args, "warn").await;
    let b = Server::start(db.dir.path(), &db.path, &args, "warn").await;
    let thread = a.api.thread(&account).await;
    let admin = crate::helpers::pg::Session::new(&url);
    let name = admin.text("SELECT current_database()").expect("a name");
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid))::bigint FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    let mut posted: Vec<String> = Vec::new();
    let mut terminations = 0;
    for i in 0..40 {
        let api = if i % 2 == 0 { &a.api } else { &b.api };
        // A 503 now and then: a post on a connection just terminated.
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let (status, body) = api
                .say(&account.key, &account.alice, &thread, &format!("m{i}"))
                .await
                .expect("answered");
            if status == 201 {
                break body["message"]["id"].as_str().unwrap().to_owned();
            }
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline, "no 201 for m{i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        posted.push(id);
        if i % 4 == 3 {
            admin.scalar(&terminate);
            terminations += 1;
        }
    }
    let mut arrived: Vec<String> = Vec::new();
    while !posted.iter().all(|id| arrived.contains(id)) {
        arrived.push(rx.next().await.json["id"].as_str().unwrap().to_owned());
    }
    // Stragglers: a repeat sent just before the last first arrival.
    let (status, body) = a
        .api
        .say(&account.key, &account.alice, &thread, "sentinel")
        .await
        .expect("answered");
    assert_eq!(status, 201, "{body}");
    let sentinel = body["message"]["id"].as_str().unwrap().to_owned();
    loop {
        let id = rx.next().await.json["id"].as_str().unwrap().to_owned();
        if id == sentinel {
            break;
        }
        arrived.push(id);
    }
    let mut first: Vec<String> = Vec::new();
    for id in &arrived {
        if !first.contains(id) {
            first.push(id.clone());
        }
    }
    assert_eq!(first, posted, "first arrivals in log order: {arrived:?}");
    let repeats = arrived.len() - posted.len();
    eprintln!(
        "{} events, {terminations} terminations, {repeats} repeats",
        posted.len()
    );
    assert!(repeats <= terminations, "{repeats} repeats: {arrived:?}");
    for id in &posted {
        let n = arrived.iter().filter(|a| *a == id).count();
        assert!(n <= 2, "{id} arrived {n} times");
    }
}
