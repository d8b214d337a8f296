//! Building and running the server: bind first (so port 0 works and a busy
//! port fails early), open the store, build the limiter, hub and grants, then
//! serve until stopped. Shutdown closes sockets (1001), lets in-flight
//! requests finish, and checkpoints the WAL.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::{middleware::from_fn, web, App, HttpServer};

use crate::config::ServeConfig;
use crate::events::CommitListener;
use crate::http::limits::{ConnectionCaps, ConnectionCounts};
use crate::http::{self, AppState};
use crate::metrics::{Metered, Metrics};
use crate::ratelimit::RateLimits;
use crate::realtime::{revocation, Grants, Hub, Revocations};
use crate::store::{LogSettings, Store};
use crate::turn::Scheduler;

/// Raises the soft limit on open files to the hard limit, so that the
/// connection budget ([`ConnectionBudget`]) is as large as the system allows.
/// Returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Connections the kernel may hold for the server before it accepts them
/// (capped by the system's `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// File descriptors kept back from connections: the database (each pooled
/// connection holds the file, its WAL and its shared-memory index), the log,
/// the listener and the runtime's own (epoll, eventfds, blocking threads).
const RESERVED_FILES: u64 = 256;

/// How many connections each worker may hold. Reaching it pauses accepting
/// (new clients wait in the listen backlog) instead of running out of file
/// descriptors, which would fail the database's files and every accept
/// alike; connections already open keep working.
struct ConnectionBudget {
    open_files: u64,
    per_worker: usize,
}

impl ConnectionBudget {
    /// What the open-file limit allows, or `--max-connections` if that is
    /// less (0: the limit alone).
    fn from_open_file_limit(workers: usize, max_connections: usize) -> ConnectionBudget {
        // Without a readable limit, assume the common default.
        let open_files = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        ConnectionBudget::new(open_files, workers, max_connections)
    }

    fn new(open_files: u64, workers: usize, max_connections: usize) -> ConnectionBudget {
        let reserve = RESERVED_FILES.min(open_files / 2);
        let per_worker = usize::try_from((open_files - reserve) / workers as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        let per_worker = match max_connections {
            0 => per_worker,
            n => per_worker.min((n / workers).max(1)),
        };
        ConnectionBudget {
            open_files,
            per_worker,
        }
    }
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    base_url: String,
    server: Server,
    state: web::Data<AppState>,
    unauthenticated_lines: web::Data<crate::logging::UnauthenticatedLines>,
}

/// Stops a running server gracefully from elsewhere (signal handler, tests).
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    state: web::Data<AppState>,
}

impl ShutdownHandle {
    /// Closes every socket with 1001, then stops accepting and waits for the
    /// requests in flight.
    pub async fn shutdown(&self) {
        self.state.hub.shut_down();
        self.server.stop(true).await;
    }

    /// How many (login key, route) pairs the per-key rate limits hold
    /// state for (for tests: made-up keys must leave none behind).
    pub fn rate_limited_keys(&self) -> usize {
        self.state.limits.key_entries()
    }
}

impl Application {
    /// Binds the listener, opens the database and builds the server.
    pub async fn build(config: ServeConfig) -> Result<Application, String> {
        config.validate()?;
        let listener = TcpListener::bind(&config.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
        // std listens with a backlog of 128 and actix's `backlog` applies only
        // to sockets it binds itself: while accepting is paused (connection
        // budget) new clients wait here, so give them room.
        socket2::SockRef::from(&listener)
            .listen(LISTEN_BACKLOG)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        if let Some(warning) = wildcard_warning(addr, config.public_url.as_deref()) {
            log::warn!("{warning}");
        }
        if let Some(warning) = config.trust_proxy_warning() {
            log::warn!("{warning}");
        }
        let base_url = format!("http://{addr}");
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone());
        let public = public.trim_end_matches('/');
        let ws_base = if let Some(rest) = public.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", public.trim_start_matches("http://"))
        };

