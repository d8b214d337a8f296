//! A load generator for threadline, written against the public HTTP and
//! WebSocket API only.
//!
//! ```text
//! threadline serve --db /tmp/lg/x.db --bind 127.0.0.1:18181 --open-registration \
//!     --rate-limit-per-minute 100000000 --status-rate-limit-per-minute 100000000 \
//!     --registration-rate-limit-per-minute 0 &
//! cargo run --release --example loadgen -- --url http://127.0.0.1:18181 --server-pid $! all
//! ```
//!
//! Scenarios (`--help` lists every option and its default):
//! - `post`: C connections (`-c 32`), each with one request in flight, post
//!   messages spread over many threads (`--threads 64`) for T seconds
//!   (`-t 10`): acknowledged 201s a second, latency, errors by status.
//! - `read`: C connections read a 50-message page of a seeded thread, as one
//!   of its agents: pages a second, latency, errors.
//! - `fanout`: S WebSocket subscribers (`-s 1000`) on one thread, R messages
//!   a second (`-r 20`); post-to-receive latency over every delivery, and a
//!   FAIL line if any is missing after a bounded drain (`--drain 10`).
//! - `sockets`: K idle subscribed sockets (`-k 10000`); the server's VmRSS
//!   (`--server-pid`) before and after. Needs about K file descriptors on
//!   each side: the generator raises its own soft limit when it can, else
//!   says which `ulimit -n` to run.
//! - `all`: the four in sequence.
//!
//! Everything is provisioned through the API: agents with `agent-init` (the
//! server needs `--open-registration` and an unlimited registration quota),
//! threads with `thread/create`, grants with `open_thread`, each used at once
//! (they are single-use and short-lived). Load is spread over several keys;
//! the per-key limits should be raised, not turned off, so the limiter's cost
//! is measured.
//!
//! The generator shares the machine with the server, so it is cheap per
//! request: each connection is a minimal HTTP/1.1 keep-alive socket that
//! writes a request prepared in advance and reads the answer into a reused
//! buffer, and each subscriber a minimal WebSocket client whose socket, once
//! connected, is read by one of a few receiver threads, each an epoll loop
//! over its share (`--client reqwest` and `--ws-client tungstenite` compare
//! with the libraries).
//!
//! Output: a table per scenario and one JSON line starting `{"scenario":`.
//! Latency is in µs, percentiles from the full sorted sample. The exit status
//! is 0 when every scenario passed, 2 when one saw errors or missed
//! deliveries, 1 when it could not run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use memchr::memmem::Finder;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The server flags the figures assume (printed with every result).
const SERVER_FLAGS: &str = "serve --open-registration --rate-limit-per-minute 100000000 \
     --status-rate-limit-per-minute 100000000 --registration-rate-limit-per-minute 0";
/// Body of every message the `post` scenario sends (the same bytes each time).
const POST_CONTENT: &str = "loadgen: a message of ordinary length, about as long as a chat line.";
/// Prefix of a fanout message's content; the send time in µs follows it.
const STAMP: &str = "LGT";
/// Longest a single HTTP request may take in a hot loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a WebSocket may take from grant to `connection.ready`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Post,
    Read,
    Fanout,
    Sockets,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// A minimal HTTP/1.1 keep-alive client per connection (cheapest).
    Raw,
    /// A reqwest client per connection (one idle pooled connection each).
    Reqwest,
    /// One reqwest client (and pool) shared by all connections of a runtime.
    ReqwestShared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WsKind {
    /// A minimal WebSocket client: once connected, its socket is read by a
    /// receiver thread's epoll loop (cheapest per delivery).
    Raw,
    /// tokio-tungstenite.
    Tungstenite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// One multi-thread tokio runtime with --runtime-threads workers.
    Multi,
    /// --runtime-threads OS threads, each a current-thread runtime running
    /// its share of the connections.
    Local,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for a threadline server (public HTTP/WebSocket API only)")]
struct Args {
    /// Which load to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Base URL of the server.
    #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// post/read: concurrent connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// post/read/sockets: threads the load is spread over.
    #[arg(long, default_value_t = 64)]
    threads: usize,
    /// post/read/fanout: seconds of measured load.
    #[arg(long, short = 't', default_value_t = 10)]
    duration: u64,
    /// post/read: seconds of unmeasured load first.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// post/read: agents (each its own account and key) sharing the load.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// read: messages seeded into each thread (at least 50).
    #[arg(long, default_value_t = 60)]
    seed: usize,
    /// read: read the newest 50 messages (after=<seed-50>) instead of the oldest.
    #[arg(long)]
    newest: bool,
    /// fanout: WebSocket subscribers on the one thread.
    #[arg(long, short = 's', default_value_t = 1000)]
    subscribers: usize,
    /// fanout: messages posted a second.
    #[arg(long, short = 'r', default_value_t = 20)]
    rate: u32,
    /// fanout/sockets: seconds to wait for outstanding deliveries.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// sockets: idle subscribed sockets.
    #[arg(long, short = 'k', default_value_t = 10000)]
    sockets: usize,
    /// The server's process id: its VmRSS (sockets) and CPU time are read
    /// from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// WebSocket grants opened and connected at once.
    #[arg(long, default_value_t = 64)]
    connect_batch: usize,
    /// post/read: the HTTP client of each connection.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    client: ClientKind,
    /// fanout/sockets: the WebSocket client of each subscriber.
    #[arg(long, value_enum, default_value_t = WsKind::Raw)]
    ws_client: WsKind,
    /// post/read: how connections are scheduled.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Multi)]
    runtime: RuntimeKind,
    /// Worker threads of the runtime (multi), or runtimes (local); also the
    /// receiver threads that read the raw WebSocket client's sockets.
    #[arg(long, default_value_t = 2)]
    runtime_threads: usize,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("--connections", self.connections),
            ("--threads", self.threads),
            ("--duration", self.duration as usize),
            ("--subscribers", self.subscribers),
            ("--rate", self.rate as usize),
            ("--sockets", self.sockets),
            ("--connect-batch", self.connect_batch),
            ("--runtime-threads", self.runtime_threads),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.agents < 2 {
            return Err("--agents must be at least 2 (a thread has two agents)".into());
        }
        if self.seed < 50 {
            return Err("--seed must be at least 50 (the read page is 50 messages)".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Provisioning through the API (reqwest, JSON; not on the hot path)
// ---------------------------------------------------------------------------

/// An agent and the key of its account.
#[derive(Debug, Clone)]
struct Cred {
    aid: String,
    key: String,
}

/// A thread and its two agents (indexes into the agent list).
struct ThreadPlan {
    id: String,
    creator: usize,
    target: usize,
}

/// The JSON client used to set a scenario up.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let res = req.send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{what}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{what}: unreadable JSON: {e}"))
    }

    async fn post(&self, key: &str, path: &str, body: &Value) -> Result<Value, String> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body);
        self.send(req, &format!("POST {path}")).await
    }

    async fn get(&self, key: &str, path: &str) -> Result<Value, String> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key);
        let what = format!("GET {}", path.split('?').next().unwrap_or(path));
        self.send(req, &what).await
    }

    /// Registers `n` agents, each with its own account and key.
    async fn register(&self, n: usize, label: &str) -> Result<Vec<Cred>, String> {
        let url = format!("{}/api/acsp/agent-init", self.base);
        let results: Vec<Result<Cred, String>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let body = json!({"agent_name": format!("loadgen-{label}-{i}"), "capabilities": []});
                let req = self.http.post(&url).json(&body);
                async move {
                    let v = self.send(req, "POST /api/acsp/agent-init").await.map_err(|e| {
                        if e.contains("403") {
                            format!("{e}\n  hint: start the server with --open-registration")
                        } else if e.contains("429") {
                            format!("{e}\n  hint: start the server with --registration-rate-limit-per-minute 0")
                        } else {
                            e
                        }
                    })?;
                    Ok(Cred {
                        aid: str_field(&v, "aid")?,
                        key: str_field(&v, "login_key")?,
                    })
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Creates `n` threads; thread i is between agent i and agent i+1.
    async fn create_threads(
        &self,
        agents: &[Cred],
        n: usize,
        label: &str,
    ) -> Result<Vec<ThreadPlan>, String> {
        let results: Vec<Result<ThreadPlan, String>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let (creator, target) = (i % agents.len(), (i + 1) % agents.len());
                let body = json!({
                    "aid": agents[creator].aid, "target_aid": agents[target].aid,
                    "subject": format!("loadgen {label} {i}"),
                });
                async move {
                    let v = self
                        .post(&agents[creator].key, "/api/acsp/thread/create", &body)
                        .await?;
                    Ok(ThreadPlan {
                        id: str_field(&v["thread"], "id")?,
                        creator,
                        target,
                    })
                }
            })
            .buffered(32)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// A fresh single-use WebSocket grant for `thread_id`: its connect URL.
    async fn grant(&self, key: &str, thread_id: &str) -> Result<String, String> {
        let body = json!({"thread_id": thread_id});
        let v = self
            .post(key, "/v1/turn-taking/actions/open_thread", &body)
            .await?;
        str_field(&v["realtime"], "connect_url")
    }
}

