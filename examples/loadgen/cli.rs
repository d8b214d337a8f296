//! The command line: which scenario, against which server, with which
//! clients, and the server flags the figures assume.

use clap::{Parser, ValueEnum};

/// The server flags the figures assume (printed with every result).
pub const SERVER_FLAGS: &str = "serve --open-registration --rate-limit-per-minute 100000000 \
     --status-rate-limit-per-minute 100000000 --registration-rate-limit-per-minute 0 \
     --max-connections-per-ip 0 --max-connections-per-block 0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Post,
    Read,
    Fanout,
    Sockets,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// A minimal HTTP/1.1 keep-alive client per connection (cheapest).
    Raw,
    /// A reqwest client per connection (one idle pooled connection each).
    Reqwest,
    /// One reqwest client (and pool) shared by all connections of a runtime.
    ReqwestShared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WsKind {
    /// A minimal WebSocket client: once connected, its socket is read by a
    /// receiver thread's epoll loop (cheapest per delivery).
    Raw,
    /// tokio-tungstenite.
    Tungstenite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// One multi-thread tokio runtime with --runtime-threads workers.
    Multi,
    /// --runtime-threads OS threads, each a current-thread runtime running
    /// its share of the connections.
    Local,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for a threadline server (public HTTP/WebSocket API only)")]
pub struct Args {
    /// Which load to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Base URL of the server; several, comma-separated, for nodes of one
    /// cluster: connections, subscribers and fanout posts are spread over
    /// them in turn (setup goes through the first).
    #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Compare servers: `LABEL=URL` (a running server) or `LABEL=COMMAND`
    /// (started for each run, `{port}` and `{db}` replaced by a free port
    /// and a fresh database path, its output to a log file). Given twice or
    /// more, the scenario runs against each in turn for --rounds rounds, and
    /// each server's median is shown as a percentage of the first's.
    #[arg(long = "server", value_name = "LABEL=URL|COMMAND")]
    pub servers: Vec<String>,
    /// Compare: rounds (each runs every --server once; the order reverses
    /// every other round, so a drift of the machine weighs on both alike).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Compare: where started servers keep their database and log (a fresh
    /// directory per run, removed after it unless --keep).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
    /// Compare: keep each run's database and log.
    #[arg(long)]
    pub keep: bool,
    /// post/read: concurrent connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// post/read/sockets: threads the load is spread over.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// post/read/fanout: seconds of measured load.
    #[arg(long, short = 't', default_value_t = 10)]
    pub duration: u64,
    /// post/read: seconds of unmeasured load first.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// post/read: agents (each its own account and key) sharing the load.
    #[arg(long, default_value_t = 16)]
    pub agents: usize,
    /// post: characters of each message's content (default: a chat line of
    /// 68; the API allows up to 2,048).
    #[arg(long)]
    pub content_len: Option<usize>,
    /// read: messages seeded into each thread (at least 50).
    #[arg(long, default_value_t = 60)]
    pub seed: usize,
    /// read: read the newest 50 messages (after=<seed-50>) instead of the oldest.
    #[arg(long)]
    pub newest: bool,
    /// fanout: WebSocket subscribers on the one thread.
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// fanout: messages posted a second.
    #[arg(long, short = 'r', default_value_t = 20)]
    pub rate: u32,
    /// fanout/sockets: seconds to wait for outstanding deliveries.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// sockets: idle subscribed sockets.
    #[arg(long, short = 'k', default_value_t = 10000)]
    pub sockets: usize,
    /// The server's process id: its VmRSS (sockets) and CPU time are read
    /// from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// WebSocket grants opened and connected at once.
    #[arg(long, default_value_t = 64)]
    pub connect_batch: usize,
    /// post/read: the HTTP client of each connection.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
    /// fanout/sockets: the WebSocket client of each subscriber.
    #[arg(long, value_enum, default_value_t = WsKind::Raw)]
    pub ws_client: WsKind,
    /// post/read: how connections are scheduled.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Multi)]
    pub runtime: RuntimeKind,
    /// Worker threads of the runtime (multi), or runtimes (local).
    #[arg(long, default_value_t = 2)]
    pub runtime_threads: usize,
    /// fanout/sockets: threads that read the raw WebSocket client's sockets
    /// once connected (one epoll loop each). One costs less CPU per delivery
    /// (it is rarely put to sleep mid-burst), but two read a burst on both
    /// cores and land its last delivery sooner (docs/performance.md, round
    /// four).
    #[arg(long, default_value_t = 2)]
    pub receivers: usize,
    /// fanout/sockets: the nice value of those receiver threads (0: as the
    /// generator runs; 19: they get a core only when the server does not
    /// want it, as a client on another machine would not compete).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub receiver_nice: i32,
    /// fanout/sockets: run those receiver threads under `SCHED_BATCH`: same
    /// weight as now (their nice value), but a receiver woken by the
    /// server's `send` no longer preempts the server thread on that core; it
    /// runs at the core's next turn and reads what came meanwhile in one
    /// batch (docs/performance.md, round six).
    #[arg(long)]
    pub receiver_batch: bool,
    /// fanout: no kernel receive timestamps (no "post→arrival" figure), to
    /// measure what taking them costs.
    #[arg(long)]
    pub no_arrival: bool,
}

impl Args {
    /// The base URLs of --url.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("--connections", self.connections),
            ("--threads", self.threads),
            ("--duration", self.duration as usize),
            ("--subscribers", self.subscribers),
            ("--rate", self.rate as usize),
            ("--sockets", self.sockets),
            ("--connect-batch", self.connect_batch),
            ("--runtime-threads", self.runtime_threads),
            ("--receivers", self.receivers),
            ("--rounds", self.rounds),
            ("--url", self.urls().len()),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.agents < 2 {
            return Err("--agents must be at least 2 (a thread has two agents)".into());
        }
        if self.seed < 50 {
            return Err("--seed must be at least 50 (the read page is 50 messages)".into());
        }
        if self.servers.len() == 1 {
            return Err("--server compares: give it at least twice".into());
        }
        if !self.servers.is_empty() && self.scenario == Scenario::All {
            return Err("a comparison runs one scenario, not `all`".into());
        }
        Ok(())
    }
}
