//! Realtime delivery, one consumer of the store's commit reports: the hub
//! that routes events to one actor per open channel, their frames,
//! single-use connect grants, the per-socket session loop, the response
//! body that writes a socket's frames, and revocation reaching grants and
//! sockets.
//!
//! A channel is `turn-taking-thread/{thread_id}` (every event of one thread)
//! or `agent/{aid}` (an agent's inbox: events of every thread it is in).

mod actor;
pub mod body;
mod fragments;
pub mod frame;
pub mod frame_limit;
pub mod grants;
mod hub;
mod queue;
pub mod revocation;
pub mod session;
mod stats;

pub use frame::{agent_channel, thread_channel};
pub use grants::{Grant, Grants};
pub use hub::{Hub, Incarnation, Membership, Subscription};
pub use queue::Outgoing;
pub use revocation::Revocations;
pub use stats::RealtimeSnapshot;

/// The `on_connect` hook's part for sockets and event streams: names the
/// connection's file descriptor, so that one dropped for taking nothing
/// (its write timeout, `http/realtime.rs`, `http/sse.rs`) is reset rather
/// than closed, and the kernel frees its unsent bytes at once; and so that
/// one that ends with bytes the kernel has not sent yet waits for them,
/// within the same bound (vendor/actix-http/PATCHES.md).
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    #[cfg(unix)]
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsRawFd;
        data.insert(actix_http::h1::ResetOnWriteTimeout(stream.as_raw_fd()));
    }
}
