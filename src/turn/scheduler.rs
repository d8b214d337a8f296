//! The scheduler: delivers paced reply parts when they fall due, and raises
//! `typing_without_sending` signals.
//!
//! Deliveries are driven by the database, not by memory: the loop asks the
//! store for the earliest pending part, sleeps until then (or until woken by
//! a new schedule), and delivers everything due in one write. A part stored
//! before a restart is therefore delivered after it, late rather than never.
//! Delivery runs here rather than in a thread's actor because replies must
//! be stored even when nobody is subscribed; the actor fans the events out.
//!
//! Two kinds of failure, kept apart. A part the database refuses (a
//! constraint, a trigger, a row that does not read back) fails alone, in
//! its own savepoint: the store counts it against the part, moves the part
//! (and its thread's later parts) back by a pause that doubles, and gives
//! it up after `store::turn::MAX_ATTEMPTS`; every other part goes out. A
//! fault of the store itself (the write fails as a whole, or the database
//! cannot even record the part's failure: a full disk, I/O errors, busy)
//! counts against no part: the loop backs off (1 s doubling to 30 s) and
//! tries everything again. On PostgreSQL a database that is away (the
//! write is a 503: down, restarting) is tried every second instead, so
//! parts due meanwhile go out within about a second of its return; logged
//! once per outage, and once when it is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::ThreadId;
use crate::error::ApiError;
use crate::events::{self, new_event_id, Event, Kind};
use crate::realtime::Hub;
use crate::store::db::{threads, turn};
use crate::store::model::{Incarnation, ThreadRecord};
use crate::store::Store;
use crate::turn::policy;

/// Longest sleep when nothing is pending (a safety net; wakes are explicit).
const IDLE_WAKE: Duration = Duration::from_secs(30);
/// Longest sleep on a shared store (several nodes on PostgreSQL): a wake
/// reaches only the node that scheduled, so the others look this often,
/// and parts of a node that died before delivering them go out about this
/// late rather than up to `IDLE_WAKE` late.
const SHARED_WAKE: Duration = Duration::from_secs(1);
/// How soon to look again after a round that delivered nothing while a
/// part was already due when it started: on PostgreSQL, something outside
/// the round holds that part, or the part before it in its thread, locked
/// (`store::pg::turn::in_order`). Looked at again at once, the loop spun
/// until the lock went.
const HELD_ELSEWHERE: Duration = Duration::from_millis(100);

