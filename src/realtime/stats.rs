//! Counts of realtime delivery that an operator reads (`/metrics`): sockets
//! open, frames queued to sockets, sockets closed for being too slow. Plain
//! relaxed atomics, bumped on the delivery path and read at scrape time, so
//! this module knows nothing of how they are exported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The counters, shared by the hub, its actors and every open socket.
#[derive(Debug, Default)]
pub struct RealtimeStats {
    opened: AtomicU64,
    closed: AtomicU64,
    deliveries: AtomicU64,
    slow_closes: AtomicU64,
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeSnapshot {
    /// WebSockets subscribed to a channel right now.
    pub open_sockets: u64,
    /// Channels with running actors right now (one actor per worker with a
    /// subscriber to the channel).
    pub live_actors: u64,
    /// Frames queued to sockets since start.
    pub deliveries: u64,
    /// Sockets closed with 4008: dropped by their channel for a full queue,
    /// or given up on during a resume's replay.
    pub slow_closes: u64,
}

impl RealtimeStats {
    pub(super) fn delivered(&self, frames: u64) {
        self.deliveries.fetch_add(frames, Ordering::Relaxed);
    }

    pub(super) fn too_slow(&self) {
        self.slow_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a socket from now until the returned guard is dropped.
    pub(super) fn open(self: &Arc<Self>) -> OpenSocket {
        self.opened.fetch_add(1, Ordering::Relaxed);
        OpenSocket {
            stats: Arc::clone(self),
        }
    }

    pub(super) fn snapshot(&self, live_actors: u64) -> RealtimeSnapshot {
        // Two monotonic counters instead of one gauge: an increment and a
        // decrement racing can never show a negative count.
        let closed = self.closed.load(Ordering::Relaxed);
        let opened = self.opened.load(Ordering::Relaxed);
        RealtimeSnapshot {
            open_sockets: opened.saturating_sub(closed),
            live_actors,
            deliveries: self.deliveries.load(Ordering::Relaxed),
            slow_closes: self.slow_closes.load(Ordering::Relaxed),
        }
    }
}

/// One socket's place in the open count, given back on drop.
#[derive(Debug)]
pub struct OpenSocket {
    stats: Arc<RealtimeStats>,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_counts_as_open_until_its_guard_drops() {
        let stats = Arc::new(RealtimeStats::default());
        let a = stats.open();
        let b = stats.open();
        assert_eq!(stats.snapshot(0).open_sockets, 2);
        drop(a);
        assert_eq!(stats.snapshot(0).open_sockets, 1);
        drop(b);
        assert_eq!(stats.snapshot(0).open_sockets, 0);
    }
}
