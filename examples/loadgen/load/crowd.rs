//! A crowd of WebSocket subscribers: each opens a grant, connects, waits
//! for `connection.ready` and then counts `thread.message` events (seq
//! order, gaps, duplicates, post-to-receive latency from the stamp in the
//! content).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use memchr::memmem::Finder;
use tokio::sync::{watch, Semaphore};

use crate::cli::{Args, WsKind};
use crate::client::api::{Api, Cred, ThreadPlan};
use crate::client::http::find;
use crate::client::receivers::Receivers;
use crate::client::ws::{tungstenite_next, WsClient};
use crate::figures::micros;

/// Prefix of a stamped message's content; the send time in µs (since the
/// crowd's `epoch`) follows it.
pub const STAMP: &str = "LGT";
/// Longest a WebSocket may take from grant to `connection.ready`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What one WebSocket subscriber saw.
#[derive(Default)]
pub struct SubOut {
    connected: bool,
    /// Grant + upgrade + `connection.ready`, in µs.
    connect_us: u32,
    error: Option<String>,
    /// Post-to-receive latency of stamped messages: (seq, µs), taken when
    /// the generator read the frame.
    latencies_us: Vec<(i64, u32)>,
    /// Post-to-arrival latency of stamped messages (µs), taken when the
    /// kernel received the frame on the subscriber's socket; only where the
    /// read carried a kernel timestamp (the raw client's receiver threads).
    arrival_us: Vec<(i64, u32)>,
    /// Deliveries whose arrival time is a later frame's: a read that took
    /// several frames has one timestamp, its last segment's.
    arrival_shared: u64,
    /// `thread.message` events received.
    messages: u64,
    /// Events whose seq was not above the last one seen.
    duplicates: u64,
    /// Seqs skipped between consecutive events.
    gaps: u64,
    /// How the socket ended, when the server ended it.
    pub closed_by_server: Option<String>,
    /// The highest seq seen so far.
    last_seq: i64,
}

impl SubOut {
    /// Notes that `n` deliveries just read carry the arrival time of a later
    /// frame read with them.
    pub fn shared_stamps(&mut self, n: u64) {
        self.arrival_shared += n;
    }

    /// Counts one text frame read at `now` (µs since the crowd's epoch),
    /// having reached the socket at `arrived` when the kernel said so;
    /// returns whether it was a `thread.message` (the caller adds those to
    /// the crowd's shared count, a receiver thread once per batch of reads).
    pub fn record(&mut self, frame: &[u8], now: u32, arrived: Option<u32>) -> bool {
        if MESSAGE_TYPE.find(frame).is_none() {
            return false;
        }
        self.messages += 1;
        let seq = int_after(frame, &SEQ_KEY).unwrap_or(0);
        if let Some(sent) = int_after(frame, &STAMP_KEY) {
            self.latencies_us
                .push((seq, now.saturating_sub(sent as u32)));
            if let Some(at) = arrived {
                self.arrival_us.push((seq, at.saturating_sub(sent as u32)));
            }
        }
        if seq > 0 {
            if seq <= self.last_seq {
                self.duplicates += 1;
            } else {
                if self.last_seq > 0 && seq > self.last_seq + 1 {
                    self.gaps += (seq - self.last_seq - 1) as u64;
                }
                self.last_seq = seq;
            }
        }
        true
    }
}

/// Searchers for what a subscriber looks for in each frame (built once).
static MESSAGE_TYPE: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("\"type\":\"thread.message\""));
static SEQ_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"seq\":"));
/// The µs stamp a fanout message carries: `"content":"LGT<digits>`.
static STAMP_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(&format!("\"content\":\"{STAMP}")).into_owned());

/// The integer right after the first match of `key` in `text`.
fn int_after(text: &[u8], key: &Finder<'_>) -> Option<i64> {
    let at = key.find(text)? + key.needle().len();
    let mut n: Option<i64> = None;
    for d in text[at..].iter().take_while(|b| b.is_ascii_digit()) {
        n = n
            .unwrap_or(0)
            .checked_mul(10)?
            .checked_add(i64::from(d - b'0'));
    }
    n
}

/// Shared state of a crowd of subscribers.
pub struct Crowd {
    /// One per --url: subscriber i opens its grant (and so connects) through
    /// `apis[i % len]`.
    apis: Vec<Api>,
    gate: Semaphore,
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    pub received: Arc<AtomicU64>,
    /// The clock that message stamps count from.
    pub epoch: Instant,
    ws_kind: WsKind,
    /// Where the raw client's sockets are read once connected (with
    /// --ws-client tungstenite, each socket's own task reads it).
    receivers: Receivers,
}

impl Crowd {
    pub fn new(args: &Args, apis: &[Api]) -> Result<Arc<Crowd>, String> {
        let epoch = Instant::now();
        let received = Arc::new(AtomicU64::new(0));
        let receivers = Receivers::start(
            args.receivers.max(1),
            args.receiver_nice,
            args.receiver_batch,
            !args.no_arrival,
            epoch,
            received.clone(),
        )?;
        Ok(Arc::new(Crowd {
            apis: apis.to_vec(),
            gate: Semaphore::new(args.connect_batch),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            received,
            epoch,
            ws_kind: args.ws_client,
            receivers,
        }))
    }
}

