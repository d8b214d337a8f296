//! The command line: `serve` and the provisioning commands. Every flag also
//! reads a `THREADLINE_*` environment variable; `--help` shows the defaults.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

pub use crate::logging::LogFormat;
use crate::metrics::MetricsToken;

pub use crate::store::Durability;

/// threadline: a self-hosted thread server for AI agents.
#[derive(Debug, Parser)]
// A bare `threadline` prints the help (to stderr, exit 2) instead of one
// terse line: a new user learns the commands from it.
#[command(name = "threadline", version, about, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log lines on stderr: text, or one JSON object per line.
    #[arg(long, global = true, env = "THREADLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP and WebSocket server.
    Serve(Box<ServeConfig>),
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage login keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage threads.
    #[command(subcommand)]
    Thread(ThreadCommand),
    /// Copy the database, consistently, while the server runs and writes.
    Backup(BackupArgs),
    /// Delete idempotency keys past their window and, by flag, old closed threads.
    Prune(PruneArgs),
    /// Give a restored database a new generation, so that clients resuming
    /// a thread read it again (run it with the server stopped, after a
    /// pg_restore or a file copy; a `threadline backup` copy needs none).
    MarkRestored {
        #[command(flatten)]
        db: DbArg,
    },
    /// Ask a running server's /healthz; exit 0 on 200, 1 otherwise (for
    /// container HEALTHCHECKs without curl).
    Healthcheck {
        /// The health URL (plain http, normally loopback).
        #[arg(
            long,
            env = "THREADLINE_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
        /// Seconds to wait for the connection and for the answer (1–3600).
        #[arg(long, default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_secs: u64,
    },
    /// Serve MCP on stdin/stdout for a threadline server (key from THREADLINE_KEY).
    Mcp {
        /// The threadline server's base URL.
        #[arg(long, env = "THREADLINE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Manage an account's webhook endpoints.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register an endpoint; its signing secret is printed once.
    Create {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// Where to POST events (http://...).
        #[arg(long)]
        url: String,
        /// Event types, comma-separated: thread.created, thread.message,
        /// thread.status, thread.deleted.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "thread.created,thread.message,thread.status,thread.deleted"
        )]
        events: Vec<String>,
        /// A note for yourself.
        #[arg(long)]
        description: Option<String>,
        /// Accept a private, loopback or link-local target (the server
        /// still refuses to deliver there without --allow-private-webhooks).
        #[arg(long)]
        allow_private: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// List an account's endpoints (secrets are not shown).
    List {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Delete an endpoint (wh_...).
    Delete {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// The endpoint (wh_...).
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Give an endpoint a new signing secret, printed once; deliveries are
    /// signed with it from the next one on (a running server picks it up
    /// within a second), and for --keep-previous-hours (24 by default) with
    /// the secret it replaced too.
    Rotate {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// The endpoint (wh_...).
        id: String,
        /// Hours the secret replaced keeps signing beside the new one (each
        /// delivery carries both signatures meanwhile), 0 to 168; 0: only
        /// the new secret signs from now on.
        #[arg(long, value_name = "HOURS", default_value_t = crate::webhooks::KEEP_PREVIOUS_HOURS_DEFAULT,
              value_parser = clap::value_parser!(i64).range(0..=crate::webhooks::KEEP_PREVIOUS_HOURS_MAX))]
        keep_previous_hours: i64,
        #[command(flatten)]
        db: DbArg,
    },
    /// Stop an active endpoint's deliveries; it keeps its place in the
    /// event log, and `resume` delivers what happened meanwhile.
    Pause {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// The endpoint (wh_...).
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Deliver to a paused endpoint again (from where it stopped) or to a
    /// disabled one (from the events logged from now on), with a fresh
    /// retry schedule.
    Resume {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// The endpoint (wh_...).
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// An endpoint and its latest delivery attempts, newest first (status,
    /// latency, error).
    Attempts {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        /// The endpoint (wh_...).
        id: String,
        /// How many attempts to list (1–100; the last 100 are kept).
        #[arg(long, default_value_t = 20,
              value_parser = clap::value_parser!(i64).range(1..=crate::store::webhooks::ATTEMPTS_KEPT))]
        limit: i64,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent (and, without --user, a new account with a first key).
    Create {
        /// The agent's display name (1–100 characters).
        #[arg(long)]
        name: String,
        /// Add the agent to this existing account (usr_...).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// List agents: AID, name, account, creation time.
    List {
        /// Only this account's agents (usr_...).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Change an agent's display name.
    Rename {
        /// The agent's AID.
        aid: String,
        /// The new display name (1–100 characters).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a login key for an account; it is printed once.
    Create {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke a login key; a running server refuses it from its next request.
    Revoke {
        /// The key to revoke (nk_...). `-` or omitted: read from the first
        /// line of stdin, out of `ps` and the shell's history.
        login_key: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// List an account's keys (an id and a prefix of the key's hash, never the key).
    List {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke every live key of an account.
    RevokeAll {
        /// The account (usr_...).
        #[arg(long)]
        user: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ThreadCommand {
    /// Delete a thread with its messages, read marks, idempotency keys and
    /// scheduled replies (for data-removal requests).
    Delete {
        /// The thread's id.
        thread_id: String,
        #[command(flatten)]
        db: DbArg,
    },
}

/// Settings of `threadline backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The backup file to write; an existing file is never overwritten.
    #[arg(long)]
    pub to: PathBuf,
}

/// Settings of `threadline prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Idempotency keys older than this many days are deleted (a retry after
    /// that stores a new message).
    #[arg(long, default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DAYS)))]
    pub idempotency_days: u32,
    /// Also delete closed and archived threads untouched for this many days
    /// (with their messages). Without it, no thread is deleted.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DAYS)))]
    pub threads_older_than_days: Option<u32>,
}

/// The database file.
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// SQLite database file (`serve` and `agent create` create it if missing;
    /// the other commands refuse a missing or empty file).
    #[arg(long = "db", env = "THREADLINE_DB", default_value = "./threadline.db")]
    pub path: PathBuf,
    /// PostgreSQL instead of the SQLite file (`postgres://user:pass@host/db`):
    /// several nodes serve one database. `--db` is then ignored.
    // hide_env_values: `--help` must not print the password from the env.
    #[arg(
        long = "database-url",
        env = "THREADLINE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

impl DbArg {
    /// Where the data is: the PostgreSQL database if a URL is given, else
    /// the SQLite file.
    pub fn location(&self) -> crate::store::Location<'_> {
        match &self.database_url {
            Some(url) => crate::store::Location::Pg(url),
            None => crate::store::Location::Sqlite(&self.path),
        }
    }
}

/// The decision policy is a domain value; named here too for the flag.
pub use crate::domain::TurnPolicy;

/// Settings of `threadline serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "THREADLINE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    #[command(flatten)]
    pub db: DbArg,

    /// Public base URL, used to build WebSocket connect URLs
    /// [default: http://<bound address>].
    #[arg(long, env = "THREADLINE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Requests a minute per login key and route (0 = unlimited).
    #[arg(long, env = "THREADLINE_RATE_LIMIT_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_per_minute: u32,

    /// Requests a minute per login key on thread/status (0 = unlimited).
    #[arg(
        long,
        env = "THREADLINE_STATUS_RATE_LIMIT_PER_MINUTE",
        default_value_t = 10
    )]
    pub status_rate_limit_per_minute: u32,

    /// Requests a minute per client IP with a missing or bad key (0 = unlimited).
    #[arg(
        long,
        env = "THREADLINE_IP_RATE_LIMIT_PER_MINUTE",
        default_value_t = 60
    )]
    pub ip_rate_limit_per_minute: u32,

    /// agent-init requests a minute per client IP (0 = unlimited).
    #[arg(
        long,
        env = "THREADLINE_REGISTRATION_RATE_LIMIT_PER_MINUTE",
        default_value_t = 5
    )]
    pub registration_rate_limit_per_minute: u32,

    /// Lifetime of a WebSocket connect grant, in seconds.
    #[arg(long, env = "THREADLINE_GRANT_TTL_SECS", default_value_t = 30)]
    pub grant_ttl_secs: u64,

    /// Allow self-service registration (POST /api/acsp/agent-init).
    #[arg(long, env = "THREADLINE_OPEN_REGISTRATION", value_parser = BoolishValueParser::new())]
    pub open_registration: bool,

    /// Development mode: seed a demo account on an empty database and open registration.
    #[arg(long, env = "THREADLINE_DEV", value_parser = BoolishValueParser::new())]
    pub dev: bool,

    /// normal: a commit survives a crash of the process; full: it also
    /// survives an OS crash or power loss (an fsync at every commit). On
    /// PostgreSQL, the writer's synchronous_commit: normal = off, full = on.
    #[arg(long, env = "THREADLINE_DURABILITY", value_enum, default_value_t = Durability::Normal)]
    pub durability: Durability,

    /// PostgreSQL: pooled connections of this node for reads and connect
    /// grants (its writes use one connection of their own).
    #[arg(long, env = "THREADLINE_PG_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pg_pool_size: u32,

    /// PostgreSQL: how long `serve` waits at start for a database that does
    /// not answer yet (refused, unreachable, starting up, silent past the
    /// URL's connect_timeout, 5 s by default), retrying, before
    /// it gives up with exit 1 (0 = at once). A database that answers with
    /// a refusal (no such database, a bad password) ends it at once.
    #[arg(long, env = "THREADLINE_PG_START_WAIT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub pg_start_wait_secs: u32,

    /// Turn-taking decision policy.
    #[arg(long, env = "THREADLINE_TURN_POLICY", value_enum, default_value_t = TurnPolicy::Heuristic)]
    pub turn_policy: TurnPolicy,

    /// Scale of the typing delay between paced replies (0 = deliver at once).
    #[arg(long, env = "THREADLINE_PACE_SCALE", default_value_t = 1.0)]
    pub pace_scale: f64,

    /// Seconds after a typing_start without a message before the
    /// typing_without_sending signal (social signals only).
    #[arg(long, env = "THREADLINE_TYPING_SIGNAL_SECS", default_value_t = 20)]
    pub typing_signal_secs: u64,

    /// The pause (ms) before a reply part whose delivery failed is tried
    /// again, doubled after each further failure (a part is given up after
    /// 5). Not a flag (no `--help` line, no variable): 1 s in a server;
    /// tests that make a part fail on purpose shorten it.
    #[arg(skip = 1000u32)]
    pub reply_retry_pause_ms: u32,

    /// Unsent events a WebSocket may queue before it is closed with 4008.
    #[arg(long, env = "THREADLINE_WS_QUEUE", default_value_t = 512)]
    pub ws_queue: usize,

    /// Seconds between server pings on a WebSocket.
    #[arg(long, env = "THREADLINE_WS_PING_SECS", default_value_t = 20)]
    pub ws_ping_secs: u64,

    /// Seconds without any frame from a client before its socket is closed.
    #[arg(long, env = "THREADLINE_WS_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_timeout_secs: u64,

    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "THREADLINE_WORKERS")]
    pub workers: Option<usize>,

    /// Scheduler slice, in microseconds, that the SQLite writer thread and
    /// each HTTP worker ask the kernel for (Linux 6.12 or later): shorter
    /// than the kernel's (about 1-3 ms), they preempt other threads when
    /// they wake, and are preempted sooner. 0 (the default) = the kernel's
    /// own; otherwise 100 to 100000. It helped `post` only on a machine
    /// busy with other work, and cost fan-out latency on an idle one.
    #[arg(long, env = "THREADLINE_THREAD_SLICE_US", default_value = "0",
          value_parser = crate::sched::ThreadSlice::parse)]
    pub thread_slice_us: crate::sched::ThreadSlice,

    /// Seconds a client has to send a whole request body; a body still
    /// incomplete then is answered 408 and the connection closed.
    #[arg(long, env = "THREADLINE_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// Seconds an idle keep-alive connection stays open (0 = no keep-alive).
    /// Longer than client pools keep idle connections, so a pooled client
    /// never reuses a connection the server is closing.
    #[arg(long, env = "THREADLINE_KEEP_ALIVE_SECS", default_value_t = 75)]
    pub keep_alive_secs: u64,

    /// Open connections the server holds at most (0 = as many as the
    /// open-file limit allows, less 256); rounded down to a multiple of
    /// the workers. The connection caps and the near-budget rules (three
    /// quarters open) follow it: set it below what the machine's memory
    /// holds when the open-file limit is far above that.
    #[arg(long, env = "THREADLINE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Open connections (HTTP and WebSocket) one client IP (an IPv6 client:
    /// its /64) may hold; requests on connections over it are refused with
    /// 429 (0 = unlimited).
    #[arg(
        long,
        env = "THREADLINE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1024
    )]
    pub max_connections_per_ip: usize,

    /// Open connections one block of client addresses (an IPv4 /24, an
    /// IPv6 /48) may hold between them; requests on connections over it
    /// are refused with 429 (0 = unlimited).
    #[arg(
        long,
        env = "THREADLINE_MAX_CONNECTIONS_PER_BLOCK",
        default_value_t = 4096
    )]
    pub max_connections_per_block: usize,

    /// Request lines a minute per client IP (an IPv6 client: its /64) for
    /// requests that did not get in with a key: refusals (401, 405, 408,
    /// 413, 429, 431), paths that match no route, and the routes open
    /// without one; the rest are counted and summed up in one line per
    /// address and minute (0 = every line).
    #[arg(
        long,
        env = "THREADLINE_LOG_UNAUTHENTICATED_PER_MINUTE",
        default_value_t = 60
    )]
    pub log_unauthenticated_per_minute: u32,

    /// Days the event log keeps an event (at least 1); older ones are pruned.
    #[arg(long, env = "THREADLINE_EVENT_RETENTION_DAYS", default_value_t = 7)]
    pub event_retention_days: u64,

    /// Seconds between `: heartbeat` comments on a server-sent-events stream.
    #[arg(long, env = "THREADLINE_SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    /// Allow webhook targets on private, loopback or link-local addresses
    /// (on with --dev, where a local receiver is the common case).
    #[arg(long, env = "THREADLINE_ALLOW_PRIVATE_WEBHOOKS", value_parser = BoolishValueParser::new())]
    pub allow_private_webhooks: bool,

    /// Seconds between webhook delivery attempts, comma-separated; an
    /// endpoint failing them all is disabled.
    #[arg(
        long,
        env = "THREADLINE_WEBHOOK_RETRY_SCHEDULE",
        value_delimiter = ',',
        default_value = "5,30,120,600,3600,21600,86400"
    )]
    pub webhook_retry_schedule: Vec<u64>,

    /// A PEM file of CA certificates that webhook https targets may also
    /// chain to (besides the built-in public roots), for receivers with a
    /// private CA.
    #[arg(long, env = "THREADLINE_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Reverse proxies (CIDR ranges, comma-separated) whose X-Forwarded-For /
    /// Forwarded header names the client; other peers' headers are ignored.
    /// A bare address counts as a range of one.
    #[arg(long, env = "THREADLINE_TRUST_PROXY", value_delimiter = ',', num_args = 1..,
          value_parser = parse_proxy_range)]
    pub trust_proxy: Vec<IpNet>,

    /// Bearer token that GET /metrics requires (unset: /metrics is open).
    #[arg(long, env = "THREADLINE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<MetricsToken>,
}

