//! `fanout`: S subscribers on one thread, R messages a second; every
//! delivery accounted for after a bounded drain.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::Outcome;
use crate::cli::Args;
use crate::client::api::Api;
use crate::client::http::{RawConn, Target};
use crate::figures::{emit, errors_line, micros, row, CpuMeter, Latency};
use crate::load::crowd::{connect_crowd, gather, Crowd, STAMP};

pub async fn run(args: &Args, apis: &[Api], targets: &[Target]) -> Result<Outcome, String> {
    let api = &apis[0];
    let (s, r, t) = (args.subscribers, args.rate, args.duration);
    println!("\n== fanout: {s} subscribers on one thread, {r} msg/s for {t} s");
    let agents = api.register(2, "fanout").await?;
    let threads = api.create_threads(&agents, 1, "fanout").await?;
    let thread = &threads[0];
    let crowd = Crowd::new(args, apis)?;
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
    // taken from and returned to a pool: one suffices unless an answer is
    // slow. With several --url, posts go to each in turn (a pool each).
    let pools: Vec<Arc<std::sync::Mutex<Vec<RawConn>>>> =
        targets.iter().map(|_| Arc::default()).collect();
    for k in 0..total {
        tick.tick().await;
        let at = k as usize % targets.len();
        let (pool, target) = (pools[at].clone(), targets[at].clone());
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
    let arrival = Latency::of(c.arrival_us);
    let (first, last) = (Latency::of(c.first_us), Latency::of(c.last_us));
    let (first_arrival, last_arrival) = (
        Latency::of(c.first_arrival_us),
        Latency::of(c.last_arrival_us),
    );
    let connect = Latency::of(c.connect_us);
    let post_lat = Latency::of(post_us);
    let pass = missing == 0 && connected == s && c.duplicates == 0 && c.gaps == 0;
    // Server CPU per delivery made, over the posting span and the drain.
    let per_delivery_us = cpu
        .server
        .filter(|_| c.messages > 0)
        .map(|pct| pct / 100.0 * cpu.wall.as_secs_f64() * 1e6 / c.messages as f64);
    let loadgen_per_delivery_us = (c.messages > 0)
        .then(|| cpu.loadgen / 100.0 * cpu.wall.as_secs_f64() * 1e6 / c.messages as f64);

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
    // Two clocks for one delivery (docs/performance.md, round five):
    // "read" is when the generator's thread read the frame, so the
    // generator's own CPU on the shared cores is inside it; "arrival" is the
    // kernel's receive timestamp on the subscriber's socket, when the
    // server's delivery reached the client.
    row("post→read latency", lat.line());
    row("  first of each message", first.line());
    row("  last of each message", last.line());
    row("post→arrival latency", arrival.line());
    row("  first of each message", first_arrival.line());
    row("  last of each message", last_arrival.line());
    row(
        "  stamped with a later one",
        format!(
            "{} (read together with a later frame: its arrival time is an upper bound)",
            c.arrival_shared
        ),
    );
    row("closed by server", errors_line(&c.closed_by_server));
    row("cpu", cpu.line());
    row(
        "cpu per delivery",
        format!(
            "server {}  loadgen {}",
            per_delivery_us.map_or("?".into(), |u| format!("{u:.2} µs")),
            loadgen_per_delivery_us.map_or("?".into(), |u| format!("{u:.2} µs"))
        ),
    );
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
               "latency_us": lat.json(), "arrival_latency_us": arrival.json(),
               "arrival_shared": c.arrival_shared,
               "first_arrival_us": first_arrival.json(), "last_arrival_us": last_arrival.json(),
               "first_delivery_us": first.json(),
               "last_delivery_us": last.json(), "closed_by_server": c.closed_by_server,
               "server_cpu_pct": cpu.server, "loadgen_cpu_pct": cpu.loadgen,
               "other_cpu_pct": cpu.others,
               "server_cpu_us_per_delivery": per_delivery_us,
               "loadgen_cpu_us_per_delivery": loadgen_per_delivery_us, "pass": pass}),
        args,
    );
    Ok(Outcome {
        pass,
        figure: lat.p99() as f64,
        unit: "µs p99 delivery",
        higher_is_better: false,
        p99_us: Some(lat.p99()),
        arrival_p99_us: Some(arrival.p99()).filter(|_| arrival.n() > 0),
        server_cpu: cpu.server,
        cpu_us_per_op: per_delivery_us,
        loadgen_cpu_us_per_op: loadgen_per_delivery_us,
    })
}
