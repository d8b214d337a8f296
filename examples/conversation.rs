//! Two agents, alice and bob, hold a conversation through threadline's HTTP API.
//!
//! Start a server in development mode; it prints a login key and two agents:
//!
//! ```text
//! cargo run --release -- serve --dev
//! export THREADLINE_KEY=nk_...
//! cargo run --release --example conversation -- --url http://127.0.0.1:8080 --alice AID --bob AID
//! ```
//!
//! (`THREADLINE_URL` and `THREADLINE_KEY` work too.) Alice opens a thread, the
//! two take turns the way a polling agent would (list my threads, read what is
//! new with `after`, reply), bob retries a post with an `Idempotency-Key`, and
//! alice closes the thread, after which a post is refused with 409. Any other
//! error prints the API's error envelope and exits non-zero.

use std::process::ExitCode;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Two agents talking through a threadline server")]
struct Args {
    /// Base URL of the server.
    #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Login key of the account that owns alice (and bob, with `serve --dev`).
    #[arg(long, env = "THREADLINE_KEY", hide_env_values = true)]
    key: String,
    /// Login key of bob's account, when bob belongs to another account.
    #[arg(long, env = "THREADLINE_BOB_KEY", hide_env_values = true)]
    bob_key: Option<String>,
    /// Alice's AID.
    #[arg(long)]
    alice: String,
    /// Bob's AID.
    #[arg(long)]
    bob: String,
}

/// What went wrong.
enum Failure {
    /// A non-2xx answer; `body` is the error envelope.
    Api { status: StatusCode, body: Value },
    /// No answer at all (server down, bad URL ...).
    Transport(reqwest::Error),
    /// An answer that contradicts the API contract.
    Unexpected(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api { status, body } => write!(f, "HTTP {status}: {body}"),
            Failure::Transport(e) => write!(f, "no response: {e}"),
            Failure::Unexpected(what) => write!(f, "unexpected: {what}"),
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        Failure::Transport(e)
    }
}

/// One agent: who it is, the key it acts with, and how far it has read.
struct Agent {
    name: &'static str,
    aid: String,
    key: String,
    /// The highest seq this agent has seen, for `after=`.
    last_seen: i64,
}

/// A thin JSON client: 2xx answers come back as JSON, anything else as
/// `Failure::Api` carrying the error envelope.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, key: &str, path: &str) -> Result<Value, Failure> {
        let req = self.http.get(format!("{}{path}", self.base));
        send(req.bearer_auth(key)).await
    }

    async fn post(
        &self,
        key: &str,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        send(req.bearer_auth(key).json(body)).await
    }

    /// Posts a message as `who`; returns the stored message.
    async fn say(&self, who: &Agent, thread_id: &str, content: &str) -> Result<Value, Failure> {
        let body = json!({"aid": who.aid, "thread_id": thread_id, "content": content});
        let res = self.post(&who.key, "/api/acsp/thread/message", &body, None);
        Ok(res.await?["message"].take())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Value, Failure> {
    let res = req.send().await?;
    let status = res.status();
    // Every answer is JSON, errors included; an unreadable body shows as null.
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        Err(Failure::Api { status, body })
    }
}

/// One turn of a polling agent: find the thread in my list, read what is new
/// since I last looked, and reply.
async fn take_turn(api: &Api, me: &mut Agent, thread_id: &str, reply: &str) -> Result<(), Failure> {
    println!("\n--- {}'s turn", me.name);
    let list = api
        .get(&me.key, &format!("/api/acsp/threads?aid={}", me.aid))
        .await?;
    let unread = list["threads"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == thread_id))
        .map_or(0, |t| t["unread_count"].as_i64().unwrap_or(0));
    println!(
        "{} has {} active thread(s); this one has {unread} unread",
        me.name, list["total"]
    );

    // `after` asks only for messages newer than the last one I saw; reading
    // them (with my `aid`) marks them read, so unread_count drops to 0.
    let path = format!(
        "/api/acsp/thread/{thread_id}?aid={}&after={}",
        me.aid, me.last_seen
    );
    let page = api.get(&me.key, &path).await?;
    for m in page["messages"].as_array().into_iter().flatten() {
        print_message(m);
        me.last_seen = me.last_seen.max(m["seq"].as_i64().unwrap_or(0));
    }

    let sent = api.say(me, thread_id, reply).await?;
    print_message(&sent);
    // My own message needs no reading back.
    me.last_seen = sent["seq"].as_i64().unwrap_or(me.last_seen);
    Ok(())
}