/// The longest duration flag in seconds: a day.
const DAY_SECS: u64 = 86_400;
/// The longest duration flag in days: a century.
const MAX_DAYS: u32 = 36_500;
/// The most delays `--webhook-retry-schedule` takes, and the longest one.
const MAX_RETRIES: usize = 100;
const MAX_RETRY_DELAY_SECS: u64 = 30 * DAY_SECS;

/// `10.0.0.0/8`, `::1/128`, or a bare address (`127.0.0.1` = `127.0.0.1/32`).
fn parse_proxy_range(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a CIDR range (like 127.0.0.1/32)"))
}

impl ServeConfig {
    /// A warning when `--trust-proxy` holds a range of every address
    /// (`0.0.0.0/0`, `::/0`): then any client may name its own address in
    /// X-Forwarded-For and pick a fresh per-IP quota per request. Warned
    /// about, not refused: a server reachable only through its proxy
    /// (a private network with changing proxy addresses) may mean it.
    pub fn trust_proxy_warning(&self) -> Option<String> {
        let all: Vec<String> = self
            .trust_proxy
            .iter()
            .filter(|r| r.prefix_len() == 0)
            .map(IpNet::to_string)
            .collect();
        (!all.is_empty()).then(|| {
            format!(
                "--trust-proxy {} trusts every address: any client that reaches this \
                 server directly can choose its own address in X-Forwarded-For/Forwarded \
                 and so escape the per-IP quotas and connection caps; list only your \
                 proxies' addresses",
                all.join(",")
            )
        })
    }