/// Opens a grant, connects, waits for `connection.ready`, then counts
/// `thread.message` events until told to stop or the server closes.
async fn subscriber(
    crowd: Arc<Crowd>,
    index: usize,
    key: String,
    thread_id: String,
    mut stop: watch::Receiver<bool>,
) -> SubOut {
    let mut out = SubOut::default();
    let (connected, started) = {
        // At most --connect-batch grants in flight: each is used at once.
        let _permit = crowd.gate.acquire().await;
        let started = Instant::now();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let api = &crowd.apis[index % crowd.apis.len()];
            let url = api.grant(&key, &thread_id).await?;
            let mut ws = WsClient::connect(crowd.ws_kind, &url).await?;
            match ws.next().await {
                Ok(t) if find(&t, b"\"connection.ready\"").is_some() => Ok(ws),
                Ok(t) => Err(format!(
                    "expected connection.ready, got {}",
                    String::from_utf8_lossy(&t)
                )),
                Err(e) => Err(format!("expected connection.ready, got {e}")),
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out connecting".into()));
        (connected, started)
    };
    let ws = match connected {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(e);
            crowd.failed.fetch_add(1, Ordering::SeqCst);
            return out;
        }
    };
    out.connected = true;
    out.connect_us = micros(started.elapsed());
    crowd.ready.fetch_add(1, Ordering::SeqCst);
    let mut ws = match ws {
        // The raw client's socket is read by a receiver thread from now on.
        WsClient::Raw(raw) => {
            crowd.receivers.add(raw, out);
            return SubOut::default();
        }
        WsClient::Tungstenite(ws) => ws,
    };
    // One stop future for the whole loop: making a fresh one per frame
    // registered and dropped a waiter every time.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            frame = tungstenite_next(&mut ws) => {
                let frame = match frame {
                    Ok(bytes) => bytes,
                    Err(ended) => {
                        out.closed_by_server = Some(ended);
                        break;
                    }
                };
                let now = micros(crowd.epoch.elapsed());
                if out.record(&frame, now, None) {
                    crowd.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The only change is to `true` (or the sender is gone): stop either way.
            _ = &mut stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                break;
            }
        }
    }
    out
}

/// Starts `n` subscribers (subscriber i on `threads[i % len]`, with the key of
/// one of its agents) and waits until each is connected or has failed.
pub async fn connect_crowd(
    crowd: &Arc<Crowd>,
    n: usize,
    threads: &[ThreadPlan],
    agents: &[Cred],
    stop: &watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<SubOut>>, Duration) {
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let t = &threads[i % threads.len()];
            let who = if (i / threads.len()).is_multiple_of(2) {
                t.creator
            } else {
                t.target
            };
            tokio::spawn(subscriber(
                crowd.clone(),
                i,
                agents[who].key.clone(),
                t.id.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Bounded: each subscriber gives up after CONNECT_TIMEOUT once it starts,
    // and at most --connect-batch start at once.
    let limit = CONNECT_TIMEOUT * 2 + Duration::from_millis(20) * n as u32;
    let mut last_report = Instant::now();
    while crowd.ready.load(Ordering::SeqCst) + crowd.failed.load(Ordering::SeqCst) < n
        && started.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "  ... {} of {n} connected, {} failed",
                crowd.ready.load(Ordering::SeqCst),
                crowd.failed.load(Ordering::SeqCst)
            );
        }
    }
    (handles, started.elapsed())
}

/// Summary of a finished crowd.
#[derive(Default)]
pub struct CrowdOut {
    pub connected: usize,
    pub connect_errors: BTreeMap<String, u64>,
    pub connect_us: Vec<u32>,
    /// Post-to-receive latency of every delivery (read by the generator).
    pub latencies_us: Vec<u32>,
    /// Post-to-arrival latency (kernel receive timestamp) of every delivery
    /// that has one.
    pub arrival_us: Vec<u32>,
    /// Of those, deliveries stamped with a later frame's arrival.
    pub arrival_shared: u64,
    /// Per message: the latency of its first and of its last delivery.
    pub first_us: Vec<u32>,
    pub last_us: Vec<u32>,
    /// The same, by arrival time.
    pub first_arrival_us: Vec<u32>,
    pub last_arrival_us: Vec<u32>,
    pub messages: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub closed_by_server: BTreeMap<String, u64>,
}

pub async fn gather(crowd: &Crowd, handles: Vec<tokio::task::JoinHandle<SubOut>>) -> CrowdOut {
    let mut c = CrowdOut::default();
    let mut per_message: BTreeMap<i64, (u32, u32)> = BTreeMap::new();
    let mut arrivals: BTreeMap<i64, (u32, u32)> = BTreeMap::new();
    let mut outs = tokio::task::block_in_place(|| crowd.receivers.finish());
    for h in handles {
        match h.await {
            Ok(s) => outs.push(s),
            Err(_) => *c.connect_errors.entry("task panicked".into()).or_default() += 1,
        }
    }
    for s in outs {
        if s.connected {
            c.connected += 1;
            c.connect_us.push(s.connect_us);
        }
        if let Some(e) = s.error {
            // Group errors by their first words, not by unique details.
            let kind: String = e.chars().take(60).collect();
            *c.connect_errors.entry(kind).or_default() += 1;
        }
        for (seq, us) in s.latencies_us {
            c.latencies_us.push(us);
            let e = per_message.entry(seq).or_insert((us, us));
            *e = (e.0.min(us), e.1.max(us));
        }
        for (seq, us) in s.arrival_us {
            c.arrival_us.push(us);
            let e = arrivals.entry(seq).or_insert((us, us));
            *e = (e.0.min(us), e.1.max(us));
        }
        c.arrival_shared += s.arrival_shared;
        c.messages += s.messages;
        c.duplicates += s.duplicates;
        c.gaps += s.gaps;
        if let Some(why) = s.closed_by_server {
            *c.closed_by_server.entry(why).or_default() += 1;
        }
    }
    (c.first_us, c.last_us) = per_message.into_values().unzip();
    (c.first_arrival_us, c.last_arrival_us) = arrivals.into_values().unzip();
    c
}
