//! The hub: a registry of channel actors, one per channel and worker thread
//! (`actor.rs`). Publishing looks the channel's actors up and hands each the
//! event; subscribing joins the actor of the caller's worker, spawning it for
//! that worker's first subscriber. It hears of committed events as the
//! store's [`CommitListener`], and of signals raised elsewhere through
//! [`Hub::publish`].
//!
//! A thread's id may name several threads in turn (`open_thread` creates a
//! thread under a deleted one's id), so a thread's subscriber says which one
//! it serves, and a thread's creation closes the subscribers of any earlier
//! one before the new thread's first event (see [`Hub::end_channel`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use super::actor::{self, ActorHandle, Command, Ending, Registry, Subscriber};
use super::queue::SocketQueue;
use super::revocation::{CLOSE_THREAD_DELETED, THREAD_DELETED};
use super::stats::{OpenSocket, RealtimeSnapshot};
use super::{body, frame};
use crate::events::{CommitListener, Committed, Event, Kind};

/// Which of the threads that have had one id a subscriber serves: the
/// thread's creation time in milliseconds (`created_at`, which has that
/// precision). A thread created again under a deleted one's id has its own
/// (it is created after the deletion), unless within the same millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation(i64);

impl Incarnation {
    /// Of a thread's `created_at` (RFC 3339, as the API writes times).
    pub fn of(created_at: &str) -> Option<Incarnation> {
        chrono::DateTime::parse_from_rfc3339(created_at)
            .ok()
            .map(|t| Incarnation(t.timestamp_millis()))
    }
}

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
            if event.kind == Kind::ThreadCreated {
                self.end_earlier_threads(event);
            }
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

    /// Closes the sockets and streams on `channel` that `ending` names, with
    /// its close frame, after the frames already queued for each; returns
    /// how many actors were told. Blocking (the watcher's and the writer's
    /// threads call it). A subscriber joining meanwhile either joined before
    /// (its Join is ahead in the actor's inbox) or reads the thread after
    /// the deletion and is refused.
    /// Ends a deleted thread's channel: closes its subscribers that joined
    /// before `before` (a [`Hub::mark`] taken once the deletion was seen)
    /// and serve another thread than `live`, the one that has the id now,
    /// if any (created again under it since), with the encoded `close`
    /// frame after the frames already queued for each. Returns how many
    /// actors were told. Blocking (the watcher's thread calls it). A
    /// subscriber joining meanwhile either joined before (its Join is ahead
    /// in the actor's inbox) or reads the thread after the deletion and is
    /// refused.
    pub fn end_channel(
        &self,
        channel: &str,
        close: bytes::Bytes,
        live: Option<Incarnation>,
        before: u64,
    ) -> usize {
        let ending = Ending {
            close,
            keep: live,
            before,
        };
        let actors = self.actors_of(channel);
        for handle in &actors {
            let _ = handle.tx.blocking_send(Command::End(ending.clone()));
        }
        actors.len()
    }

    /// A thread was created: the subscribers on its id that serve an
    /// earlier thread under that id (deleted since, perhaps before the
    /// watcher noticed) close as deleted now, before any event of the new
    /// thread reaches them.
    fn end_earlier_threads(&self, created: &Event) {
        let Some(created_as) = Incarnation::of(&created.created_at) else {
            log::warn!("thread {} created at an unreadable time", created.thread_id);
            return;
        };
        self.end_channel(
            &frame::thread_channel(&created.thread_id),
            body::close_frame(CLOSE_THREAD_DELETED, THREAD_DELETED),
            Some(created_as),
            u64::MAX,
        );
    }

    /// A point in the order of subscriptions: every subscriber that joins
    /// after it has an id of at least this.
    pub fn mark(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
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
    /// `serves` says, for a thread's channel, which of the threads that have
    /// had its id the subscriber serves.
    pub async fn subscribe(&self, channel: &str, serves: Option<Incarnation>) -> Subscription {
        // SeqCst: ordered with the watcher's `mark` (see `end_channel`).
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        loop {
            // Read after every await: the actor spawned below runs here.
            let worker = std::thread::current().id();
            let queue = Arc::new(SocketQueue::new(self.queue_capacity));
            let sub = Subscriber {
                id,
                queue: queue.clone(),
                serves,
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

    /// Counts a socket closed with 4008 outside its channel (a resume's
    /// replay the client took nothing of).
    pub(super) fn too_slow(&self) {
        self.registry.stats.too_slow();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::new_event_id;

    const CHANNEL: &str = "turn-taking-thread/t";
    const OLD: &str = "2026-01-01T00:00:00.000Z";
    const NEW: &str = "2026-01-02T00:00:00.000Z";

    fn serving(created_at: &str) -> Option<Incarnation> {
        Some(Incarnation::of(created_at).expect("expect: a time"))
    }

    fn event(kind: Kind, created_at: &str) -> Arc<Event> {
        Arc::new(Event {
            position: None,
            id: new_event_id(),
            kind,
            thread_id: "t".into(),
            seq: 0,
            participants: Vec::new(),
            data: serde_json::value::to_raw_value(&serde_json::json!({}))
                .expect("expect: {} is JSON"),
            created_at: created_at.into(),
        })
    }

    /// Everything a subscriber's queue holds up to its end: (event frames,
    /// whether it closed).
    async fn frames(sub: &Subscription) -> (usize, bool) {
        let (mut events, mut closed) = (0, false);
        let all = async {
            while let Some(batch) = std::future::poll_fn(|cx| sub.queue.poll_take(cx)).await {
                for out in batch {
                    closed |= out.closes;
                    events += usize::from(out.kind.is_some());
                }
                if closed {
                    break;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .expect("the queue ended");
        (events, closed)
    }

    /// Publishes a typing signal on the thread and returns once the actor
    /// has handed it to `witness` (so it has handled what was sent before).
    async fn signal(hub: &Hub, witness: &Subscription) -> (usize, bool) {
        hub.publish(Event::clone(&event(Kind::Typing, NEW))).await;
        let took = std::future::poll_fn(|cx| witness.queue.poll_take(cx))
            .await
            .expect("the witness is open");
        (took.len(), took.iter().any(|o| o.closes))
    }

    /// Runs a blocking hub call the way the watcher and writer threads do.
    async fn blocking<T: Send + 'static>(
        hub: &Arc<Hub>,
        f: impl FnOnce(&Hub) -> T + Send + 'static,
    ) -> T {
        let hub = Arc::clone(hub);
        tokio::task::spawn_blocking(move || f(&hub))
            .await
            .expect("expect: the call does not panic")
    }

    #[tokio::test]
    async fn a_deletion_closes_the_deleted_threads_subscribers_only() {
        let hub = Arc::new(Hub::new(8));
        let old = hub.subscribe(CHANNEL, serving(OLD)).await;
        let new = hub.subscribe(CHANNEL, serving(NEW)).await;
        let before = hub.mark();
        // Joined after the deletion was seen: its own read checked the thread.
        let late = hub.subscribe(CHANNEL, serving(OLD)).await;
        let close = body::close_frame(CLOSE_THREAD_DELETED, THREAD_DELETED);
        let told = blocking(&hub, move |h| {
            h.end_channel(CHANNEL, close, serving(NEW), before)
        })
        .await;
        assert_eq!(told, 1);
        assert_eq!(signal(&hub, &new).await, (1, false));
        assert_eq!(frames(&old).await, (0, true), "the old thread's subscriber");
        assert!(!signal(&hub, &late).await.1, "joined after the mark");
    }

    #[tokio::test]
    async fn a_deletion_with_no_thread_left_under_the_id_closes_every_earlier_subscriber() {
        let hub = Arc::new(Hub::new(8));
        let a = hub.subscribe(CHANNEL, serving(OLD)).await;
        let b = hub.subscribe(CHANNEL, serving(NEW)).await;
        let before = hub.mark();
        let close = body::close_frame(CLOSE_THREAD_DELETED, THREAD_DELETED);
        blocking(&hub, move |h| h.end_channel(CHANNEL, close, None, before)).await;
        assert_eq!(frames(&a).await, (0, true));
        assert_eq!(frames(&b).await, (0, true));
    }

    #[tokio::test]
    async fn a_thread_created_under_an_id_closes_its_earlier_threads_subscribers_first() {
        let hub = Arc::new(Hub::new(8));
        let old = hub.subscribe(CHANNEL, serving(OLD)).await;
        let new = hub.subscribe(CHANNEL, serving(NEW)).await;
        let created = event(Kind::ThreadCreated, NEW);
        let typing = event(Kind::Typing, NEW);
        blocking(&hub, move |h| h.publish_all(&[created, typing])).await;
        assert_eq!(frames(&old).await, (0, true), "heard the new thread");
        let took = std::future::poll_fn(|cx| new.queue.poll_take(cx))
            .await
            .expect("open");
        assert_eq!(took.len(), 1);
        assert!(!took[0].closes);
    }
}