    /// Checks the settings that clap cannot, with a message that says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.bind.trim().is_empty() {
            return Err(
                "--bind (THREADLINE_BIND) is empty: give an address such as 127.0.0.1:8080".into(),
            );
        }
        if self.workers == Some(0) {
            return Err("--workers must be at least 1 (leave it out for one per core)".into());
        }
        if !(0.0..=100.0).contains(&self.pace_scale) || self.pace_scale.is_nan() {
            return Err(format!(
                "--pace-scale must be between 0 and 100 (got {})",
                self.pace_scale
            ));
        }
        // Durations are added to clocks: past a day (a century for the
        // retention) a value is a mistake, and near u64::MAX it overflowed
        // the clock and panicked the workers at their first request.
        for (flag, value, least, most) in [
            ("--grant-ttl-secs", self.grant_ttl_secs, 1, DAY_SECS),
            ("--body-timeout-secs", self.body_timeout_secs, 1, DAY_SECS),
            ("--sse-heartbeat-secs", self.sse_heartbeat_secs, 1, DAY_SECS),
            ("--ws-ping-secs", self.ws_ping_secs, 1, DAY_SECS),
            ("--ws-timeout-secs", self.ws_timeout_secs, 1, DAY_SECS),
            ("--keep-alive-secs", self.keep_alive_secs, 0, DAY_SECS),
            ("--typing-signal-secs", self.typing_signal_secs, 0, DAY_SECS),
            (
                "--event-retention-days",
                self.event_retention_days,
                1,
                MAX_DAYS.into(),
            ),
        ] {
            if !(least..=most).contains(&value) {
                return Err(format!(
                    "{flag} must be between {least} and {most} (got {value})"
                ));
            }
        }
        if self.webhook_retry_schedule.is_empty() {
            return Err("--webhook-retry-schedule needs at least one delay".into());
        }
        if self.webhook_retry_schedule.len() > MAX_RETRIES {
            return Err(format!(
                "--webhook-retry-schedule has at most {MAX_RETRIES} delays (got {})",
                self.webhook_retry_schedule.len()
            ));
        }
        if let Some(delay) = self
            .webhook_retry_schedule
            .iter()
            .find(|d| **d > MAX_RETRY_DELAY_SECS)
        {
            return Err(format!(
                "--webhook-retry-schedule: a delay is at most {MAX_RETRY_DELAY_SECS} s (30 days; got {delay})"
            ));
        }
        if let Some(url) = &self.public_url {
            check_public_url(url)?;
        }
        Ok(())
    }

    /// Whether webhook targets may be private or loopback addresses.
    pub fn private_webhooks_allowed(&self) -> bool {
        self.allow_private_webhooks || self.dev
    }

    /// Whether agent-init is open.
    pub fn registration_open(&self) -> bool {
        self.open_registration || self.dev
    }

    /// Settings for a test server: the defaults `--help` shows (taken from
    /// the flags themselves, environment ignored), on port 0, with the given
    /// database and two workers.
    pub fn for_tests(db: PathBuf) -> ServeConfig {
        use clap::{CommandFactory, FromArgMatches};
        /// `serve`'s flags alone, to parse an empty command line.
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            serve: ServeConfig,
        }
        let matches = Defaults::command()
            .mut_args(|arg| arg.env(None::<&str>))
            .try_get_matches_from(["threadline"])
            .expect("expect: every serve flag has a default or is optional");
        let mut config = Defaults::from_arg_matches(&matches)
            .expect("expect: the defaults parse")
            .serve;
        config.bind = "127.0.0.1:0".into();
        config.db = DbArg {
            path: db,
            database_url: None,
        };
        config.workers = Some(2);
        // Tests open many sockets from 127.0.0.1; the cap has its own tests.
        config.max_connections_per_ip = 0;
        config.max_connections_per_block = 0;
        config
    }
}

