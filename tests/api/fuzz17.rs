//! A seeded mutation fuzzer over every route and the WebSocket.
//!
//! Each route's valid request (the contract's routes, the turn-taking
//! actions and turns, `/mcp`, the webhook routes, `/v1/sse`, the grant
//! route and the open ones) is mutated one way per case by a small seeded
//! PRNG: a field's type, a text at its length limits (counted in scalar
//! values: ASCII, two-, three- and four-byte UTF-8, combining marks), raw
//! JSON tokens (lone surrogates, `\u0000`, `1e999`, `-0`, invalid UTF-8),
//! nesting around the 64-level limit, duplicate keys, non-object,
//! truncated, padded and oversized bodies, query parameters repeated,
//! empty, huge, negative or badly escaped, ids of every wrong kind and of
//! another account, odd headers and methods, framing sent over raw TCP
//! (bad chunk sizes, `Content-Length` mismatches, both framings, two
//! lengths, folded and control-character headers), and hostile WebSocket
//! frames after a valid upgrade.
//!
//! Every answer is checked: a status the route may give (never 500),
//! `X-Request-Id` and the error envelope with the code of its status, the
//! same request id and a non-empty message; where one mutation on a valid
//! request makes the answer certain (a text one past its limit is 422
//! naming it, one at its limit succeeds, a lone surrogate anywhere is 422,
//! a repeated parameter is 422, another account's thread is 404, two
//! `Content-Length`s are 400), that answer; after every refused request
//! nothing is stored. After a hostile frame the socket ends with a valid
//! close code or a reset, and another subscriber still gets its events. At
//! the end the server still answers, exits 0 on SIGTERM, and its log holds
//! no panic and no login key.
//!
//! Cases go through every (route, mutation) pair in an order the seed
//! shuffles, each pair's details drawn from the seed; kinds with limits
//! take the sharpest first (one past a limit, then the limit). CI runs one
//! pass with a fixed seed (about 900 cases); `THREADLINE_FUZZ_CASES` and
//! `THREADLINE_FUZZ_SEED` run more passes or another order (say, 200,000
//! cases against a release build named by `THREADLINE_FUZZ_BIN`). A
//! failure prints the seed, the case number and the request.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::db::TestDb;
use crate::helpers::json_of;
use crate::helpers::process::{Api, Server};
use crate::helpers::{POLL, WAIT};

/// The seed when `THREADLINE_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 17;
/// The largest body the API reads.
const MAX_BODY: usize = 64 * 1024;
/// How long a raw-TCP exchange or a hostile socket may take to end.
const RAW_WAIT: Duration = Duration::from_secs(5);
/// A placeholder spliced out of a serialized body for a raw JSON token.
const HOLE: &str = "@@fuzz-hole@@";

// ------------------------------------------------------------------ the PRNG

/// xorshift64*: small, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ------------------------------------------------------------ routes and ids

/// What an id slot holds, for the wrong ids put in it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Id {
    Thread,
    /// The `aid` the caller acts as.
    Acting,
    Target,
    Webhook,
    Grant,
}

/// What a success carries.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Answer {
    Json,
    /// An event stream: not read.
    Stream,
    /// A WebSocket upgrade (101).
    Upgrade,
    /// HTML, JavaScript or text.
    Page,
}

/// A text field and its length limits, in scalar values.
#[derive(Clone)]
struct Text {
    at: &'static str,
    min: usize,
    max: usize,
}

impl Text {
    fn new(at: &'static str, min: usize, max: usize) -> Text {
        Text { at, min, max }
    }
}

/// An integer query parameter and its range.
#[derive(Clone)]
struct Int {
    name: &'static str,
    min: i64,
    max: i64,
}

impl Int {
    fn new(name: &'static str, min: i64, max: i64) -> Int {
        Int { name, min, max }
    }
}

/// One route's valid request and what the route is.
#[derive(Clone)]
struct Route {
    name: &'static str,
    method: Method,
    /// The path, `{id}` where `path_id` goes.
    path: &'static str,
    path_id: Option<(Id, String)>,
    query: Vec<(&'static str, String)>,
    query_ids: Vec<(&'static str, Id)>,
    ints: Vec<Int>,
    body: Option<Value>,
    /// JSON pointers of the body's ids.
    body_ids: Vec<(&'static str, Id)>,
    texts: Vec<Text>,
    headers: Vec<(&'static str, String)>,
    key: Option<String>,
    /// Its success statuses.
    ok: &'static [u16],
    /// The other methods its path serves.
    served: Vec<Method>,
    /// `/mcp`: JSON-RPC over the body, refusals of its own (400, 415).
    mcp: bool,
    /// Every body field is optional (an empty body is a request).
    optional_body: bool,
    /// It reads a query string (repeats and over 32 parameters are 422).
    reads_query: bool,
    answer: Answer,
}

impl Route {
    fn new(name: &'static str, method: Method, path: &'static str) -> Route {
        Route {
            name,
            method,
            path,
            path_id: None,
            query: Vec::new(),
            query_ids: Vec::new(),
            ints: Vec::new(),
            body: None,
            body_ids: Vec::new(),
            texts: Vec::new(),
            headers: Vec::new(),
            key: None,
            ok: &[200],
            served: Vec::new(),
            mcp: false,
            optional_body: false,
            reads_query: false,
            answer: Answer::Json,
        }
    }

    fn strict(&self) -> bool {
        !self.mcp
    }
}

/// The names of the routes a case picks from; "ws frames" is the hostile
/// frame case after a valid upgrade.
const ROUTES: [&str; 37] = [
    "thread/create",
    "thread/message",
    "thread/status",
    "thread/{id}",
    "thread?thread_id",
    "threads",
    "me",
    "realtime/open",
    "open_thread",
    "submit_messages",
    "respond",
    "record_event",
    "turns",
    "sse (key, thread)",
    "sse (key, aid)",
    "sse (grant)",
    "ws (grant)",
    "agent-init",
    "webhooks (create)",
    "webhooks (list)",
    "webhooks/{id} (delete)",
    "webhooks/{id}/rotate",
    "webhooks/{id}/pause",
    "webhooks/{id}/resume",
    "webhooks/{id}/attempts",
    "mcp (tools/call)",
    "mcp (initialize)",
    "mcp read_thread",
    "mcp list_threads",
    "mcp create_thread",
    "mcp set_thread_status",
    "mcp list_agents",
    "healthz",
    "openapi.json",
    "metrics",
    "inspector",
    "ws frames",
];

// ------------------------------------------------------------------ requests

/// One HTTP request as it will be sent.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    /// Pairs written as given (already escaped as the case wants).
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn target(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let pairs: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}?{}", self.path, pairs.join("&"))
    }

    fn header(&mut self, name: &str, value: String) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value));
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    fn describe(&self) -> String {
        let clip = |s: String| -> String {
            if s.len() > 700 {
                let mut end = 700;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…(+{} bytes)", &s[..end], s.len() - end)
            } else {
                s
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| clip(format!("{k}: {v}")))
            .collect();
        let body = self
            .body
            .as_ref()
            .map(|b| clip(format!("{:?}", String::from_utf8_lossy(b))))
            .unwrap_or_else(|| "(none)".into());
        format!(
            "{} {}\n  headers: {headers:?}\n  body: {body}",
            self.method,
            clip(self.target())
        )
    }
}

/// What the answer must be, beyond a status the route may give.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Any status the route may give.
    Allowed,
    /// What the valid request gets: one of the route's success statuses.
    Success,
    Status(u16),
    /// 422 naming this field.
    Field(String),
    /// If 422 names a field, it is this one, or within it, or holds it.
    Blame(String),
}

/// One case: a request and what it must get.
struct Case {
    kind: &'static str,
    req: Req,
    expect: Expect,
    /// Sent over raw TCP, as these bytes.
    raw: Option<Vec<u8>>,
    /// The HTTP layer may refuse it before threadline sees it (400, 408,
    /// 414, 431 or 501, in the envelope since round twenty-two), or the
    /// connection may end unanswered.
    transport: bool,
    /// A text sent, by its key: where a success shows a field of that
    /// name, it is this text exactly.
    echo: Option<(String, String)>,
}

impl Case {
    fn new(kind: &'static str, req: Req, expect: Expect) -> Case {
        Case {
            kind,
            req,
            expect,
            raw: None,
            transport: false,
            echo: None,
        }
    }
}

