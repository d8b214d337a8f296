//! The harness for process-level tests: the real `threadline` binary in a
//! child process on a temp database and port 0, the provisioning commands
//! run as a user would, and an HTTP client per server.
//!
//! Every child is held by a guard that kills it on drop, so a failing test
//! leaves no server behind. Waiting is bounded polling of a condition
//! (`/healthz`, the child's exit, a line on stdout), never a fixed sleep.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::db::TestDb;
use super::{json_of, POLL};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_threadline");
/// How long a child may take to become ready or to exit. Shutdown may wait
/// up to the server's 10 s `shutdown_timeout`, so this is longer.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A loopback port held, but not listened on, while the returned socket
/// lives: a connection to it is refused, and nobody else can take it.
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&any.into()).expect("bind an ephemeral port");
    let port = socket
        .local_addr()
        .expect("bound address")
        .as_socket()
        .expect("an IP address")
        .port();
    (socket, port)
}

/// The port the process `pid` listens on (its first listening TCP socket),
/// or `None` while it listens on none: the socket inodes among its open
/// files, looked up in the kernel's TCP table. Servers are started on port
/// 0 and found this way; a port picked beforehand (bound, read, released)
/// could be taken by another test's server or client in between.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    // "sl local_address rem_address st ... inode": the address in hex,
    // state 0A is LISTEN.
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode: u64 = fields.get(9)?.parse().ok()?;
        if fields.get(3) != Some(&"0A") || !inodes.contains(&inode) {
            return None;
        }
        u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()
    })
}

/// One provisioned account, made with the binary's own commands.
pub struct Account {
    pub user_id: String,
    pub key: String,
    pub alice: String,
    pub bob: String,
}

/// Runs `threadline ARGS` to completion (bounded), logging at its default level.
pub fn run_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    output_within(cmd)
}

/// Runs `cmd` to completion and returns its output; a command still running
/// after `DEADLINE` (say, a server that started where it should have failed)
/// is killed and fails the test instead of hanging it.
pub fn output_within(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("the binary runs"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} still running after {DEADLINE:?}");
        }
    }
}

/// Runs a provisioning command that must succeed and print one JSON line.
pub fn cli_json(args: &[&str]) -> Value {
    let out = run_cli(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "threadline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line on stdout: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// An account with agents alice (made with the account) and bob (added with `--user`).
pub fn provision(db: &Path) -> Account {
    let db = db.to_str().expect("temp paths are UTF-8");
    provision_with(&["--db", db])
}

/// `provision` on a test's database, whichever the backend.
pub fn provision_on(db: &TestDb) -> Account {
    let args = db.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    provision_with(&args)
}

/// `provision` with the arguments that name the database.
fn provision_with(db: &[&str]) -> Account {
    let first = cli_json(&[&["agent", "create", "--name", "alice"], db].concat());
    let user_id = first["user_id"].as_str().expect("user_id").to_owned();
    let second = cli_json(
        &[
            &[
                "agent",
                "create",
                "--name",
                "bob",
                "--user",
                user_id.as_str(),
            ],
            db,
        ]
        .concat(),
    );
    assert_eq!(second["user_id"], user_id.as_str());
    assert!(
        second["login_key"].is_null(),
        "--user makes no key: {second}"
    );
    Account {
        key: first["login_key"].as_str().expect("login_key").to_owned(),
        alice: first["aid"].as_str().expect("aid").to_owned(),
        bob: second["aid"].as_str().expect("aid").to_owned(),
        user_id,
    }
}

/// Lines of `text` that are not env_logger records (those start with `[`).
pub fn non_log_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('[')).collect()
}

/// A running `threadline serve` child; killed (SIGKILL) and reaped on drop.
pub struct Server {
    pub child: Child,
    pub api: Api,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// An HTTP client for one server (cloneable into tasks).
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `threadline serve --bind 127.0.0.1:0 --db DB ARGS` with
    /// `RUST_LOG=rust_log` and waits until `/healthz` answers 200.
    pub async fn start(dir: &Path, db: &Path, args: &[&str], rust_log: &str) -> Server {
        let mut server = Server::spawn(dir, db, "127.0.0.1:0", args, rust_log);
        server.wait_ready().await;
        server
    }

    /// Starts `threadline serve` on a test's database, whichever the
    /// backend (`--database-url` on PostgreSQL), as `start` does.
    pub async fn start_on(db: &TestDb, args: &[&str], rust_log: &str) -> Server {
        // `start` names the SQLite file itself.
        let mut all = if db.on_postgres() {
            db.args()
        } else {
            Vec::new()
        };
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Server::start(db.dir.path(), &db.path, &all, rust_log).await
    }

    /// Starts `threadline serve --bind BIND --db DB ARGS` without waiting.
    /// stdout and stderr go to files in `dir` (read them with `stdout()`/`stderr()`).
    pub fn spawn(dir: &Path, db: &Path, bind: &str, args: &[&str], rust_log: &str) -> Server {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let stdout = dir.join(format!("serve-{n}.stdout"));
        let stderr = dir.join(format!("serve-{n}.stderr"));
        let child = Command::new(BIN)
            .args(["serve", "--bind", bind, "--db"])
            .arg(db)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("the binary starts");
        Server {
            child,
            api: Api {
                base: format!("http://{bind}"),
                // A bound on every request: a hung server fails the test.
                client: reqwest::Client::builder()
                    .timeout(DEADLINE)
                    .build()
                    .expect("client"),
            },
            stdout,
            stderr,
        }
    }

