//! The size limit on frames a WebSocket client sends, enforced as soon as a
//! frame's header arrives. actix-ws refuses an oversized frame only once the
//! whole frame is buffered, so a client declaring a 1 GiB frame could make
//! the server hold whatever it sent for as long as the socket lived. This
//! wrapper around the request payload reads only frame headers (the bytes
//! pass through untouched) and fails the stream with
//! `PayloadError::Overflow` at the first header over the limit; the session
//! then closes the socket with 1009.
//!
//! After that refusal the stream does not end: the session lingers after
//! its 1009 (reads until the client answers, see `session.rs`), so the
//! wrapper goes on reading what the client sends, passing none of it on
//! (the frame decoder may hold part of a frame from before the refused
//! one): it follows the frames' headers, ends the stream at the client's
//! close frame, and reports each chunk it threw away as a [`Discarded`]
//! error, which the linger counts against its byte bound. The refused
//! frame's own payload (up to [`REFUSED_FREE`]) is not counted: a client
//! that sent one frame too big is still sending it when the 1009 reaches it.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::{dev, web, FromRequest, HttpRequest};
use bytes::Bytes;
use futures_util::{FutureExt, Stream};

use crate::error::{ApiError, ApiResult};

/// Largest frame payload a client may send (defined in domain).
pub use crate::domain::limits::MAX_FRAME_BYTES as MAX_FRAME;

/// How much of a refused frame's payload is read after the refusal without
/// counting against the linger's bound.
pub const REFUSED_FREE: u64 = 1024 * 1024;

/// A payload stream that fails at the first frame header declaring more
/// than `max` payload bytes, then discards the rest (see the module docs).
pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    /// The header of the frame being read, so far (at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame not yet seen.
    skip: u64,
    /// Of those, how many are the refused frame's, read without counting.
    free: u64,
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passing frames on.
    Open,
    /// A frame was refused: discarding what follows.
    Draining,
    /// The client's close frame (or the end of its stream) came.
    Ended,
}

/// What [`FrameLimit::scan`] found in a chunk.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Only frames within the limit (passing on) or, draining, the bytes
    /// to count.
    Fine(u64),
    /// A header over the limit: the chunk is refused.
    Refused,
    /// Draining: the client's close frame began.
    Closed,
}

/// A chunk the limit read and threw away after refusing a frame, with how
/// many of its bytes count against the linger's bound.
#[derive(Debug)]
pub struct Discarded(pub u64);

impl std::fmt::Display for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes discarded after a refused frame", self.0)
    }
}

impl std::error::Error for Discarded {}

impl<S> FrameLimit<S> {
    pub fn new(inner: S, max: usize) -> FrameLimit<S> {
        FrameLimit {
            inner,
            max: max as u64,
            head: [0; 14],
            head_len: 0,
            skip: 0,
            free: 0,
            mode: Mode::Open,
        }
    }

    /// Follows the frames through `chunk`. Open, it stops at a header over
    /// the limit, and from there on drains: counts what is not the refused
    /// frame's payload, and stops at the client's close frame.
    fn scan(&mut self, mut chunk: &[u8]) -> Scan {
        let mut counted = 0u64;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                let free = self.free.min(n as u64);
                self.free -= free;
                self.skip -= n as u64;
                if self.mode == Mode::Draining {
                    counted += n as u64 - free;
                }
                chunk = &chunk[n..];
                continue;
            }
            self.head[self.head_len] = chunk[0];
            self.head_len += 1;
            chunk = &chunk[1..];
            if self.mode == Mode::Draining {
                counted += 1;
            }
            if let Some(len) = self.declared_len() {
                self.head_len = 0;
                self.skip = len;
                match self.mode {
                    Mode::Open if len > self.max => {
                        self.mode = Mode::Draining;
                        self.free = len.min(REFUSED_FREE);
                        // The rest of the chunk: the client may have closed already.
                        if self.scan(chunk) == Scan::Closed {
                            self.mode = Mode::Ended;
                        }
                        return Scan::Refused;
                    }
                    Mode::Draining if self.head[0] & 0x0f == OP_CLOSE => return Scan::Closed,
                    _ => {}
                }
            }
        }
        Scan::Fine(counted)
    }

    /// The payload length, once the header is complete (RFC 6455 §5.2).
    fn declared_len(&self) -> Option<u64> {
        let head = &self.head[..self.head_len];
        let [_, second, rest @ ..] = head else {
            return None;
        };
        let (ext, short) = match second & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        if rest.len() < ext + mask {
            return None;
        }
        Some(match (short, ext) {
            (Some(n), _) => n,
            (None, 2) => u64::from(u16::from_be_bytes([rest[0], rest[1]])),
            (None, _) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&rest[..8]);
                u64::from_be_bytes(bytes)
            }
        })
    }
}

impl<S> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.mode == Mode::Ended {
            return Poll::Ready(None);
        }
        let chunk = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => chunk,
            Poll::Ready(Some(Err(_)) | None) if this.mode == Mode::Draining => {
                this.mode = Mode::Ended;
                return Poll::Ready(None);
            }
            other => return other,
        };
        let draining = this.mode == Mode::Draining;
        Poll::Ready(match this.scan(&chunk) {
            Scan::Fine(_) if !draining => Some(Ok(chunk)),
            Scan::Fine(counted) => Some(Err(PayloadError::Io(std::io::Error::other(Discarded(
                counted,
            ))))),
            Scan::Refused => Some(Err(PayloadError::Overflow)),
            Scan::Closed => {
                this.mode = Mode::Ended;
                None
            }
        })
    }
}