fn str_field(v: &Value, name: &str) -> Result<String, String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the answer has no string `{name}`: {v}"))
}

// ---------------------------------------------------------------------------
// The hot path: prepared requests and the per-connection clients
// ---------------------------------------------------------------------------

/// One request, built once and sent many times.
struct Prepared {
    /// The whole HTTP/1.1 request, head and body (raw client).
    raw: Bytes,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

/// Where the server is, for the raw client.
#[derive(Clone)]
struct Target {
    base: String,
    addr: SocketAddr,
    /// The `Host` header value.
    host: String,
}

impl Target {
    async fn resolve(base: &str) -> Result<Target, String> {
        let url = reqwest::Url::parse(base).map_err(|e| format!("--url {base}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("--url must be http:// (got {base})"));
        }
        let host = url.host_str().ok_or("--url has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        Ok(Target {
            base: base.trim_end_matches('/').to_owned(),
            addr,
            host: format!("{host}:{port}"),
        })
    }

    fn prepare(&self, method: &str, path: &str, key: &str, body: Option<String>) -> Prepared {
        let body = Bytes::from(body.unwrap_or_default());
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n",
            self.host
        );
        if method == "POST" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);

        use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
        let mut headers = reqwest::header::HeaderMap::new();
        let auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .expect("expect: login keys are URL-safe base64");
        headers.insert(AUTHORIZATION, auth);
        if method == "POST" {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Prepared {
            raw: Bytes::from(raw),
            method: method.parse().expect("expect: GET or POST"),
            url: reqwest::Url::parse(&format!("{}{path}", self.base))
                .expect("expect: the base URL parsed already"),
            headers,
            body,
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a
/// time, no allocation per request once warm.
struct RawConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Where the last response's body starts in `buf`.
    body_at: usize,
}

impl RawConn {
    fn new(addr: SocketAddr) -> RawConn {
        RawConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
            body_at: 0,
        }
    }

    /// Sends `request` and reads the whole response; returns its status.
    async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("expect: connected just above");
        match exchange(stream, request, &mut self.buf).await {
            Ok((status, body_at, keep_alive)) => {
                self.body_at = body_at;
                if !keep_alive {
                    self.stream = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn last_body(&self) -> &[u8] {
        self.buf.get(self.body_at..).unwrap_or_default()
    }
}

fn io_error(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Writes the request, reads one response into `buf`: (status, body offset, keep-alive).
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, usize, bool)> {
    stream.write_all(request).await?;
    buf.clear();
    let mut scanned = 0;
    let head_end = loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(i) = find(&buf[scanned..], b"\r\n\r\n") {
            break scanned + i + 4;
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > 64 * 1024 {
            return Err(io_error("response head over 64 KiB"));
        }
    };
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io_error("bad status line"))?;
    let mut length = None;
    let mut keep_alive = true;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"connection") {
            keep_alive = !value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(io_error(
                "chunked responses are not supported by the raw client",
            ));
        }
    }
    let total = head_end + length.ok_or_else(|| io_error("response without Content-Length"))?;
    while buf.len() < total {
        buf.reserve(total - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((status, head_end, keep_alive))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A connection's client.
enum Client {
    Raw(RawConn),
    Reqwest {
        client: reqwest::Client,
        last_body: Bytes,
    },
}

impl Client {
    async fn send(&mut self, p: &Prepared) -> Result<u16, String> {
        match self {
            Client::Raw(conn) => conn.roundtrip(&p.raw).await.map_err(|e| e.to_string()),
            Client::Reqwest { client, last_body } => {
                let mut req = client
                    .request(p.method.clone(), p.url.clone())
                    .headers(p.headers.clone());
                if !p.body.is_empty() {
                    req = req.body(p.body.clone());
                }
                let res = req.send().await.map_err(|e| e.to_string())?;
                let status = res.status().as_u16();
                *last_body = res.bytes().await.map_err(|e| e.to_string())?;
                Ok(status)
            }
        }
    }

    fn last_body(&self) -> String {
        let b = match self {
            Client::Raw(conn) => conn.last_body(),
            Client::Reqwest { last_body, .. } => last_body,
        };
        String::from_utf8_lossy(b).into_owned()
    }
}

fn reqwest_client(idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .tcp_nodelay(true)
        .build()
        .expect("expect: a plain HTTP client always builds")
}

/// The measured window of a run.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one connection measured.
#[derive(Default)]
struct WorkerOut {
    latencies_us: Vec<u32>,
    /// Successes per second of the window (by completion time): stalls show.
    per_second: Vec<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

/// One connection: send its requests round-robin until the window closes.
async fn http_worker(
    mut client: Client,
    requests: Arc<Vec<Prepared>>,
    mine: Vec<usize>,
    expect: u16,
    window: Window,
) -> WorkerOut {
    let mut out = WorkerOut {
        latencies_us: Vec::with_capacity(1 << 16),
        per_second: vec![0; (window.end - window.start).as_secs() as usize + 1],
        ..WorkerOut::default()
    };
    for &i in mine.iter().cycle() {
        let t0 = Instant::now();
        if t0 >= window.end {
            break;
        }
        let result = tokio::time::timeout(REQUEST_TIMEOUT, client.send(&requests[i]))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let t1 = Instant::now();
        // Requests started during the warmup are sent but not counted.
        let measured = t0 >= window.start;
        match result {
            Ok(status) if status == expect => {
                if measured {
                    out.ok += 1;
                    out.latencies_us.push(micros(t1 - t0));
                    let second = (t1 - window.start).as_secs() as usize;
                    if let Some(n) = out.per_second.get_mut(second) {
                        *n += 1;
                    }
                }
            }
            Ok(status) => {
                if measured {
                    *out.errors.entry(status.to_string()).or_default() += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("{status}: {}", client.last_body()));
                }
            }
            Err(e) => {
                if measured {
                    *out.errors.entry("io".into()).or_default() += 1;
                    out.first_error.get_or_insert_with(|| format!("io: {e}"));
                }
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    out
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Which prepared requests connection `w` of `c` sends: every c-th one.
fn share(w: usize, c: usize, n: usize) -> Vec<usize> {
    let mine: Vec<usize> = (w..n).step_by(c).collect();
    if mine.is_empty() {
        vec![w % n]
    } else {
        mine
    }
}

/// Starts connections `ws` (of --connections) on the current runtime.
fn spawn_workers(
    args: &Args,
    addr: SocketAddr,
    ws: impl Iterator<Item = usize>,
    requests: &Arc<Vec<Prepared>>,
    expect: u16,
    window: Window,
) -> Vec<tokio::task::JoinHandle<WorkerOut>> {
    let (c, n) = (args.connections, requests.len());
    // The pool of --client reqwest-shared: one per runtime.
    let shared = reqwest_client(c);
    ws.map(|w| {
        let client = match args.client {
            ClientKind::Raw => Client::Raw(RawConn::new(addr)),
            ClientKind::Reqwest => Client::Reqwest {
                client: reqwest_client(1),
                last_body: Bytes::new(),
            },
            ClientKind::ReqwestShared => Client::Reqwest {
                client: shared.clone(),
                last_body: Bytes::new(),
            },
        };
        let mine = share(w, c, n);
        tokio::spawn(http_worker(client, requests.clone(), mine, expect, window))
    })
    .collect()
}

async fn join_workers(
    handles: Vec<tokio::task::JoinHandle<WorkerOut>>,
) -> Result<Vec<WorkerOut>, String> {
    let mut outs = Vec::with_capacity(handles.len());
    for h in handles {
        outs.push(
            h.await
                .map_err(|e| format!("a connection's task failed: {e}"))?,
        );
    }
    Ok(outs)
}

/// Runs C connections over `requests` for warmup + duration; merges results.
async fn run_http_load(
    args: &Args,
    target: &Target,
    requests: Vec<Prepared>,
    expect: u16,
) -> Result<(WorkerOut, Duration), String> {
    let requests = Arc::new(requests);
    let start = Instant::now() + Duration::from_secs(args.warmup) + Duration::from_millis(50);
    let window = Window {
        start,
        end: start + Duration::from_secs(args.duration),
    };
    let outs: Vec<WorkerOut> = match args.runtime {
        RuntimeKind::Multi => {
            let all = 0..args.connections;
            join_workers(spawn_workers(
                args,
                target.addr,
                all,
                &requests,
                expect,
                window,
            ))
            .await?
        }
        RuntimeKind::Local => {
            // Each OS thread runs a current-thread runtime with its share of
            // the connections; clients are built inside their runtime.
            let threads: Vec<_> = (0..args.runtime_threads)
                .map(|t| {
                    let (args, addr, requests) = (args.clone(), target.addr, requests.clone());
                    std::thread::spawn(move || -> Result<Vec<WorkerOut>, String> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| format!("cannot start a runtime: {e}"))?;
                        rt.block_on(async {
                            let mine = (t..args.connections).step_by(args.runtime_threads);
                            let handles =
                                spawn_workers(&args, addr, mine, &requests, expect, window);
                            join_workers(handles).await
                        })
                    })
                })
                .collect();
            let joined = tokio::task::spawn_blocking(move || {
                threads
                    .into_iter()
                    .map(|t| {
                        t.join()
                            .unwrap_or_else(|_| Err("a runtime thread panicked".into()))
                    })
                    .collect::<Result<Vec<Vec<WorkerOut>>, String>>()
            })
            .await
            .map_err(|e| format!("a runtime thread failed: {e}"))??;
            joined.into_iter().flatten().collect()
        }
    };
    let mut merged = WorkerOut::default();
    for o in outs {
        merged.latencies_us.extend(o.latencies_us);
        merged
            .per_second
            .resize(o.per_second.len().max(merged.per_second.len()), 0);
        for (m, n) in merged.per_second.iter_mut().zip(o.per_second) {
            *m += n;
        }
        merged.ok += o.ok;
        for (k, v) in o.errors {
            *merged.errors.entry(k).or_default() += v;
        }
        if merged.first_error.is_none() {
            merged.first_error = o.first_error;
        }
    }
    // The last bucket holds only requests that finished after the window.
    merged.per_second.truncate(args.duration as usize);
    Ok((merged, window.end - window.start))
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

/// Percentiles of a full sample (nearest rank), in µs.
struct Latency {
    n: usize,
    p50: u32,
    p90: u32,
    p99: u32,
    p999: u32,
    max: u32,
    mean: f64,
}

impl Latency {
    fn of(mut v: Vec<u32>) -> Latency {
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| -> u32 {
            if n == 0 {
                return 0;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            v[rank - 1]
        };
        let mean = if n == 0 {
            0.0
        } else {
            v.iter().map(|&x| x as f64).sum::<f64>() / n as f64
        };
        Latency {
            n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: v.last().copied().unwrap_or(0),
            mean,
        }
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99,
               "p999": self.p999, "max": self.max, "mean": (self.mean * 10.0).round() / 10.0})
    }

    fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.n
        )
    }
}

/// µs shown as milliseconds with µs resolution.
fn ms(us: u32) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

fn row(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<26} {value}");
}

/// The slowest and fastest second, and the series.
fn per_second_line(series: &[u64]) -> String {
    let (min, max) = (series.iter().min(), series.iter().max());
    let all: Vec<String> = series.iter().map(u64::to_string).collect();
    format!(
        "min {} max {}  [{}]",
        min.unwrap_or(&0),
        max.unwrap_or(&0),
        all.join(" ")
    )
}

fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SEC)
}

/// Busy CPU time of the whole machine so far, in seconds (from /proc/stat).
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4).unwrap_or(&0);
    Some(busy as f64 / TICKS_PER_SEC)
}

