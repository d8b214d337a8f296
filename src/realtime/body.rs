//! What a socket sends, as the body of its `101` response.
//!
//! The connection's own task polls this body and reads the frames straight
//! from the socket's queue (`queue.rs`): live frames come from the channel
//! actor already encoded (once per event, shared by every subscriber). What
//! must precede them (`connection.ready`, a resume's replay) comes from the
//! session task on a small control channel first. No task sits between the
//! actor and the socket, so a delivery costs one queue push, one wake-up and
//! the write itself.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::queue::SocketQueue;

/// Close code for a subscriber that could not keep up.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code when the server goes away (shutdown).
pub const CLOSE_AWAY: u16 = 1001;

/// Most bytes handed to the connection in one chunk.
const MAX_CHUNK: usize = 64 * 1024;

/// What the session task asks the body to send.
pub enum Control {
    /// An encoded frame, sent as it is.
    Frame(Bytes),
    /// The replay is done: live frames follow, skipping stored messages up
    /// to this seq (the client already has them).
    Live { skip_upto: i64 },
}

/// The `101` response's body. Ends when the session task is done after a
/// close frame (it reads the client's frames until the client answers the
/// close, see `session.rs`), or without one when the session task is gone.
pub struct SocketBody {
    /// Until `Control::Live`: what precedes live frames. Dropped then (the
    /// session drops its end too), so an idle socket holds no channel: its
    /// buffer was ~1.5 KiB of every socket's memory.
    control: Option<mpsc::Receiver<Control>>,
    /// From `Control::Live` on: live frames, pings, pongs and the close.
    queue: Arc<SocketQueue>,
    live_on: bool,
    skip_upto: i64,
    /// The close frame is out: the body ends when the session is done.
    closing: bool,
    done: bool,
}

impl SocketBody {
    pub fn new(control: mpsc::Receiver<Control>, queue: Arc<SocketQueue>) -> SocketBody {
        SocketBody {
            control: Some(control),
            queue,
            live_on: false,
            skip_upto: 0,
            closing: false,
            done: false,
        }
    }
}

impl MessageBody for SocketBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.closing {
            // Ending the body lets the connection close the TCP connection:
            // not before the session has read what the client sent after
            // the close, or the kernel resets the connection on that unread
            // input and the client loses what it has not read yet, the
            // close frame included.
            if this.queue.finished(cx.waker()) {
                this.done = true;
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
        let mut chunk = Chunk::default();
        while !this.live_on && chunk.len < MAX_CHUNK {
            let Some(control) = this.control.as_mut() else {
                break;
            };
            match control.poll_recv(cx) {
                Poll::Ready(Some(Control::Frame(frame))) => chunk.push(frame),
                Poll::Ready(Some(Control::Live { skip_upto })) => {
                    this.live_on = true;
                    this.skip_upto = skip_upto;
                    this.control = None;
                }
                // The session stopped during its replay: it gave up on a
                // client that did not read, could not read the thread, was
                // sent a frame too big or closed by the client (its close
                // is at the end of the queue; live frames before it would
                // leave a gap), or the connection is going away.
                Poll::Ready(None) => {
                    this.control = None;
                    let queue = &this.queue;
                    let close = queue.drain(cx.waker(), |state| {
                        let frame = match state.frames.back() {
                            Some(out) if out.closes => state.frames.pop_back()?.frame,
                            // The live queue overflowed first.
                            _ if state.lagged => close_frame(CLOSE_TOO_SLOW, TOO_SLOW),
                            _ => return None,
                        };
                        state.frames.clear();
                        queue.close_sent(state);
                        Some(frame)
                    });
                    match close {
                        Some(frame) => {
                            chunk.push(frame);
                            this.closing = true;
                        }
                        None => this.done = true,
                    }
                    return chunk.into_poll(this.done);
                }
                Poll::Pending => break,
            }
        }
        if this.live_on {
            let skip_upto = this.skip_upto;
            let queue = &this.queue;
            let end = queue.drain(cx.waker(), |state| {
                while chunk.len < MAX_CHUNK {
                    let Some(out) = state.frames.pop_front() else {
                        break;
                    };
                    if out.carries_message && out.seq <= skip_upto {
                        continue;
                    }
                    chunk.push(out.frame);
                    if out.closes {
                        queue.close_sent(state);
                        return End::Closing;
                    }
                }
                if state.frames.is_empty() && state.ended {
                    // Dropped by the actor for a full queue: what was queued
                    // has now gone out, so say why it stops here.
                    if state.lagged {
                        chunk.push(close_frame(CLOSE_TOO_SLOW, TOO_SLOW));
                        queue.close_sent(state);
                        return End::Closing;
                    }
                    // Ended by the session without a close: the client is gone.
                    return End::Done;
                }
                End::Open
            });
            match end {
                End::Open => {}
                End::Closing => this.closing = true,
                End::Done => this.done = true,
            }
        }
        chunk.into_poll(this.done)
    }
}

/// Where the live queue left the body.
enum End {
    Open,
    /// Its close frame is in this chunk.
    Closing,
    /// It ended without a close frame.
    Done,
}

impl Drop for SocketBody {
    fn drop(&mut self) {
        self.queue.body_dropped();
    }
}

pub(super) const TOO_SLOW: &str = "too slow: resume with after=<last seq>";

/// Frames gathered for one poll: a lone frame is handed on as it is (shared,
/// not copied); several are copied into one buffer.
#[derive(Default)]
struct Chunk {
    one: Option<Bytes>,
    many: BytesMut,
    len: usize,
}