        let hub = Arc::new(Hub::new(config.ws_queue));
        let metrics = Arc::new(Metrics::new(hub.clone()));
        metrics.refusals_from_zero(http::LIMITED_ROUTES);
        metrics.answers_from_zero(http::metrics::ANSWERED);
        // Each commit is timed for the metrics, then its events reach the
        // sockets through the hub; webhooks hear only "the log holds
        // everything up to P" and read the events back from the log.
        // On PostgreSQL, the logged events of every node's commits reach the
        // hub and webhooks from the log, through the store's follower (with
        // the local commits' signals in order); the local commits report
        // only their timing.
        let (commit_wake, commits) = crate::webhooks::CommitWake::new();
        let consumers = Arc::new(crate::events::Fanout(vec![hub.clone(), commit_wake]));
        let (reports, follower): (Arc<dyn CommitListener>, Arc<dyn CommitListener>) =
            match config.db.database_url {
                None => (
                    Arc::new(Metered::new(metrics.clone(), consumers)),
                    hub.clone(),
                ),
                Some(_) => {
                    let timing_only = Arc::new(crate::events::Fanout(Vec::new()));
                    (
                        Arc::new(Metered::new(metrics.clone(), timing_only)),
                        consumers,
                    )
                }
            };
        let log = LogSettings {
            retention: Duration::from_secs(config.event_retention_days.saturating_mul(86_400)),
        };
        let store = Store::open(
            config.db.location(),
            log,
            reports,
            follower,
            config.durability,
            config.pg_pool_size,
            config.thread_slice_us,
        )?;
        let webhooks = web::Data::from(crate::webhooks::Dispatcher::start(
            store.clone(),
            crate::webhooks::Settings {
                schedule: config
                    .webhook_retry_schedule
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
                allow_private: config.private_webhooks_allowed(),
                ca_file: config.webhook_ca_file.clone(),
            },
            commits,
            hub.shutdown_signal(),
        )?);
        let scheduler = Scheduler::start(
            store.clone(),
            hub.clone(),
            Duration::from_secs(config.typing_signal_secs),
            Duration::from_millis(config.reply_retry_pause_ms.into()),
        );
        let grants = Arc::new(Grants::for_store(
            Duration::from_secs(config.grant_ttl_secs),
            &store,
        ));
        let revocations = Revocations::new();
        revocation::start_watcher(
            config.db.location(),
            Arc::downgrade(&grants),
            Arc::downgrade(&revocations),
            Arc::downgrade(&hub),
            report_outside_events(&store),
        )?;
        let generation = crate::http::middleware::generation_header(store.generation());
        let state = web::Data::new(AppState {
            generation,
            store,
            metrics,
            hub,
            grants,
            revocations,
            limits: RateLimits::from_config(&config),
            ws_base,
            scheduler,
            started: std::time::Instant::now(),
            config: config.clone(),
        });

        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .clamp(1, 512);
        let budget = ConnectionBudget::from_open_file_limit(workers, config.max_connections);
        let total = budget.per_worker.saturating_mul(workers);
        let caps = ConnectionCaps::for_budget(
            total,
            config.max_connections_per_ip,
            config.max_connections_per_block,
        );
        log::info!(
            "open-file limit {}: accepting at most {total} connections ({} per worker), {}",
            budget.open_files,
            budget.per_worker,
            caps_text(&caps),
        );
        let counts = ConnectionCounts::new(caps, config.trust_proxy.clone());
        // Request lines of requests without a key, bounded per client IP.
        let unauthenticated_lines = web::Data::new(crate::logging::UnauthenticatedLines::new(
            config.log_unauthenticated_per_minute,
        ));
        let keep_alive = match config.keep_alive_secs {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        };

        let app_state = state.clone();
        // MCP tools call this server's own API, on its bound address.
        let mcp = crate::mcp::Endpoint::new(
            &crate::mcp::endpoint::loopback_url(addr),
            counts.internal_header(),
        );
        let slice = config.thread_slice_us;
        let lines = unauthenticated_lines.clone();
        // The answers the HTTP layer makes itself (a head it cannot read)
        // carry the envelope and a request id too (once per process).
        actix_http::h1::set_refusal_body(http::middleware::refusal_body);
        let server = HttpServer::new(move || {
            // Runs on each HTTP worker: its writes' answers come back to it
            // once per batch.
            crate::store::answer_here();
            // Once per worker, on the worker's thread (actix-server builds
            // each worker's services there; a restarted service asks again,
            // which changes nothing).
            crate::sched::request_and_log(slice, "HTTP worker", log::Level::Debug);
            App::new()
                .app_data(app_state.clone())
                .app_data(webhooks.clone())
                .app_data(lines.clone())
                .wrap(from_fn(http::middleware::envelope))
                .configure(http::routes)
                .configure(|cfg| mcp.mount(cfg))
        })
        .on_connect(move |conn, data| {
            counts.on_connect(conn, data);
            crate::realtime::on_connect(conn, data);
        })
        // actix leaves Nagle on: a socket's second frame then waits for the
        // client's (delayed) ACK of the first whenever two leave close together.
        .tcp_nodelay(true)
        .keep_alive(keep_alive)
        .disable_signals()
        .shutdown_timeout(10)
        .workers(workers)
        .max_connections(budget.per_worker);
        let server = server
            .listen(listener)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?
            .run();

