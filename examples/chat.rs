//! A small chat client that drives the whole turn-taking loop against a
//! running threadline: open a thread, listen on its socket, submit what the
//! user types, and when the decision is `speak`, answer with `respond` and
//! watch the reply arrive as typing indicators and paced messages.
//!
//! ```text
//! cargo run --release -- serve --dev              # prints a login key
//! export THREADLINE_KEY=nk_...
//! cargo run --release --example chat -- --url http://127.0.0.1:8080
//! ```
//!
//! Type lines and press Enter; an empty line or EOF quits. With `--script`,
//! a fixed conversation is played instead of reading stdin. The "agent" here
//! is a stand-in that echoes; a real client would call its model where
//! `compose_reply` is.

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

/// A chat client driving the turn-taking loop: type a line, see the decision
/// and the paced reply.
#[derive(Parser)]
struct Args {
    /// Base URL of the server.
    #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Login key (nk_...); prefer the environment variable, which keeps it
    /// out of `ps` and the shell history.
    #[arg(long, env = "THREADLINE_KEY", hide_env_values = true)]
    key: String,
    /// Play a fixed script instead of reading lines from stdin.
    #[arg(long)]
    script: bool,
}

/// POSTs a turn-taking action; returns the JSON body or the API's error.
async fn action(
    http: &reqwest::Client,
    args: &Args,
    name: &str,
    body: Value,
) -> Result<Value, String> {
    let res = http
        .post(format!("{}/v1/turn-taking/actions/{name}", args.url))
        .bearer_auth(&args.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| format!("{name}: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{name} failed ({status}): {}", body["error"]))
    }
}

/// Stand-in for a model call.
fn compose_reply(user: &str) -> String {
    format!(
        "You said: \"{user}\". That is worth thinking about for a moment. \
         Here is a second sentence, so the reply is split and paced. \
         And a third one to show the typing indicator between parts."
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let http = reqwest::Client::new();
    let opened = action(
        &http,
        &args,
        "open_thread",
        json!({"integrations": {"social_signals": {}}}),
    )
    .await?;
    let thread_id = opened["thread"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = opened["realtime"]["connect_url"]
        .as_str()
        .unwrap_or_default();
    println!("thread {thread_id}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;

    // Print every event as it arrives.
    let printer = tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let data = &event["data"];
            match event["type"].as_str().unwrap_or_default() {
                "thread.message" => println!(
                    "  [{}] {}",
                    data["sender"].as_str().unwrap_or("?"),
                    data["content"].as_str().unwrap_or("")
                ),
                "turn_taking.typing" if data["state"] == "start" => {
                    println!("  (agent is typing…)")
                }
                "turn_taking.typing" => println!("  (agent stopped typing)"),
                "turn_taking.message" => println!(
                    "  [agent {}/{}] {}",
                    data["index"].as_i64().unwrap_or(0) + 1,
                    data["count"],
                    data["content"].as_str().unwrap_or("")
                ),
                "turn_taking.signal" => {
                    println!("  (signal: {} from {})", data["signal"], data["sender"])
                }
                _ => {}
            }
        }
    });

    let mut lines: Box<dyn Iterator<Item = String>> = Box::new(std::iter::empty());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if args.script {
        lines = Box::new(
            ["Hi! How does this work?", "ok", "thanks!"]
                .into_iter()
                .map(String::from),
        );
    }
    loop {
        let line = if args.script {
            match lines.next() {
                Some(l) => l,
                None => break,
            }
        } else {
            match stdin.next_line().await.map_err(|e| e.to_string())? {
                Some(l) if !l.trim().is_empty() => l,
                _ => break,
            }
        };
        let submitted = action(
            &http,
            &args,
            "submit_messages",
            json!({"thread_id": thread_id, "messages": [{"sender": "you", "content": line}]}),
        )
        .await?;
        println!(
            "decision: {} (turn {}, tags {})",
            submitted["decision"], submitted["turn_epoch"], submitted["tags"]
        );
        if submitted["decision"] == "speak" {
            let reply = compose_reply(&line);
            let body = json!({"thread_id": thread_id, "content": reply, "turn_epoch": submitted["turn_epoch"]});
            let answer = action(&http, &args, "respond", body).await?;
            let parts = answer["scheduled"].as_array().map_or(0, Vec::len);
            println!("scheduled {parts} part(s)");
            if args.script {
                // Let the paced reply play out before the next scripted line.
                let last = answer["scheduled"][parts.saturating_sub(1)]["deliver_at"]
                    .as_str()
                    .unwrap_or_default();
                let wait = chrono::DateTime::parse_from_rfc3339(last)
                    .map(|t| {
                        (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                            .num_milliseconds()
                            .max(0)
                    })
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait as u64 + 300)).await;
            }
        }
    }
    printer.abort();
    Ok(())
}
