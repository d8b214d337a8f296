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