        // Idle rate-limiter keys are forgotten every minute.
        let limits_state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits_state.limits.shrink();
            }
        });

        // A minute's summary of left-out request lines is written when the
        // minute ends, whether or not another such request comes.
        let summed = unauthenticated_lines.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                summed.tick();
            }
        });

        Ok(Application {
            port: addr.port(),
            base_url,
            server,
            state,
            unauthenticated_lines,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://<bound address>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// How many channel actors run (for tests).
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serves until stopped, then checkpoints the WAL.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        // The minute under way is summed up too.
        self.unauthenticated_lines.finish();
        if let Err(e) = self.state.store.checkpoint().await {
            log::warn!("final WAL checkpoint failed: {e}");
        }
        Ok(())
    }
}

/// The connection caps as the start-up line states them.
fn caps_text(caps: &ConnectionCaps) -> String {
    let cap = |n: usize, what: &str| match n {
        0 => format!("any number per {what}"),
        n => format!("{n} per {what}"),
    };
    let mut text = format!(
        "{}, {}",
        cap(caps.per_ip, "client IP (IPv6: /64)"),
        cap(caps.per_block, "block (IPv4 /24, IPv6 /48)"),
    );
    if caps.pressure_at > 0 {
        text.push_str(&format!(
            "; from {} open: idle connections kept {} s",
            caps.pressure_at,
            crate::http::limits::PRESSURE_KEEP_ALIVE.as_secs()
        ));
        if caps.pressure_share > 0 {
            text.push_str(&format!(", {} per client IP", caps.pressure_share));
        }
    }
    text
}

/// A wildcard bind (`0.0.0.0`, `::`) without `--public-url` would hand
/// clients connect URLs naming an address they cannot reach.
fn wildcard_warning(addr: std::net::SocketAddr, public_url: Option<&str>) -> Option<String> {
    (addr.ip().is_unspecified() && public_url.is_none()).then(|| {
        format!(
            "listening on a wildcard address ({addr}) without --public-url: WebSocket \
             connect URLs will name {addr}; set --public-url to the URL clients use"
        )
    })
}

/// For the revocation watcher: has the writer run an empty batch, which
/// reports the events another process logged (a deleted thread's
/// `thread.deleted`) to the hub and the webhooks. On the runtime the server
/// starts on; the watcher's thread does not wait for it.
fn report_outside_events(store: &Store) -> Box<dyn Fn() + Send> {
    let store = store.clone();
    let runtime = tokio::runtime::Handle::current();
    Box::new(move || {
        let store = store.clone();
        runtime.spawn(async move {
            if let Err(e) = store.write(|_| Ok(())).await {
                log::warn!("cannot report the events another process logged: {e:?}");
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_lowers_the_budget_and_never_raises_it() {
        let per_worker =
            |open_files, workers, max| ConnectionBudget::new(open_files, workers, max).per_worker;
        // 20,000 files less 256, over two workers.
        assert_eq!(per_worker(20_000, 2, 0), 9_872);
        assert_eq!(per_worker(20_000, 2, 1_000), 500);
        // Rounded down to a multiple of the workers, at least one each.
        assert_eq!(per_worker(20_000, 2, 15), 7);
        assert_eq!(per_worker(20_000, 4, 1), 1);
        // Above what the open files allow: the files win.
        assert_eq!(per_worker(20_000, 2, 1_000_000), 9_872);
    }

    #[test]
    fn the_start_line_names_the_mark_and_what_holds_from_it() {
        assert_eq!(
            caps_text(&ConnectionCaps::for_budget(16, 1024, 0)),
            "8 per client IP (IPv6: /64), any number per block (IPv4 /24, IPv6 /48); \
             from 12 open: idle connections kept 1 s, 1 per client IP"
        );
        // No address cap: no share, the short keep-alive still.
        assert_eq!(
            caps_text(&ConnectionCaps::for_budget(16, 0, 4)),
            "any number per client IP (IPv6: /64), 4 per block (IPv4 /24, IPv6 /48); \
             from 12 open: idle connections kept 1 s"
        );
    }

    #[test]
    fn a_wildcard_bind_without_a_public_url_is_warned_about() {
        let warn = |addr: &str, url| wildcard_warning(addr.parse().unwrap(), url);
        assert!(warn("0.0.0.0:8080", None).is_some_and(|w| w.contains("--public-url")));
        assert!(warn("[::]:8080", None).is_some());
        assert!(warn("0.0.0.0:8080", Some("https://chat.example.com")).is_none());
        assert!(warn("127.0.0.1:8080", None).is_none());
    }
}
