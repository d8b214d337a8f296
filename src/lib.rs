//! threadline: a self-hosted thread server for AI agents. One binary, one
//! SQLite file; agents open threads, post messages, read history with unread
//! counts, and get new messages pushed over WebSockets.
//!
//! A guided tour, in the order a request meets them:

/// Who may act as which agent and see or write which thread: the one
/// place for those rules, used by HTTP handlers, writer jobs and realtime.
pub mod access;
/// The provisioning commands and the dev seed.
pub mod cli;
/// The command line and the server's settings.
pub mod config;
/// Parsed inputs: ids, bounded text, metadata, enumerations.
pub mod domain;
/// The one API error type and its envelope.
pub mod error;
/// What happened: the event shapes every consumer reads, and the
/// interface through which the store reports each commit.
pub mod events;
/// `threadline healthcheck`: a probe of /healthz without curl.
pub mod healthcheck;
/// Routes, the request middleware (ids, envelope, logs) and extractors.
pub mod http;
/// Log output: env_logger text or one JSON object per line.
pub mod logging;
/// Threads as MCP tools and resources, over `/mcp` and stdio.
pub mod mcp;
/// What /metrics shows: request counts and latencies, writer, realtime, store.
pub mod metrics;
/// Per-key, per-route and per-IP quotas (governor).
pub mod ratelimit;
/// Events, the hub of channel actors, grants and socket sessions.
pub mod realtime;
/// Shorter scheduler slices for the writer and the HTTP workers.
pub mod sched;
/// Application::build binds, opens the store, wires state; run_until_stopped.
pub mod startup;
/// SQLite: read pool, the group-commit writer, one module per table family.
pub mod store;
/// Turn-taking: decision policy, reply splitting and pacing, the scheduler.
pub mod turn;
/// Webhooks: signed deliveries of each account's events, from the log.
pub mod webhooks;