/// CPU use over a span, in % of one core.
#[derive(Clone, Copy)]
struct CpuUse {
    server: Option<f64>,
    loadgen: f64,
    /// The rest of the machine (other processes): a busy neighbour skews
    /// the figures. Known only with --server-pid.
    others: Option<f64>,
}

impl CpuUse {
    fn line(&self) -> String {
        match (self.server, self.others) {
            (Some(s), Some(o)) => format!(
                "server {s}%  loadgen {}%  rest of machine {o}%  (100% = one core)",
                self.loadgen
            ),
            _ => format!(
                "loadgen {}%  (pass --server-pid for the server's)",
                self.loadgen
            ),
        }
    }
}

/// Measures how busy the server, the generator and the machine were over a span.
struct CpuMeter {
    server: Option<String>,
    server_at: Option<f64>,
    me_at: f64,
    machine_at: Option<f64>,
    wall: Instant,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> CpuMeter {
        let server = server_pid.map(|p| p.to_string());
        CpuMeter {
            server_at: server.as_deref().and_then(cpu_secs),
            server,
            me_at: cpu_secs("self").unwrap_or(0.0),
            machine_at: machine_busy_secs(),
            wall: Instant::now(),
        }
    }

    fn stop(&self) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let pct = |now: f64, then: f64| ((now - then) / wall * 1000.0).round() / 10.0;
        let server = match (&self.server, self.server_at) {
            (Some(pid), Some(then)) => cpu_secs(pid).map(|now| pct(now, then)),
            _ => None,
        };
        let loadgen = pct(cpu_secs("self").unwrap_or(0.0), self.me_at);
        let machine = match (self.machine_at, machine_busy_secs()) {
            (Some(then), Some(now)) => Some(pct(now, then)),
            _ => None,
        };
        let others = match (machine, server) {
            (Some(m), Some(s)) => Some(((m - s - loadgen).max(0.0) * 10.0).round() / 10.0),
            _ => None,
        };
        CpuUse {
            server,
            loadgen,
            others,
        }
    }
}