/// A JSON pointer as the API names the field: `/messages/0/content` is
/// `messages[0].content`.
fn field_name(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Whether one field name is the other or holds it.
fn related(a: &str, b: &str) -> bool {
    let within = |outer: &str, inner: &str| {
        inner == outer
            || inner.starts_with(&format!("{outer}."))
            || inner.starts_with(&format!("{outer}["))
    };
    within(a, b) || within(b, a)
}

/// Every pointer in `v` below its root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn json_type(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Removes the value at `pointer` (a key or an array item).
fn remove_at(body: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    match body.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < items.len() {
                    items.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// `body` serialized with the value at `pointer` (or a new top-level key
/// `zz_fuzz` when `pointer` is empty) written as the raw bytes `token`.
fn splice(body: &Value, pointer: &str, token: &[u8]) -> Vec<u8> {
    let mut body = body.clone();
    if pointer.is_empty() {
        body["zz_fuzz"] = json!(HOLE);
    } else if let Some(slot) = body.pointer_mut(pointer) {
        *slot = json!(HOLE);
    }
    let text = body.to_string();
    let hole = format!("\"{HOLE}\"");
    let at = text.find(&hole).expect("the hole is in the body");
    let mut out = text.as_bytes()[..at].to_vec();
    out.extend_from_slice(token);
    out.extend_from_slice(&text.as_bytes()[at + hole.len()..]);
    out
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `n` scalar values cycling through `unit`'s characters.
fn text_of(unit: &str, n: usize) -> String {
    unit.chars().cycle().take(n).collect()
}

fn random_hex(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.below(16) as u32, 16).expect("a hex digit"))
        .collect()
}

fn random_uuid(rng: &mut Rng) -> String {
    let h = random_hex(rng, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------- the world

/// The server, its accounts and the things the routes act on.
struct World {
    api: Api,
    /// `127.0.0.1:<port>`
    addr: String,
    key: String,
    alice: String,
    bob: String,
    /// Another account's agent and key.
    carol: String,
    carol_key: String,
    /// A third account's agent (carol's peer).
    dave: String,
    user_id: String,
    /// alice → bob.
    acsp: String,
    /// A turn-taking thread of the key's account.
    turn: String,
    /// carol → dave: visible to neither of the key's agents.
    foreign: String,
    /// The turn-taking thread the hostile sockets connect to.
    ws_thread: String,
    /// The turn-taking thread the probe subscriber listens on.
    probe_thread: String,
    webhook: String,
    /// A webhook for the next delete case.
    spare_webhook: Option<String>,
    /// The turn thread's current epoch.
    epoch: i64,
    /// A grant already used (or refused), for the grant slot.
    used_grant: String,
}

impl World {
    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let res = self.api.post(path, key, &body).await.expect("request");
        let (status, body) = json_of(res).await;
        (status.as_u16(), body)
    }

    async fn grant(&mut self, thread: &str) -> String {
        let body = self.api.open_thread(&self.key, Some(thread)).await;
        let url = body["realtime"]["connect_url"]
            .as_str()
            .expect("connect url");
        url.split("c=").nth(1).expect("c= in the url").to_owned()
    }

    async fn new_webhook(&self) -> String {
        let (status, body) = self
            .post(
                "/api/acsp/webhooks",
                &self.key,
                json!({"url": "http://127.0.0.1:9/hook", "events": ["thread.status"]}),
            )
            .await;
        assert_eq!(status, 201, "webhook create: {body}");
        body["webhook"]["id"]
            .as_str()
            .expect("webhook id")
            .to_owned()
    }

    /// The route `name`'s valid request, fetching what it needs (a fresh
    /// grant, a webhook to delete).
    async fn route(&mut self, name: &'static str) -> Route {
        let key = Some(self.key.clone());
        let mut r = match name {
            "thread/create" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/thread/create");
                r.body = Some(json!({
                    "aid": self.alice, "target_aid": self.bob, "subject": "fuzz",
                    "first_message": "hello", "metadata": {"k": "v", "n": [1, 2]},
                }));
                r.body_ids = vec![("/aid", Id::Acting), ("/target_aid", Id::Target)];
                r.texts = vec![
                    Text::new("/subject", 1, 256),
                    Text::new("/first_message", 1, 2048),
                ];
                r.ok = &[201];
                r
            }
            "thread/message" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/thread/message");
                r.body = Some(json!({
                    "aid": self.alice, "thread_id": self.acsp, "content": "hi there",
                    "msg_type": "request", "metadata": {"k": "v"},
                }));
                r.body_ids = vec![("/aid", Id::Acting), ("/thread_id", Id::Thread)];
                r.texts = vec![Text::new("/content", 1, 2048)];
                r.ok = &[201];
                r
            }
            "thread/status" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/thread/status");
                r.body =
                    Some(json!({"aid": self.alice, "thread_id": self.acsp, "status": "active"}));
                r.body_ids = vec![("/aid", Id::Acting), ("/thread_id", Id::Thread)];
                r
            }
            "thread/{id}" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/thread/{id}");
                r.path_id = Some((Id::Thread, self.acsp.clone()));
                r.query = vec![
                    ("aid", self.alice.clone()),
                    ("limit", "10".into()),
                    ("offset", "0".into()),
                    ("after", "0".into()),
                ];
                r.query_ids = vec![("aid", Id::Acting)];
                r.ints = vec![
                    Int::new("limit", 1, 200),
                    Int::new("offset", 0, i64::MAX),
                    Int::new("after", 0, i64::MAX),
                ];
                r.reads_query = true;
                r.served = vec![Method::HEAD];
                r
            }
            "thread?thread_id" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/thread");
                r.query = vec![
                    ("thread_id", self.acsp.clone()),
                    ("aid", self.alice.clone()),
                    ("limit", "5".into()),
                ];
                r.query_ids = vec![("thread_id", Id::Thread), ("aid", Id::Acting)];
                r.ints = vec![Int::new("limit", 1, 200)];
                r.reads_query = true;
                r.served = vec![Method::HEAD];
                r
            }
            "threads" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/threads");
                r.query = vec![
                    ("aid", self.alice.clone()),
                    ("status", "all".into()),
                    ("limit", "5".into()),
                    ("offset", "0".into()),
                ];
                r.query_ids = vec![("aid", Id::Acting)];
                r.ints = vec![Int::new("limit", 1, 100), Int::new("offset", 0, i64::MAX)];
                r.reads_query = true;
                r.served = vec![Method::HEAD];
                r
            }
            "me" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/me");
                r.served = vec![Method::HEAD];
                r
            }
            "realtime/open" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/realtime/open");
                r.body = Some(json!({"aid": self.bob}));
                r.body_ids = vec![("/aid", Id::Acting)];
                r
            }
            "open_thread" => {
                let mut r = Route::new(name, Method::POST, "/v1/turn-taking/actions/open_thread");
                r.body = Some(json!({
                    "thread_id": self.turn,
                    "integrations": {"social_signals": {"channel_id": "c1"}},
                }));
                r.body_ids = vec![("/thread_id", Id::Thread)];
                r.optional_body = true;
                r
            }
            "submit_messages" => {
                let mut r = Route::new(
                    name,
                    Method::POST,
                    "/v1/turn-taking/actions/submit_messages",
                );
                r.body = Some(json!({
                    "thread_id": self.turn,
                    "messages": [
                        {"sender": "dana", "content": "what do you think?",
                         "client_ts": "2026-11-29T12:00:00.000Z"},
                        {"sender": "eli", "content": "and why?"},
                    ],
                    "system_prompt": "be brief",
                }));
                r.body_ids = vec![("/thread_id", Id::Thread)];
                r.texts = vec![
                    Text::new("/messages/0/sender", 1, 255),
                    Text::new("/messages/0/content", 1, 4000),
                    Text::new("/system_prompt", 0, 8000),
                ];
                r
            }
            "respond" => {
                let mut r = Route::new(name, Method::POST, "/v1/turn-taking/actions/respond");
                r.body = Some(json!({
                    "thread_id": self.turn, "content": "Sure. Here it is. Anything else?",
                    "turn_epoch": self.epoch, "system_prompt": "be brief",
                }));
                r.body_ids = vec![("/thread_id", Id::Thread)];
                r.texts = vec![
                    Text::new("/content", 1, 4000),
                    Text::new("/system_prompt", 0, 8000),
                ];
                r
            }
            "record_event" => {
                let mut r = Route::new(name, Method::POST, "/v1/turn-taking/actions/record_event");
                r.body = Some(json!({
                    "thread_id": self.turn, "type": "typing_stop", "sender": "dana",
                    "client_ts": "2026-11-29T12:00:00Z",
                }));
                r.body_ids = vec![("/thread_id", Id::Thread)];
                r.texts = vec![Text::new("/sender", 1, 255)];
                r
            }
            "turns" => {
                let mut r = Route::new(name, Method::GET, "/v1/turn-taking/threads/{id}/turns");
                r.path_id = Some((Id::Thread, self.turn.clone()));
                r.query = vec![("limit", "5".into()), ("before", "100".into())];
                r.ints = vec![Int::new("limit", 1, 100), Int::new("before", 1, i64::MAX)];
                r.reads_query = true;
                r.served = vec![Method::HEAD];
                r
            }
            "sse (key, thread)" => {
                let mut r = Route::new(name, Method::GET, "/v1/sse");
                r.query = vec![
                    ("thread_id", self.turn.clone()),
                    ("after_position", "0".into()),
                ];
                r.query_ids = vec![("thread_id", Id::Thread)];
                r.ints = vec![Int::new("after_position", 0, i64::MAX)];
                r.reads_query = true;
                r.answer = Answer::Stream;
                r.served = vec![Method::HEAD];
                r
            }
            "sse (key, aid)" => {
                let mut r = Route::new(name, Method::GET, "/v1/sse");
                r.query = vec![("aid", self.alice.clone())];
                r.query_ids = vec![("aid", Id::Acting)];
                r.reads_query = true;
                r.answer = Answer::Stream;
                r.served = vec![Method::HEAD];
                r
            }
            "sse (grant)" => {
                let grant = self.grant(&self.turn.clone()).await;
                let mut r = Route::new(name, Method::GET, "/v1/sse");
                r.query = vec![("c", grant)];
                r.query_ids = vec![("c", Id::Grant)];
                r.reads_query = true;
                r.answer = Answer::Stream;
                r.served = vec![Method::HEAD];
                return r;
            }
            "ws (grant)" => {
                let grant = self.grant(&self.ws_thread.clone()).await;
                let mut r = Route::new(name, Method::GET, "/v1/ws");
                r.query = vec![("c", grant), ("after", "0".into())];
                r.query_ids = vec![("c", Id::Grant)];
                r.ints = vec![Int::new("after", 0, i64::MAX)];
                r.headers = vec![
                    ("Connection", "Upgrade".into()),
                    ("Upgrade", "websocket".into()),
                    ("Sec-WebSocket-Version", "13".into()),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
                ];
                r.reads_query = true;
                r.ok = &[101];
                r.answer = Answer::Upgrade;
                return r;
            }
            "agent-init" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/agent-init");
                r.body = Some(json!({
                    "agent_name": "fuzzbot", "capabilities": ["search", "summarize"],
                    "description": "finds things", "metadata": {"k": 1},
                }));
                r.texts = vec![
                    Text::new("/agent_name", 1, 100),
                    Text::new("/description", 1, 1000),
                    Text::new("/capabilities/0", 1, 100),
                ];
                r.ok = &[201];
                return r;
            }
            "webhooks (create)" => {
                let mut r = Route::new(name, Method::POST, "/api/acsp/webhooks");
                r.body = Some(json!({
                    "url": "http://127.0.0.1:9/hook", "events": ["thread.message"],
                    "description": "fuzz",
                }));
                r.texts = vec![Text::new("/description", 0, 500)];
                r.ok = &[201];
                r.served = vec![Method::GET, Method::HEAD];
                r
            }
            "webhooks (list)" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/webhooks");
                r.served = vec![Method::POST, Method::HEAD];
                r
            }
            "webhooks/{id} (delete)" => {
                let spare = match self.spare_webhook.clone() {
                    Some(id) => id,
                    None => {
                        let id = self.new_webhook().await;
                        self.spare_webhook = Some(id.clone());
                        id
                    }
                };
                let mut r = Route::new(name, Method::DELETE, "/api/acsp/webhooks/{id}");
                r.path_id = Some((Id::Webhook, spare));
                r
            }
            "webhooks/{id}/rotate" | "webhooks/{id}/pause" | "webhooks/{id}/resume" => {
                let path = match name {
                    "webhooks/{id}/rotate" => "/api/acsp/webhooks/{id}/rotate",
                    "webhooks/{id}/pause" => "/api/acsp/webhooks/{id}/pause",
                    _ => "/api/acsp/webhooks/{id}/resume",
                };
                let mut r = Route::new(name, Method::POST, path);
                r.path_id = Some((Id::Webhook, self.webhook.clone()));
                r
            }
            "webhooks/{id}/attempts" => {
                let mut r = Route::new(name, Method::GET, "/api/acsp/webhooks/{id}/attempts");
                r.path_id = Some((Id::Webhook, self.webhook.clone()));
                r.query = vec![("limit", "5".into())];
                r.reads_query = true;
                r.served = vec![Method::HEAD];
                r
            }
            "mcp (tools/call)" => {
                let mut r = Route::new(name, Method::POST, "/mcp");
                r.body = Some(json!({
                    "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "post_message", "arguments": {
                        "aid": self.alice, "thread_id": self.acsp, "content": "via mcp",
                    }},
                }));
                r.headers = vec![("Accept", "application/json, text/event-stream".into())];
                r.mcp = true;
                // 202: a message without an `id` is a notification.
                r.ok = &[200, 202];
                r
            }
            "mcp read_thread"
            | "mcp list_threads"
            | "mcp create_thread"
            | "mcp set_thread_status"
            | "mcp list_agents" => {
                let (tool, arguments) = match name {
                    "mcp read_thread" => (
                        "read_thread",
                        json!({"thread_id": self.acsp, "aid": self.alice, "limit": 5, "after": 0}),
                    ),
                    "mcp list_threads" => (
                        "list_threads",
                        json!({"aid": self.alice, "status": "all", "limit": 5, "offset": 0}),
                    ),
                    "mcp create_thread" => (
                        "create_thread",
                        json!({"aid": self.alice, "target_aid": self.bob, "subject": "via mcp",
                               "first_message": "hello"}),
                    ),
                    "mcp set_thread_status" => (
                        "set_thread_status",
                        json!({"aid": self.alice, "thread_id": self.acsp, "status": "active"}),
                    ),
                    _ => ("list_agents", json!({})),
                };
                let mut r = Route::new(name, Method::POST, "/mcp");
                r.body = Some(json!({
                    "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments},
                }));
                r.headers = vec![("Accept", "application/json, text/event-stream".into())];
                r.mcp = true;
                r.ok = &[200, 202];
                r
            }
            "mcp (initialize)" => {
                let mut r = Route::new(name, Method::POST, "/mcp");
                r.body = Some(json!({
                    "jsonrpc": "2.0", "id": "init-1", "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "fuzz", "version": "1"}},
                }));
                r.headers = vec![("Accept", "application/json, text/event-stream".into())];
                r.mcp = true;
                r.ok = &[200, 202];
                r
            }
            "healthz" | "openapi.json" | "metrics" | "inspector" => {
                let path = match name {
                    "healthz" => "/healthz",
                    "openapi.json" => "/openapi.json",
                    "metrics" => "/metrics",
                    _ => "/",
                };
                let mut r = Route::new(name, Method::GET, path);
                if matches!(name, "metrics" | "inspector") {
                    r.answer = Answer::Page;
                }
                r.served = vec![Method::HEAD];
                return r;
            }
            other => panic!("no route {other}"),
        };
        r.key = key;
        r
    }
}

/// The valid request of `route`.
fn base(route: &Route) -> Req {
    let path = match &route.path_id {
        Some((_, id)) => route.path.replace("{id}", id),
        None => route.path.to_owned(),
    };
    let mut headers = Vec::new();
    if let Some(key) = &route.key {
        headers.push(("Authorization".to_owned(), format!("Bearer {key}")));
    }
    if route.body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    for (k, v) in &route.headers {
        headers.push(((*k).to_owned(), v.clone()));
    }
    Req {
        method: route.method.clone(),
        path,
        query: route
            .query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        headers,
        body: route.body.as_ref().map(|b| b.to_string().into_bytes()),
    }
}

// ---------------------------------------------------------------- mutations