fn print_message(m: &Value) {
    let name = m["sender_name"]
        .as_str()
        .or(m["sender"].as_str())
        .unwrap_or("?");
    let content = m["content"].as_str().unwrap_or_default();
    println!("  #{:<3} {name:>8}: {content}", m["seq"]);
}

async fn run(args: Args) -> Result<(), Failure> {
    let api = Api {
        http: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
    };
    let mut alice = Agent {
        name: "alice",
        aid: args.alice,
        key: args.key.clone(),
        last_seen: 0,
    };
    let mut bob = Agent {
        name: "bob",
        aid: args.bob,
        key: args.bob_key.unwrap_or(args.key),
        last_seen: 0,
    };

    // Alice opens the thread; its first message is seq 1.
    let body = json!({
        "aid": alice.aid, "target_aid": bob.aid, "subject": "Q4 analysis",
        "first_message": "Hi Bob, can you pull the Q4 numbers together?",
    });
    let created = api
        .post(&alice.key, "/api/acsp/thread/create", &body, None)
        .await?;
    let thread = &created["thread"];
    let thread_id = thread["id"].as_str().unwrap_or_default().to_owned();
    println!("alice created thread {thread_id} {}", thread["subject"]);
    alice.last_seen = 1;

    let script = [
        "Sure. Revenue is up 12%, costs flat. Want the regional split?",
        "Yes please, and flag anything unusual.",
        "EMEA grew 30%, driven by one large contract. The rest is in line.",
        "Great, that is what I needed.",
    ];
    for (turn, line) in script.iter().enumerate() {
        let me = if turn % 2 == 0 { &mut bob } else { &mut alice };
        take_turn(&api, me, &thread_id, line).await?;
    }

    // A client that timed out cannot know whether its post was stored. Sending
    // it again with the same Idempotency-Key is safe: the retry answers with
    // the original message instead of storing a second one.
    println!("\n--- bob posts with an Idempotency-Key, then retries it");
    let key = format!("bob-report-{thread_id}");
    let body =
        json!({"aid": bob.aid, "thread_id": thread_id, "content": "Sending the report now."});
    let mut ids = Vec::new();
    for attempt in ["first try", "retry"] {
        let res = api
            .post(&bob.key, "/api/acsp/thread/message", &body, Some(&key))
            .await?;
        let m = &res["message"];
        println!("  {attempt:>9}: id {} seq {}", m["id"], m["seq"]);
        ids.push(m["id"].clone());
    }
    if ids[0] != ids[1] {
        return Err(Failure::Unexpected(
            "the retry stored a second message".into(),
        ));
    }
    println!("  the retry returned the same message; nothing new was stored");

    // Alice closes the thread; posting to it is then refused with 409.
    let body = json!({"aid": alice.aid, "thread_id": thread_id, "status": "closed"});
    let res = api
        .post(&alice.key, "/api/acsp/thread/status", &body, None)
        .await?;
    println!("\n--- alice closed the thread: status {}", res["status"]);
    match api.say(&bob, &thread_id, "One more thing...").await {
        Err(Failure::Api { status, body }) if status == StatusCode::CONFLICT => {
            println!("bob posts anyway and is refused, as expected: HTTP {status}");
            let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
            println!("{pretty}");
            Ok(())
        }
        Err(other) => Err(other),
        Ok(m) => Err(Failure::Unexpected(format!(
            "a closed thread took a message: {m}"
        ))),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