fn client_json(args: &Args) -> Value {
    json!({
        "client": format!("{:?}", args.client).to_lowercase(),
        "runtime": format!("{:?}", args.runtime).to_lowercase(),
        "runtime_threads": args.runtime_threads,
        "ws_client": format!("{:?}", args.ws_client).to_lowercase(),
    })
}

/// Prints the JSON line of a scenario, with the generator's settings and
/// the server flags assumed.
fn emit(mut v: Value, args: &Args) {
    v["loadgen"] = client_json(args);
    v["server_flags_assumed"] = SERVER_FLAGS.into();
    println!("{v}");
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

async fn scenario_post(args: &Args, api: &Api, target: &Target) -> Result<bool, String> {
    println!(
        "\n== post: {} connections over {} threads, {} agents, {} s (+{} s warmup)",
        args.connections, args.threads, args.agents, args.duration, args.warmup
    );
    let agents = api.register(args.agents, "post").await?;
    let threads = api.create_threads(&agents, args.threads, "post").await?;
    let requests: Vec<Prepared> = threads
        .iter()
        .map(|t| {
            let who = &agents[t.creator];
            let body = json!({"aid": who.aid, "thread_id": t.id, "content": POST_CONTENT});
            target.prepare(
                "POST",
                "/api/acsp/thread/message",
                &who.key,
                Some(body.to_string()),
            )
        })
        .collect();
    let fields = json!({"scenario": "post", "connections": args.connections,
                        "threads": args.threads, "agents": args.agents,
                        "duration_s": args.duration, "warmup_s": args.warmup});
    measure_http(args, target, requests, 201, "acknowledged", "msg/s", fields).await
}

/// Runs an HTTP load (`post` or `read`), prints its table and its JSON line
/// (`fields` plus the figures; the count of answers with `status` goes under
/// `ok_key`). True if nothing failed.
async fn measure_http(
    args: &Args,
    target: &Target,
    requests: Vec<Prepared>,
    status: u16,
    ok_key: &str,
    unit: &str,
    mut fields: Value,
) -> Result<bool, String> {
    let cpu = CpuMeter::start(args.server_pid);
    let (out, window) = run_http_load(args, target, requests, status).await?;
    let cpu = cpu.stop();
    let rate = out.ok as f64 / window.as_secs_f64();
    let errors: u64 = out.errors.values().sum();
    let lat = Latency::of(out.latencies_us);
    row(&format!("{ok_key} ({status})"), out.ok);
    row("throughput", format!("{rate:.0} {unit}"));
    row("per second", per_second_line(&out.per_second));
    row("latency", lat.line());
    row("errors", errors_line(&out.errors));
    if let Some(e) = &out.first_error {
        row("first error", e);
    }
    row("cpu", cpu.line());
    hint_on_429(&out.errors);
    let figures = json!({ok_key: out.ok, "throughput_per_s": rate.round(), "latency_us": lat.json(),
                         "per_second": out.per_second,
                         "errors": out.errors, "error_count": errors, "first_error": out.first_error,
                         "server_cpu_pct": cpu.server, "loadgen_cpu_pct": cpu.loadgen,
                         "other_cpu_pct": cpu.others});
    if let (Value::Object(all), Value::Object(more)) = (&mut fields, figures) {
        all.extend(more);
    }
    emit(fields, args);
    Ok(errors == 0)
}

async fn scenario_read(args: &Args, api: &Api, target: &Target) -> Result<bool, String> {
    println!(
        "\n== read: {} connections reading 50-message pages of {} threads, {} s (+{} s warmup)",
        args.connections, args.threads, args.duration, args.warmup
    );
    let agents = api.register(args.agents, "read").await?;
    let threads = api.create_threads(&agents, args.threads, "read").await?;
    // Seed every thread, the two agents taking turns.
    let seeded: Vec<Result<Value, String>> = futures_util::stream::iter(
        threads
            .iter()
            .flat_map(|t| (0..args.seed).map(move |i| (t, i))),
    )
    .map(|(t, i)| {
        let who = &agents[if i % 2 == 0 { t.creator } else { t.target }];
        let body = json!({"aid": who.aid, "thread_id": t.id,
                          "content": format!("seed message {i}: {POST_CONTENT}")});
        async move { api.post(&who.key, "/api/acsp/thread/message", &body).await }
    })
    .buffer_unordered(32)
    .collect()
    .await;
    seeded.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Each thread is read by both of its agents (so both keys carry load).
    let after = if args.newest { args.seed - 50 } else { 0 };
    let path = |t: &ThreadPlan, who: &Cred| {
        format!(
            "/api/acsp/thread/{}?aid={}&limit=50&after={after}",
            t.id, who.aid
        )
    };
    let check = &threads[0];
    let page = api
        .get(
            &agents[check.target].key,
            &path(check, &agents[check.target]),
        )
        .await?;
    let got = page["messages"].as_array().map_or(0, Vec::len);
    if got != 50 {
        return Err(format!(
            "a seeded thread answered {got} messages, expected a page of 50"
        ));
    }
    let requests: Vec<Prepared> = threads
        .iter()
        .flat_map(|t| [t.creator, t.target].map(|a| (t, a)))
        .map(|(t, a)| target.prepare("GET", &path(t, &agents[a]), &agents[a].key, None))
        .collect();
    let fields = json!({"scenario": "read", "connections": args.connections,
                        "threads": args.threads, "agents": args.agents,
                        "seed_per_thread": args.seed, "page": 50, "newest": args.newest,
                        "duration_s": args.duration, "warmup_s": args.warmup});
    measure_http(args, target, requests, 200, "pages", "pages/s", fields).await
}

fn hint_on_429(errors: &BTreeMap<String, u64>) {
    if errors.contains_key("429") {
        println!("  hint: the per-key quota was hit; start the server with --rate-limit-per-minute 100000000");
    }
}

// ---------------------------------------------------------------------------
// WebSocket clients
// ---------------------------------------------------------------------------

/// A minimal WebSocket client for subscribers: the upgrade, then the
/// server's (unmasked) frames in, and masked pong/close frames out, until
/// `connection.ready`; then its socket moves to a receiver thread, which
/// decodes with the same `FrameReader`. It does not check
/// `Sec-WebSocket-Accept`: this is a load generator.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    reader: FrameReader,
}

/// How a socket ended.
type Ended = String;

impl RawWs {
    async fn connect(url: &str) -> Result<RawWs, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad connect_url {url}: {e}"))?;
        let host = url.host_str().ok_or("connect_url has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or("connect_url resolves to nothing")?;
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let nonce: [u8; 16] = rand::random();
        let request = format!(
            "GET {}?{} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
            url.path(),
            url.query().unwrap_or_default(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce),
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let head_end = loop {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("upgrade: the server closed the connection".into());
            }
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("upgrade: response head over 16 KiB".into());
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let answer = String::from_utf8_lossy(&buf).into_owned();
            return Err(format!("upgrade refused: {answer}"));
        }
        Ok(RawWs {
            stream,
            buf,
            pos: head_end,
            reader: FrameReader::default(),
        })
    }