/// The pause before the next delivery attempt after `failures` failed in a
/// row (at least one): 1 s, doubled each time, at most `IDLE_WAKE`.
fn retry_pause(failures: u32) -> Duration {
    let doubled = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(doubled).min(IDLE_WAKE)
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A handle on the running scheduler.
pub struct Scheduler {
    wake: Notify,
    /// (thread id, sender) → generation of its latest typing_start.
    typing: Mutex<HashMap<(String, String), u64>>,
    next_generation: std::sync::atomic::AtomicU64,
    typing_signal_after: Duration,
    /// The pause before a failed part's second attempt (see the module doc).
    retry_pause: Duration,
    hub: Arc<Hub>,
    store: Store,
}

impl Scheduler {
    /// Starts the delivery loop on the current runtime.
    pub fn start(
        store: Store,
        hub: Arc<Hub>,
        typing_signal_after: Duration,
        retry_pause: Duration,
    ) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            wake: Notify::new(),
            typing: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            typing_signal_after,
            retry_pause,
            hub,
            store,
        });
        tokio::spawn(scheduler.clone().run());
        scheduler
    }

    /// Tells the loop the schedule changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        let mut shutdown = self.hub.shutdown_signal();
        // Deliveries that failed in a row for a fault of the store: each
        // waits twice as long as the one before (1 s, 2 s, ... up to
        // `IDLE_WAKE`) before the next try, or until a wake, but at least
        // 1 s. A fault that lasts (a full disk) was retried as fast as the
        // writer went, an error line each time. (A part the store refuses
        // does not come here: it is retried alone, see the module doc.)
        let mut failures: u32 = 0;
        // The pause before the next try, after a failure.
        let mut pause = retry_pause(1);
        // On PostgreSQL, since when the database has been away (the
        // failures are 503s): tried again every second, whatever the count,
        // so parts due meanwhile go out within about a second of its return
        // (the pause grew to 30 s, parts that late); logged once, and once
        // when it is back, not at every try.
        let mut away_since: Option<std::time::Instant> = None;
        let retry_base_ms = i64::try_from(self.retry_pause.as_millis()).unwrap_or(i64::MAX);
        loop {
            let now = now_ms();
            let delivered = self
                .store
                .write(move |ctx| turn::deliver_due(ctx, now, retry_base_ms))
                .await
                .and_then(|d| match d.store_fault {
                    // What went out before the fault stands; the rest waits.
                    Some(fault) => Err(fault),
                    None => Ok(d),
                });
            let idle_round =
                matches!(&delivered, Ok(d) if d.delivered == 0 && d.failed_attempts == 0);
            match delivered {
                Ok(_) if failures > 0 => {
                    match away_since.take() {
                        Some(at) => log::warn!(
                            "delivering scheduled replies works again, after {failures} failed \
                             attempts over {:.1} s",
                            at.elapsed().as_secs_f64()
                        ),
                        None => log::warn!(
                            "delivering scheduled replies works again, after {failures} failed attempts"
                        ),
                    }
                    failures = 0;
                }
                Ok(_) => {}
                Err(e) if self.store.is_shared() && matches!(e, ApiError::Unavailable) => {
                    failures = failures.saturating_add(1);
                    pause = retry_pause(1);
                    if away_since.is_none() {
                        away_since = Some(std::time::Instant::now());
                        log::error!(
                            "delivering scheduled replies failed: {e}; trying again every second \
                             while the database is away (logged again once it works)"
                        );
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    pause = retry_pause(failures);
                    log::error!(
                        "delivering scheduled replies failed (attempt {failures}; next in {} s): {e}",
                        pause.as_secs()
                    );
                }
            }
            let next = self.store.read(turn::next_due_ms).await.unwrap_or(None);
            let idle = if self.store.is_shared() {
                SHARED_WAKE
            } else {
                IDLE_WAKE
            };
            let wait = match next {
                Some(at) if idle_round && at <= now => HELD_ELSEWHERE,
                Some(at) => Duration::from_millis((at - now_ms()).clamp(0, 30_000) as u64),
                None => idle,
            }
            .min(idle);
            if failures > 0 {
                // A new schedule's wake cuts the pause short (the fault may
                // be gone), but tries come at most once a second whatever
                // wakes the loop.
                let floor = tokio::time::Instant::now() + retry_pause(1);
                let woken = tokio::select! {
                    _ = tokio::time::sleep(wait.max(pause)) => false,
                    _ = self.wake.notified() => true,
                    _ = shutdown.wait_for(|stopping| *stopping) => return,
                };
                if woken {
                    tokio::select! {
                        _ = tokio::time::sleep_until(floor) => {}
                        _ = shutdown.wait_for(|stopping| *stopping) => return,
                    }
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// A `typing_start` from `sender` on `thread` (as it was read then):
    /// unless the sender sends a message (through any node: the database
    /// is asked) or starts typing again within the window, or the thread's
    /// social signals are off by then, signal it, to
    /// this node's sockets and (on PostgreSQL) the other nodes'. Nothing is
    /// signalled if the thread is gone by then, or is another thread opened
    /// since under the same id.
    pub fn typing_started(
        self: &Arc<Self>,
        thread_id: ThreadId,
        thread: &ThreadRecord,
        sender: String,
    ) {
        let seq = thread.view.message_count;
        let incarnation = Incarnation::of(thread);
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (thread_id.to_text(), sender);
        self.typing
            .lock()
            .expect("expect: the typing lock is never held across a panic")
            .insert(key.clone(), generation);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.typing_signal_after).await;
            let still = {
                let mut typing = me.typing.lock().expect("expect: never poisoned");
                let current = typing.get(&key) == Some(&generation);
                if current {
                    typing.remove(&key);
                }
                current
            };
            if !still {
                return;
            }
            let who = key.1.clone();
            let read = me
                .store
                .read(move |c| {
                    let Some(t) = threads::by_id(c, thread_id)?.filter(|t| incarnation.is(t))
                    else {
                        return Ok(None);
                    };
                    let spoke = turn::spoke_since(c, t.row_id, &who, seq)?;
                    Ok(Some((t, spoke)))
                })
                .await;
            let thread = match read {
                // Deleted (or replaced): nobody is left to tell.
                Ok(None) | Ok(Some((_, true))) => return,
                // Social signals turned off since (a re-open replaced the
                // integrations): the thread no longer asks for signals.
                Ok(Some((t, false))) if !policy::social_signals(&t) => return,
                Ok(Some((t, false))) => Some(t),
                Err(_) => None,
            };
            let (seq, participants) = thread.map_or((0, Vec::new()), |t| {
                (t.view.message_count, t.participant_aids())
            });
            let (thread_id, sender) = key;
            let event = Event {
                position: None,
                id: new_event_id(),
                kind: Kind::Signal,
                thread_id,
                seq,
                participants,
                data: events::data(&events::Signal {
                    signal: "typing_without_sending",
                    sender: &sender,
                }),
                created_at: crate::domain::now(),
            };
            if let Err(e) = me.store.share_signal(event.clone()).await {
                log::warn!("typing_without_sending not shared with the other nodes: {e}");
            }
            me.hub.publish(event).await;
        });
    }

    /// `sender` sent a message: any typing watch on it is satisfied.
    pub fn sender_spoke(&self, thread_id: ThreadId, sender: &str) {
        self.typing
            .lock()
            .expect("expect: the typing lock is never held across a panic")
            .remove(&(thread_id.to_text(), sender.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_pause_doubles_from_one_second_up_to_the_idle_wake() {
        let pauses: Vec<u64> = (1..=7).map(|n| retry_pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_pause(u32::MAX), IDLE_WAKE);
    }
}