/// `--public-url`: an absolute `http://` or `https://` URL with a host,
/// and nothing after its path. Connect URLs are made by appending
/// `/v1/ws?c=…` to it: a query or fragment would swallow that path
/// (`wss://h?x=1/v1/ws?c=…`), and a user name or password would be handed
/// to every client in them.
fn check_public_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--public-url must start with http:// or https:// (got {url})"
        ));
    }
    // `http:///h` names no host where one is written, and a backslash is
    // read as `/`: the parser would guess at both.
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    if rest.starts_with('/') || url.contains('\\') {
        return Err(format!(
            "--public-url must be http(s)://host[:port][/path], without a backslash (got {url})"
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--public-url is not a valid URL ({e}): {url}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("--public-url must not carry a user name or password".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("--public-url must name a host (got {url})"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("--public-url must not contain spaces or control characters".into());
    }
    if url.contains(['?', '#']) {
        return Err(format!(
            "--public-url must not have a query (?) or fragment (#) (got {url})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_is_a_base_to_append_a_path_to() {
        for good in [
            "https://example.test",
            "https://example.test/",
            "http://chat.example.test:9000",
            "https://example.test/threadline/",
            "http://[2001:db8::1]:8080",
        ] {
            assert_eq!(check_public_url(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("ftp://x", "http:// or https://"),
            ("https://h?x=1", "query"),
            ("https://h/?", "query"),
            ("https://h#top", "fragment"),
            ("https://h/p#", "fragment"),
            ("https://", "not a valid URL"),
            ("https://h:99999", "not a valid URL"),
            ("https://u:p@h", "user name or password"),
            ("https://u@h", "user name or password"),
            ("https://h/a b", "spaces"),
            ("https://h/\u{7}", "control"),
            ("https:///h", "host[:port]"),
            ("https://h\\p", "backslash"),
        ] {
            let err = check_public_url(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains('\n'), "{bad}: one line: {err}");
        }
        // A password is not repeated back.
        assert!(!check_public_url("https://u:secret@h?x=1")
            .unwrap_err()
            .contains("secret"));
    }

    #[test]
    fn a_proxy_range_is_a_cidr_or_a_bare_address() {
        let range = |s| parse_proxy_range(s).map(|n| n.to_string());
        assert_eq!(range("10.0.0.0/8").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(range(" 127.0.0.1 ").as_deref(), Ok("127.0.0.1/32"));
        assert_eq!(range("::1").as_deref(), Ok("::1/128"));
        assert!(range("localhost").is_err());
        assert!(range("10.0.0.0/33").is_err());
    }
}