    /// The next text (or binary) message; `Err` says how the socket ended.
    /// Only `connection.ready` is read here: a receiver thread reads the rest.
    async fn next(&mut self) -> Result<Vec<u8>, Ended> {
        loop {
            let (used, frame) = self.reader.next(&self.buf[self.pos..]);
            self.pos += used;
            let reply = match frame {
                Some(Frame::Message(message)) => return Ok(message.to_vec()),
                Some(Frame::Ping(payload)) => masked_frame(0xA, payload),
                Some(Frame::Close(code)) => {
                    let (reply, ended) = answer_close(code);
                    let _ = self.stream.write_all(&reply).await;
                    return Err(ended);
                }
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            self.stream
                .write_all(&reply)
                .await
                .map_err(|e| format!("error: {e}"))?;
        }
    }

    /// Reads more bytes, first dropping the ones already consumed.
    async fn fill(&mut self) -> Result<(), Ended> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("eof".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("error: {e}")),
        }
    }

    /// The socket for a receiver thread, with the bytes read past the last
    /// frame handed out and the frame reader (a fragmented message's start).
    fn into_parts(self) -> std::io::Result<(std::net::TcpStream, Vec<u8>, FrameReader)> {
        let rest = self.buf[self.pos..].to_vec();
        Ok((self.stream.into_std()?, rest, self.reader))
    }
}

/// A client's control frame (payload at most 125 bytes), masked as a client must.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.extend_from_slice(&[0x80 | opcode, 0x80 | payload.len().min(125) as u8]);
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    frame
}

/// Decodes the server's frames for a client (the raw client while it
/// connects, then its receiver thread): whole messages, with fragments
/// reassembled, the pings to answer and the close.
#[derive(Default)]
struct FrameReader {
    /// A fragmented message being reassembled.
    partial: Vec<u8>,
    /// The last reassembled message, lent out until the next call.
    done: Vec<u8>,
}

/// A frame the client acts on.
enum Frame<'a> {
    Message(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>),
}

impl FrameReader {
    /// The first frame in `data` to act on and the bytes up to its end
    /// (fragments and pongs before it are taken in on the way); `None`, with
    /// the bytes taken, when no such frame is complete yet.
    fn next<'a>(&'a mut self, data: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        self.done.clear();
        let mut pos = 0;
        while let Some((header, len, fin, opcode)) = frame_header(&data[pos..]) {
            let payload = &data[pos + header..pos + header + len];
            pos += header + len;
            match opcode {
                0x1 | 0x2 if fin && self.partial.is_empty() => {
                    return (pos, Some(Frame::Message(payload)))
                }
                0x0..=0x2 => {
                    self.partial.extend_from_slice(payload);
                    if fin {
                        self.done = std::mem::take(&mut self.partial);
                        return (pos, Some(Frame::Message(&self.done)));
                    }
                }
                0x8 => {
                    let code = (len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (pos, Some(Frame::Close(code)));
                }
                0x9 => return (pos, Some(Frame::Ping(payload))),
                _ => {} // pong, reserved: ignored
            }
        }
        (pos, None)
    }
}

/// The close frame that answers the server's, and how the socket ended.
fn answer_close(code: Option<u16>) -> (Vec<u8>, Ended) {
    let reply = masked_frame(0x8, &code.unwrap_or(1000).to_be_bytes());
    (
        reply,
        code.map_or("close (no code)".into(), |c| format!("close {c}")),
    )
}

/// A complete frame at the start of `b`: (header length, payload length,
/// FIN, opcode); `None` until all of it has arrived.
fn frame_header(b: &[u8]) -> Option<(usize, usize, bool, u8)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (mut header, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize),
        127 => (
            10,
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, n as usize),
    };
    if masked {
        // Servers do not mask; such a frame is skipped unread.
        header += 4;
    }
    (b.len() >= header + len).then_some((header, len, b0 & 0x80 != 0, b0 & 0x0f))
}

/// Threads that read the raw client's connected sockets, each with one
/// epoll loop (mio) over its share. A tokio task per socket costs a wake-up,
/// a schedule and a poll per delivery on top of the read; the generator
/// shares the machine with the server, so its cost per delivery is kept to
/// the `epoll_wait` share, the `recv` and the parse.
struct Receivers {
    threads: Vec<ReceiverThread>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
}

struct ReceiverThread {
    tx: std::sync::mpsc::Sender<(RawWs, SubOut)>,
    waker: Arc<mio::Waker>,
    handle: std::sync::Mutex<Option<std::thread::JoinHandle<Vec<SubOut>>>>,
}

/// The token of a receiver's waker (sockets are numbered from 0).
const WAKE: mio::Token = mio::Token(usize::MAX);

impl Receivers {
    fn start(n: usize, epoch: Instant, received: Arc<AtomicU64>) -> Result<Receivers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let poll = mio::Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
            let waker = Arc::new(
                mio::Waker::new(poll.registry(), WAKE)
                    .map_err(|e| format!("cannot create a waker: {e}"))?,
            );
            let (tx, rx) = std::sync::mpsc::channel();
            let receiver = Receiver {
                poll,
                rx,
                stop: stop.clone(),
                epoch,
                received: received.clone(),
                conns: Vec::new(),
                gone: Vec::new(),
                scratch: vec![0; 64 * 1024],
            };
            let handle = std::thread::Builder::new()
                .name(format!("receiver-{i}"))
                .spawn(move || receiver.run())
                .map_err(|e| format!("cannot start a receiver thread: {e}"))?;
            threads.push(ReceiverThread {
                tx,
                waker,
                handle: std::sync::Mutex::new(Some(handle)),
            });
        }
        Ok(Receivers {
            threads,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// Hands a connected socket (past `connection.ready`) and its tally so
    /// far to the next thread in turn.
    fn add(&self, ws: RawWs, out: SubOut) {
        let t = &self.threads[self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len()];
        if t.tx.send((ws, out)).is_ok() {
            let _ = t.waker.wake();
        }
    }

    /// Closes every socket and returns what each saw (blocks until the
    /// threads are done).
    fn finish(&self) -> Vec<SubOut> {
        self.stop.store(true, Ordering::SeqCst);
        let mut outs = Vec::new();
        for t in &self.threads {
            let _ = t.waker.wake();
            let handle = t.handle.lock().map(|mut h| h.take()).unwrap_or(None);
            if let Some(h) = handle {
                outs.extend(h.join().unwrap_or_default());
            }
        }
        outs
    }
}

/// One receiver thread's state.
struct Receiver {
    poll: mio::Poll,
    rx: std::sync::mpsc::Receiver<(RawWs, SubOut)>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    received: Arc<AtomicU64>,
    conns: Vec<Conn>,
    /// Sockets that could not be moved here: only their tallies.
    gone: Vec<SubOut>,
    /// What each read lands in; a frame that is not complete yet moves to
    /// its socket's own buffer.
    scratch: Vec<u8>,
}

/// A socket a receiver reads.
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes of a frame not complete yet.
    pending: Vec<u8>,
    reader: FrameReader,
    out: SubOut,
    open: bool,
}

