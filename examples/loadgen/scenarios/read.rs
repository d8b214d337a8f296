//! `read`: C connections read 50-message pages of seeded threads, as one
//! of each thread's agents.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{measure_http, Outcome, POST_CONTENT};
use crate::cli::Args;
use crate::client::api::{Api, Cred, ThreadPlan};
use crate::client::http::{Prepared, Target};

pub async fn run(args: &Args, api: &Api, targets: &[Target]) -> Result<Outcome, String> {
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
        .map(|(t, a)| targets[0].prepare("GET", &path(t, &agents[a]), &agents[a].key, None))
        .collect();
    let fields = json!({"scenario": "read", "connections": args.connections,
                        "threads": args.threads, "agents": args.agents,
                        "seed_per_thread": args.seed, "page": 50, "newest": args.newest,
                        "duration_s": args.duration, "warmup_s": args.warmup});
    measure_http(args, targets, requests, 200, "pages", "pages/s", fields).await
}
