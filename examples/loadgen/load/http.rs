//! C connections, each with one request in flight, sending prepared
//! requests round-robin through a measured window; per-connection results
//! merged at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cli::{Args, ClientKind, RuntimeKind};
use crate::client::http::{reqwest_client, Client, Prepared, RawConn, Target};
use crate::figures::micros;

/// Longest a single HTTP request may take in a hot loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The measured window of a run.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one connection measured.
#[derive(Default)]
pub struct WorkerOut {
    pub latencies_us: Vec<u32>,
    /// Successes per second of the window (by completion time): stalls show.
    pub per_second: Vec<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

/// One connection: send its requests round-robin until the window closes.
async fn http_worker(
    mut client: Client,
    requests: Arc<Vec<Prepared>>,
    mine: Vec<usize>,
    expect: u16,
    window: Window,
) -> WorkerOut {
    let mut out = WorkerOut {
        latencies_us: Vec::with_capacity(1 << 16),
        per_second: vec![0; (window.end - window.start).as_secs() as usize + 1],
        ..WorkerOut::default()
    };
    for &i in mine.iter().cycle() {
        let t0 = Instant::now();
        if t0 >= window.end {
            break;
        }
        let result = tokio::time::timeout(REQUEST_TIMEOUT, client.send(&requests[i]))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let t1 = Instant::now();
        // Requests started during the warmup are sent but not counted.
        let measured = t0 >= window.start;
        match result {
            Ok(status) if status == expect => {
                if measured {
                    out.ok += 1;
                    out.latencies_us.push(micros(t1 - t0));
                    let second = (t1 - window.start).as_secs() as usize;
                    if let Some(n) = out.per_second.get_mut(second) {
                        *n += 1;
                    }
                }
            }
            Ok(status) => {
                if measured {
                    *out.errors.entry(status.to_string()).or_default() += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("{status}: {}", client.last_body()));
                }
            }
            Err(e) => {
                if measured {
                    *out.errors.entry("io".into()).or_default() += 1;
                    out.first_error.get_or_insert_with(|| format!("io: {e}"));
                }
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    out
}

/// Which prepared requests connection `w` of `c` sends: every c-th one.
fn share(w: usize, c: usize, n: usize) -> Vec<usize> {
    let mine: Vec<usize> = (w..n).step_by(c).collect();
    if mine.is_empty() {
        vec![w % n]
    } else {
        mine
    }
}

/// Starts connections `ws` (of --connections) on the current runtime;
/// connection w goes to `addrs[w % len]`.
fn spawn_workers(
    args: &Args,
    addrs: &[SocketAddr],
    ws: impl Iterator<Item = usize>,
    requests: &Arc<Vec<Prepared>>,
    expect: u16,
    window: Window,
) -> Vec<tokio::task::JoinHandle<WorkerOut>> {
    let (c, n) = (args.connections, requests.len());
    // The pool of --client reqwest-shared: one per runtime.
    let shared = reqwest_client(c);
    ws.map(|w| {
        let client = match args.client {
            ClientKind::Raw => Client::Raw(RawConn::new(addrs[w % addrs.len()])),
            ClientKind::Reqwest => Client::Reqwest {
                client: reqwest_client(1),
                last_body: Bytes::new(),
            },
            ClientKind::ReqwestShared => Client::Reqwest {
                client: shared.clone(),
                last_body: Bytes::new(),
            },
        };
        let mine = share(w, c, n);
        tokio::spawn(http_worker(client, requests.clone(), mine, expect, window))
    })
    .collect()
}

async fn join_workers(
    handles: Vec<tokio::task::JoinHandle<WorkerOut>>,
) -> Result<Vec<WorkerOut>, String> {
    let mut outs = Vec::with_capacity(handles.len());
    for h in handles {
        outs.push(
            h.await
                .map_err(|e| format!("a connection's task failed: {e}"))?,
        );
    }
    Ok(outs)
}

/// Runs C connections over `requests` for warmup + duration; merges results.
pub async fn run_http_load(
    args: &Args,
    targets: &[Target],
    requests: Vec<Prepared>,
    expect: u16,
) -> Result<(WorkerOut, Duration), String> {
    let requests = Arc::new(requests);
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let start = Instant::now() + Duration::from_secs(args.warmup) + Duration::from_millis(50);
    let window = Window {
        start,
        end: start + Duration::from_secs(args.duration),
    };
    let outs: Vec<WorkerOut> = match args.runtime {
        RuntimeKind::Multi => {
            let all = 0..args.connections;
            join_workers(spawn_workers(args, &addrs, all, &requests, expect, window)).await?
        }
        RuntimeKind::Local => {
            // Each OS thread runs a current-thread runtime with its share of
            // the connections; clients are built inside their runtime.
            let threads: Vec<_> = (0..args.runtime_threads)
                .map(|t| {
                    let (args, addrs, requests) = (args.clone(), addrs.clone(), requests.clone());
                    std::thread::spawn(move || -> Result<Vec<WorkerOut>, String> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| format!("cannot start a runtime: {e}"))?;
                        rt.block_on(async {
                            let mine = (t..args.connections).step_by(args.runtime_threads);
                            let handles =
                                spawn_workers(&args, &addrs, mine, &requests, expect, window);
                            join_workers(handles).await
                        })
                    })
                })
                .collect();
            let joined = tokio::task::spawn_blocking(move || {
                threads
                    .into_iter()
                    .map(|t| {
                        t.join()
                            .unwrap_or_else(|_| Err("a runtime thread panicked".into()))
                    })
                    .collect::<Result<Vec<Vec<WorkerOut>>, String>>()
            })
            .await
            .map_err(|e| format!("a runtime thread failed: {e}"))??;
            joined.into_iter().flatten().collect()
        }
    };
    let mut merged = WorkerOut::default();
    for o in outs {
        merged.latencies_us.extend(o.latencies_us);
        merged
            .per_second
            .resize(o.per_second.len().max(merged.per_second.len()), 0);
        for (m, n) in merged.per_second.iter_mut().zip(o.per_second) {
            *m += n;
        }
        merged.ok += o.ok;
        for (k, v) in o.errors {
            *merged.errors.entry(k).or_default() += v;
        }
        if merged.first_error.is_none() {
            merged.first_error = o.first_error;
        }
    }
    // The last bucket holds only requests that finished after the window.
    merged.per_second.truncate(args.duration as usize);
    Ok((merged, window.end - window.start))
}