impl Receiver {
    fn run(mut self) -> Vec<SubOut> {
        let mut events = mio::Events::with_capacity(1024);
        loop {
            match self.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("receiver: poll failed: {e}");
                    break;
                }
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.token() != WAKE && i < self.conns.len() {
                    self.on_readable(i);
                }
            }
            while let Ok((ws, out)) = self.rx.try_recv() {
                self.adopt(ws, out);
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        for c in &mut self.conns {
            if c.open {
                use std::io::Write;
                let _ = (&c.stream).write_all(&masked_frame(0x8, &1000u16.to_be_bytes()));
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        let mut outs = self.gone;
        outs.extend(self.conns.into_iter().map(|c| c.out));
        outs
    }

    fn adopt(&mut self, ws: RawWs, mut out: SubOut) {
        let (stream, rest, reader) = match ws.into_parts() {
            Ok(parts) => parts,
            Err(e) => {
                out.closed_by_server = Some(format!("error: {e}"));
                self.gone.push(out);
                return;
            }
        };
        let mut stream = mio::net::TcpStream::from_std(stream);
        let token = mio::Token(self.conns.len());
        let registered = self
            .poll
            .registry()
            .register(&mut stream, token, mio::Interest::READABLE);
        let mut conn = Conn {
            stream,
            pending: Vec::new(),
            reader,
            out,
            open: true,
        };
        if let Err(e) = registered {
            conn.end(format!("error: {e}"));
        } else if !rest.is_empty() {
            // Frames that came with `connection.ready`.
            let now = micros(self.epoch.elapsed());
            conn.take(&rest, now, &self.received);
        }
        self.conns.push(conn);
    }

    /// Reads what the socket has (edge-triggered: until it has no more).
    fn on_readable(&mut self, i: usize) {
        use std::io::Read;
        let conn = &mut self.conns[i];
        while conn.open {
            match (&conn.stream).read(&mut self.scratch) {
                Ok(0) => conn.end("eof".into()),
                Ok(n) => {
                    let now = micros(self.epoch.elapsed());
                    conn.take(&self.scratch[..n], now, &self.received);
                    if n < self.scratch.len() {
                        break; // a short read drained the socket
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => conn.end(format!("error: {e}")),
            }
        }
    }
}

impl Conn {
    fn end(&mut self, why: String) {
        self.open = false;
        self.out.closed_by_server.get_or_insert(why);
    }

    /// Takes the bytes just read: every complete frame is handled, the rest
    /// waits for the next read.
    fn take(&mut self, data: &[u8], now: u32, received: &AtomicU64) {
        if self.pending.is_empty() {
            let used = self.frames(data, now, received);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.frames(&pending, now, received);
            pending.drain(..used);
            self.pending = pending;
        }
    }

    /// Handles the complete frames at the start of `data`; returns the bytes
    /// they took.
    fn frames(&mut self, data: &[u8], now: u32, received: &AtomicU64) -> usize {
        use std::io::Write;
        let mut pos = 0;
        while self.open {
            let (used, frame) = self.reader.next(&data[pos..]);
            pos += used;
            match frame {
                None => break,
                Some(Frame::Message(message)) => self.out.record(message, now, received),
                Some(Frame::Ping(payload)) => {
                    // A pong is a few bytes: it fits in the send buffer.
                    let _ = (&self.stream).write_all(&masked_frame(0xA, payload));
                }
                Some(Frame::Close(code)) => {
                    let (reply, ended) = answer_close(code);
                    let _ = (&self.stream).write_all(&reply);
                    self.end(ended);
                }
            }
        }
        pos
    }
}

/// A subscriber's socket: the raw client, or tokio-tungstenite for comparison.
enum WsClient {
    Raw(RawWs),
    Tungstenite(Box<Tungstenite>),
}

type Tungstenite = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

impl WsClient {
    async fn connect(kind: WsKind, url: &str) -> Result<WsClient, String> {
        match kind {
            WsKind::Raw => RawWs::connect(url).await.map(WsClient::Raw),
            WsKind::Tungstenite => {
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                Ok(WsClient::Tungstenite(Box::new(ws)))
            }
        }
    }

    /// The next text message; `Err` says how the socket ended.
    async fn next(&mut self) -> Result<Vec<u8>, Ended> {
        match self {
            WsClient::Raw(ws) => ws.next().await,
            WsClient::Tungstenite(ws) => tungstenite_next(ws).await,
        }
    }
}

/// tokio-tungstenite's next text message; `Err` says how the socket ended.
async fn tungstenite_next(ws: &mut Tungstenite) -> Result<Vec<u8>, Ended> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => return Ok(t.into_bytes()),
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(frame.map_or("close (no code)".into(), |f| {
                    format!("close {}", u16::from(f.code))
                }))
            }
            // Pings are answered by the library as it reads.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("error: {e}")),
            None => return Err("eof".into()),
        }
    }
}

/// What one WebSocket subscriber saw.
#[derive(Default)]
struct SubOut {
    connected: bool,
    /// Grant + upgrade + `connection.ready`, in µs.
    connect_us: u32,
    error: Option<String>,
    /// Post-to-receive latency of stamped messages: (seq, µs).
    latencies_us: Vec<(i64, u32)>,
    /// `thread.message` events received.
    messages: u64,
    /// Events whose seq was not above the last one seen.
    duplicates: u64,
    /// Seqs skipped between consecutive events.
    gaps: u64,
    /// How the socket ended, when the server ended it.
    closed_by_server: Option<String>,
    /// The highest seq seen so far.
    last_seq: i64,
}

impl SubOut {
    /// Counts one text frame received at `now` (µs since the crowd's epoch).
    fn record(&mut self, frame: &[u8], now: u32, received: &AtomicU64) {
        if MESSAGE_TYPE.find(frame).is_none() {
            return;
        }
        self.messages += 1;
        received.fetch_add(1, Ordering::Relaxed);
        let seq = int_after(frame, &SEQ_KEY).unwrap_or(0);
        if let Some(sent) = int_after(frame, &STAMP_KEY) {
            self.latencies_us
                .push((seq, now.saturating_sub(sent as u32)));
        }
        if seq > 0 {
            if seq <= self.last_seq {
                self.duplicates += 1;
            } else {
                if self.last_seq > 0 && seq > self.last_seq + 1 {
                    self.gaps += (seq - self.last_seq - 1) as u64;
                }
                self.last_seq = seq;
            }
        }
    }
}

/// Searchers for what a subscriber looks for in each frame (built once).
static MESSAGE_TYPE: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("\"type\":\"thread.message\""));
static SEQ_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"seq\":"));
/// The µs stamp a fanout message carries: `"content":"LGT<digits>`.
static STAMP_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"content\":\"LGT"));

/// The integer right after the first match of `key` in `text`.
fn int_after(text: &[u8], key: &Finder<'_>) -> Option<i64> {
    let at = key.find(text)? + key.needle().len();
    let mut n: Option<i64> = None;
    for d in text[at..].iter().take_while(|b| b.is_ascii_digit()) {
        n = n
            .unwrap_or(0)
            .checked_mul(10)?
            .checked_add(i64::from(d - b'0'));
    }
    n
}

/// Shared state of a crowd of subscribers.
struct Crowd {
    api: Api,
    gate: Semaphore,
    ready: AtomicUsize,
    failed: AtomicUsize,
    received: Arc<AtomicU64>,
    /// The clock that message stamps count from.
    epoch: Instant,
    ws_kind: WsKind,
    /// Where the raw client's sockets are read once connected (with
    /// --ws-client tungstenite, each socket's own task reads it).
    receivers: Receivers,
}

impl Crowd {
    fn new(args: &Args, api: &Api) -> Result<Arc<Crowd>, String> {
        let epoch = Instant::now();
        let received = Arc::new(AtomicU64::new(0));
        let receivers = Receivers::start(args.runtime_threads.max(1), epoch, received.clone())?;
        Ok(Arc::new(Crowd {
            api: api.clone(),
            gate: Semaphore::new(args.connect_batch),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            received,
            epoch,
            ws_kind: args.ws_client,
            receivers,
        }))
    }
}

