//! The size limit on frames a WebSocket client sends, enforced as soon as a
//! frame's header arrives. actix-ws refuses an oversized frame only once the
//! whole frame is buffered, so a client declaring a 1 GiB frame could make
//! the server hold whatever it sent for as long as the socket lived. This
//! wrapper around the request payload reads only frame headers (the bytes
//! pass through untouched) and fails the stream with
//! `PayloadError::Overflow` at the first header over the limit; the session
//! then closes the socket with 1009.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::{dev, web, FromRequest, HttpRequest};
use bytes::Bytes;
use futures_util::{FutureExt, Stream};

use crate::error::{ApiError, ApiResult};

/// Largest frame payload a client may send (defined in domain).
pub use crate::domain::limits::MAX_FRAME_BYTES as MAX_FRAME;

/// A payload stream that fails at the first frame header declaring more
/// than `max` payload bytes.
pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    /// The header of the frame being read, so far (at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame not yet seen.
    skip: u64,
    failed: bool,
}

impl<S> FrameLimit<S> {
    pub fn new(inner: S, max: usize) -> FrameLimit<S> {
        FrameLimit {
            inner,
            max: max as u64,
            head: [0; 14],
            head_len: 0,
            skip: 0,
            failed: false,
        }
    }

    /// Follows the frames through `chunk`; false at a header over the limit.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            self.head[self.head_len] = chunk[0];
            self.head_len += 1;
            chunk = &chunk[1..];
            if let Some(len) = self.declared_len() {
                if len > self.max {
                    return false;
                }
                self.skip = len;
                self.head_len = 0;
            }
        }
        true
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
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) if !this.scan(&chunk) => {
                this.failed = true;
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            other => other,
        }
    }
}

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
            assert!(ok.chunks(size).all(|c| l.scan(c)), "chunks of {size}");
            assert_eq!((l.head_len, l.skip), (0, 0), "ends between frames");
        }
        let mut l = limit();
        assert!(!bytes.chunks(4).all(|c| l.scan(c)));
    }

    #[test]
    fn a_header_over_the_limit_fails_before_its_payload_arrives() {
        for len in [101, 65_536, 1 << 30, u64::MAX >> 1] {
            let mut l = limit();
            assert!(!l.scan(&header(len)), "{len}");
        }
    }

    #[test]
    fn an_extended_length_split_across_chunks_is_read_whole() {
        let h = header(70_000);
        let mut l = FrameLimit::new((), 80_000);
        assert!(l.scan(&h[..3]) && l.scan(&h[3..]));
        assert_eq!(l.skip, 70_000);
        let mut l = FrameLimit::new((), 60_000);
        assert!(l.scan(&h[..5]));
        assert!(!l.scan(&h[5..]));
    }
}