    /// Waits (bounded) until stdout holds a line containing `needle`; returns all of stdout.
    pub async fn wait_for_stdout(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.stdout();
            if out.lines().any(|l| l.contains(needle)) {
                return out;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "server exited ({status}); stdout: {out}; stderr: {}",
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "no {needle:?} on stdout: {out}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `/healthz` until 200; fails if the child exits or the deadline passes.
    pub async fn wait_ready(&mut self) {
        self.wait_ready_within(DEADLINE).await;
    }

    /// `wait_ready` with another bound (each request is bounded by the
    /// client's own timeout too). A server started on port 0 is first
    /// waited for until it listens, and its `api` pointed there.
    pub async fn wait_ready_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        if self.api.base.ends_with(":0") {
            let port = loop {
                if let Some(port) = listening_port(self.child.id()) {
                    break port;
                }
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    panic!(
                        "server exited ({status}) before it listened: {}",
                        self.stderr()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "server not listening: {}",
                    self.stderr()
                );
                tokio::time::sleep(POLL).await;
            };
            self.api.base = format!("http://127.0.0.1:{port}");
        }
        loop {
            if let Ok(res) = self.api.client.get(self.api.url("/healthz")).send().await {
                if res.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("server exited ({status}) before ready: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).expect("stdout file")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).expect("stderr file")
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1): nix is not a dependency.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (bounded) for the child to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {DEADLINE:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// Opens a turn-taking thread (or re-opens `thread`) with `key`; asserts
    /// the 200 and returns its body (thread, realtime.connect_url).
    pub async fn open_thread(&self, key: &str, thread: Option<&str>) -> Value {
        let body = match thread {
            Some(id) => json!({ "thread_id": id }),
            None => json!({}),
        };
        let res = self
            .post("/v1/turn-taking/actions/open_thread", key, &body)
            .await
            .expect("request");
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Creates a thread alice → bob and returns its id.
    pub async fn thread(&self, account: &Account) -> String {
        let body = json!({"aid": account.alice, "target_aid": account.bob, "subject": "process"});
        let res = self
            .post("/api/acsp/thread/create", &account.key, &body)
            .await
            .expect("request");
        let (status, body) = json_of(res).await;
        assert_eq!(status, 201, "{body}");
        body["thread"]["id"].as_str().expect("thread id").to_owned()
    }

    /// Creates a thread alice → bob and posts "hello" in it as alice;
    /// returns the thread's id and the 201's body.
    pub async fn thread_with_a_post(&self, account: &Account) -> (String, Value) {
        let thread = self.thread(account).await;
        let (status, body) = self
            .say(&account.key, &account.alice, &thread, "hello")
            .await
            .expect("an answer");
        assert_eq!(status, 201, "{body}");
        (thread, body)
    }

    /// Posts as `aid`; `None` when the request failed before a full answer.
    pub async fn say(
        &self,
        key: &str,
        aid: &str,
        thread: &str,
        content: &str,
    ) -> Option<(StatusCode, Value)> {
        let body = json!({"aid": aid, "thread_id": thread, "content": content});
        let res = self
            .post("/api/acsp/thread/message", key, &body)
            .await
            .ok()?;
        let status = res.status();
        let text = res.text().await.ok()?;
        Some((
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
        ))
    }

    /// Every stored message of the thread (read as alice, all pages): id → seq,
    /// plus the thread's `message_count`.
    pub async fn messages(&self, account: &Account, thread: &str) -> (BTreeMap<i64, String>, i64) {
        let mut by_seq = BTreeMap::new();
        let mut count = -1;
        loop {
            let path = format!(
                "/api/acsp/thread/{thread}?aid={}&limit=200&offset={}",
                account.alice,
                by_seq.len()
            );
            let (status, body) = json_of(self.get(&path, &account.key).await).await;
            assert_eq!(status, 200, "{body}");
            count = body["thread"]["message_count"].as_i64().unwrap_or(count);
            for m in body["messages"].as_array().expect("messages") {
                let seq = m["seq"].as_i64().expect("seq");
                let id = m["id"].as_str().expect("id").to_owned();
                assert!(by_seq.insert(seq, id).is_none(), "seq {seq} returned twice");
            }
            if body["has_more"] != true {
                return (by_seq, count);
            }
        }
    }
}

/// `threadline mcp` (stdio) against `base`, acting with `key`: the child
/// (killed when dropped), its stdin, and its stdout's lines.
pub fn mcp_stdio(
    base: &str,
    key: &str,
) -> (
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(["mcp", "--url", base])
        .env("THREADLINE_KEY", key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("threadline mcp starts");
    let stdin = child.stdin.take().expect("stdin");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, stdin, lines)
}

/// What `threadline mcp` (stdio) answers to `lines`, each sent as one line
/// after an `initialize` (its answer left out) and before a closing `ping`:
/// every answer in between, in order (notifications get none).
pub async fn mcp_stdio_answers(base: &str, key: &str, lines: &[String]) -> Vec<Value> {
    use tokio::io::AsyncWriteExt;
    let (_child, mut stdin, mut answers) = mcp_stdio(base, key);
    let initialize = json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "probe", "version": "1"}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let last = json!({"jsonrpc": "2.0", "id": "last", "method": "ping"});
    let opening = [initialize.to_string(), initialized.to_string()];
    for line in opening.iter().chain(lines).chain([&last.to_string()]) {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }
    tokio::time::timeout(super::WAIT, async {
        let mut between = Vec::new();
        loop {
            let line = answers.next_line().await.expect("read").expect("a line");
            let answer: Value = serde_json::from_str(&line).expect("JSON-RPC");
            match answer["id"].as_str() {
                Some("last") => return between,
                Some("init") => {}
                _ => between.push(answer),
            }
        }
    })
    .await
    .expect("answered in time")
}
