//! The hub: a registry of channel actors, one per channel and worker thread
//! (`actor.rs`). Publishing looks the channel's actors up and hands each the
//! event; subscribing joins the actor of the caller's worker, spawning it for
//! that worker's first subscriber. It hears of committed events as the
//! store's [`CommitListener`], and of signals raised elsewhere through
//! [`Hub::publish`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use super::actor::{self, ActorHandle, Command, Registry, Subscriber};
use super::frame;
use super::queue::SocketQueue;
use super::stats::{OpenSocket, RealtimeSnapshot};
use crate::events::{CommitListener, Committed, Event};

/// Routes events to channel actors. One per server.
pub struct Hub {
    registry: Arc<Registry>,
    next_id: AtomicU64,
    queue_capacity: usize,
    shutdown: watch::Sender<bool>,
}

/// A socket's membership of a channel: its queue (pointers to shared
/// frames), and the membership itself (leaving on drop).
pub struct Subscription {
    pub queue: Arc<SocketQueue>,
    pub membership: Membership,
}

/// Being in a channel: dropping it leaves.
pub struct Membership {
    id: u64,
    actor: mpsc::Sender<Command>,
    _open: OpenSocket,
}

impl Membership {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let actor = self.actor.clone();
        let id = self.id;
        if let Err(mpsc::error::TrySendError::Full(cmd)) = actor.try_send(Command::Leave(id)) {
            // The actor is busy; leave as soon as it has room. Dropped only
            // inside a socket's tasks, so a runtime is there to spawn on.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = actor.send(cmd).await;
                });
            }
        }
    }
}

impl Hub {
    /// A hub whose sockets queue at most `queue_capacity` unsent frames.
    pub fn new(queue_capacity: usize) -> Hub {
        Hub {
            registry: Arc::new(Registry {
                actors: Mutex::new(HashMap::new()),
                live: AtomicUsize::new(0),
                stats: Arc::default(),
            }),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            shutdown: watch::channel(false).0,
        }
    }

    /// Hands committed events to their channels' actors, in order. Called on
    /// the writer thread (blocking: an actor's inbox is never full for long,
    /// and waiting keeps every event, in order).
    fn publish_all(&self, events: &[Arc<Event>]) {
        for event in events {
            for channel in frame::channels(event) {
                for handle in self.actors_of(&channel) {
                    let _ = handle.tx.blocking_send(Command::Publish(event.clone()));
                }
            }
        }
    }

    /// Hands an event to its channels' actors from async code (signals
    /// raised outside a write, such as `typing_without_sending`).
    pub async fn publish(&self, event: Event) {
        let event = Arc::new(event);
        for channel in frame::channels(&event) {
            for handle in self.actors_of(&channel) {
                let _ = handle.tx.send(Command::Publish(event.clone())).await;
            }
        }
    }

    /// Closes every socket and stream on `channel` with the encoded `close`
    /// frame, after the frames already queued for each; returns how many
    /// actors were told. Blocking (the watcher's thread calls it). A
    /// subscriber joining meanwhile either joined before (its Join is ahead
    /// in the actor's inbox) or checks the thread after the deletion and is
    /// refused.
    pub fn end_channel(&self, channel: &str, close: bytes::Bytes) -> usize {
        let actors = self.actors_of(channel);
        for handle in &actors {
            let _ = handle.tx.blocking_send(Command::End(close.clone()));
        }
        actors.len()
    }

    /// The channel's actors (copied out: sending to them may wait, and the
    /// registry lock must not be held meanwhile).
    fn actors_of(&self, channel: &str) -> Vec<ActorHandle> {
        self.registry
            .actors
            .lock()
            .expect("expect: the registry lock is never held across a panic")
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    /// Joins `channel` through the actor of the calling worker thread; live
    /// events published from now on reach the returned subscription's queue.
    pub async fn subscribe(&self, channel: &str) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        loop {
            // Read after every await: the actor spawned below runs here.
            let worker = std::thread::current().id();
            let queue = Arc::new(SocketQueue::new(self.queue_capacity));
            let sub = Subscriber {
                id,
                queue: queue.clone(),
            };
            // Either spawn this worker's actor of the channel with this
            // subscriber in it, or take the live actor's handle and ask it to
            // add us.
            let existing = {
                let mut actors = self
                    .registry
                    .actors
                    .lock()
                    .expect("expect: the registry lock is never held across a panic");
                let mine = actors
                    .get(channel)
                    .and_then(|handles| handles.iter().find(|h| h.worker == worker));
                match mine {
                    Some(handle) => Some(handle.clone()),
                    None => {
                        let handle = actor::spawn(channel.to_owned(), sub, self.registry.clone());
                        let handles = actors.entry(channel.to_owned()).or_default();
                        if handles.is_empty() {
                            self.registry.live.fetch_add(1, Ordering::SeqCst);
                        }
                        handles.push(handle.clone());
                        let membership = Membership {
                            id,
                            actor: handle.tx,
                            _open: self.registry.stats.open(),
                        };
                        return Subscription { queue, membership };
                    }
                }
            };
            let handle = existing.expect("expect: set in the other branch's absence");
            let (reply_tx, reply_rx) = oneshot::channel();
            let joined = handle.tx.send(Command::Join(sub, reply_tx)).await.is_ok()
                && reply_rx.await.is_ok();
            if joined {
                let membership = Membership {
                    id,
                    actor: handle.tx,
                    _open: self.registry.stats.open(),
                };
                return Subscription { queue, membership };
            }
            // The actor was exiting (its last subscriber had just left); it
            // has removed itself from the registry, so the next try spawns a
            // fresh one.
            tokio::task::yield_now().await;
        }
    }

    /// How many channels have running actors (an operator and tests read
    /// this; a channel with subscribers on several workers has an actor on
    /// each, counted once).
    pub fn live_actors(&self) -> usize {
        self.registry.live.load(Ordering::SeqCst)
    }

    /// Sockets, actors, deliveries and slow-consumer closes right now (metrics).
    pub fn snapshot(&self) -> RealtimeSnapshot {
        self.registry.stats.snapshot(self.live_actors() as u64)
    }

    /// Tells every socket to close with 1001.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

impl CommitListener for Hub {
    fn committed(&self, batch: Committed<'_>) {
        self.publish_all(batch.events);
    }
}