/// The kinds of mutation that apply to `route`.
fn kinds(route: &Route) -> Vec<&'static str> {
    let mut k = Vec::new();
    if route.body.is_some() {
        k.extend([
            "type swap",
            "field removed",
            "raw token",
            "nesting",
            "duplicate key",
            "whole body",
            "trailing bytes",
            "truncated body",
            "bom",
            "extra fields",
            "chunked body",
            "bad chunk",
            "short content-length",
            "long content-length",
            "length and chunked",
            "two content-lengths",
        ]);
    }
    if !route.texts.is_empty() {
        k.extend(["text length", "nul in text"]);
    }
    if !route.query.is_empty() {
        k.extend([
            "param repeated",
            "param empty",
            "param huge",
            "param negative",
            "param escapes",
            "param dropped",
        ]);
    }
    if !route.ints.is_empty() {
        k.push("int boundary");
    }
    if route.reads_query {
        k.extend(["many params", "unknown param"]);
    }
    if route.path_id.is_some() || !route.query_ids.is_empty() || !route.body_ids.is_empty() {
        k.push("wrong id");
    }
    k.extend([
        "content-type",
        "authorization",
        "expect",
        "long header",
        "many headers",
        "method",
        "folded header",
        "control in header",
        "request line",
        "bad content-length",
    ]);
    if route.name == "thread/message" {
        k.push("idempotency key");
    }
    if route.mcp {
        k.push("accept");
    }
    if route.answer == Answer::Upgrade {
        k.push("handshake");
    }
    k
}

