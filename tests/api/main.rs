//! Black-box tests: each starts the real server (`helpers::spawn_app`: a temp
//! database, port 0) and talks to it with a real HTTP client and a real
//! WebSocket client.

mod helpers;

mod acsp_threads;
mod admin;
mod conformance13;
mod conformance15;
mod conformance16;
mod docs17;
mod errors;
mod event_log;
mod flood16;
mod flood17;
mod fuzz17;
mod h1enc20;
mod hardening_app;
mod hardening_net;
mod head;
mod hostile13;
mod hostile14;
mod hostile15;
mod http18;
mod idle18;
mod inspector;
mod mcp;
mod migrations;
mod multinode;
mod newcomer;
mod observability;
mod openapi;
mod operations;
mod pg_batch14;
mod pg_batch16;
mod probe19;
mod process;
mod rate_limits;
mod realtime;
mod registration;
mod rt19;
mod schema_parity;
mod sse;
mod thread_deletion;
mod thread_slices;
mod tidy14;
mod tidy15;
mod tidy16;
mod tidy17;
mod tidy18;
mod turn_decisions;
mod turn_taking;
mod webhooks;
mod wire19;
mod ws_close14;
mod ws_close15;
mod ws_close16;