/// The opcode of a close frame.
const OP_CLOSE: u8 = 0x8;

/// `payload` behind the frame limit, as the `web::Payload` actix-ws takes.
pub fn limited(req: &HttpRequest, payload: web::Payload) -> ApiResult<web::Payload> {
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(FrameLimit::new(payload, MAX_FRAME));
    let mut stream = dev::Payload::Stream { payload: stream };
    // The extractor only takes the payload: it is ready at once and cannot fail.
    web::Payload::from_request(req, &mut stream)
        .now_or_never()
        .and_then(Result::ok)
        .ok_or_else(|| ApiError::Internal("the payload extractor did not take the stream".into()))
}

/// Whether a stream error is this limit's refusal (actix-ws wraps payload
/// errors in `ProtocolError::Io`) or actix-ws's own.
pub fn is_overflow(err: &actix_ws::ProtocolError) -> bool {
    match err {
        actix_ws::ProtocolError::Overflow => true,
        actix_ws::ProtocolError::Io(e) => matches!(
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<PayloadError>()),
            Some(PayloadError::Overflow)
        ),
        _ => false,
    }
}

/// The bytes counted of a chunk this limit discarded after refusing a
/// frame (the stream error it reports it as), or `None` for any other error.
pub fn discarded(err: &actix_ws::ProtocolError) -> Option<u64> {
    let actix_ws::ProtocolError::Io(e) = err else {
        return None;
    };
    match e.get_ref()?.downcast_ref::<PayloadError>()? {
        PayloadError::Io(inner) => Some(inner.get_ref()?.downcast_ref::<Discarded>()?.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header declaring `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len as u64);
        f.resize(f.len() + len, b'a');
        f
    }

    fn limit() -> FrameLimit<()> {
        FrameLimit::new((), 100)
    }

    #[test]
    fn frames_up_to_the_limit_pass_in_any_chunking() {
        let bytes = [frame(0), frame(5), frame(100), frame(125), frame(3)].concat();
        // frame(125) is over 100: stop before it.
        let ok: Vec<u8> = [frame(0), frame(5), frame(100), frame(3)].concat();
        for size in [1, 2, 3, 7, 13, ok.len()] {
            let mut l = limit();
            assert!(
                ok.chunks(size).all(|c| l.scan(c) == Scan::Fine(0)),
                "chunks of {size}"
            );
            assert_eq!((l.head_len, l.skip), (0, 0), "ends between frames");
        }
        let mut l = limit();
        assert!(!bytes.chunks(4).all(|c| l.scan(c) == Scan::Fine(0)));
    }

    #[test]
    fn a_header_over_the_limit_fails_before_its_payload_arrives() {
        for len in [101, 65_536, 1 << 30, u64::MAX >> 1] {
            let mut l = limit();
            assert_eq!(l.scan(&header(len)), Scan::Refused, "{len}");
        }
    }

    #[test]
    fn an_extended_length_split_across_chunks_is_read_whole() {
        let h = header(70_000);
        let mut l = FrameLimit::new((), 80_000);
        assert_eq!(l.scan(&h[..3]), Scan::Fine(0));
        assert_eq!(l.scan(&h[3..]), Scan::Fine(0));
        assert_eq!(l.skip, 70_000);
        let mut l = FrameLimit::new((), 60_000);
        assert_eq!(l.scan(&h[..5]), Scan::Fine(0));
        assert_eq!(l.scan(&h[5..]), Scan::Refused);
    }

    /// A masked client close frame.
    fn close() -> Vec<u8> {
        let mut f = frame(2);
        f[0] = 0x88;
        f
    }

    #[test]
    fn after_a_refusal_the_refused_payload_is_free_and_the_rest_counts_until_the_close() {
        let mut l = limit();
        let refused = frame(150);
        assert_eq!(l.scan(&refused[..20]), Scan::Refused);
        // The rest of the refused frame: read, not counted.
        assert_eq!(l.scan(&refused[20..]), Scan::Fine(0));
        // Frames after it count, whole (a 6-byte header, 10 bytes).
        assert_eq!(l.scan(&frame(10)), Scan::Fine(16));
        // Even one over the limit again.
        assert_eq!(l.scan(&frame(120)), Scan::Fine(126));
        assert_eq!(l.scan(&[frame(3), close()].concat()), Scan::Closed);
    }

    #[test]
    fn a_close_in_the_refused_chunk_ends_the_stream_after_the_refusal() {
        let mut l = limit();
        let bytes = [frame(0), frame(101), close()].concat();
        assert_eq!(l.scan(&bytes), Scan::Refused);
        assert_eq!(l.mode, Mode::Ended);
    }

    #[test]
    fn a_refused_frame_is_free_only_up_to_its_allowance() {
        let mut l = limit();
        let head = header(REFUSED_FREE + 500);
        assert_eq!(l.scan(&head), Scan::Refused);
        let payload = vec![b'a'; usize::try_from(REFUSED_FREE).unwrap() + 200];
        assert_eq!(l.scan(&payload), Scan::Fine(200));
    }
}