/// `route`'s valid request mutated one way, and what it must get.
/// `round` counts the passes over every (route, kind) pair: where a kind
/// has limits to probe, the first passes take the sharpest first (one past
/// the limit, then the limit), later ones the rest.
fn mutate(route: &Route, kind: &'static str, round: usize, world: &World, rng: &mut Rng) -> Case {
    let mut req = base(route);
    let body = route.body.clone().unwrap_or(Value::Null);
    let strict = route.strict();
    // What a body of this size gets when it is otherwise valid.
    let sized = |len: usize, then: Expect| {
        if len > MAX_BODY {
            Expect::Status(413)
        } else {
            then
        }
    };
    let strict_or_allowed = |e: Expect| if strict { e } else { Expect::Allowed };
    match kind {
        "type swap" => {
            let mut all = Vec::new();
            pointers(&body, String::new(), &mut all);
            let p = rng.pick(&all);
            let old = body.pointer(&p).cloned().unwrap_or(Value::Null);
            let swaps = [
                json!("x"),
                json!(""),
                json!(0),
                json!(-1),
                json!(1.5),
                json!(true),
                json!(null),
                json!([]),
                json!(["x"]),
                json!({}),
                json!({"a": 1}),
            ];
            let mut new = rng.pick(&swaps);
            while json_type(&new) == json_type(&old) {
                new = rng.pick(&swaps);
            }
            let mut b = body.clone();
            *b.pointer_mut(&p).expect("the pointer is in the body") = new;
            req.body = Some(b.to_string().into_bytes());
            Case::new(kind, req, Expect::Blame(field_name(&p)))
        }
        "field removed" => {
            let mut all = Vec::new();
            pointers(&body, String::new(), &mut all);
            let p = rng.pick(&all);
            let mut b = body.clone();
            remove_at(&mut b, &p);
            req.body = Some(b.to_string().into_bytes());
            Case::new(kind, req, Expect::Blame(field_name(&p)))
        }
        "text length" => {
            let t = route.texts[round % route.texts.len()].clone();
            let units = ["a", "é", "€", "😀", "e\u{301}", "ß字😀", "Zalgo̴̡"];
            let unit = rng.pick(&units);
            let mut lengths = vec![t.max + 1, t.max, t.min, 1, t.max - 1, t.max * 2];
            if t.min > 0 {
                lengths.insert(2, t.min - 1);
            }
            let n = lengths[(round / route.texts.len()) % lengths.len()];
            let text = text_of(unit, n);
            let mut b = body.clone();
            *b.pointer_mut(t.at).expect("the text is in the body") = json!(text);
            let bytes = b.to_string().into_bytes();
            let expect = if (t.min..=t.max).contains(&n) {
                Expect::Success
            } else {
                Expect::Field(field_name(t.at))
            };
            let expect = sized(bytes.len(), expect);
            req.body = Some(bytes);
            let mut case = Case::new(kind, req, expect);
            let key = t.at.rsplit('/').next().expect("a key").to_owned();
            // A capability is shown in a list, not under its own key.
            // `respond` shows its reply split in parts.
            if key.parse::<usize>().is_err() && n > 0 && route.name != "respond" {
                case.echo = Some((key, text));
            }
            case
        }
        "nul in text" => {
            let t = rng.pick(&route.texts);
            let mut b = body.clone();
            *b.pointer_mut(t.at).expect("the text is in the body") = json!("ab\u{0}cd");
            req.body = Some(b.to_string().into_bytes());
            // A system prompt is not stored; every other text is.
            let expect = if t.at == "/system_prompt" {
                Expect::Blame(field_name(t.at))
            } else {
                Expect::Field(field_name(t.at))
            };
            Case::new(kind, req, expect)
        }
        "raw token" => {
            let mut all = vec![String::new()];
            pointers(&body, String::new(), &mut all);
            let p = rng.pick(&all);
            // (token, whether it is malformed JSON wherever it stands)
            let tokens: [(&[u8], bool); 26] = [
                (br#""\ud800""#, true),
                (br#""\udfff""#, true),
                (br#""a\ud800b""#, true),
                (br#""\ud800\u0041""#, true),
                (br#""\ud83d\ude00""#, false),
                (b"1e999", true),
                (b"-1e999", true),
                (b"1E400", true),
                (b"-0", false),
                (b"-0.0", false),
                (b"123456789012345678901234567890", false),
                (b"9223372036854775808", false),
                (b"1e-400", false),
                (b"\"\xff\"", true),
                (b"\"\xc3\"", true),
                (b"\"\xed\xa0\x80\"", true),
                (b"\"a\tb\"", true),
                (b"\"a\nb\"", true),
                (br#""a\u0000b""#, false),
                (b"tru", true),
                (b"+1", true),
                (b"01", true),
                (b".5", true),
                (b"NaN", true),
                (b"'x'", true),
                (br#""\x""#, true),
            ];
            let (token, malformed) = rng.pick(&tokens);
            req.body = Some(splice(&body, &p, token));
            let expect = if malformed {
                Expect::Status(422)
            } else if p.is_empty() {
                strict_or_allowed(Expect::Success)
            } else {
                strict_or_allowed(Expect::Blame(field_name(&p)))
            };
            Case::new(kind, req, expect)
        }
        "nesting" => {
            let mut all = vec![String::new()];
            pointers(&body, String::new(), &mut all);
            let p = rng.pick(&all);
            let k = [65usize, 64, 1000, 63, 2, 200, 62, 5000][round % 8];
            let token = if rng.chance(50) {
                format!("{}{}", "[".repeat(k), "]".repeat(k))
            } else {
                format!("{}1{}", "{\"a\":".repeat(k), "}".repeat(k))
            };
            // The body's own object is level 1; a value at `p` sits inside
            // as many containers as `p` has segments.
            let outer = if p.is_empty() {
                1
            } else {
                p.matches('/').count()
            };
            let depth = outer + k;
            let bytes = splice(&body, &p, token.as_bytes());
            let expect = if depth > 64 {
                sized(bytes.len(), Expect::Status(422))
            } else if p.is_empty() {
                sized(bytes.len(), strict_or_allowed(Expect::Success))
            } else {
                sized(
                    bytes.len(),
                    strict_or_allowed(Expect::Blame(field_name(&p))),
                )
            };
            req.body = Some(bytes);
            Case::new(kind, req, expect)
        }
        "duplicate key" => {
            let map = body.as_object().expect("bodies are objects");
            let keys: Vec<&String> = map.keys().collect();
            let k = rng.pick(&keys).clone();
            let again = if rng.chance(50) {
                map[&k].clone()
            } else {
                json!("other")
            };
            let mut text = body.to_string();
            text.pop();
            text.push_str(&format!(",{}:{}}}", json!(k), again));
            req.body = Some(text.into_bytes());
            Case::new(kind, req, Expect::Status(422))
        }
        "whole body" => {
            let choices: [(&[u8], u8); 16] = [
                (b"[]", 0),
                (b"[1]", 0),
                (b"[{}]", 0),
                (b"\"x\"", 0),
                (b"42", 0),
                (b"true", 0),
                (b"false", 0),
                (b"null", 1),
                (b"", 1),
                (b"   ", 1),
                (b"\n", 1),
                (b"{}", 2),
                (b"{", 0),
                (b"}", 0),
                (b"\0", 0),
                (b"{\"a\":1", 0),
            ];
            let (new, what) = rng.pick(&choices);
            req.body = Some(new.to_vec());
            // `/mcp` answers JSON that is not an object in JSON-RPC
            // (`-32600`), as over stdio (round twenty-two).
            let json_not_an_object =
                serde_json::from_slice::<Value>(new).is_ok_and(|v| !v.is_object());
            let expect = match what {
                _ if route.mcp && json_not_an_object => Expect::Status(200),
                0 => Expect::Status(422),
                1 if !route.optional_body => Expect::Status(422),
                2 if route.optional_body => Expect::Success,
                _ => Expect::Allowed,
            };
            Case::new(kind, req, expect)
        }
        "trailing bytes" => {
            let tails: [(&[u8], bool); 12] = [
                (b"x", true),
                (b"}", true),
                (b"{}", true),
                (b",", true),
                (b"]", true),
                (b"\0", true),
                (b"\"\"", true),
                (b"1", true),
                (b"/* */", true),
                (b" ", false),
                (b"\r\n\t", false),
                (b"\n\n", false),
            ];
            let (tail, bad) = rng.pick(&tails);
            let mut bytes = body.to_string().into_bytes();
            bytes.extend_from_slice(tail);
            req.body = Some(bytes);
            let expect = if bad {
                Expect::Status(422)
            } else {
                strict_or_allowed(Expect::Success)
            };
            Case::new(kind, req, expect)
        }
        "truncated body" => {
            let bytes = body.to_string().into_bytes();
            let cut = 1 + rng.below(bytes.len() - 1);
            req.body = Some(bytes[..cut].to_vec());
            Case::new(kind, req, Expect::Status(422))
        }
        "bom" => {
            let mut bytes = "\u{feff}".as_bytes().to_vec();
            bytes.extend_from_slice(body.to_string().as_bytes());
            req.body = Some(bytes);
            Case::new(kind, req, Expect::Status(422))
        }
        "extra fields" => {
            let n = [6000usize, 1, 3000, 20, 500][round % 5];
            let mut b = body.clone();
            let values = [
                json!(1),
                json!("x"),
                json!(null),
                json!([1, {}]),
                json!({"y": true}),
            ];
            for i in 0..n {
                b[format!("zz{i}")] = rng.pick(&values);
            }
            let bytes = b.to_string().into_bytes();
            let expect = sized(bytes.len(), strict_or_allowed(Expect::Success));
            req.body = Some(bytes);
            Case::new(kind, req, expect)
        }
        "param repeated" => {
            let (k, v) = rng.pick(&req.query);
            let again = if rng.chance(50) { v } else { "1".into() };
            let at = rng.below(req.query.len() + 1);
            req.query.insert(at, (k, again));
            let expect = if route.query_ids.iter().any(|(_, id)| *id == Id::Grant) {
                Expect::Allowed
            } else {
                Expect::Status(422)
            };
            Case::new(kind, req, expect)
        }
        "param empty" => {
            let i = rng.below(req.query.len());
            req.query[i].1 = String::new();
            let name = req.query[i].0.clone();
            Case::new(kind, req, Expect::Blame(name))
        }
        "param huge" => {
            let i = rng.below(req.query.len());
            // Up to 60 KB: longer targets go over raw TCP ("request line").
            let n = rng.pick(&[100usize, 5_000, 10_000]);
            let c = rng.pick(&["9", "a", "%C3%A9"]);
            req.query[i].1 = c.repeat(n);
            let name = req.query[i].0.clone();
            Case::new(kind, req, Expect::Blame(name))
        }
        "param negative" => {
            let i = rng.below(req.query.len());
            req.query[i].1 = rng.pick(&["-1", "-9223372036854775809", "-0"]).into();
            let name = req.query[i].0.clone();
            let expect = if route.ints.iter().any(|n| n.name == name) && req.query[i].1 != "-0" {
                Expect::Field(name)
            } else {
                Expect::Blame(name)
            };
            Case::new(kind, req, expect)
        }
        "param escapes" => {
            let i = rng.below(req.query.len());
            let junk = [
                "%ff",
                "%00",
                "%",
                "%zz",
                "%e2%82",
                "a%00b",
                "%C0%AF",
                "%2e%2e%2f",
                "%FF%FE",
                "+",
                "%2B1",
                "%0d%0aX:1",
                "%ED%A0%80",
            ];
            let j = rng.pick(&junk);
            req.query[i].1 = if rng.chance(50) {
                j.to_owned()
            } else {
                format!("{}{j}", req.query[i].1)
            };
            let name = req.query[i].0.clone();
            let expect = if route
                .query_ids
                .iter()
                .any(|(n, id)| *n == name && *id == Id::Grant)
            {
                Expect::Status(401)
            } else {
                Expect::Blame(name)
            };
            Case::new(kind, req, expect)
        }
        "param dropped" => {
            let i = rng.below(req.query.len());
            let (name, _) = req.query.remove(i);
            let expect = if name == "c" {
                Expect::Status(401)
            } else {
                Expect::Blame(name)
            };
            Case::new(kind, req, expect)
        }
        "int boundary" => {
            let int = route.ints[round % route.ints.len()].clone();
            let values: Vec<(String, bool)> = vec![
                ((int.min.saturating_sub(1)).to_string(), int.min == i64::MIN),
                (int.min.to_string(), true),
                (int.max.to_string(), true),
                (
                    if int.max == i64::MAX {
                        "9223372036854775808".into()
                    } else {
                        (int.max + 1).to_string()
                    },
                    false,
                ),
                ("1.0".into(), false),
                ("1e2".into(), false),
                ("0x10".into(), false),
                ("%201".into(), false),
                ("1%20".into(), false),
                ("%EF%BC%91".into(), false),
                ("".into(), false),
            ];
            // One past the range first, then the range's ends, then the rest.
            let order = [3usize, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10];
            let (v, ok) = values[order[round % order.len()]].clone();
            match req.query.iter_mut().find(|(k, _)| *k == int.name) {
                Some(slot) => slot.1 = v,
                None => req.query.push((int.name.to_owned(), v)),
            }
            let expect = if ok {
                Expect::Success
            } else {
                Expect::Field(int.name.to_owned())
            };
            // A grant route checks its grant first; a bad `after` then
            // leaves the grant unused, which is fine.
            Case::new(kind, req, expect)
        }
        "many params" => {
            let total = [33usize, 32, 100, 2_000][round % 4];
            let have = req.query.len();
            for i in have..total {
                req.query.push((format!("zz{i}"), "1".into()));
            }
            let expect = if total > 32 {
                Expect::Status(422)
            } else {
                Expect::Success
            };
            Case::new(kind, req, expect)
        }
        "unknown param" => {
            req.query.push((
                rng.pick(&["zz", "AID", "a%00", "%ff", "aid[]"]).into(),
                "1".into(),
            ));
            Case::new(kind, req, Expect::Success)
        }
        "wrong id" => wrong_id(route, world, rng, req),
        "content-type" => {
            let types = [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
                "application/json; charset=latin1",
                ";;;",
                "application/jsonx",
                "",
                "*/*",
            ];
            if rng.chance(15) {
                req.remove_header("Content-Type");
            } else {
                req.header("Content-Type", rng.pick(&types).into());
            }
            Case::new(kind, req, strict_or_allowed(Expect::Success))
        }
        "authorization" => {
            let key = route.key.clone().unwrap_or_else(|| world.key.clone());
            let variants: Vec<(Option<String>, bool)> = vec![
                (None, true),
                (Some("Bearer".into()), true),
                (Some(format!("Bearer {key}x")), true),
                (Some(format!("Bearer {}", &key[..key.len() - 1])), true),
                (Some(format!("Basic {key}")), true),
                (Some(format!("Bearer {}", key.to_uppercase())), true),
                (Some(format!("Bearer nk_{}", "A".repeat(43))), true),
                (Some(format!("Bearer nk_{}", "A".repeat(5000))), true),
                (Some(format!("bearer {key}")), false),
                (Some(format!("Bearer  {key}")), false),
                (Some(format!("Bearer {key}, Bearer {key}")), false),
                (Some(format!("Bearer {}", world.carol_key)), false),
                (Some("Bearer nk_é".into()), true),
            ];
            let (value, refused) = rng.pick(&variants);
            match value {
                Some(v) => req.header("Authorization", v),
                None => req.remove_header("Authorization"),
            }
            let expect = if route.key.is_some() && refused {
                Expect::Status(401)
            } else {
                Expect::Allowed
            };
            Case::new(kind, req, expect)
        }
        "expect" => {
            let v = rng.pick(&["100-continue", "foo", "200-ok", "100-continue, foo", ""]);
            req.header("Expect", v.into());
            let expect = if v == "100-continue" {
                Expect::Success
            } else {
                Expect::Allowed
            };
            Case::new(kind, req, expect)
        }
        "long header" => {
            let n = [17_000usize, 15_000, 140_000, 70_000, 1_000][round % 5];
            req.header("X-Fuzz", "v".repeat(n));
            let mut case = Case::new(
                kind,
                req,
                if n <= 15_000 {
                    Expect::Success
                } else {
                    Expect::Status(431)
                },
            );
            case.transport = n > 100_000;
            case
        }
        "many headers" => {
            let n = [100usize, 80, 200, 50][round % 4];
            for i in 0..n {
                req.headers.push((format!("X-Fuzz-{i}"), "1".into()));
            }
            let mut case = Case::new(
                kind,
                req,
                match n {
                    0..=80 => Expect::Success,
                    _ => Expect::Status(431),
                },
            );
            case.transport = true;
            case
        }
        "method" => {
            let methods = [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
                Method::HEAD,
                Method::from_bytes(b"FUZZ").expect("a method name"),
            ];
            let mut m = rng.pick(&methods);
            while m == route.method {
                m = rng.pick(&methods);
            }
            req.method = m.clone();
            let expect = if route.served.contains(&m) {
                if m == Method::HEAD && route.method == Method::GET {
                    Expect::Success
                } else {
                    Expect::Allowed
                }
            } else {
                Expect::Status(405)
            };
            Case::new(kind, req, expect)
        }
        "idempotency key" => {
            let variants: Vec<(String, Expect)> = vec![
                (format!("fuzz-{}", random_hex(rng, 12)), Expect::Success),
                ("k".repeat(128), Expect::Success),
                ("k".repeat(129), Expect::Status(422)),
                ("a\tb".into(), Expect::Status(422)),
                ("é".into(), Expect::Status(422)),
                ("".into(), Expect::Allowed),
                (" ".into(), Expect::Allowed),
            ];
            let (v, expect) = rng.pick(&variants);
            req.header("Idempotency-Key", v);
            Case::new(kind, req, expect)
        }
        "accept" => {
            let v = rng.pick(&[
                Some("application/json"),
                Some("text/event-stream"),
                Some("*/*"),
                None,
                Some("application/json, text/event-stream"),
                Some("text/event-stream, application/json;q=0.5"),
            ]);
            let expect = match v {
                Some(v) if v.contains("json") && v.contains("event-stream") => Expect::Allowed,
                _ => Expect::Field("Accept".into()),
            };
            match v {
                Some(v) => req.header("Accept", v.into()),
                None => req.remove_header("Accept"),
            }
            Case::new(kind, req, expect)
        }
        "handshake" => {
            let v = rng.below(5);
            match v {
                0 => req.remove_header("Upgrade"),
                1 => req.header("Sec-WebSocket-Version", "12".into()),
                2 => req.remove_header("Sec-WebSocket-Key"),
                3 => req.header("Sec-WebSocket-Key", "short".into()),
                _ => req.header("Connection", "keep-alive".into()),
            }
            Case::new(kind, req, Expect::Allowed)
        }
        _ => raw_case(kind, route, world, rng, req),
    }
}

/// Makes `case` wrong in a second way, a bad key or a method its path does
/// not serve, and sets what it must get by the README's "Which answer
/// wins": the route (405) before the key (401) before everything the
/// request sends or names (`/mcp` checks its key before its method).
/// Returns the second way, or `None` where it does not apply.
fn stack(route: &Route, case: &mut Case, rng: &mut Rng) -> Option<&'static str> {
    if matches!(
        case.kind,
        "long header" | "many headers" | "authorization" | "method" | "expect"
    ) {
        return None;
    }
    // A path made unmatched (an empty or split id) is 404 first.
    let unknown_route = case.expect == Expect::Allowed && case.kind == "wrong id";
    if route.key.is_some() && rng.chance(60) {
        let bad = rng.pick(&[
            None,
            Some(format!("Bearer nk_{}", "A".repeat(43))),
            Some("Basic eDp5".to_owned()),
        ]);
        match bad {
            Some(v) => case.req.header("Authorization", v),
            None => case.req.remove_header("Authorization"),
        }
        case.expect = if unknown_route {
            Expect::Allowed
        } else {
            Expect::Status(401)
        };
        return Some("(stacked) a bad key");
    }
    let methods = [Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    let m = rng.pick(&methods);
    if m == route.method || route.served.contains(&m) {
        return None;
    }
    case.req.method = m;
    case.expect = if unknown_route {
        Expect::Allowed
    } else {
        Expect::Status(405)
    };
    Some("(stacked) a method the path does not serve")
}

/// A wrong id in one of the route's id slots.
fn wrong_id(route: &Route, world: &World, rng: &mut Rng, mut req: Req) -> Case {
    enum Slot {
        Path,
        Query(&'static str),
        Body(&'static str),
    }
    let mut slots: Vec<(Slot, Id)> = Vec::new();
    if let Some((id, _)) = &route.path_id {
        slots.push((Slot::Path, *id));
    }
    for (name, id) in &route.query_ids {
        slots.push((Slot::Query(name), *id));
    }
    for (p, id) in &route.body_ids {
        slots.push((Slot::Body(p), *id));
    }
    let (slot, id) = slots.swap_remove(rng.below(slots.len()));
    let valid: String = match &slot {
        Slot::Path => route.path_id.as_ref().expect("a path id").1.clone(),
        Slot::Query(name) => route
            .query
            .iter()
            .find(|(k, _)| k == name)
            .expect("the query names it")
            .1
            .clone(),
        Slot::Body(p) => route
            .body
            .as_ref()
            .and_then(|b| b.pointer(p))
            .and_then(Value::as_str)
            .expect("the body has it")
            .to_owned(),
    };
    let name = match &slot {
        Slot::Path => match id {
            Id::Webhook => "id".to_owned(),
            _ => "thread_id".to_owned(),
        },
        Slot::Query(name) => (*name).to_owned(),
        Slot::Body(p) => field_name(p),
    };
    let field = Expect::Field(name.clone());
    let creates = route.name == "open_thread";
    let variants: Vec<(String, Expect)> = match id {
        Id::Thread => vec![
            (valid.to_uppercase(), Expect::Success),
            (valid.replace('-', ""), field.clone()),
            (format!("{{{valid}}}"), field.clone()),
            (format!("urn:uuid:{valid}"), field.clone()),
            (world.alice.clone(), field.clone()),
            (world.user_id.clone(), field.clone()),
            (world.webhook.clone(), field.clone()),
            (format!("{valid}0"), field.clone()),
            (
                valid.replacen(|c: char| c.is_ascii_hexdigit(), "g", 1),
                field.clone(),
            ),
            (valid.replacen('-', "\u{2010}", 1), field.clone()),
            (valid.repeat(100), field.clone()),
            (" ".to_owned() + &valid, field.clone()),
            (world.foreign.clone(), Expect::Status(404)),
            (
                random_uuid(rng),
                if creates {
                    Expect::Success
                } else {
                    Expect::Status(404)
                },
            ),
            (
                "00000000-0000-0000-0000-000000000000".into(),
                Expect::Allowed,
            ),
            (world.turn.clone(), Expect::Allowed),
            (world.acsp.clone(), Expect::Allowed),
            (String::new(), field.clone()),
        ],
        Id::Acting => vec![
            (valid.to_uppercase(), field.clone()),
            (world.carol.clone(), Expect::Status(403)),
            (random_hex(rng, 50), Expect::Status(403)),
            (world.bob.clone(), Expect::Allowed),
            (valid[..49].to_owned(), field.clone()),
            (format!("{valid}0"), field.clone()),
            (
                valid.replacen(|c: char| c.is_ascii_digit(), "g", 1),
                field.clone(),
            ),
            (world.acsp.clone(), field.clone()),
            (String::new(), field.clone()),
            (format!(" {valid}"), field.clone()),
        ],
        Id::Target => vec![
            (world.carol.clone(), Expect::Success),
            (world.dave.clone(), Expect::Success),
            (random_hex(rng, 50), Expect::Status(404)),
            (world.alice.clone(), Expect::Allowed),
            (valid.to_uppercase(), field.clone()),
            (world.acsp.clone(), field.clone()),
            (String::new(), field.clone()),
        ],
        Id::Webhook => vec![
            (format!("wh_{}", random_hex(rng, 32)), Expect::Status(404)),
            (valid.to_uppercase(), Expect::Allowed),
            (valid.trim_start_matches("wh_").to_owned(), Expect::Allowed),
            ("wh_x".into(), Expect::Allowed),
            (world.acsp.clone(), Expect::Allowed),
            (format!("{valid}%2F..%2F"), Expect::Allowed),
        ],
        Id::Grant => vec![
            (random_hex(rng, 43), Expect::Status(401)),
            (String::new(), Expect::Status(401)),
            (format!("{valid}x"), Expect::Status(401)),
            (world.used_grant.clone(), Expect::Status(401)),
            (valid.to_uppercase(), Expect::Allowed),
            (world.key.clone(), Expect::Status(401)),
        ],
    };
    let (wrong, mut expect) = rng.pick(&variants);
    match slot {
        Slot::Path => {
            req.path = route.path.replace("{id}", &enc(&wrong));
            if wrong.is_empty() || wrong.contains('/') {
                expect = Expect::Allowed;
            }
        }
        Slot::Query(name) => {
            for (k, v) in req.query.iter_mut() {
                if *k == name {
                    *v = enc(&wrong);
                }
            }
        }
        Slot::Body(p) => {
            let mut b = route.body.clone().expect("a body");
            *b.pointer_mut(p).expect("the pointer") = json!(wrong);
            req.body = Some(b.to_string().into_bytes());
        }
    }
    // A grant route checks the grant before anything else.
    if id != Id::Grant && route.query_ids.iter().any(|(_, i)| *i == Id::Grant) {
        expect = Expect::Allowed;
    }
    Case::new("wrong id", req, expect)
}

/// A request whose framing or head reqwest will not write: raw bytes.
fn raw_case(kind: &'static str, route: &Route, world: &World, rng: &mut Rng, req: Req) -> Case {
    let body = req.body.clone().unwrap_or_default();
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target());
    let mut host = true;
    let mut headers = String::new();
    for (k, v) in &req.headers {
        headers.push_str(&format!("{k}: {v}\r\n"));
    }
    headers.push_str("Connection: close\r\n");
    let mut tail = body.clone();
    let mut expect = Expect::Allowed;
    match kind {
        "chunked body" => {
            headers.push_str("Transfer-Encoding: chunked\r\n");
            tail.clear();
            let mut rest: &[u8] = &body;
            while !rest.is_empty() {
                let n = (1 + rng.below(64)).min(rest.len());
                let size = if rng.chance(50) {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                tail.extend_from_slice(size.as_bytes());
                tail.extend_from_slice(b"\r\n");
                tail.extend_from_slice(&rest[..n]);
                tail.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            tail.extend_from_slice(b"0\r\n\r\n");
            expect = if route.strict() {
                Expect::Success
            } else {
                Expect::Allowed
            };
        }
        "bad chunk" => {
            headers.push_str("Transfer-Encoding: chunked\r\n");
            let size = rng.pick(&["zz", "-1", "fffffffffffffffffff", "0x10", " 5", "5 5", ""]);
            tail = format!("{size}\r\n").into_bytes();
            tail.extend_from_slice(&body);
            tail.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        "short content-length" => {
            let k = 1 + rng.below(body.len().clamp(1, 20));
            headers.push_str(&format!(
                "Content-Length: {}\r\n",
                body.len().saturating_sub(k)
            ));
            expect = Expect::Status(422);
        }
        "long content-length" => {
            headers.push_str(&format!(
                "Content-Length: {}\r\n",
                body.len() + 1 + rng.below(100)
            ));
        }
        "length and chunked" => {
            headers.push_str(&format!("Content-Length: {}\r\n", body.len()));
            headers.push_str("Transfer-Encoding: chunked\r\n");
            expect = Expect::Status(400);
        }
        "two content-lengths" => {
            let other = if rng.chance(50) {
                body.len()
            } else {
                body.len() + 1
            };
            headers.push_str(&format!("Content-Length: {}\r\n", body.len()));
            headers.push_str(&format!("Content-Length: {other}\r\n"));
            expect = Expect::Status(400);
        }
        "bad content-length" => {
            let v = rng.pick(&[
                "-1",
                "+5",
                "5 5",
                "0x5",
                "١",
                "99999999999999999999999",
                "abc",
            ]);
            headers.push_str(&format!("Content-Length: {v}\r\n"));
            expect = Expect::Status(400);
        }
        "folded header" => {
            headers.push_str("X-Fuzz: a\r\n b\r\n");
            if !body.is_empty() {
                headers.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        }
        "control in header" => {
            let c = rng.pick(&["\u{1}", "\u{7f}", "\0", "\r", "\u{1b}[31m"]);
            headers.push_str(&format!("X-Fuzz: a{c}b\r\n"));
            if !body.is_empty() {
                headers.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            expect = Expect::Status(400);
        }
        "request line" => {
            let target = req.target();
            let sep = if target.contains('?') { '&' } else { '?' };
            let line = match rng.below(10) {
                0 => format!("{} {target} HTTP/1.0\r\n", req.method),
                1 => format!(
                    "{} {target} HTTP/1.1\r\n",
                    req.method.as_str().to_lowercase()
                ),
                2 => format!("{} http://{}{target} HTTP/1.1\r\n", req.method, world.addr),
                3 => format!("{} {target} HTTP/1.1 extra\r\n", req.method),
                4 => format!("{} {target} HTTP/2.0\r\n", req.method),
                5 => {
                    host = false;
                    expect = Expect::Status(400);
                    head.clone()
                }
                6 => format!("{} {target}#frag HTTP/1.1\r\n", req.method),
                // A target of 100 KB, within the 128 KiB head; one past it:
                // both over the URI limit (65,534 bytes), 414 in the envelope.
                7 => {
                    expect = Expect::Status(414);
                    format!(
                        "{} {target}{sep}zz={} HTTP/1.1\r\n",
                        req.method,
                        "a".repeat(100_000)
                    )
                }
                8 => {
                    expect = Expect::Status(414);
                    format!(
                        "{} {target}{sep}zz={} HTTP/1.1\r\n",
                        req.method,
                        "a".repeat(140_000)
                    )
                }
                _ => format!("{}  {target}  HTTP/1.1\r\n", req.method),
            };
            head = line;
            if !body.is_empty() {
                headers.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        }
        other => panic!("no mutation {other}"),
    }
    let mut bytes = head.into_bytes();
    if host {
        bytes.extend_from_slice(format!("Host: {}\r\n", world.addr).as_bytes());
    }
    bytes.extend_from_slice(headers.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&tail);
    let mut case = Case::new(kind, req, expect);
    case.raw = Some(bytes);
    case.transport = true;
    case
}

// ---------------------------------------------------------- sending, checking

/// An answer as the checks need it.
#[derive(Debug)]
struct Answered {
    status: u16,
    request_id: Option<String>,
    body: Vec<u8>,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    req: &Req,
    answer: Answer,
) -> Result<Answered, String> {
    let mut r = client.request(req.method.clone(), format!("{base}{}", req.target()));
    for (k, v) in &req.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    if let Some(b) = &req.body {
        r = r.body(b.clone());
    }
    let res = r.send().await.map_err(|e| format!("no answer: {e:?}"))?;
    let status = res.status().as_u16();
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let streaming = (status == 200 && answer == Answer::Stream) || status == 101;
    let body = if streaming {
        Vec::new()
    } else {
        res.bytes()
            .await
            .map_err(|e| format!("body cut short: {e:?}"))?
            .to_vec()
    };
    Ok(Answered {
        status,
        request_id,
        body,
    })
}

/// Sends `bytes` on a fresh connection and reads the first answer, if any
/// (`None`: the connection ended without one).
async fn send_raw(
    addr: &str,
    bytes: &[u8],
    half_close: bool,
    streamed: bool,
) -> Result<Option<Answered>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // A server that closes early may reset the rest of the write.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + RAW_WAIT;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                if got.is_empty() {
                    return Err(format!("no answer and no close within {RAW_WAIT:?}"));
                }
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if let Some(a) = parse_response(&got, false, streamed) {
                    return Ok(Some(a));
                }
            }
        }
    }
    if got.is_empty() {
        return Ok(None);
    }
    parse_response(&got, true, streamed)
        .map(Some)
        .ok_or_else(|| format!("a partial answer: {:?}", String::from_utf8_lossy(&got)))
}

/// The first complete HTTP response in `bytes`: by its `Content-Length`,
/// or (a stream, an event stream from `/mcp`) all of it once `eof`.
fn parse_response(bytes: &[u8], eof: bool, stream: bool) -> Option<Answered> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut request_id = None;
    let mut events = false;
    for line in lines {
        let (k, v) = line.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(v.trim().parse::<usize>().ok()?),
            "x-request-id" => request_id = Some(v.trim().to_owned()),
            "content-type" => events = v.contains("text/event-stream"),
            _ => {}
        }
    }
    let body = match length {
        Some(n) => bytes.get(end + 4..end + 4 + n)?.to_vec(),
        // An upgrade or an event stream of `/v1/sse`: not waited for.
        None if stream && (status == 101 || events) => Vec::new(),
        None if eof => bytes[end + 4..].to_vec(),
        None => return None,
    };
    Some(Answered {
        status,
        request_id,
        body,
    })
}

/// The first string under `key` anywhere in `v`.
fn shown_as(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(|child| shown_as(child, key))),
        Value::Array(items) => items.iter().find_map(|child| shown_as(child, key)),
        _ => None,
    }
}

/// The envelope's code for a status.
fn codes_for(status: u16) -> &'static [&'static str] {
    match status {
        400 | 415 | 422 => &["VALIDATION_ERROR"],
        401 => &["UNAUTHORIZED"],
        403 => &["FORBIDDEN"],
        404 => &["NOT_FOUND"],
        405 => &["METHOD_NOT_ALLOWED"],
        408 => &["REQUEST_TIMEOUT"],
        409 => &[
            "THREAD_NOT_ACTIVE",
            "CONFLICT",
            "TOO_MANY_WEBHOOKS",
            "TOO_MANY_PENDING_PARTS",
        ],
        413 => &["PAYLOAD_TOO_LARGE"],
        429 => &["RATE_LIMITED"],
        414 => &["URI_TOO_LONG"],
        431 => &["HEADERS_TOO_LARGE"],
        501 => &["NOT_IMPLEMENTED"],
        503 => &["UNAVAILABLE"],
        _ => &["INTERNAL"],
    }
}

/// The JSON-RPC messages of an `/mcp` answer (JSON, or an event stream
/// of `data:` lines).
fn mcp_messages(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return vec![v];
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// Whether an `/mcp` answer is a refusal: a JSON-RPC error or a tool error.
fn mcp_refused(body: &[u8]) -> bool {
    mcp_messages(body)
        .iter()
        .any(|m| m.get("error").is_some() || m["result"]["isError"] == true)
}

/// Checks the JSON-RPC messages of a `200` from `/mcp`: a tool error
/// carries the API's error (a status of the table, its code, a message,
/// the field at fault), never a 500.
fn check_mcp(case: &Case, got: &Answered) -> Result<(), String> {
    let text = String::from_utf8_lossy(&got.body);
    let messages = mcp_messages(&got.body);
    if messages.is_empty() && !got.body.is_empty() {
        return Err(format!("an /mcp answer without a JSON-RPC message: {text}"));
    }
    for m in messages {
        if let Some(e) = m.get("error") {
            if !e["code"].is_i64() || e["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("a JSON-RPC error without code or message: {m}"));
            }
            continue;
        }
        if m["result"]["isError"] != true {
            continue;
        }
        let e = &m["result"]["structuredContent"]["error"];
        let status = e["status"].as_u64().unwrap_or_default() as u16;
        if !matches!(status, 401 | 403 | 404 | 409 | 413 | 422) {
            return Err(format!("a tool error of status {status}: {m}"));
        }
        let code = e["code"].as_str().unwrap_or_default();
        if !codes_for(status).contains(&code) || e["message"].as_str().is_none_or(str::is_empty) {
            return Err(format!("a tool error without its code or message: {m}"));
        }
        if let Some(f) = e.get("field") {
            let f = f.as_str().unwrap_or_default();
            if f.is_empty() {
                return Err(format!("a tool error's field is not a name: {m}"));
            }
            // A mutated argument is the one a tool error names.
            if let Expect::Blame(name) = &case.expect {
                if let Some(arg) = name.strip_prefix("params.arguments.") {
                    if status == 422 && !related(f, arg) {
                        return Err(format!(
                            "a tool error names {f:?}, where only {arg:?} was changed"
                        ));
                    }
                }
            }
        }
        let lower = text.to_lowercase();
        for leak in [
            "sqlite",
            "select ",
            "panicked",
            "/tmp/",
            "src/",
            "backtrace",
        ] {
            if lower.contains(leak) {
                return Err(format!("the answer shows internals ({leak}): {text}"));
            }
        }
    }
    Ok(())
}

/// Checks one answer; `Err` says what is wrong.
fn check(route: &Route, case: &Case, got: &Answered, key: &str) -> Result<(), String> {
    let s = got.status;
    // Another method the path serves has successes of its own.
    let success =
        route.ok.contains(&s) || ((200..300).contains(&s) && case.req.method != route.method);
    let allowed = success
        || matches!(s, 401 | 403 | 404 | 405 | 409 | 413 | 422)
        || (s == 400 && (route.mcp || case.transport))
        || (s == 415 && route.mcp)
        || (s == 414 && case.kind == "request line")
        || (s == 431
            && matches!(
                case.kind,
                "long header" | "many headers" | "authorization" | "request line"
            ))
        || (s == 408 && case.transport);
    if !allowed {
        return Err(format!("status {s} is not one the route gives"));
    }
    let is_error = !(200..300).contains(&s) && s != 101;
    match &got.request_id {
        None => return Err(format!("{s} without X-Request-Id")),
        Some(id) if is_error && case.req.method != Method::HEAD => {
            let text = String::from_utf8_lossy(&got.body);
            let v: Value = serde_json::from_slice(&got.body)
                .map_err(|_| format!("{s} body is not JSON: {text}"))?;
            let e = &v["error"];
            let obj = v.as_object().ok_or("the body is not an object")?;
            if obj.len() != 1 {
                return Err(format!("keys beside `error`: {text}"));
            }
            let code = e["code"].as_str().unwrap_or_default();
            if !codes_for(s).contains(&code) {
                return Err(format!("{s} with code {code:?}: {text}"));
            }
            if e["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("no message: {text}"));
            }
            if e["request_id"] != id.as_str() || !id.starts_with("req_") {
                return Err(format!("request id {id} vs body {text}"));
            }
            if let Some(f) = e.get("field") {
                if f.as_str().is_none_or(str::is_empty) {
                    return Err(format!("field is not a non-empty string: {text}"));
                }
            }
            let lower = text.to_lowercase();
            for leak in [
                "sqlite",
                "select ",
                "insert ",
                "panicked",
                "/tmp/",
                "src/",
                "postgres",
                "backtrace",
            ] {
                if lower.contains(leak) {
                    return Err(format!("the body shows internals ({leak}): {text}"));
                }
            }
            if text.contains(key) {
                return Err("the body echoes the login key".into());
            }
        }
        Some(_) => {}
    }
    if success && route.answer == Answer::Json && case.req.method != Method::HEAD && s != 202 {
        let parsed: Option<Value> = serde_json::from_slice(&got.body).ok();
        if !parsed.as_ref().is_some_and(Value::is_object) {
            // `/mcp` may answer as an event stream.
            if !route.mcp {
                return Err(format!(
                    "a {s} that is not a JSON object: {:?}",
                    String::from_utf8_lossy(&got.body)
                ));
            }
        }
    }
    if route.mcp && s == 200 {
        check_mcp(case, got)?;
    }
    if let (true, Some((key, text))) = (success, &case.echo) {
        let v: Value = serde_json::from_slice(&got.body).unwrap_or_default();
        if let Some(shown) = shown_as(&v, key) {
            if shown != *text {
                return Err(format!(
                    "{key} of {} chars shown as {} chars",
                    text.chars().count(),
                    shown.chars().count()
                ));
            }
        }
    }
    let field = || -> Option<String> {
        let v: Value = serde_json::from_slice(&got.body).ok()?;
        v["error"]["field"].as_str().map(str::to_owned)
    };
    match &case.expect {
        Expect::Allowed => Ok(()),
        Expect::Success if success => Ok(()),
        Expect::Success => Err(format!("{s}, where the valid request's answer was due")),
        Expect::Status(want) if s == *want => Ok(()),
        Expect::Status(want) => Err(format!("{s}, where {want} was due")),
        Expect::Field(name) if s == 422 && field().as_deref() == Some(name.as_str()) => Ok(()),
        Expect::Field(name) => Err(format!(
            "{s} with field {:?}, where 422 naming {name:?} was due",
            field()
        )),
        Expect::Blame(name) => match field() {
            Some(f) if s == 422 && !related(&f, name) => {
                Err(format!("422 names {f:?}, where only {name:?} was changed"))
            }
            _ => Ok(()),
        },
    }
}

// ---------------------------------------------------------- what is stored

/// What a refused request must leave as it was.
const STORED: [&str; 19] = [
    "SELECT COALESCE(MAX(id), 0) FROM threads",
    "SELECT COUNT(*) FROM threads",
    "SELECT CAST(COALESCE(SUM(CASE status WHEN 'closed' THEN 1 WHEN 'archived' THEN 2 ELSE 0 END), 0) AS BIGINT) FROM threads",
    "SELECT CAST(COALESCE(SUM(turn_epoch), 0) AS BIGINT) FROM threads",
    "SELECT CAST(COALESCE(SUM(LENGTH(integrations)), 0) AS BIGINT) FROM threads",
    "SELECT COALESCE(MAX(id), 0) FROM messages",
    "SELECT COALESCE(MAX(position), 0) FROM events",
    "SELECT COUNT(*) FROM turn_decisions",
    "SELECT COALESCE(MAX(id), 0) FROM scheduled_replies",
    "SELECT COUNT(*) FROM read_marks",
    "SELECT CAST(COALESCE(SUM(last_read_seq), 0) AS BIGINT) FROM read_marks",
    "SELECT COUNT(*) FROM idempotency_keys",
    "SELECT COUNT(*) FROM turn_senders",
    "SELECT COALESCE(MAX(id), 0) FROM webhooks",
    "SELECT COUNT(*) FROM webhooks",
    "SELECT COUNT(*) FROM webhooks WHERE status = 'paused'",
    "SELECT COALESCE(MAX(id), 0) FROM accounts",
    "SELECT COALESCE(MAX(id), 0) FROM agents",
    "SELECT COALESCE(MAX(id), 0) FROM login_keys",
];

/// Reads [`STORED`] in one statement, on a connection kept open for the
/// run: two reads per refused case, so a connection per value (a backend
/// started for each on PostgreSQL) would cost more than the cases.
struct Stored {
    sqlite: Option<rusqlite::Connection>,
    pg: Option<crate::helpers::pg::Session>,
}

impl Stored {
    fn open(db: &TestDb) -> Stored {
        let sqlite = (!db.on_postgres()).then(|| {
            let conn = rusqlite::Connection::open(&db.path).expect("open the test database");
            conn.busy_timeout(WAIT).expect("busy timeout");
            conn
        });
        let pg = db
            .arg
            .database_url
            .as_deref()
            .map(crate::helpers::pg::Session::new);
        Stored { sqlite, pg }
    }

    fn read(&self) -> Vec<i64> {
        let sql = format!(
            "SELECT {}",
            STORED
                .iter()
                .map(|q| format!("({q})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match (&self.sqlite, &self.pg) {
            (Some(conn), _) => conn
                .query_row(&sql, [], |row| {
                    (0..STORED.len()).map(|i| row.get::<_, i64>(i)).collect()
                })
                .expect("the counts read"),
            (None, Some(pg)) => pg.ints_of_row(&sql),
            (None, None) => unreachable!("a database on one backend or the other"),
        }
    }

    /// The one integer `sql` selects, on the same connection.
    fn count(&self, sql: &str) -> i64 {
        match (&self.sqlite, &self.pg) {
            (Some(conn), _) => conn
                .query_row(sql, [], |row| row.get(0))
                .expect("the count reads"),
            (None, Some(pg)) => pg.scalar(sql),
            (None, None) => unreachable!("a database on one backend or the other"),
        }
    }

    /// The newest message, to tell what stored it (SQLite only).
    fn newest_message(&self) -> String {
        let Some(conn) = &self.sqlite else {
            return String::new();
        };
        conn.query_row(
            "SELECT m.seq || ' ' || m.msg_type || ' from ' || m.sender || ' in ' || t.uuid \
             || ' (' || t.kind || '): ' || substr(m.content, 1, 80) \
             FROM messages m JOIN threads t ON t.id = m.thread_id ORDER BY m.id DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap_or_default()
    }
}

// ------------------------------------------------------------ the WebSocket

/// A subscriber that must keep getting its events whatever the hostile
/// sockets do: its events, read by a task (which answers pings).
async fn subscribe(world: &World) -> mpsc::Receiver<Value> {
    let body = world
        .api
        .open_thread(&world.key, Some(&world.probe_thread))
        .await;
    let url = body["realtime"]["connect_url"]
        .as_str()
        .expect("connect url")
        .to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(msg) = ws.next().await {
            let event = match msg {
                Ok(WsMessage::Text(t)) => serde_json::from_str(&t).unwrap_or(Value::Null),
                Ok(WsMessage::Close(frame)) => {
                    json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))})
                }
                Ok(_) => continue,
                Err(e) => json!({"type": "closed", "error": e.to_string()}),
            };
            let closed = event["type"] == "closed";
            if tx.send(event).await.is_err() || closed {
                return;
            }
        }
    });
    rx
}

/// Posts a probe to the subscriber's thread and waits for its event.
async fn probe(world: &World, events: &mut mpsc::Receiver<Value>, n: u64) -> Result<(), String> {
    let content = format!("probe {n}");
    let (status, body) = world
        .post(
            "/v1/turn-taking/actions/submit_messages",
            &world.key,
            json!({"thread_id": world.probe_thread, "messages": [{"sender": "probe", "content": content}]}),
        )
        .await;
    if status != 200 {
        return Err(format!("the probe post was {status}: {body}"));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("the subscriber did not get {content:?}"))?
            .ok_or("the subscriber's task ended")?;
        if event["type"] == "closed" {
            return Err(format!("the subscriber was closed: {event}"));
        }
        if event["type"] == "thread.message" && event["data"]["content"] == content.as_str() {
            return Ok(());
        }
    }
}

/// A client frame: FIN, RSV bits (0–7), opcode, masked unless told.
pub(crate) fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

pub(crate) fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, 0, 8, true, &payload)
}

