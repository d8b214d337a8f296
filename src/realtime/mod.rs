//! Realtime delivery: events, the hub that routes them to one actor per open
//! channel, single-use connect grants, the per-socket session loop, the
//! response body that writes a socket's frames, and revocation reaching
//! grants and sockets.
//!
//! A channel is `turn-taking-thread/{thread_id}` (every event of one thread)
//! or `agent/{aid}` (an agent's inbox: events of every thread it is in).

mod actor;
pub mod body;
pub mod event;
pub mod frame_limit;
pub mod grants;
mod hub;
mod queue;
pub mod revocation;
pub mod session;
mod stats;

pub use event::{Event, EventData};
pub use grants::{Grant, Grants};
pub use hub::{Hub, Membership, Outgoing, Subscription};
pub use revocation::Revocations;
pub use stats::RealtimeSnapshot;

/// The channel name of a thread.
pub fn thread_channel(thread_id: &str) -> String {
    format!("turn-taking-thread/{thread_id}")
}

/// The channel name of an agent's inbox.
pub fn agent_channel(aid: &str) -> String {
    format!("agent/{aid}")
}