/// Opens a grant, connects, waits for `connection.ready`, then counts
/// `thread.message` events until told to stop or the server closes.
async fn subscriber(
    crowd: Arc<Crowd>,
    key: String,
    thread_id: String,
    mut stop: watch::Receiver<bool>,
) -> SubOut {
    let mut out = SubOut::default();
    let (connected, started) = {
        // At most --connect-batch grants in flight: each is used at once.
        let _permit = crowd.gate.acquire().await;
        let started = Instant::now();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let url = crowd.api.grant(&key, &thread_id).await?;
            let mut ws = WsClient::connect(crowd.ws_kind, &url).await?;
            match ws.next().await {
                Ok(t) if find(&t, b"\"connection.ready\"").is_some() => Ok(ws),
                Ok(t) => Err(format!(
                    "expected connection.ready, got {}",
                    String::from_utf8_lossy(&t)
                )),
                Err(e) => Err(format!("expected connection.ready, got {e}")),
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out connecting".into()));
        (connected, started)
    };
    let ws = match connected {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(e);
            crowd.failed.fetch_add(1, Ordering::SeqCst);
            return out;
        }
    };
    out.connected = true;
    out.connect_us = micros(started.elapsed());
    crowd.ready.fetch_add(1, Ordering::SeqCst);
    let mut ws = match ws {
        // The raw client's socket is read by a receiver thread from now on.
        WsClient::Raw(raw) => {
            crowd.receivers.add(raw, out);
            return SubOut::default();
        }
        WsClient::Tungstenite(ws) => ws,
    };
    // One stop future for the whole loop: making a fresh one per frame
    // registered and dropped a waiter every time.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            frame = tungstenite_next(&mut ws) => {
                let frame = match frame {
                    Ok(bytes) => bytes,
                    Err(ended) => {
                        out.closed_by_server = Some(ended);
                        break;
                    }
                };
                let now = micros(crowd.epoch.elapsed());
                out.record(&frame, now, &crowd.received);
            }
            // The only change is to `true` (or the sender is gone): stop either way.
            _ = &mut stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                break;
            }
        }
    }
    out
}

/// Starts `n` subscribers (subscriber i on `threads[i % len]`, with the key of
/// one of its agents) and waits until each is connected or has failed.
async fn connect_crowd(
    crowd: &Arc<Crowd>,
    n: usize,
    threads: &[ThreadPlan],
    agents: &[Cred],
    stop: &watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<SubOut>>, Duration) {
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let t = &threads[i % threads.len()];
            let who = if (i / threads.len()).is_multiple_of(2) {
                t.creator
            } else {
                t.target
            };
            tokio::spawn(subscriber(
                crowd.clone(),
                agents[who].key.clone(),
                t.id.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Bounded: each subscriber gives up after CONNECT_TIMEOUT once it starts,
    // and at most --connect-batch start at once.
    let limit = CONNECT_TIMEOUT * 2 + Duration::from_millis(20) * n as u32;
    let mut last_report = Instant::now();
    while crowd.ready.load(Ordering::SeqCst) + crowd.failed.load(Ordering::SeqCst) < n
        && started.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "  ... {} of {n} connected, {} failed",
                crowd.ready.load(Ordering::SeqCst),
                crowd.failed.load(Ordering::SeqCst)
            );
        }
    }
    (handles, started.elapsed())
}

/// Summary of a finished crowd.
#[derive(Default)]
struct CrowdOut {
    connected: usize,
    connect_errors: BTreeMap<String, u64>,
    connect_us: Vec<u32>,
    /// Post-to-receive latency of every delivery.
    latencies_us: Vec<u32>,
    /// Per message: the latency of its first and of its last delivery.
    first_us: Vec<u32>,
    last_us: Vec<u32>,
    messages: u64,
    duplicates: u64,
    gaps: u64,
    closed_by_server: BTreeMap<String, u64>,
}

async fn gather(crowd: &Crowd, handles: Vec<tokio::task::JoinHandle<SubOut>>) -> CrowdOut {
    let mut c = CrowdOut::default();
    let mut per_message: BTreeMap<i64, (u32, u32)> = BTreeMap::new();
    let mut outs = tokio::task::block_in_place(|| crowd.receivers.finish());
    for h in handles {
        match h.await {
            Ok(s) => outs.push(s),
            Err(_) => *c.connect_errors.entry("task panicked".into()).or_default() += 1,
        }
    }
    for s in outs {
        if s.connected {
            c.connected += 1;
            c.connect_us.push(s.connect_us);
        }
        if let Some(e) = s.error {
            // Group errors by their first words, not by unique details.
            let kind: String = e.chars().take(60).collect();
            *c.connect_errors.entry(kind).or_default() += 1;
        }
        for (seq, us) in s.latencies_us {
            c.latencies_us.push(us);
            let e = per_message.entry(seq).or_insert((us, us));
            *e = (e.0.min(us), e.1.max(us));
        }
        c.messages += s.messages;
        c.duplicates += s.duplicates;
        c.gaps += s.gaps;
        if let Some(why) = s.closed_by_server {
            *c.closed_by_server.entry(why).or_default() += 1;
        }
    }
    (c.first_us, c.last_us) = per_message.into_values().unzip();
    c
}

