//! `post`: C connections post messages spread over many threads.

use serde_json::json;

use super::{measure_http, Outcome, POST_CONTENT};
use crate::cli::Args;
use crate::client::api::Api;
use crate::client::http::{Prepared, Target};

pub async fn run(args: &Args, api: &Api, targets: &[Target]) -> Result<Outcome, String> {
    println!(
        "\n== post: {} connections over {} threads, {} agents, {} s (+{} s warmup)",
        args.connections, args.threads, args.agents, args.duration, args.warmup
    );
    let agents = api.register(args.agents, "post").await?;
    let threads = api.create_threads(&agents, args.threads, "post").await?;
    let content = match args.content_len {
        Some(n) => POST_CONTENT.chars().cycle().take(n).collect(),
        None => POST_CONTENT.to_owned(),
    };
    let requests: Vec<Prepared> = threads
        .iter()
        .map(|t| {
            let who = &agents[t.creator];
            let body = json!({"aid": who.aid, "thread_id": t.id, "content": content});
            targets[0].prepare(
                "POST",
                "/api/acsp/thread/message",
                &who.key,
                Some(body.to_string()),
            )
        })
        .collect();
    let fields = json!({"scenario": "post", "connections": args.connections,
                        "threads": args.threads, "agents": args.agents,
                        "content_len": content.chars().count(),
                        "duration_s": args.duration, "warmup_s": args.warmup});
    measure_http(
        args,
        targets,
        requests,
        201,
        "acknowledged",
        "msg/s",
        fields,
    )
    .await
}