/// A hostile frame (or a few) and its name.
/// The hostile frames, one per kind.
const HOSTILE_KINDS: usize = 19;

/// How the server must end a socket after hostile frame `which`: closed
/// with one of these codes, or (`None`) the frame ignored (a ping after it
/// answered, our close answered with 1000); random bytes may go either way.
fn hostile_due(which: usize) -> Option<&'static [u16]> {
    match which % HOSTILE_KINDS {
        5 | 6 => Some(&[1007]),
        12 | 13 => Some(&[1009]),
        18 => Some(&[1000]),
        14..=17 => None,
        _ => Some(&[1002]),
    }
}

fn hostile(which: usize, rng: &mut Rng) -> (&'static str, Vec<u8>) {
    match which % HOSTILE_KINDS {
        0 => ("unmasked text", frame(true, 0, 1, false, b"hi")),
        1 => (
            "reserved bits",
            frame(true, 1 + rng.below(7) as u8, 1, true, b"hi"),
        ),
        2 => {
            let op = rng.pick(&[3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
            ("unknown opcode", frame(true, 0, op, true, b"hi"))
        }
        3 => ("fragmented ping", frame(false, 0, 9, true, b"hi")),
        4 => (
            "control over 125 bytes",
            frame(true, 0, 9, true, &[b'p'; 126]),
        ),
        5 => {
            let bad: &[u8] = rng.pick(&[
                &[0xff, 0xfe][..],
                &[0xc3][..],
                &[0xed, 0xa0, 0x80][..],
                &[0xf4, 0x90, 0x80, 0x80][..],
                &[0xc0, 0xaf][..],
            ]);
            ("text of invalid UTF-8", frame(true, 0, 1, true, bad))
        }
        6 => {
            let mut f = frame(false, 0, 1, true, &[0xc3]);
            f.extend(frame(true, 0, 0, true, &[0xff]));
            ("fragmented invalid UTF-8", f)
        }
        7 => (
            "continuation without a start",
            frame(true, 0, 0, true, b"x"),
        ),
        8 => {
            let mut f = frame(false, 0, 1, true, b"a");
            f.extend(frame(true, 0, 1, true, b"b"));
            ("data frames interleaved", f)
        }
        9 => {
            let code = rng.pick(&[0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]);
            ("close with an invalid code", close_frame(code, b""))
        }
        10 => ("close of one byte", frame(true, 0, 8, true, &[0x03])),
        11 => (
            "close reason of invalid UTF-8",
            close_frame(1000, &[0xff, 0xfe]),
        ),
        12 => {
            // Declares 65,537 bytes, sends 1,024 of them.
            let mut f = vec![0x82, 0x80 | 127];
            f.extend_from_slice(&65_537u64.to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            f.extend_from_slice(&[0u8; 1024]);
            ("frame over 64 KiB", f)
        }
        13 => {
            let len = rng.pick(&[0x7fff_ffff_ffff_ffffu64, 0x8000_0000_0000_0000, u64::MAX]);
            let mut f = vec![0x82, 0x80 | 127];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            ("huge declared length", f)
        }
        14 => (
            "binary of exactly 64 KiB",
            frame(true, 0, 2, true, &vec![7u8; 64 * 1024]),
        ),
        15 => {
            let mut f = vec![0x81, 0x80 | 126, 0, 2];
            f.extend_from_slice(&[1, 2, 3, 4]);
            f.extend_from_slice(&[b'h' ^ 1, b'i' ^ 2]);
            ("non-minimal length", f)
        }
        16 => {
            let mut f = Vec::new();
            for _ in 0..200 {
                f.extend(frame(true, 0, 9, true, b"flood"));
            }
            ("ping flood", f)
        }
        17 => {
            let junk: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
            ("random bytes", junk)
        }
        _ => ("text then close", {
            let mut f = frame(true, 0, 1, true, b"{\"hello\":1}");
            f.extend(close_frame(1000, b"bye"));
            f
        }),
    }
}

/// A WebSocket client over raw TCP, to send frames as they are given
/// (fragments, bytes that are not UTF-8) and read the server's frames.
pub(crate) struct RawWs {
    stream: TcpStream,
    /// Bytes read and not yet taken as frames.
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `connect_url` (`ws://host:port/path?c=…`).
    pub(crate) async fn connect(connect_url: &str) -> RawWs {
        let rest = connect_url.trim_start_matches("ws://");
        let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream
            .write_all(handshake.as_bytes())
            .await
            .expect("handshake");
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(at) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(ws.read().await, "closed before the upgrade");
        };
        assert!(
            ws.buf.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&ws.buf)
        );
        ws.buf.drain(..head_end);
        ws
    }

    /// Reads what the server sent (within `WAIT`); false at its end.
    pub(crate) async fn read(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(_) => false,
            Err(_) => panic!("nothing from the server in {WAIT:?}"),
        }
    }

    pub(crate) async fn send(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.stream.write_all(f).await.expect("send a frame");
        }
    }

    /// The server's next frame (opcode, payload); `None` at the end of the
    /// connection.
    pub(crate) async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            if !self.read().await {
                return None;
            }
        }
    }

    /// The next event (a text frame), skipping pings.
    pub(crate) async fn event(&mut self) -> Value {
        loop {
            match self.frame().await {
                Some((1, payload)) => return serde_json::from_slice(&payload).expect("JSON"),
                Some((9 | 10, _)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// Waits for the pong of the ping `payload`, skipping other frames.
    pub(crate) async fn pong(&mut self, payload: &[u8]) {
        loop {
            match self.frame().await {
                Some((10, got)) if got == payload => return,
                Some((8, close)) => panic!("closed while waiting for a pong: {close:?}"),
                Some(_) => continue,
                None => panic!("the connection ended while waiting for a pong"),
            }
        }
    }

    /// The code and reason of the server's close, skipping other frames;
    /// `None` if the connection ended without one.
    pub(crate) async fn close(&mut self) -> Option<(u16, String)> {
        loop {
            let (op, payload) = self.frame().await?;
            if op == 8 {
                assert!(payload.len() >= 2, "a close with a code: {payload:?}");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = String::from_utf8(payload[2..].to_vec()).expect("a UTF-8 reason");
                return Some((code, reason));
            }
        }
    }
}

/// How a hostile socket ended.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// One server frame from the front of `buf`: (opcode, payload, length).
pub(crate) fn server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((opcode, payload, at + len))
}

/// Connects to `/v1/ws` with a fresh grant, sends a hostile frame, and
/// returns how the socket ended ("close NNNN", "ended", "ignored, then
/// close NNNN").
async fn ws_case(
    world: &mut World,
    which: usize,
    rng: &mut Rng,
) -> Result<(&'static str, String), String> {
    let grant = if rng.chance(25) {
        let (status, body) = world
            .post(
                "/api/acsp/realtime/open",
                &world.key,
                json!({"aid": world.alice}),
            )
            .await;
        if status != 200 {
            return Err(format!("realtime/open was {status}: {body}"));
        }
        let url = body["realtime"]["connect_url"]
            .as_str()
            .expect("connect url");
        url.split("c=").nth(1).expect("c=").to_owned()
    } else {
        world.grant(&world.ws_thread.clone()).await
    };
    let (name, bytes) = hostile(which, rng);
    let outcome = ws_outcome(world, &grant, name, &bytes, which).await?;
    let due = hostile_due(which);
    let fine = match due {
        Some(codes) => codes.iter().any(|c| outcome == format!("close {c}")),
        None if which % HOSTILE_KINDS == 17 => true,
        None => outcome == "ignored, then close 1000",
    };
    if !fine {
        return Err(format!("{name}: {outcome}, where {due:?} was due"));
    }
    Ok((name, outcome))
}

/// Sends hostile `bytes` on a fresh socket of `grant`; how it ended.
async fn ws_outcome(
    world: &World,
    grant: &str,
    name: &'static str,
    bytes: &[u8],
    which: usize,
) -> Result<String, String> {
    let mut stream = TcpStream::connect(&world.addr)
        .await
        .map_err(|e| e.to_string())?;
    let handshake = format!(
        "GET /v1/ws?c={grant} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        world.addr
    );
    stream
        .write_all(handshake.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + RAW_WAIT;
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("no upgrade: {:?}", String::from_utf8_lossy(&buf))),
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        return Err(format!("no upgrade: {:?}", String::from_utf8_lossy(&buf)));
    }
    buf.drain(..head_end);
    // The hostile frame; then, where it may be ignored, a ping: a pong back
    // says it was. (Not after a frame that fails the connection: bytes
    // the server never reads make its kernel reset the connection, which
    // can discard the close frame before the client reads it.)
    let due = hostile_due(which);
    let _ = stream.write_all(bytes).await;
    if due.is_none() {
        let _ = stream
            .write_all(&frame(true, 0, 9, true, b"fz-probe"))
            .await;
    }
    let mut ignored = false;
    let deadline = tokio::time::Instant::now() + RAW_WAIT;
    loop {
        while let Some((op, payload, used)) = server_frame(&buf) {
            buf.drain(..used);
            match op {
                8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let outcome = match code {
                        Some(c) if !valid_close_code(c) => {
                            return Err(format!("{name}: closed with invalid code {c}"))
                        }
                        Some(c) => format!("close {c}"),
                        None => "close (no code)".into(),
                    };
                    let outcome = if ignored {
                        format!("ignored, then {outcome}")
                    } else {
                        outcome
                    };
                    return Ok(outcome);
                }
                10 if payload == b"fz-probe" && !ignored => {
                    ignored = true;
                    let _ = stream.write_all(&close_frame(1000, b"")).await;
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let outcome = if ignored {
                    "ignored, then ended"
                } else {
                    "ended"
                };
                return Ok(outcome.into());
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            // Random bytes may declare a frame longer than what follows:
            // the server waits for the rest of it (and takes our ping and
            // close for its payload) until the heartbeat gives up.
            Err(_) if which % HOSTILE_KINDS == 17 => return Ok("waiting for the rest".into()),
            Err(_) => {
                return Err(format!(
                    "{name}: the socket was still open after {RAW_WAIT:?}"
                ))
            }
        }
    }
}

// ----------------------------------------------------------------- the test

/// `threadline serve` from the binary `bin` on `db` (SQLite), as
/// [`Server::start_on`] starts the one under test.
async fn launch(bin: &str, db: &TestDb, args: &[&str]) -> Server {
    assert!(!db.on_postgres(), "THREADLINE_FUZZ_BIN runs on SQLite");
    // A `Server` (its guard, its log files), its child replaced by the
    // same command line of another program, writing to the same log.
    let mut server = Server::spawn(db.dir.path(), &db.path, "127.0.0.1:0", args, "info");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let stderr = std::fs::read_dir(db.dir.path())
        .expect("the test directory")
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.to_string_lossy().ends_with(".stderr"))
        .expect("the server's stderr file");
    server.child = std::process::Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&db.path)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("the binary starts");
    server.wait_ready().await;
    server
}

