//! A WebSocket listener to copy: opens (or re-opens) a turn-taking thread,
//! prints each event as one JSON line on stdout, and when the socket drops
//! (or the server closes it: 4008 too slow, 1001 shutting down) re-opens the
//! thread for a fresh grant and resumes with `after=<last seq seen>`, so no
//! message is missed or seen twice. Diagnostics go to stderr.
//!
//! A server restored from a backup goes back in time: a thread's newest
//! messages may be gone, and new ones take their seqs again. Every
//! `connection.ready` names the database's `generation`; when a reconnect
//! brings another one than we had, what was printed may be gone or
//! replaced, so the listener says so and replays the thread from its start
//! (`after=0`).
//!
//! ```text
//! export THREADLINE_KEY=nk_...
//! cargo run --release --example listen -- --url http://127.0.0.1:8080 [--thread-id UUID]
//! ```
//!
//! Without `--thread-id` a new thread is created (its id is printed on
//! stderr); pass it next time to listen to the same thread. An ACSP thread
//! one of your agents takes part in works too. Ctrl-C stops.

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Waits between reconnect attempts: doubling from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Listens to a thread and prints each event as one JSON line, resuming
/// after the last seq seen whenever the socket drops.
#[derive(Parser)]
struct Args {
    /// Base URL of the server.
    #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Login key (nk_...); prefer the environment variable, which keeps it
    /// out of `ps` and the shell history.
    #[arg(long, env = "THREADLINE_KEY", hide_env_values = true)]
    key: String,
    /// The thread to listen to [default: a new turn-taking thread].
    #[arg(long)]
    thread_id: Option<String>,
}

/// Why a round ended.
enum Ended {
    /// We were connected; the socket closed or dropped. Reconnect soon.
    Disconnected(String),
    /// We never got connected; try again after a pause.
    Failed(String),
    /// Retrying cannot help (bad key, unknown thread, bad request).
    Fatal(String),
}

/// What survives reconnects.
struct Listener {
    args: Args,
    http: reqwest::Client,
    /// The thread, once open_thread has named it.
    thread_id: Option<String>,
    /// The highest message seq printed (or, before any, the thread's
    /// `last_seq` when we first connected): where to resume.
    last_seq: Option<i64>,
    /// The database generation the server named when we connected; seqs
    /// are only comparable within one.
    generation: Option<String>,
}

impl Listener {
    /// POST open_thread: returns the connect URL, with `after` when resuming.
    async fn open(&mut self) -> Result<String, Ended> {
        let body = match &self.thread_id {
            Some(id) => json!({"thread_id": id}),
            None => json!({}),
        };
        let res = self
            .http
            .post(format!(
                "{}/v1/turn-taking/actions/open_thread",
                self.args.url
            ))
            .bearer_auth(&self.args.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| Ended::Failed(format!("open_thread: {e}")))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| Ended::Failed(format!("open_thread answered {status}: {e}")))?;
        if status.is_client_error() && status.as_u16() != 429 {
            return Err(Ended::Fatal(format!(
                "open_thread answered {status}: {body}"
            )));
        }
        if !status.is_success() {
            return Err(Ended::Failed(format!(
                "open_thread answered {status}: {body}"
            )));
        }
        if self.thread_id.is_none() {
            let id = body["thread"]["id"].as_str().unwrap_or_default().to_owned();
            eprintln!("opened thread {id}");
            self.thread_id = Some(id);
        }
        let url = body["realtime"]["connect_url"]
            .as_str()
            .ok_or_else(|| Ended::Failed(format!("no connect_url in {body}")))?;
        Ok(match self.last_seq {
            Some(seq) => format!("{url}&after={seq}"),
            None => url.to_owned(),
        })
    }

    /// One connection: open, connect, print events until it ends.
    async fn listen_once(&mut self) -> Ended {
        let url = match self.open().await {
            Ok(url) => url,
            Err(ended) => return ended,
        };
        let mut ws = match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => ws,
            Err(e) => return Ended::Failed(format!("connect: {e}")),
        };
        // Reading also answers the server's pings.
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    println!("{text}");
                    if let Some(restart) = self.note(&text) {
                        let _ = ws.close(None).await;
                        return restart;
                    }
                }
                Ok(Message::Close(frame)) => {
                    let why = match frame {
                        Some(f) if u16::from(f.code) == 4008 => "too slow (4008)".to_owned(),
                        Some(f) if u16::from(f.code) == 1001 => "server going away (1001)".into(),
                        Some(f) => format!("closed ({}: {})", f.code, f.reason),
                        None => "closed".into(),
                    };
                    return Ended::Disconnected(why);
                }
                Ok(_) => {}
                Err(e) => return Ended::Disconnected(format!("connection lost: {e}")),
            }
        }
        Ended::Disconnected("connection dropped".into())
    }

    /// Remembers where to resume from; says when to start again from the
    /// thread's first message instead (the server's data went back).
    fn note(&mut self, text: &str) -> Option<Ended> {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        let seq = event["seq"].as_i64();
        match event["type"].as_str() {
            // The first ready says how far the thread was when we started;
            // on a resume, the replay that follows moves us on instead.
            Some("connection.ready") => {
                let now = event["data"]["generation"].as_str();
                match (self.generation.as_deref(), now) {
                    // Restored from a backup: any message we printed may be
                    // gone, or another one under its seq. Start over.
                    (Some(had), Some(now)) if had != now => {
                        eprintln!(
                            "the server's data went back (generation {now}, we had {had}: \
                             restored from a backup); what was printed may be gone or \
                             replaced, so the thread is read again from its start"
                        );
                        self.generation = Some(now.to_owned());
                        self.last_seq = Some(0);
                        return Some(Ended::Disconnected("the server was restored".into()));
                    }
                    (_, Some(now)) => self.generation = Some(now.to_owned()),
                    _ => {}
                }
                let ready = event["data"]["last_seq"].as_i64();
                match (self.last_seq, ready) {
                    (None, _) => self.last_seq = ready,
                    // The thread went back under the same generation (data
                    // restored without a new one, or a server from before
                    // generations): what we saw above its last seq is gone,
                    // and the messages that follow take those seqs again.
                    (Some(seen), Some(now)) if now < seen => {
                        eprintln!("the thread is back at seq {now} (we had {seen}): messages after it were lost");
                        self.last_seq = Some(now);
                    }
                    _ => {}
                }
            }
            Some("thread.message" | "turn_taking.message") => {
                self.last_seq = self.last_seq.max(seq);
            }
            _ => {}
        }
        None
    }
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    args.url = args.url.trim_end_matches('/').to_owned();
    let mut listener = Listener {
        thread_id: args.thread_id.clone(),
        args,
        http: reqwest::Client::new(),
        last_seq: None,
        generation: None,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = tokio::select! {
            ended = listener.listen_once() => ended,
            _ = tokio::signal::ctrl_c() => return,
        };
        let pause = match ended {
            Ended::Disconnected(why) => {
                match listener.last_seq {
                    Some(seq) => eprintln!("{why}; resuming after seq {seq}"),
                    None => eprintln!("{why}; reconnecting"),
                }
                backoff = BACKOFF_MIN;
                BACKOFF_MIN
            }
            Ended::Failed(why) => {
                eprintln!("{why}; retrying in {backoff:?}");
                let pause = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                pause
            }
            Ended::Fatal(why) => {
                eprintln!("{why}");
                std::process::exit(1);
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}
