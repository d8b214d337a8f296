//! PostgreSQL goes away and comes back, probed as an operator running two
//! nodes on one database would: PostgreSQL restarted (`pg_ctl stop -m fast`,
//! then started again) while the nodes serve posts, reads, WebSockets and
//! SSE streams; every connection of the database killed from the server
//! side (`pg_terminate_backend`); PostgreSQL down when a node starts.
//!
//! Each test owns a throwaway cluster (initdb in a temp directory, as
//! `.ci/run` makes its own, run as the user `threadline-pg` when the tests
//! run as root; listening on a Unix socket in that directory only, so no
//! port can clash), because stopping the cluster the rest of the suite
//! shares would fail the other tests. They run on the PostgreSQL pass
//! (`THREADLINE_TEST_DATABASE_URL` set) and say they skip otherwise, or
//! when no PostgreSQL binaries are found (`THREADLINE_TEST_PG_BIN` names
//! their directory; else `pg_config --bindir`, then the newest
//! /usr/lib/postgresql/*/bin).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::process::{cli_json, Account, Api, Server, DEADLINE};
use crate::helpers::{json_of, Ws, WsNext, WAIT};

/// The PostgreSQL binaries' directory, if there are any.
pub(crate) fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("THREADLINE_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_config.filter(|d| d.join("pg_ctl").exists()) {
        return Some(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// A PostgreSQL cluster of the test's own, stopped (immediately) and
/// deleted on drop.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run the binaries as this user (the tests run as root).
    user: Option<&'static str>,
}

impl Cluster {
    /// A new cluster, started; `None` (the test skips, saying why) on the
    /// SQLite pass or without PostgreSQL's binaries.
    pub(crate) fn start() -> Option<Cluster> {
        if crate::helpers::pg::needs_postgres() {
            return None;
        }
        let Some(bin) = pg_bin() else {
            eprintln!(
                "skipped: no PostgreSQL binaries (initdb, pg_ctl) found; set THREADLINE_TEST_PG_BIN"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // initdb refuses to run as root.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = root.then_some("threadline-pg");
        if root {
            let owned = Command::new("chown")
                .arg("threadline-pg")
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(owned.success(), "chown threadline-pg (see .ci/run)");
        }
        let cluster = Cluster { dir, bin, user };
        let made = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            made.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        cluster.start_again();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it (waiting until it accepts connections): a Unix socket in
    /// its directory, no TCP.
    pub(crate) fn start_again(&self) {
        let log = self.dir.path().join("log");
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off -c max_connections=100",
            self.dir.path().display()
        );
        self.pg_ctl(&[
            "-l",
            log.to_str().expect("UTF-8 temp path"),
            "-w",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops it the way `pg_ctl restart` does (`-m fast`: sessions are
    /// ended, FATAL 57P01), waiting until it is down.
    pub(crate) fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// The URL of database `name` on it.
    fn url(&self, name: &str) -> String {
        format!(
            "postgres:///{name}?host={}&user=postgres",
            self.dir.path().display()
        )
    }

    /// A new empty database; its URL.
    pub(crate) fn database(&self, name: &str) -> String {
        crate::helpers::pg::exec(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// An account (alice with a key, bob) made with the binary's commands.
pub(crate) fn provision(url: &str) -> Account {
    let first = cli_json(&["agent", "create", "--name", "alice", "--database-url", url]);
    let user_id = first["user_id"].as_str().expect("user_id").to_owned();
    let second = cli_json(&[
        "agent",
        "create",
        "--name",
        "bob",
        "--user",
        &user_id,
        "--database-url",
        url,
    ]);
    Account {
        key: first["login_key"].as_str().expect("login_key").to_owned(),
        alice: first["aid"].as_str().expect("aid").to_owned(),
        bob: second["aid"].as_str().expect("aid").to_owned(),
        user_id,
    }
}

/// A node: `threadline serve` on `url`, logging warnings and errors only.
pub(crate) async fn node(dir: &Path, url: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--database-url",
        url,
        "--rate-limit-per-minute",
        "0",
        // Two pooled connections, so that what happens once each is used
        // up happens within a few requests.
        "--pg-pool-size",
        "2",
    ];
    args.extend_from_slice(extra);
    Server::start(dir, &dir.join("unused.db"), &args, "warn").await
}

/// A client with a bound on each request shorter than the pool's own wait
/// for a connection (10 s): a request that hangs until then fails.
pub(crate) fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Posts `content` as alice; the status and body, or `None` when no answer
/// came within the client's bound.
pub(crate) async fn post(
    client: &reqwest::Client,
    api: &Api,
    account: &Account,
    thread: &str,
    content: &str,
) -> Option<(StatusCode, Value)> {
    let body = json!({"aid": account.alice, "thread_id": thread, "content": content});
    let res = client
        .post(api.url("/api/acsp/thread/message"))
        .bearer_auth(&account.key)
        .json(&body)
        .send()
        .await
        .ok()?;
    Some(json_of(res).await)
}

/// GETs `path` with the key.
async fn get(
    client: &reqwest::Client,
    api: &Api,
    key: &str,
    path: &str,
) -> Option<(StatusCode, Value)> {
    let res = client
        .get(api.url(path))
        .bearer_auth(key)
        .send()
        .await
        .ok()?;
    Some(json_of(res).await)
}

/// Asserts the answer is the 503 envelope (UNAVAILABLE, a request id, no
/// internals).
pub(crate) fn assert_unavailable(what: &str, answer: Option<(StatusCode, Value)>) {
    let (status, body) =
        answer.unwrap_or_else(|| panic!("{what}: no answer within the client's 5 s"));
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{what}: {body}");
    assert!(
        body["error"]["request_id"].is_string(),
        "{what}: no request id: {body}"
    );
    let text = body.to_string().to_lowercase();
    for internal in ["postgres", "pool", "connect", "socket", "sql"] {
        assert!(
            !text.contains(internal),
            "{what} tells {internal:?}: {body}"
        );
    }
}

/// A WebSocket on `thread` opened through `api`, past its connection.ready.
pub(crate) async fn listen(api: &Api, key: &str, thread: &str) -> Ws {
    let opened = api.open_thread(key, Some(thread)).await;
    let url = opened["realtime"]["connect_url"].as_str().expect("url");
    let mut ws = Ws::connect(url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    ws
}

/// The thread.message events' (seq, content) up to and including `last`.
async fn ws_messages_upto(ws: &mut Ws, last: i64) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    while out.last().is_none_or(|(seq, _)| *seq < last) {
        match ws.next().await {
            WsNext::Event(e) if e["type"] == "thread.message" => out.push((
                e["seq"].as_i64().expect("seq"),
                e["data"]["content"].as_str().expect("content").to_owned(),
            )),
            WsNext::Event(_) => {}
            WsNext::Closed(code) => panic!("the socket closed ({code:?}) after {out:?}"),
        }
    }
    out
}

/// A `/v1/sse?thread_id=` stream read chunk by chunk.
struct Sse {
    res: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(api: &Api, key: &str, thread: &str) -> Sse {
        let res = api
            .client
            .get(api.url(&format!("/v1/sse?thread_id={thread}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "stream refused");
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// The thread.message events' (seq, content) up to and including `last`.
    async fn messages_upto(&mut self, last: i64) -> Vec<(i64, String)> {
        let mut out: Vec<(i64, String)> = Vec::new();
        while out.last().is_none_or(|(seq, _)| *seq < last) {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if block.contains("event: closed") {
                    panic!("the stream closed: {block}");
                }
                if let Some(e) = data.and_then(|d| serde_json::from_str::<Value>(d).ok()) {
                    if e["type"] == "thread.message" {
                        out.push((
                            e["seq"].as_i64().expect("seq"),
                            e["data"]["content"].as_str().expect("content").to_owned(),
                        ));
                    }
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("the stream went quiet after {out:?}"))
                .expect("stream read")
                .unwrap_or_else(|| panic!("the stream ended after {out:?}"));
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
        out
    }
}

/// The warnings and errors a node has logged so far (its stderr lines
/// that are log records).
pub(crate) fn log_lines(server: &Server) -> Vec<String> {
    server
        .stderr()
        .lines()
        .filter(|l| l.starts_with('['))
        .map(str::to_owned)
        .collect()
}

/// Posts through `api` until one is answered 201 (bounded): that answer,
/// and how long it took. Every earlier answer must be a 503 envelope.
async fn until_first_201(
    client: &reqwest::Client,
    api: &Api,
    account: &Account,
    thread: &str,
    content: &str,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let answer = post(client, api, account, thread, content).await;
        if let Some((StatusCode::CREATED, body)) = answer {
            return (body, started.elapsed());
        }
        assert_unavailable("a post while PostgreSQL comes back", answer);
        assert!(
            started.elapsed() < DEADLINE,
            "no 201 within {DEADLINE:?} of PostgreSQL's start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PostgreSQL restarted under two nodes. While it is down: every post and
/// read is answered 503 UNAVAILABLE (the envelope, no internals) within the
/// client's 5 s, never a 201 or a 500, and `/healthz` says 503; the nodes
/// log a few lines about it, not a line per request or per retry. Once it
/// is back: posts through both nodes are answered 201 again without a
/// restart of either, and the WebSockets (on both nodes) and the SSE
/// stream that stayed open get every message committed before the outage
/// and after it, in seq order, once each.
#[tokio::test]
async fn a_postgres_restart_is_answered_503_and_both_nodes_recover_by_themselves() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = node(dir.path(), &url, &[]).await;
    let b = node(dir.path(), &url, &[]).await;
    let client = impatient();
    let thread = a.api.thread(&account).await;
    let mut on_a = listen(&a.api, &account.key, &thread).await;
    let mut on_b = listen(&b.api, &account.key, &thread).await;
    let mut sse_b = Sse::open(&b.api, &account.key, &thread).await;

    let mut acked: Vec<(i64, String)> = Vec::new();
    for i in 1..=6 {
        let api = if i % 2 == 0 { &b.api } else { &a.api };
        let content = format!("before {i}");
        let (status, body) = post(&client, api, &account, &thread, &content)
            .await
            .expect("answered");
        assert_eq!(status, 201, "{body}");
        acked.push((body["message"]["seq"].as_i64().unwrap(), content));
    }
    // Each socket has them before PostgreSQL goes.
    assert_eq!(ws_messages_upto(&mut on_a, 6).await, acked);
    assert_eq!(ws_messages_upto(&mut on_b, 6).await, acked);
    assert_eq!(sse_b.messages_upto(6).await, acked);

    let logged_before = (log_lines(&a).len(), log_lines(&b).len());
    cluster.stop();
    let down_since = Instant::now();
    // Four seconds of clients trying, spread over both nodes: posts, a
    // thread read, the thread list, /healthz. None may be a 201 or a 500,
    // none may hang.
    let mut asked = 0;
    let read = format!("/api/acsp/thread/{thread}?aid={}", account.alice);
    let list = format!("/api/acsp/threads?aid={}", account.alice);
    while down_since.elapsed() < Duration::from_secs(4) {
        for (name, api) in [("a", &a.api), ("b", &b.api)] {
            let content = format!("during {asked}");
            let answer = post(&client, api, &account, &thread, &content).await;
            assert_unavailable(&format!("a post through {name} while down"), answer);
            let answer = get(&client, api, &account.key, &read).await;
            assert_unavailable(&format!("a thread read on {name} while down"), answer);
            let answer = get(&client, api, &account.key, &list).await;
            assert_unavailable(&format!("the thread list on {name} while down"), answer);
            let answer = get(&client, api, &account.key, "/healthz").await;
            assert_unavailable(&format!("/healthz on {name} while down"), answer);
            asked += 4;
        }
    }
    let down_for = down_since.elapsed();
    // What the nodes logged meanwhile: about the outage, not per request.
    let during = (
        log_lines(&a)[logged_before.0..].to_vec(),
        log_lines(&b)[logged_before.1..].to_vec(),
    );
    eprintln!(
        "outage {down_for:?}, {asked} requests answered 503; node a logged {} lines, node b {}:\n{}\n--\n{}",
        during.0.len(),
        during.1.len(),
        during.0.join("\n"),
        during.1.join("\n")
    );
    for (name, lines) in [("a", &during.0), ("b", &during.1)] {
        assert!(
            lines.len() <= 15,
            "node {name} logged {} lines in a {down_for:?} outage ({asked} requests): {lines:#?}",
            lines.len()
        );
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "node {name} panicked: {lines:#?}"
        );
    }

    cluster.start_again();
    // Both nodes answer 201 again by themselves.
    let (first_a, took_a) = until_first_201(&client, &a.api, &account, &thread, "after a").await;
    let (first_b, took_b) = until_first_201(&client, &b.api, &account, &thread, "after b").await;
    eprintln!("first 201 after PostgreSQL's start: node a {took_a:?}, node b then {took_b:?}");
    acked.push((
        first_a["message"]["seq"].as_i64().unwrap(),
        "after a".into(),
    ));
    acked.push((
        first_b["message"]["seq"].as_i64().unwrap(),
        "after b".into(),
    ));
    // Reads too, on both, every time (each pooled connection is used).
    for api in [&a.api, &b.api] {
        for _ in 0..4 {
            let (status, body) = get(&client, api, &account.key, &read)
                .await
                .expect("answered");
            assert_eq!(status, 200, "a read after the restart: {body}");
            let (status, body) = get(&client, api, &account.key, "/healthz")
                .await
                .expect("answered");
            assert_eq!(status, 200, "/healthz after the restart: {body}");
        }
    }
    for i in 1..=6 {
        let api = if i % 2 == 0 { &b.api } else { &a.api };
        let content = format!("after {i}");
        let (status, body) = post(&client, api, &account, &thread, &content)
            .await
            .expect("answered");
        assert_eq!(status, 201, "{body}");
        acked.push((body["message"]["seq"].as_i64().unwrap(), content));
    }
    // What is stored: 1..=n with no gap; every 201 among it. A 503'd post
    // is stored only if its COMMIT went through as the connection broke.
    let (stored, count) = a.api.messages(&account, &thread).await;
    let n = stored.len() as i64;
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(count, n);
    let last = acked.last().unwrap().0;
    assert_eq!(last, n, "the last 201 is the last message stored");
    // The sockets that stayed open: every stored message from seq 7 on,
    // in order, once; the acknowledged ones among them as posted.
    let check = |who: &str, got: Vec<(i64, String)>| {
        let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (7..=n).collect::<Vec<_>>(), "{who}: {got:?}");
        for (seq, content) in acked.iter().filter(|(s, _)| *s >= 7) {
            assert!(
                got.contains(&(*seq, content.clone())),
                "{who} lacks {seq} {content:?}: {got:?}"
            );
        }
    };
    check("the socket on a", ws_messages_upto(&mut on_a, n).await);
    check("the socket on b", ws_messages_upto(&mut on_b, n).await);
    check("the SSE stream on b", sse_b.messages_upto(n).await);
    // And nothing twice: the next event of each is the next message.
    let (status, _) = post(&client, &a.api, &account, &thread, "sentinel")
        .await
        .expect("answered");
    assert_eq!(status, 201);
    let sentinel = vec![(n + 1, "sentinel".to_owned())];
    assert_eq!(ws_messages_upto(&mut on_a, n + 1).await, sentinel);
    assert_eq!(ws_messages_upto(&mut on_b, n + 1).await, sentinel);
    assert_eq!(sse_b.messages_upto(n + 1).await, sentinel);
}

/// Every session of the nodes' database ended from the server side, as an
/// operator does with `pg_terminate_backend` (or a failover, or an idle
/// timeout of a proxy in between): the pooled connections, the writers'
/// and the followers' die while idle. No client may notice: the next posts
/// through each node are 201 at once, reads and `/healthz` 200, and the
/// sockets on both nodes get every message after it, in order, once. Each
/// idle pooled connection, and each writer's, cost a request a 503.
#[tokio::test]
async fn sessions_terminated_by_the_server_cost_no_client_a_503() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    let a = node(dir.path(), &url, &[]).await;
    let b = node(dir.path(), &url, &[]).await;
    let client = impatient();
    let thread = a.api.thread(&account).await;
    let mut on_a = listen(&a.api, &account.key, &thread).await;
    let mut on_b = listen(&b.api, &account.key, &thread).await;
    let read = format!("/api/acsp/thread/{thread}?aid={}", account.alice);
    let mut acked: Vec<(i64, String)> = Vec::new();
    let mut n = 0;
    for round in 0..3 {
        // Both pooled connections of each node in use once, so both sit
        // idle in the pool when their sessions end.
        for api in [&a.api, &b.api] {
            let (r1, r2) = tokio::join!(
                get(&client, api, &account.key, &read),
                get(&client, api, &account.key, &read)
            );
            assert_eq!(r1.expect("answered").0, 200);
            assert_eq!(r2.expect("answered").0, 200);
        }
        let admin = crate::helpers::pg::Session::new(&cluster.url("postgres"));
        let ended = admin.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'threadline' AND pid <> pg_backend_pid()",
        );
        // Two nodes: a writer, a follower, a revocation watcher and the
        // pool's connections each.
        assert!(ended >= 6, "round {round}: {ended} sessions ended");
        for (name, api) in [("a", &a.api), ("b", &b.api)] {
            n += 1;
            let content = format!("round {round} via {name}");
            let (status, body) = post(&client, api, &account, &thread, &content)
                .await
                .expect("answered");
            let server = if name == "a" { &a } else { &b };
            assert_eq!(
                status,
                201,
                "round {round}, the first post via {name}: {body}; it logged {:#?}",
                log_lines(server)
            );
            acked.push((body["message"]["seq"].as_i64().unwrap(), content));
            for _ in 0..3 {
                let (status, body) = get(&client, api, &account.key, &read)
                    .await
                    .expect("answered");
                assert_eq!(status, 200, "round {round}, a read on {name}: {body}");
            }
            let (status, body) = get(&client, api, &account.key, "/healthz")
                .await
                .expect("answered");
            assert_eq!(status, 200, "round {round}, /healthz on {name}: {body}");
        }
    }
    let expected: Vec<(i64, String)> = (1..=n).zip(acked.iter().map(|(_, c)| c.clone())).collect();
    assert_eq!(acked, expected, "seqs 1..={n} in the order answered");
    assert_eq!(ws_messages_upto(&mut on_a, n).await, expected);
    assert_eq!(ws_messages_upto(&mut on_b, n).await, expected);
    let logs = [log_lines(&a), log_lines(&b)];
    eprintln!(
        "node a logged:\n{}\nnode b logged:\n{}",
        logs[0].join("\n"),
        logs[1].join("\n")
    );
    for lines in &logs {
        assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
    }
}

/// PostgreSQL not up yet when a node starts (a host's boot, a compose
/// file): the node says so in one line and waits, then starts once the
/// database is there and serves (it exited 1 at once, and systemd's
/// `Restart=on-failure` with `RestartSec=2` gives up after five starts in
/// 10 s). With `--pg-start-wait-secs 0` it exits 1 at once, naming the
/// database without its password; a database that answers with a refusal
/// (ops23: no such database) still ends it at once.
#[tokio::test]
async fn a_node_started_before_postgres_waits_for_it_and_then_serves() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    cluster.stop();
    let dir = tempfile::tempdir().expect("temp dir");

    // No wait: exit 1 at once, the reason on stderr.
    let with_password = format!("{url}&password=s3cret-pw");
    let mut cmd = Command::new(crate::helpers::process::BIN);
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &with_password,
        "--pg-start-wait-secs",
        "0",
    ])
    .env_remove("RUST_LOG");
    let out = crate::helpers::process::output_within(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: cannot connect to postgres:///threadline: "),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    // The default: it waits, saying so once, and serves once PostgreSQL is up.
    let mut waiting = Server::spawn(
        dir.path(),
        &dir.path().join("unused.db"),
        "127.0.0.1:0",
        &["--database-url", &url, "--rate-limit-per-minute", "0"],
        "warn",
    );
    let deadline = Instant::now() + DEADLINE;
    while !waiting.stderr().contains("waiting up to 60 s for it") {
        assert!(
            waiting.child.try_wait().expect("try_wait").is_none(),
            "it exited: {}",
            waiting.stderr()
        );
        assert!(Instant::now() < deadline, "no word: {}", waiting.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.start_again();
    waiting.wait_ready().await;
    let thread = waiting.api.thread(&account).await;
    let (status, body) = waiting
        .api
        .say(&account.key, &account.alice, &thread, "up")
        .await
        .expect("answered");
    assert_eq!(status, 201, "{body}");
    let logged = log_lines(&waiting);
    let waits = logged
        .iter()
        .filter(|l| l.contains("waiting up to"))
        .count();
    assert_eq!(waits, 1, "said once: {logged:#?}");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("the database answers, after")),
        "{logged:#?}"
    );
}

/// A turn-taking action through `api` (200 expected); its answer.
pub(crate) async fn action(api: &Api, key: &str, name: &str, body: Value) -> Value {
    let res = api
        .post(&format!("/v1/turn-taking/actions/{name}"), key, &body)
        .await
        .expect("request");
    let (status, answer) = json_of(res).await;
    assert_eq!(status, 200, "{name}: {answer}");
    answer
}

/// The webhook worker and the turn-taking scheduler across a PostgreSQL
/// restart: a paced reply whose parts fall due while the database is down
/// is delivered once it is back, each part once and in order, to a socket
/// on the other node; a webhook endpoint gets every message committed
/// before and after the outage (the first arrival of each in the log's
/// order; a repeat only with the same id), and nothing of the posts
/// answered 503 meanwhile.
#[tokio::test]
async fn webhook_deliveries_and_paced_replies_resume_after_a_postgres_restart() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("threadline");
    let account = provision(&url);
    let mut rx = crate::webhooks::Receiver::start(&[], crate::webhooks::Reply::Status(200)).await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let private = ["--allow-private-webhooks"];
    let a = node(dir.path(), &url, &private).await;
    let b = node(dir.path(), &url, &private).await;
    let client = impatient();
    let thread = a.api.thread(&account).await;
    let mut posted: Vec<String> = Vec::new();
    let say = |api: Api, content: String| {
        let (client, account, thread) = (client.clone(), &account, thread.clone());
        async move {
            let (status, body) = post(&client, &api, account, &thread, &content)
                .await
                .expect("answered");
            assert_eq!(status, 201, "{body}");
            body["message"]["id"].as_str().unwrap().to_owned()
        }
    };
    for i in 1..=3 {
        posted.push(say(a.api.clone(), format!("before {i}")).await);
    }
    // Deliveries of this thread's messages: their ids, in arrival order.
    let mut arrived: Vec<String> = Vec::new();
    let mut replies: Vec<Value> = Vec::new();
    let mut take = |d: Value, arrived: &mut Vec<String>| {
        if d["data"]["thread_id"] == thread.as_str() {
            arrived.push(d["id"].as_str().unwrap().to_owned());
        } else {
            replies.push(d);
        }
    };
    while !posted.iter().all(|id| arrived.contains(id)) {
        take(rx.next().await.json, &mut arrived);
    }

    // A paced reply on a turn-taking thread: its first part falls due
    // about two seconds after `respond`, while the database is down.
    let opened = a.api.open_thread(&account.key, None).await;
    let tt = opened["thread"]["id"].as_str().unwrap().to_owned();
    let mut on_b = listen(&b.api, &account.key, &tt).await;
    let submit = json!({"thread_id": tt, "messages": [{"sender": "dana", "content": "Q1?"}]});
    let first = action(&a.api, &account.key, "submit_messages", submit).await;
    let reply = "Revenue is up four percent on the quarter, mostly from the new region. \
                 Costs are flat, which is better than the plan expected.";
    let body = json!({"thread_id": tt, "content": reply, "turn_epoch": first["turn_epoch"]});
    let answer = action(&a.api, &account.key, "respond", body).await;
    let parts = answer["scheduled"].as_array().expect("scheduled").len();
    assert!(parts >= 2, "{answer}");

    cluster.stop();
    let down_since = Instant::now();
    let mut refused = 0;
    while down_since.elapsed() < Duration::from_secs(4) {
        for api in [&a.api, &b.api] {
            let content = format!("refused {refused}");
            let answer = post(&client, api, &account, &thread, &content).await;
            assert_unavailable("a post while down", answer);
            refused += 1;
        }
    }
    cluster.start_again();
    let back = Instant::now();
    let (body, _) = until_first_201(&client, &b.api, &account, &thread, "after 1").await;
    posted.push(body["message"]["id"].as_str().unwrap().to_owned());
    for i in 2..=3 {
        posted.push(say(b.api.clone(), format!("after {i}")).await);
    }

    // Every part once, in order, on the other node's socket.
    let mut delivered = Vec::new();
    while delivered.len() < parts {
        let e = on_b.event_of("turn_taking.message").await;
        if delivered.is_empty() {
            eprintln!(
                "first part delivered {:?} after PostgreSQL's start",
                back.elapsed()
            );
        }
        delivered.push(e["data"]["index"].as_i64().unwrap());
    }
    assert_eq!(delivered, (0..parts as i64).collect::<Vec<_>>());
    let admin = crate::helpers::pg::Session::new(&url);
    assert_eq!(
        admin.ints_of_row(
            "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM scheduled_replies"
        ),
        vec![parts as i64, parts as i64]
    );
    // One message per part (and dana's), none twice.
    assert_eq!(
        admin.scalar(&format!(
            "SELECT count(*) FROM messages m JOIN threads t ON t.id = m.thread_id \
             WHERE t.uuid = '{tt}'"
        )),
        1 + parts as i64
    );
    // Nothing refused was stored.
    assert_eq!(
        admin.scalar("SELECT count(*) FROM messages WHERE content LIKE 'refused %'"),
        0
    );

    // The webhook: every message of the thread, first arrivals in order.
    while !posted.iter().all(|id| arrived.contains(id)) {
        take(rx.next().await.json, &mut arrived);
    }
    let mut first_arrivals: Vec<String> = Vec::new();
    for id in &arrived {
        if !first_arrivals.contains(id) {
            first_arrivals.push(id.clone());
        }
    }
    assert_eq!(first_arrivals, posted, "every event, in order");
    eprintln!(
        "{refused} posts answered 503 during the outage; webhook deliveries: {} for {} messages",
        arrived.len(),
        posted.len()
    );
    for (name, server) in [("a", &a), ("b", &b)] {
        let lines = log_lines(server);
        eprintln!("node {name} logged:\n{}", lines.join("\n"));
        assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
        // The endpoint's task: once when the database went (it logged
        // every retry, a line a second per endpoint), once when it is back.
        let task: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("threadline::webhooks::worker"))
            .filter(|l| !l.ends_with("working again"))
            .collect();
        assert!(task.len() <= 1, "node {name}: {task:#?}");
    }
}

/// One node SIGKILLed mid-stream, with sockets on both nodes, clients
/// posting through both, and one more client posting through the other
/// node throughout: the surviving node's WebSocket and SSE stream see
/// every message stored, which includes every one acknowledged (through
/// either node), in seq order and once, with no gap, across the kill; its
/// posts keep being answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_stream_costs_the_other_nodes_sockets_nothing() {
    if crate::helpers::pg::needs_postgres() {
        return;
    }
    let db = crate::helpers::db::TestDb::new();
    let account = std::sync::Arc::new(crate::helpers::process::provision_on(&db));
    let args = ["--rate-limit-per-minute", "0"];
    let a = Server::start_on(&db, &args, "warn").await;
    let b = Server::start_on(&db, &args, "warn").await;
    let thread = b.api.thread(&account).await;
    let _on_a = listen(&a.api, &account.key, &thread).await;
    let mut on_b = listen(&b.api, &account.key, &thread).await;
    let mut sse_b = Sse::open(&b.api, &account.key, &thread).await;

    // Posters: two through a, two through b; each stops after `per` posts.
    // Those through a fail from the kill on.
    let per = 60;
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut posters = Vec::new();
    for (p, api) in [&a.api, &a.api, &b.api, &b.api].into_iter().enumerate() {
        let (api, account, thread) = (api.clone(), account.clone(), thread.clone());
        let killed = killed_rx.clone();
        posters.push(tokio::spawn(async move {
            let client = impatient();
            let mut acked = Vec::new();
            for i in 0..per {
                let content = format!("{p}/{i}");
                match post(&client, &api, &account, &thread, &content).await {
                    Some((StatusCode::CREATED, body)) => {
                        acked.push((body["message"]["seq"].as_i64().unwrap(), content))
                    }
                    // Through the killed node: refused or cut off.
                    _ if p < 2 && *killed.borrow() => break,
                    other => panic!("poster {p}, post {i}: {other:?}"),
                }
            }
            acked
        }));
    }
    // The kill, once b's socket has seen some of it.
    let mut seen = ws_messages_upto(&mut on_b, 20).await;
    let mut a = a;
    a.child.kill().expect("SIGKILL");
    killed_tx.send_replace(true);
    a.child.wait().expect("reaped");
    let mut acked: Vec<(i64, String)> = Vec::new();
    for poster in posters {
        acked.extend(poster.await.expect("poster"));
    }
    acked.sort();
    let through_b = acked
        .iter()
        .filter(|(_, c)| c.starts_with('2') || c.starts_with('3'));
    assert_eq!(
        through_b.count(),
        2 * per,
        "every post through b answered 201"
    );

    // What is stored: seqs 1..=n, every acknowledged one among them.
    let (stored, count) = b.api.messages(&account, &thread).await;
    let n = stored.len() as i64;
    assert_eq!(count, n);
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    seen.extend(ws_messages_upto(&mut on_b, n).await);
    let from_sse = sse_b.messages_upto(n).await;
    for (who, got) in [
        ("the socket on b", &seen),
        ("the SSE stream on b", &from_sse),
    ] {
        let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{who}");
        for m in &acked {
            assert!(got.contains(m), "{who} lacks {m:?}");
        }
    }
    eprintln!(
        "{} posts acknowledged, {n} stored, {} of them through a before its kill",
        acked.len(),
        acked.len() - 2 * per
    );
    // Nothing twice: the next is the next.
    let (status, _) = b
        .api
        .say(&account.key, &account.alice, &thread, "sentinel")
        .await
        .expect("answered");
    assert_eq!(status, 201);
    let sentinel = vec![(n + 1, "sentinel".to_owned())];
    assert_eq!(ws_messages_upto(&mut on_b, n + 1).await, sentinel);
    assert_eq!(sse_b.messages_upto(n + 1).await, sentinel);
}
