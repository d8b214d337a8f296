//! The ceiling the load generator measures threadline against: an actix-web
//! server with threadline's settings (workers, listen backlog, keep-alive,
//! connections per worker, allocator) that serves the routes the `post` and
//! `read` scenarios call, parses each JSON body as threadline does, checks
//! for a Bearer key, and answers fixed bodies of the sizes threadline's
//! answers have. It stores nothing, so its rate is what HTTP, JSON parsing
//! and the generator cost on this machine, without any of threadline's work.
//!
//! ```text
//! cargo build --release --example baseline --example loadgen
//! target/release/examples/baseline --bind 127.0.0.1:18180 &
//! target/release/examples/loadgen --url http://127.0.0.1:18180 post
//! ```
//!
//! `loadgen --server baseline=…` starts it for each round of a comparison
//! (see examples/loadgen/compare.rs).

use std::time::Duration;

use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// threadline's listen backlog, keep-alive default and reserve of files.
const LISTEN_BACKLOG: i32 = 4096;
const KEEP_ALIVE: Duration = Duration::from_secs(75);
const RESERVED_FILES: u64 = 256;

/// An id as long as threadline's (a UUID), an AID as long as its AIDs.
const THREAD_ID: &str = "01a2218f-1a56-706b-8f3b-852c07788757";
const MESSAGE_ID: &str = "01a2218f-1a8a-7273-8106-66a6c981994e";
const AID_A: &str = "b557a4289f5c6f181f02088691ddf62cf39383626fc0ffa4fb";
const AID_B: &str = "b957764e8b3d92eafd7a9ee0b4c19fe89a7a3ee663cd56123d";
const KEY: &str = "nk_s6wKvdbV1wEIyhDqGKcW8OfmmOz1Hp2PBHf5PWjo20g";
const CREATED_AT: &str = "2026-11-28T09:49:16.298Z";
/// What the `post` scenario sends (its answer echoes it).
const POST_CONTENT: &str = "loadgen: a message of ordinary length, about as long as a chat line.";

/// The body threadline's `POST /api/acsp/thread/message` parses.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed, as threadline does, but not used
struct PostMessageBody {
    aid: Option<String>,
    thread_id: Option<String>,
    content: Option<String>,
    msg_type: Option<String>,
    metadata: Option<serde_json::Value>,
}

/// A message as threadline serializes it.
#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    thread_id: &'a str,
    seq: i64,
    sender_aid: &'a str,
    sender: &'a str,
    sender_name: &'a str,
    content: &'a str,
    msg_type: &'a str,
    metadata: serde_json::Value,
    created_at: &'a str,
}

fn message(seq: i64, content: &str) -> Message<'_> {
    Message {
        id: MESSAGE_ID,
        thread_id: THREAD_ID,
        seq,
        sender_aid: AID_A,
        sender: AID_A,
        sender_name: "loadgen-read-0",
        content,
        msg_type: "text",
        metadata: json!({}),
        created_at: CREATED_AT,
    }
}

fn thread(count: usize) -> serde_json::Value {
    json!({"id": THREAD_ID, "creator_aid": AID_A, "target_aid": AID_B,
           "subject": "loadgen read 0", "status": "active", "message_count": count,
           "metadata": {}, "created_at": CREATED_AT, "updated_at": CREATED_AT})
}

/// The fixed answers, built once.
struct Bodies {
    posted: web::Bytes,
    /// A page of 50 messages of the `read` scenario's seed, and `has_more`.
    page: web::Bytes,
    thread: web::Bytes,
}

impl Bodies {
    fn new() -> Bodies {
        let posted = json!({"message": message(1, POST_CONTENT)});
        let seeds: Vec<String> = (0..50)
            .map(|i| format!("seed message {i}: {POST_CONTENT}"))
            .collect();
        let messages: Vec<Message<'_>> = seeds
            .iter()
            .enumerate()
            .map(|(i, c)| message(i as i64 + 1, c))
            .collect();
        let page = json!({"thread": thread(60), "messages": messages, "has_more": true});
        let thread = json!({"thread": thread(0)});
        let line = |v: serde_json::Value| web::Bytes::from(format!("{v}\n"));
        Bodies {
            posted: line(posted),
            page: line(page),
            thread: line(thread),
        }
    }
}

/// 401 unless the request carries a Bearer key (threadline would look it up).
fn authorized(req: &HttpRequest) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| !k.is_empty())
}

fn json_answer(status: actix_web::http::StatusCode, body: web::Bytes) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

async fn post_message(
    req: HttpRequest,
    body: web::Bytes,
    bodies: web::Data<Bodies>,
) -> HttpResponse {
    if !authorized(&req) {
        return HttpResponse::Unauthorized().finish();
    }
    match serde_json::from_slice::<PostMessageBody>(&body) {
        Ok(_) => json_answer(actix_web::http::StatusCode::CREATED, bodies.posted.clone()),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

async fn read_page(req: HttpRequest, bodies: web::Data<Bodies>) -> HttpResponse {
    if !authorized(&req) {
        return HttpResponse::Unauthorized().finish();
    }
    json_answer(actix_web::http::StatusCode::OK, bodies.page.clone())
}

async fn create_thread(
    req: HttpRequest,
    body: web::Bytes,
    bodies: web::Data<Bodies>,
) -> HttpResponse {
    if !authorized(&req) || serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return HttpResponse::BadRequest().finish();
    }
    json_answer(actix_web::http::StatusCode::CREATED, bodies.thread.clone())
}

async fn agent_init(body: web::Bytes) -> HttpResponse {
    let name = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["agent_name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // Every agent gets the same AID: the scenarios only need two to differ
    // in name, and the baseline keeps no state.
    HttpResponse::Created().json(json!({"aid": AID_A, "login_key": KEY, "agent_name": name,
                                        "capabilities": [], "description": null,
                                        "metadata": {}, "user_id": "usr_ca45e1e4616bdf16"}))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut bind = "127.0.0.1:18180".to_owned();
    let mut workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--bind", Some(v)) => bind = v,
            ("--workers", Some(v)) => workers = v.parse().unwrap_or(workers),
            _ => {
                eprintln!("usage: baseline [--bind ADDR] [--workers N]");
                std::process::exit(1);
            }
        }
    }
    // As threadline: raise the open-file limit, share it among the workers.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let per_worker = (open_files - RESERVED_FILES.min(open_files / 2)) / workers as u64;
    let listener = std::net::TcpListener::bind(&bind)?;
    socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG)?;
    let bodies = web::Data::new(Bodies::new());
    eprintln!("baseline listening on {bind}, {workers} workers");
    actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            App::new()
                .app_data(bodies.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/api/acsp/agent-init", web::post().to(agent_init))
                .route("/api/acsp/thread/create", web::post().to(create_thread))
                .route("/api/acsp/thread/message", web::post().to(post_message))
                .route("/api/acsp/thread/{thread_id}", web::get().to(read_page))
        })
        .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
        .tcp_nodelay(true)
        .disable_signals()
        .workers(workers)
        .max_connections(per_worker as usize)
        .listen(listener)?
        .run(),
    )
}
