//! The channel actor: owns the channel's subscribers on one worker thread,
//! encodes each event's frame once and offers it to every subscriber's
//! bounded queue. A subscriber whose queue is full is dropped and flagged
//! (its socket closes with 4008); nobody waits on it. The actor exits when
//! its last subscriber leaves, or once told to end the channel (its thread
//! was deleted), after closing every subscriber of the deleted thread. A
//! thread's subscriber knows which thread it serves: `open_thread` may
//! create a thread under a deleted one's id, and a deletion must reach the
//! sockets of the thread it deleted, not those of its successor.
//!
//! A channel has one actor per worker thread that has a subscriber to it,
//! running on that worker: waking a connection's task from its own thread
//! is a push onto the worker's local queue, where a wake from another
//! thread takes the worker's shared queue lock and may wake the worker up,
//! and the workers offer a frame to their own sockets at the same time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use tokio::sync::{mpsc, oneshot};

use super::frame;
use super::hub::Incarnation;
use super::queue::{Offer, Outgoing, SocketQueue};
use super::stats::RealtimeStats;
use crate::events::Event;

/// The shared registry: channel name → its actors (one per worker thread
/// with a subscriber).
pub(super) struct Registry {
    pub actors: Mutex<HashMap<String, Vec<ActorHandle>>>,
    /// Channels with at least one actor.
    pub live: AtomicUsize,
    /// Deliveries and slow-consumer closes (read by `/metrics`).
    pub stats: Arc<RealtimeStats>,
}

/// Commands an actor takes.
pub(super) enum Command {
    /// Add a subscriber; the reply says it was added.
    Join(Subscriber, oneshot::Sender<()>),
    /// Remove the subscriber with this id.
    Leave(u64),
    /// Fan an event out.
    Publish(Arc<Event>),
    /// Close subscribers with an encoded close frame, after what is queued
    /// for each (the channel's thread was deleted).
    End(Ending),
}

/// Which subscribers an [`Command::End`] closes, and with what.
#[derive(Clone)]
pub(super) struct Ending {
    /// The encoded close frame.
    pub close: bytes::Bytes,
    /// Subscribers serving this incarnation of the thread stay: it is the
    /// one that exists now (`None`: none does).
    pub keep: Option<Incarnation>,
    /// Subscribers with this id or a later one stay: they joined after the
    /// deletion was seen, so their own read of the thread checked it.
    pub before: u64,
}

impl Ending {
    fn closes(&self, s: &Subscriber) -> bool {
        s.id < self.before && (self.keep.is_none() || s.serves != self.keep)
    }
}

/// A subscriber as the actor holds it.
pub(super) struct Subscriber {
    pub id: u64,
    pub queue: Arc<SocketQueue>,
    /// For a thread's channel, which of the threads that have had its id
    /// it serves; `None` for an agent's inbox.
    pub serves: Option<Incarnation>,
}

/// A cloneable handle on a running actor.
#[derive(Clone)]
pub(super) struct ActorHandle {
    pub tx: mpsc::Sender<Command>,
    /// The worker thread it runs on (its subscribers' sockets are served there).
    pub worker: ThreadId,
}

/// Commands that may wait for an actor.
const INBOX_DEPTH: usize = 1024;

struct Actor {
    channel: String,
    subscribers: Vec<Subscriber>,
    rx: mpsc::Receiver<Command>,
    registry: Arc<Registry>,
    me: mpsc::Sender<Command>,
}

/// Spawns the actor of `channel` on the current worker thread, with its
/// first subscriber. (A worker runs a current-thread runtime, so the task
/// stays on it.)
pub(super) fn spawn(channel: String, first: Subscriber, registry: Arc<Registry>) -> ActorHandle {
    let (tx, rx) = mpsc::channel(INBOX_DEPTH);
    let actor = Actor {
        channel,
        subscribers: vec![first],
        rx,
        registry,
        me: tx.clone(),
    };
    tokio::spawn(actor.run());
    ActorHandle {
        tx,
        worker: std::thread::current().id(),
    }
}

impl Actor {
    async fn run(mut self) {
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Command::Join(sub, reply) => {
                    self.subscribers.push(sub);
                    let _ = reply.send(());
                }
                Command::Leave(id) => self.subscribers.retain(|s| s.id != id),
                Command::Publish(event) => self.fan_out(&event),
                Command::End(ending) => self.subscribers.retain(|s| {
                    let closes = ending.closes(s);
                    if closes {
                        s.queue.close(ending.close.clone());
                    }
                    !closes
                }),
            }
            if self.subscribers.is_empty() && self.leave_registry() {
                break;
            }
        }
        // Dropping `rx` here drops any queued Join replies: those subscribers
        // retry and land on a fresh actor.
    }

    fn fan_out(&mut self, event: &Event) {
        // One encoded frame for everyone; each queue holds a reference to it.
        let out = Outgoing {
            position: event.position,
            kind: Some(event.kind),
            ..Outgoing::event(
                event.seq,
                event.kind.carries_message(),
                frame::event_frame(event, &self.channel),
            )
        };
        // A full queue marks its socket lagged (closed with 4008 once its
        // queued frames are out); either way a socket that takes no more
        // frames leaves the list.
        let mut delivered = 0;
        let stats = &self.registry.stats;
        self.subscribers
            .retain(|s| match s.queue.offer(out.clone()) {
                Offer::Queued => {
                    delivered += 1;
                    true
                }
                Offer::Full => {
                    stats.too_slow();
                    false
                }
                Offer::Ended => false,
            });
        stats.delivered(delivered);
    }

    /// Removes this actor from the registry if nothing is waiting for it.
    /// Returns whether it did (and so must stop).
    fn leave_registry(&mut self) -> bool {
        let mut actors = self
            .registry
            .actors
            .lock()
            .expect("expect: the registry lock is never held across a panic");
        // Commands already queued (a Join racing our exit) are served first.
        if !self.rx.is_empty() {
            return false;
        }
        if let Some(handles) = actors.get_mut(&self.channel) {
            handles.retain(|h| !h.tx.same_channel(&self.me));
            if handles.is_empty() {
                actors.remove(&self.channel);
                self.registry.live.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.rx.close();
        true
    }
}