/// Reads an environment variable as a number (decimal or 0x hex).
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            }
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
        }
        Err(_) => default,
    }
}

/// Counts per route and per mutation kind, and the answers seen.
#[derive(Default)]
struct Tally {
    by_route: BTreeMap<&'static str, u64>,
    by_kind: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<String, u64>,
    ws: BTreeMap<String, u64>,
}

impl Tally {
    fn report(&self, cases: u64, seed: u64, elapsed: Duration) -> String {
        let mut out = format!("fuzz17: seed {seed}, {cases} cases in {elapsed:.1?}\n  by route:\n");
        for (k, n) in &self.by_route {
            out.push_str(&format!("    {n:>7}  {k}\n"));
        }
        out.push_str("  by mutation:\n");
        for (k, n) in &self.by_kind {
            out.push_str(&format!("    {n:>7}  {k}\n"));
        }
        out.push_str("  answers (mutation: status):\n");
        for (k, n) in &self.statuses {
            out.push_str(&format!("    {n:>7}  {k}\n"));
        }
        out.push_str("  hostile sockets (frame: end):\n");
        for (k, n) in &self.ws {
            out.push_str(&format!("    {n:>7}  {k}\n"));
        }
        out
    }
}

/// Every route's valid request, mutated one way per case, against the real
/// binary: see the module comment for what each answer must be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_survives_seeded_hostile_input() {
    // By default one pass over every (route, mutation) pair.
    let cases = std::env::var("THREADLINE_FUZZ_CASES")
        .is_ok()
        .then(|| env_number("THREADLINE_FUZZ_CASES", 0));
    let seed = env_number("THREADLINE_FUZZ_SEED", DEFAULT_SEED);

    let db = TestDb::new();
    let seeded = db.seed();
    let other = |name: &str| -> (String, String) {
        let out = threadline::cli::agent_create(&db.arg, name, None).expect("agent create");
        let v: Value = serde_json::from_str(&out).expect("JSON");
        (
            v["aid"].as_str().expect("aid").to_owned(),
            v["login_key"].as_str().expect("key").to_owned(),
        )
    };
    let (carol, carol_key) = other("carol");
    let (dave, _) = other("dave");
    let args = [
        "--rate-limit-per-minute",
        "0",
        "--status-rate-limit-per-minute",
        "0",
        "--ip-rate-limit-per-minute",
        "0",
        "--registration-rate-limit-per-minute",
        "0",
        "--max-connections-per-ip",
        "0",
        "--max-connections-per-block",
        "0",
        "--open-registration",
        "--allow-private-webhooks",
        "--pace-scale",
        "0",
        "--body-timeout-secs",
        "1",
        "--workers",
        "2",
    ];
    // THREADLINE_FUZZ_BIN runs another build of the server (a release
    // build, for long runs from a debug test binary).
    let mut server = match std::env::var("THREADLINE_FUZZ_BIN") {
        Ok(bin) => launch(&bin, &db, &args).await,
        Err(_) => Server::start_on(&db, &args, "info").await,
    };
    let api = Api {
        base: server.api.base.clone(),
        // A fresh connection per request: a case the server answers by
        // closing its connection leaves nothing for the next one to trip on.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    };
    let addr = api.base.trim_start_matches("http://").to_owned();

    let mut world = World {
        api: api.clone(),
        addr,
        key: seeded.login_key.clone(),
        alice: seeded.alice.clone(),
        bob: seeded.bob.clone(),
        carol: carol.clone(),
        carol_key: carol_key.clone(),
        dave: dave.clone(),
        user_id: seeded.user_id.clone(),
        acsp: String::new(),
        turn: String::new(),
        foreign: String::new(),
        ws_thread: String::new(),
        probe_thread: String::new(),
        webhook: String::new(),
        spare_webhook: None,
        epoch: 0,
        used_grant: String::new(),
    };
    let (status, body) = world
        .post(
            "/api/acsp/thread/create",
            &world.key,
            json!({"aid": world.alice, "target_aid": world.bob, "subject": "fuzz", "first_message": "hi"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    world.acsp = body["thread"]["id"].as_str().expect("id").to_owned();
    let (status, body) = world
        .post(
            "/api/acsp/thread/create",
            &carol_key,
            json!({"aid": carol, "target_aid": dave, "subject": "not yours"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    world.foreign = body["thread"]["id"].as_str().expect("id").to_owned();
    let open = |w: &World| {
        let api = w.api.clone();
        let key = w.key.clone();
        async move {
            api.open_thread(&key, None).await["thread"]["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    world.turn = open(&world).await;
    world.ws_thread = open(&world).await;
    world.probe_thread = open(&world).await;
    world.webhook = world.new_webhook().await;
    world.used_grant = {
        let grant = world.grant(&world.ws_thread.clone()).await;
        let used = world
            .api
            .client
            .get(world.api.url(&format!("/v1/sse?c={grant}")))
            .send()
            .await
            .expect("request");
        assert_eq!(used.status(), 200, "a grant opens a stream");
        drop(used);
        grant
    };
    let mut events = subscribe(&world).await;
    let stored = Stored::open(&db);

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut failures: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut fail = |signature: String, detail: String| {
        let entry = failures.entry(signature).or_insert((0, detail));
        entry.0 += 1;
    };
    // Every (route, mutation) pair, and each hostile frame, in an order
    // the seed shuffles; case n takes pair n mod their number.
    let mut pairs: Vec<(&'static str, &'static str, usize)> = Vec::new();
    for name in ROUTES {
        if name == "ws frames" {
            pairs.extend((0..HOSTILE_KINDS).map(|i| (name, "hostile frame", i)));
            continue;
        }
        let route = world.route(name).await;
        pairs.extend(kinds(&route).into_iter().map(|kind| (name, kind, 0)));
    }
    let mut order = Rng::new(seed);
    for i in (1..pairs.len()).rev() {
        pairs.swap(i, order.below(i + 1));
    }
    let cases = cases.unwrap_or(pairs.len() as u64);
    println!(
        "fuzz17: seed {seed}, {cases} cases over {} (route, mutation) pairs",
        pairs.len()
    );
    let mut previous = String::new();
    for n in 0..cases {
        let mut rng = Rng::new(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let (name, kind, which) = pairs[n as usize % pairs.len()];
        let round = n as usize / pairs.len();
        if n > 0 && n % 10_000 == 0 {
            println!("fuzz17: {n} cases in {:.0?}", started.elapsed());
        }
        *tally.by_route.entry(name).or_default() += 1;
        if name == "ws frames" {
            *tally.by_kind.entry("hostile frame").or_default() += 1;
            match ws_case(&mut world, which, &mut rng).await {
                Ok((frame, outcome)) => {
                    *tally.ws.entry(format!("{frame}: {outcome}")).or_default() += 1;
                }
                Err(e) => fail(
                    format!("ws frames: {}", e.split(':').next().unwrap_or_default()),
                    format!("case {n} (seed {seed}): {e}"),
                ),
            }
            if let Err(e) = probe(&world, &mut events, n).await {
                fail(
                    "ws frames: the other subscriber".into(),
                    format!("case {n} (seed {seed}): {e}"),
                );
                events = subscribe(&world).await;
            }
            previous = "ws frames".into();
            continue;
        }
        let route = world.route(name).await;
        let mut case = mutate(&route, kind, round, &world, &mut rng);
        *tally.by_kind.entry(case.kind).or_default() += 1;
        // From the second pass on, a quarter of the cases are wrong in a
        // second way too, checked against the documented order.
        if round >= 1 && case.raw.is_none() && rng.chance(25) {
            if let Some(stacked) = stack(&route, &mut case, &mut rng) {
                *tally.by_kind.entry(stacked).or_default() += 1;
            }
        }
        let before = stored.read();
        let answered = match &case.raw {
            Some(bytes) => {
                let half_close = case.kind == "long content-length" || case.kind == "bad chunk";
                let stream = matches!(route.answer, Answer::Stream | Answer::Upgrade);
                send_raw(&world.addr, bytes, half_close, stream).await
            }
            None => send(&api.client, &api.base, &case.req, route.answer)
                .await
                .map(Some),
        };
        let signature = |what: &str| format!("{name} / {}: {what}", case.kind);
        let detail = |what: &str| {
            format!(
                "case {n} (THREADLINE_FUZZ_SEED={seed}): {name} / {} — {what}\n  expected {:?}\n  request: {}",
                case.kind,
                case.expect,
                match &case.raw {
                    Some(bytes) => format!(
                        "(raw) {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(1500)])
                    ),
                    None => case.req.describe(),
                }
            )
        };
        let got = match answered {
            Ok(Some(got)) => got,
            Ok(None) if case.transport => {
                *tally
                    .statuses
                    .entry(format!("{}: no answer", case.kind))
                    .or_default() += 1;
                continue;
            }
            Ok(None) => {
                fail(
                    signature("no answer"),
                    detail("the connection ended without an answer"),
                );
                continue;
            }
            // reqwest may fail to finish writing what the server refused.
            Err(_) if case.transport && case.raw.is_none() => {
                *tally
                    .statuses
                    .entry(format!("{}: no answer", case.kind))
                    .or_default() += 1;
                continue;
            }
            Err(e) => {
                fail(signature("no answer"), detail(&e));
                continue;
            }
        };
        *tally
            .statuses
            .entry(format!("{}: {}", case.kind, got.status))
            .or_default() += 1;
        if let Err(e) = check(&route, &case, &got, &world.key) {
            let body = String::from_utf8_lossy(&got.body)
                .chars()
                .take(400)
                .collect::<String>();
            let short: String = e.chars().take(60).collect();
            fail(
                signature(&short),
                detail(&format!("{e}\n  answer: {} {body}", got.status)),
            );
        }
        let refused = (!(200..300).contains(&got.status) && got.status != 101)
            || (route.mcp && mcp_refused(&got.body));
        let this = format!("{name} / {} ({})", case.kind, got.status);
        if refused {
            let after = stored.read();
            if after != before {
                fail(
                    signature("stored"),
                    detail(&format!(
                        "a refused request ({}) stored something: {before:?} -> {after:?}; \
                         newest message: {}; the case before: {previous}",
                        got.status,
                        stored.newest_message()
                    )),
                );
            }
            previous = this;
            continue;
        }
        previous = this;
        // Keep the world as the next cases expect it.
        match name {
            "submit_messages" | "respond" | "mcp (tools/call)" => {
                // Scheduled parts are delivered at once (--pace-scale 0):
                // wait for them, so that they are not taken for a refused
                // request's doing.
                let deadline = Instant::now() + WAIT;
                while stored.count("SELECT COUNT(*) FROM scheduled_replies WHERE state = 'pending'")
                    > 0
                {
                    assert!(
                        Instant::now() < deadline,
                        "scheduled replies stayed pending"
                    );
                    tokio::time::sleep(POLL).await;
                }
                world.epoch = stored.count(&format!(
                    "SELECT turn_epoch FROM threads WHERE uuid = '{}'",
                    world.turn
                ));
            }
            "webhooks (create)" => {
                let v: Value = serde_json::from_slice(&got.body).unwrap_or_default();
                if let Some(id) = v["webhook"]["id"].as_str() {
                    // Under the account of the key the case sent.
                    let key = if case.req.headers.iter().any(|(_, v)| v.contains(&carol_key)) {
                        &carol_key
                    } else {
                        &world.key
                    };
                    let res = api
                        .client
                        .delete(api.url(&format!("/api/acsp/webhooks/{id}")))
                        .bearer_auth(key)
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(res.status(), 200, "the new webhook is deleted");
                }
            }
            "webhooks/{id} (delete)" => world.spare_webhook = None,
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    println!("{}", tally.report(cases, seed, elapsed));

    // The server still answers, shuts down cleanly, and logged no panic and
    // no login key.
    let res = api
        .get(
            &format!("/api/acsp/thread/{}?aid={}", world.acsp, world.alice),
            &world.key,
        )
        .await;
    assert_eq!(res.status(), 200, "a valid request after the run");
    server.signal("TERM");
    assert_eq!(
        server.wait_exit().await.code(),
        Some(0),
        "exit after SIGTERM"
    );
    let log = server.stderr();
    for (what, needle) in [
        ("a panic", "panicked"),
        ("the login key", world.key.as_str()),
        ("another login key", carol_key.as_str()),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            let line: String = line.chars().take(400).collect();
            fail(
                format!("log: {what}"),
                format!("the server log holds {what}: {line}"),
            );
        }
    }

    if !failures.is_empty() {
        let mut out = format!(
            "fuzz17 found {} kinds of failure (seed {seed}, {cases} cases):\n",
            failures.len()
        );
        for (signature, (count, detail)) in &failures {
            out.push_str(&format!("\n[{count}x] {signature}\n  first: {detail}\n"));
        }
        panic!("{out}");
    }
}

// ------------------------------------------------ what the fuzzer found

/// Upgrades `connect_url` over raw TCP, sends `bytes`, and returns the
/// close code the server answers with (`None`: the connection ended
/// without a close frame).
async fn close_code_after(connect_url: &str, bytes: &[u8]) -> Option<u16> {
    let mut ws = RawWs::connect(connect_url).await;
    ws.send(&[bytes.to_vec()]).await;
    ws.close().await.map(|(code, _)| code)
}

/// A client frame that breaks RFC 6455 fails the connection with the
/// close code that says why (7.4.1): 1002 for a protocol error, 1007 for a
/// text frame that is not UTF-8. Found by the fuzzer: the server dropped
/// the connection without a close frame, so the client saw a network
/// failure instead of its own bug. Live and during a resume's replay alike.
#[tokio::test]
async fn a_malformed_frame_is_closed_with_1002_and_text_not_utf8_with_1007() {
    let app = crate::helpers::spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    app.say(&app.alice, &thread, "one").await;
    app.say(&app.bob, &thread, "two").await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked frame", frame(true, 0, 1, false, b"hi"), 1002),
        ("reserved bits", frame(true, 4, 1, true, b"hi"), 1002),
        ("an unknown opcode", frame(true, 0, 3, true, b"hi"), 1002),
        ("a fragmented ping", frame(false, 0, 9, true, b"hi"), 1002),
        (
            "a control frame of 126 bytes",
            frame(true, 0, 9, true, &[b'p'; 126]),
            1002,
        ),
        (
            "a continuation without a start",
            frame(true, 0, 0, true, b"x"),
            1002,
        ),
        (
            "text that is not UTF-8",
            frame(true, 0, 1, true, &[0xff, 0xfe]),
            1007,
        ),
        (
            "text of a lone surrogate",
            frame(true, 0, 1, true, &[0xed, 0xa0, 0x80]),
            1007,
        ),
        ("a close with code 1005", close_frame(1005, b""), 1002),
        ("a close with code 999", close_frame(999, b""), 1002),
        (
            "a close reason not UTF-8",
            close_frame(1000, &[0xff, 0xfe]),
            1002,
        ),
        (
            "a close of one byte",
            frame(true, 0, 8, true, &[0x03]),
            1002,
        ),
    ];
    for (what, bytes, code) in cases {
        for after in ["", "&after=0"] {
            let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
            let got = close_code_after(&format!("{url}{after}"), &bytes).await;
            assert_eq!(got, Some(code), "{what} (query {after:?})");
        }
    }
    // The server still serves sockets.
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
}