async fn scenario_fanout(args: &Args, api: &Api, target: &Target) -> Result<bool, String> {
    let (s, r, t) = (args.subscribers, args.rate, args.duration);
    println!("\n== fanout: {s} subscribers on one thread, {r} msg/s for {t} s");
    let agents = api.register(2, "fanout").await?;
    let threads = api.create_threads(&agents, 1, "fanout").await?;
    let thread = &threads[0];
    let crowd = Crowd::new(args, api)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handles, connect_time) = connect_crowd(&crowd, s, &threads, &agents, &stop_rx).await;
    let connected = crowd.ready.load(Ordering::SeqCst);
    println!(
        "  {connected} of {s} connected in {:.1} s",
        connect_time.as_secs_f64()
    );

    // Post at R a second, each POST on its own task so a slow answer does not
    // delay the schedule. The content carries the send time.
    let cpu = CpuMeter::start(args.server_pid);
    let poster = &agents[thread.creator];
    let total = r as u64 * t;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / r);
    let mut posts = Vec::with_capacity(total as usize);
    // Keep-alive connections for the posts (the raw client, as `post` uses),
    // taken from and returned to a pool: one suffices unless an answer is slow.
    let pool: Arc<std::sync::Mutex<Vec<RawConn>>> = Arc::default();
    for k in 0..total {
        tick.tick().await;
        let (pool, target) = (pool.clone(), target.clone());
        let (key, epoch) = (poster.key.clone(), crowd.epoch);
        let (aid, thread_id) = (poster.aid.clone(), thread.id.clone());
        posts.push(tokio::spawn(async move {
            let sent = micros(epoch.elapsed());
            let body = json!({"aid": aid, "thread_id": thread_id,
                              "content": format!("{STAMP}{sent} fanout message {k}")});
            let request = target.prepare(
                "POST",
                "/api/acsp/thread/message",
                &key,
                Some(body.to_string()),
            );
            let taken = pool.lock().expect("expect: no panic holds the pool").pop();
            let mut conn = taken.unwrap_or_else(|| RawConn::new(target.addr));
            let t0 = Instant::now();
            let res = match conn.roundtrip(&request.raw).await {
                Ok(201) => Ok(()),
                Ok(status) => Err(format!(
                    "{status} {}",
                    String::from_utf8_lossy(conn.last_body())
                )),
                Err(e) => Err(format!("error: {e}")),
            };
            let us = micros(t0.elapsed());
            pool.lock()
                .expect("expect: no panic holds the pool")
                .push(conn);
            (res, us)
        }));
    }
    let mut posted = 0u64;
    let mut post_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut post_us = Vec::with_capacity(posts.len());
    for p in posts {
        match p.await {
            Ok((Ok(()), us)) => {
                posted += 1;
                post_us.push(us);
            }
            Ok((Err(e), _)) => *post_errors.entry(e.chars().take(60).collect()).or_default() += 1,
            Err(e) => *post_errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    // Bounded drain: wait for the deliveries still on their way.
    let expected = posted * connected as u64;
    let drain_start = Instant::now();
    while crowd.received.load(Ordering::SeqCst) < expected
        && drain_start.elapsed() < Duration::from_secs(args.drain)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu.stop();
    let _ = stop_tx.send(true);
    let c = gather(&crowd, handles).await;
    let missing = expected.saturating_sub(c.messages);
    let lat = Latency::of(c.latencies_us);
    let (first, last) = (Latency::of(c.first_us), Latency::of(c.last_us));
    let connect = Latency::of(c.connect_us);
    let post_lat = Latency::of(post_us);
    let pass = missing == 0 && connected == s && c.duplicates == 0 && c.gaps == 0;

    row(
        "subscribers connected",
        format!("{connected} of {s} in {:.1} s", connect_time.as_secs_f64()),
    );
    row("connect (grant→ready)", connect.line());
    row("connect errors", errors_line(&c.connect_errors));
    row("messages posted (201)", format!("{posted} of {total}"));
    row("post errors", errors_line(&post_errors));
    row("POST latency", post_lat.line());
    row(
        "deliveries",
        format!("{} received of {expected} expected", c.messages),
    );
    row(
        "missing / dup / gaps",
        format!("{missing} / {} / {}", c.duplicates, c.gaps),
    );
    row("post→receive latency", lat.line());
    row("  first of each message", first.line());
    row("  last of each message", last.line());
    row("closed by server", errors_line(&c.closed_by_server));
    row("cpu", cpu.line());
    if pass {
        println!("  PASS: every subscriber got every message, in order, once");
    } else {
        println!(
            "  FAIL: {missing} deliveries missing after a {} s drain, {} of {s} subscribers \
             connected, {} duplicates, {} gaps",
            args.drain, connected, c.duplicates, c.gaps
        );
    }
    emit(
        json!({"scenario": "fanout", "subscribers": s, "connected": connected,
               "rate_per_s": r, "duration_s": t, "connect_s": connect_time.as_secs_f64(),
               "connect_us": connect.json(), "connect_errors": c.connect_errors,
               "posted": posted, "post_errors": post_errors, "post_latency_us": post_lat.json(),
               "deliveries_expected": expected, "deliveries_received": c.messages,
               "missing": missing, "duplicates": c.duplicates, "gaps": c.gaps,
               "latency_us": lat.json(), "first_delivery_us": first.json(),
               "last_delivery_us": last.json(), "closed_by_server": c.closed_by_server,
               "server_cpu_pct": cpu.server, "loadgen_cpu_pct": cpu.loadgen,
               "other_cpu_pct": cpu.others, "pass": pass}),
        args,
    );
    Ok(pass)
}

/// The soft limit on open files of a process, from /proc.
fn open_files_limit(pid: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Makes sure this process may hold `need` descriptors, raising its soft
/// limit to the hard one with `prlimit` (util-linux) when that is enough.
fn ensure_fds(need: u64) -> Result<(), String> {
    let have = open_files_limit("self").unwrap_or(0);
    if have >= need {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={need}:")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let now = open_files_limit("self").unwrap_or(0);
    if raised && now >= need {
        println!("  raised this process's open-file limit from {have} to {now}");
        return Ok(());
    }
    Err(format!(
        "this process may open {now} files but needs about {need}: run `ulimit -n {need}` \
         in the shell first (above the hard limit needs root), or use a smaller --sockets"
    ))
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// KiB shown in MiB and in MB (10^6 bytes), as targets use either.
fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| {
        format!(
            "{:.1} MiB ({:.1} MB)",
            k as f64 / 1024.0,
            k as f64 * 1.024 / 1000.0
        )
    })
}

async fn scenario_sockets(args: &Args, api: &Api) -> Result<bool, String> {
    let k = args.sockets;
    let n_threads = args.threads.min(k);
    println!("\n== sockets: {k} idle subscribed sockets over {n_threads} threads");
    ensure_fds(k as u64 + 512)?;
    let pid = args.server_pid;
    match pid {
        None => println!("  note: pass --server-pid PID to read the server's VmRSS"),
        Some(p) => match open_files_limit(&p.to_string()) {
            Some(lim) if lim < k as u64 + 100 => println!(
                "  warning: the server may open only {lim} files; start it after `ulimit -n {}`",
                k + 1024
            ),
            _ => {}
        },
    }
    let agents = api.register(2, "sockets").await?;
    let threads = api.create_threads(&agents, n_threads, "sockets").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = pid.and_then(rss_kib);

    let crowd = Crowd::new(args, api)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handles, connect_time) = connect_crowd(&crowd, k, &threads, &agents, &stop_rx).await;
    let connected = crowd.ready.load(Ordering::SeqCst);
    // Let the server settle (allocator, queues) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(rss_kib);

    // Liveness: one message per thread must reach every socket on it.
    for t in &threads {
        let who = &agents[t.creator];
        let body = json!({"aid": who.aid, "thread_id": t.id, "content": "are you there?"});
        api.post(&who.key, "/api/acsp/thread/message", &body)
            .await?;
    }
    let drain_start = Instant::now();
    while crowd.received.load(Ordering::SeqCst) < connected as u64
        && drain_start.elapsed() < Duration::from_secs(args.drain)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let live = crowd.received.load(Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let c = gather(&crowd, handles).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = pid.and_then(rss_kib);

    let per_socket = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let connect = Latency::of(c.connect_us);
    let pass = connected == k && live == connected as u64;
    row(
        "sockets connected",
        format!("{connected} of {k} in {:.1} s", connect_time.as_secs_f64()),
    );
    row("connect (grant→ready)", connect.line());
    row("connect errors", errors_line(&c.connect_errors));
    row("server VmRSS before", mib(before));
    row("server VmRSS with sockets", mib(after));
    row("server VmRSS after close", mib(closed));
    row(
        "per socket",
        per_socket.map_or("?".into(), |p| format!("{p:.1} KiB")),
    );
    row(
        "liveness broadcast",
        format!("{live} of {connected} sockets got it"),
    );
    row("closed by server", errors_line(&c.closed_by_server));
    if !pass {
        println!("  FAIL: {connected} of {k} connected, {live} answered the liveness broadcast");
    }
    emit(
        json!({"scenario": "sockets", "sockets": k, "threads": n_threads, "connected": connected,
               "connect_s": connect_time.as_secs_f64(), "connect_us": connect.json(),
               "connect_errors": c.connect_errors, "server_pid": pid,
               "rss_before_kib": before, "rss_with_sockets_kib": after, "rss_after_close_kib": closed,
               "rss_per_socket_kib": per_socket.map(|p| (p * 10.0).round() / 10.0),
               "liveness_received": live, "closed_by_server": c.closed_by_server, "pass": pass}),
        args,
    );
    Ok(pass)
}

async fn run(args: Args) -> Result<bool, String> {
    args.check()?;
    let api = Api::new(&args.url)?;
    let target = Target::resolve(&args.url).await?;
    // Fail early, and clearly, if nothing listens there.
    api.http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", api.base))?;
    println!(
        "loadgen against {} (HTTP client {:?}, WebSocket client {:?}, runtime {:?} x{})\n\
         server assumed: threadline {SERVER_FLAGS}",
        api.base, args.client, args.ws_client, args.runtime, args.runtime_threads
    );
    let mut ok = true;
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Post {
        ok &= scenario_post(&args, &api, &target).await?;
    }
    if all || args.scenario == Scenario::Read {
        ok &= scenario_read(&args, &api, &target).await?;
    }
    if all || args.scenario == Scenario::Fanout {
        ok &= scenario_fanout(&args, &api, &target).await?;
    }
    if all || args.scenario == Scenario::Sockets {
        ok &= scenario_sockets(&args, &api).await?;
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads.max(1))
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