impl Chunk {
    fn push(&mut self, frame: Bytes) {
        self.len += frame.len();
        match self.one.take() {
            None if self.many.is_empty() => self.one = Some(frame),
            None => self.many.extend_from_slice(&frame),
            Some(first) => {
                self.many.reserve(first.len() + frame.len());
                self.many.extend_from_slice(&first);
                self.many.extend_from_slice(&frame);
            }
        }
    }

    /// Ready with the frames; without any, the end if `done`, or pending
    /// (the queues polled have registered the waker).
    fn into_poll(self, done: bool) -> Poll<Option<Result<Bytes, Infallible>>> {
        match self.one {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None if !self.many.is_empty() => Poll::Ready(Some(Ok(self.many.freeze()))),
            None if done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A server-to-client text frame (servers do not mask).
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(OP_TEXT, payload)
}

/// A ping with an empty payload.
pub fn ping_frame() -> Bytes {
    frame(OP_PING, b"")
}

/// The pong answering a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OP_PONG, payload)
}

/// A close frame with `code` and a reason (cut to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OP_CLOSE, &payload)
}

/// The payload of a frame built by [`frame`] (a server frame: no mask), as
/// a view of the same bytes. The SSE stream sends a live event's JSON this
/// way instead of encoding it again per channel.
pub fn payload_of(frame: &Bytes) -> Bytes {
    let header = match frame.get(1) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return Bytes::new(),
    };
    frame.slice(header.min(frame.len())..)
}

/// One final (FIN) frame: opcode, length in 7, 16 or 64 bits, payload.
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut buf = BytesMut::with_capacity(len + 10);
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(126);
        buf.put_u16(len);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    buf.extend_from_slice(payload);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::super::queue::Outgoing;
    use super::*;

    #[test]
    fn frame_lengths_use_the_shortest_form() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let mid = text_frame(&[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(mid.len(), 304);
        let big = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(&big[2..10], &70_000u64.to_be_bytes());
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn the_payload_of_a_frame_is_what_was_framed_at_every_length() {
        for len in [0, 2, 125, 126, 300, 65_535, 70_000] {
            let payload = vec![b'a'; len];
            assert_eq!(
                &payload_of(&text_frame(&payload))[..],
                &payload[..],
                "{len}"
            );
        }
    }

    /// A live body over a fresh queue of `capacity` frames.
    fn live_body(capacity: usize) -> (SocketBody, Arc<SocketQueue>) {
        let queue = Arc::new(SocketQueue::new(capacity));
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Control::Live { skip_upto: 0 }).unwrap();
        (SocketBody::new(rx, queue.clone()), queue)
    }

    fn poll(body: &mut SocketBody) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(body)
            .poll_next(&mut cx)
            .map(|item| item.map(|chunk| chunk.unwrap()))
    }

    #[test]
    fn after_its_close_frame_the_body_ends_only_once_the_session_is_done() {
        let (mut body, queue) = live_body(4);
        queue.close(close_frame(4001, "revoked"));
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("the close frame first");
        };
        assert_eq!(chunk, close_frame(4001, "revoked"));
        // The session is still reading what the client sends.
        assert!(poll(&mut body).is_pending());
        assert!(poll(&mut body).is_pending());
        queue.finish();
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[test]
    fn a_lagged_body_sends_4008_then_waits_for_the_session_too() {
        let (mut body, queue) = live_body(1);
        queue.offer(Outgoing::event(1, true, text_frame(b"1")));
        queue.offer(Outgoing::event(2, true, text_frame(b"2")));
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("the queued frame and the close");
        };
        assert_eq!(&chunk[..3], b"\x81\x011");
        assert_eq!(&chunk[3..], &close_frame(CLOSE_TOO_SLOW, TOO_SLOW)[..]);
        assert!(poll(&mut body).is_pending());
        queue.finish();
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[test]
    fn a_replay_given_up_sends_what_it_had_then_the_close_without_live_frames() {
        for lagged in [false, true] {
            let queue = Arc::new(SocketQueue::new(1));
            let (tx, rx) = mpsc::channel(4);
            let mut body = SocketBody::new(rx, queue.clone());
            tx.try_send(Control::Frame(text_frame(b"replayed")))
                .unwrap();
            // A live frame queued meanwhile (its seq is past the replay's).
            queue.offer(Outgoing::event(9, true, text_frame(b"live")));
            if lagged {
                queue.offer(Outgoing::event(10, true, text_frame(b"live")));
            } else {
                queue.close(close_frame(CLOSE_TOO_SLOW, TOO_SLOW));
            }
            drop(tx);
            let Poll::Ready(Some(chunk)) = poll(&mut body) else {
                panic!("the replayed frame and the close");
            };
            let replayed = text_frame(b"replayed");
            assert_eq!(&chunk[..replayed.len()], &replayed[..], "lagged: {lagged}");
            assert_eq!(
                &chunk[replayed.len()..],
                &close_frame(CLOSE_TOO_SLOW, TOO_SLOW)[..],
                "lagged: {lagged}"
            );
            assert!(poll(&mut body).is_pending());
            queue.finish();
            assert_eq!(poll(&mut body), Poll::Ready(None));
        }
    }

    #[test]
    fn a_body_ended_without_a_close_ends_at_once() {
        let (mut body, queue) = live_body(4);
        queue.end();
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[test]
    fn close_frames_carry_the_code_and_a_reason_that_fits() {
        assert_eq!(&close_frame(1001, "")[..], b"\x88\x02\x03\xe9");
        let long = close_frame(4008, &"é".repeat(100));
        assert_eq!(long[1] as usize, long.len() - 2);
        assert!(long.len() - 2 <= 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }
}
