//! `sockets`: K idle subscribed sockets; the server's resident memory
//! before, with them and after, and one broadcast that must reach each.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::Outcome;
use crate::cli::Args;
use crate::client::api::Api;
use crate::figures::{emit, errors_line, mib, row, Latency};
use crate::load::crowd::{connect_crowd, gather, Crowd};
use crate::system::{ensure_fds, open_files_limit, rss_kib};

pub async fn run(args: &Args, apis: &[Api]) -> Result<Outcome, String> {
    let api = &apis[0];
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

    let crowd = Crowd::new(args, apis)?;
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
    Ok(Outcome {
        pass,
        figure: per_socket.unwrap_or(f64::NAN),
        unit: "KiB/socket",
        higher_is_better: false,
        p99_us: None,
        arrival_p99_us: None,
        server_cpu: None,
        cpu_us_per_op: None,
        loadgen_cpu_us_per_op: None,
    })
}
