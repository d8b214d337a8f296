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
//! `--server LABEL=URL|COMMAND`, given twice or more, compares servers: the
//! scenario runs against each in turn, for `--rounds` rounds, each started
//! afresh (a command) on a fresh database, and each server's median is shown
//! as a percentage of the first's (`compare.rs`; the baseline server is
//! `examples/baseline.rs`). `--url a,b` spreads connections, subscribers and
//! fanout posts over several nodes of one cluster.
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
//!
//! Layout: `cli` (the flags), `client/` (the provisioning API client, the
//! raw HTTP and WebSocket clients, the frame codec, the epoll receivers),
//! `load/` (C connections in a hot loop; a crowd of subscribers),
//! `scenarios/` (one module per scenario), `figures` (percentiles, CPU, the
//! table and the JSON line), `system` (what /proc says) and `compare`
//! (alternating runs against several servers). A scenario takes
//! the server's address as an argument, so it can run against any server
//! that speaks the same routes.

mod cli;
mod client;
mod compare;
mod figures;
mod load;
mod scenarios;
mod system;

use std::process::ExitCode;

use clap::Parser;

use cli::{Args, Scenario, SERVER_FLAGS};
use client::api::Api;
use client::http::Target;
use scenarios::Outcome;

/// Runs the chosen scenario(s) against the servers at `urls` (one server, or
/// nodes of one cluster); the outcome of each scenario run.
pub async fn run_scenarios(args: &Args, urls: &[String]) -> Result<Vec<Outcome>, String> {
    let mut apis = Vec::with_capacity(urls.len());
    let mut targets = Vec::with_capacity(urls.len());
    for url in urls {
        let api = Api::new(url)?;
        // Fail early, and clearly, if nothing listens there.
        api.http
            .get(format!("{}/healthz", api.base))
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", api.base))?;
        targets.push(Target::resolve(url).await?);
        apis.push(api);
    }
    println!(
        "loadgen against {} (HTTP client {:?}, WebSocket client {:?}, runtime {:?} x{}, receivers x{})\n\
         server assumed: threadline {SERVER_FLAGS}",
        urls.join(", "),
        args.client,
        args.ws_client,
        args.runtime,
        args.runtime_threads,
        args.receivers
    );
    let mut outcomes = Vec::new();
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Post {
        outcomes.push(scenarios::post::run(args, &apis[0], &targets).await?);
    }
    if all || args.scenario == Scenario::Read {
        outcomes.push(scenarios::read::run(args, &apis[0], &targets).await?);
    }
    if all || args.scenario == Scenario::Fanout {
        outcomes.push(scenarios::fanout::run(args, &apis, &targets).await?);
    }
    if all || args.scenario == Scenario::Sockets {
        outcomes.push(scenarios::sockets::run(args, &apis).await?);
    }
    Ok(outcomes)
}

async fn run(args: Args) -> Result<bool, String> {
    args.check()?;
    if !args.servers.is_empty() {
        return compare::run(&args).await;
    }
    let outcomes = run_scenarios(&args, &args.urls()).await?;
    Ok(outcomes.iter().all(|o| o.pass))
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
