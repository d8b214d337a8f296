//! A socket's outgoing queue: the channel actor offers it live frames, the
//! session adds pings, pongs and the close, and the socket's body drains it.
//!
//! One small lock guards the frames, the body's waker and two flags, so a
//! delivery touches one queue and wakes the connection's task directly. An
//! idle socket's queue holds no buffer at all (10,000 idle sockets is a
//! target). The queue is bounded: a socket that cannot keep up is marked
//! lagged and gets no more frames (its body closes it with 4008 once the
//! queued ones are sent); nobody waits on it.
//!
//! The queue also carries the close handshake between body and session:
//! the body says when its close frame has gone to the connection, the
//! session reads the client's frames until the client answers (a lingering
//! close, see `session.rs`) and then says the body may end.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;

use crate::events::Kind;

/// One frame queued for a socket. Queues hold it by value: cloning it for
/// another subscriber counts one more reference to the shared frame bytes,
/// and the socket's body takes those bytes out without another count.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The thread seq of the event.
    pub seq: i64,
    /// Whether `seq` is a stored message's (resume skips those already sent).
    pub carries_message: bool,
    /// The socket's last frame (a close).
    pub closes: bool,
    /// The whole WebSocket frame, encoded once for every subscriber.
    pub frame: Bytes,
    /// The event's log position (`None`: a signal, or a control frame).
    pub position: Option<i64>,
    /// The event's kind (`None`: a control frame).
    pub kind: Option<Kind>,
}

impl Outgoing {
    /// An event's frame.
    pub fn event(seq: i64, carries_message: bool, frame: Bytes) -> Outgoing {
        Outgoing {
            seq,
            carries_message,
            closes: false,
            frame,
            position: None,
            kind: None,
        }
    }
}

pub struct SocketQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Told when the socket's body hands out its close frame or is dropped
    /// (the connection is gone), so the session hears of either without
    /// holding a channel to the body.
    news: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct State {
    pub frames: VecDeque<Outgoing>,
    /// The body's task, woken when frames arrive.
    waker: Option<Waker>,
    /// The queue overflowed: the actor dropped this socket.
    pub lagged: bool,
    /// Nothing more will be added.
    pub ended: bool,
    /// The body has handed its close frame to the connection.
    pub close_sent: bool,
    /// The body was dropped: the connection is gone.
    body_dropped: bool,
    /// The session is done with the socket: the body may end after its
    /// close frame.
    finished: bool,
}

/// What the body has told the session (see [`SocketQueue::body_news`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyNews {
    /// Its close frame went to the connection.
    CloseSent,
    /// It was dropped: the connection is gone.
    Gone,
}

/// What became of an offered frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the socket is now lagged and takes no more.
    Full,
    /// The socket is gone or closing.
    Ended,
}

impl SocketQueue {
    /// A queue of at most `capacity` live frames.
    pub fn new(capacity: usize) -> SocketQueue {
        SocketQueue {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            news: tokio::sync::Notify::new(),
        }
    }

    /// The socket's body was dropped: its connection is gone.
    pub(super) fn body_dropped(&self) {
        self.lock().body_dropped = true;
        // A stored permit: the session sees it even if not waiting yet.
        self.news.notify_one();
    }

    /// The body has handed its close frame to the connection (called with
    /// the state it drains, under the lock).
    pub(super) fn close_sent(&self, state: &mut State) {
        state.close_sent = true;
        self.news.notify_one();
    }

    /// Resolves once the body has sent its close frame or been dropped
    /// (whichever it has done, the gone body first).
    pub(super) async fn body_news(&self) -> BodyNews {
        loop {
            {
                let state = self.lock();
                if state.body_dropped {
                    return BodyNews::Gone;
                }
                if state.close_sent {
                    return BodyNews::CloseSent;
                }
            }
            self.news.notified().await;
        }
    }

    /// The session is done with the socket: the body ends once its close
    /// frame is out (or at once if it has none to send).
    pub(super) fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        wake(&state);
    }

    /// Whether the session is done with the socket; `waker` is woken when it is.
    pub(super) fn finished(&self, waker: &Waker) -> bool {
        self.drain(waker, |state| state.finished)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding this lock, and the state stays
        // consistent between statements anyway: carry on if one did.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a live frame (the channel actor).
    pub fn offer(&self, frame: Outgoing) -> Offer {
        let mut state = self.lock();
        if state.ended {
            return Offer::Ended;
        }
        if state.frames.len() >= self.capacity {
            state.lagged = true;
            state.ended = true;
            wake(&state);
            return Offer::Full;
        }
        state.frames.push_back(frame);
        wake(&state);
        Offer::Queued
    }

    /// Adds an encoded ping or pong (the session): dropped if the queue is
    /// full, as the client is then not reading anyway.
    pub fn control(&self, frame: Bytes) {
        let mut state = self.lock();
        if !state.ended && state.frames.len() < self.capacity {
            state.frames.push_back(Outgoing::event(0, false, frame));
            wake(&state);
        }
    }

    /// Adds the last frame (an encoded close), past the bound, and ends the
    /// queue.
    pub fn close(&self, frame: Bytes) {
        let mut state = self.lock();
        if !state.ended {
            let close = Outgoing {
                closes: true,
                ..Outgoing::event(0, false, frame)
            };
            state.frames.push_back(close);
            state.ended = true;
            wake(&state);
        }
    }

    /// Ends the queue without a close frame (the client is gone).
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        wake(&state);
    }

    /// Takes every queued frame (a server-sent-events stream draining it):
    /// ready with them, `None` once the queue has ended and is empty (its
    /// subscriber was dropped, lagged or closed), else pending with `cx`'s
    /// waker kept to be woken when something arrives.
    pub fn poll_take(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<Outgoing>>> {
        use std::task::Poll;
        self.drain(cx.waker(), |state| {
            if !state.frames.is_empty() {
                Poll::Ready(Some(state.frames.drain(..).collect()))
            } else if state.ended {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
    }

    /// Whether the actor dropped this subscriber for falling behind.
    pub fn lagged(&self) -> bool {
        self.lock().lagged
    }

    /// Runs `f` on the state (the body draining it); `waker` is kept to be
    /// woken when something arrives.
    pub(super) fn drain<T>(&self, waker: &Waker, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        match &state.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => state.waker = Some(waker.clone()),
        }
        f(&mut state)
    }
}

fn wake(state: &State) {
    if let Some(w) = &state.waker {
        w.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64) -> Outgoing {
        Outgoing::event(seq, true, Bytes::new())
    }

    #[test]
    fn a_full_queue_marks_the_socket_lagged_and_takes_nothing_more() {
        let q = SocketQueue::new(2);
        assert_eq!(q.offer(frame(1)), Offer::Queued);
        assert_eq!(q.offer(frame(2)), Offer::Queued);
        assert_eq!(q.offer(frame(3)), Offer::Full);
        assert_eq!(q.offer(frame(4)), Offer::Ended);
        let state = q.lock();
        assert!(state.lagged && state.ended);
        let seqs: Vec<i64> = state.frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn pings_are_dropped_when_full_but_a_close_always_fits() {
        let q = SocketQueue::new(1);
        q.offer(frame(1));
        q.control(Bytes::new());
        q.close(Bytes::new());
        q.close(Bytes::new());
        let state = q.lock();
        assert_eq!(state.frames.len(), 2);
        assert!(state.ended && !state.lagged);
    }
}
