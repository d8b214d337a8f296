//! The WebSocket frame codec of the raw client: the server's frames
//! decoded (fragments reassembled, pings and the close picked out), and
//! the masked control frames a client sends back.

/// How a socket ended.
pub type Ended = String;

/// A client's control frame (payload at most 125 bytes), masked as a client must.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.extend_from_slice(&[0x80 | opcode, 0x80 | payload.len().min(125) as u8]);
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    frame
}

/// Decodes the server's frames for a client (the raw client while it
/// connects, then its receiver thread): whole messages, with fragments
/// reassembled, the pings to answer and the close.
#[derive(Default)]
pub struct FrameReader {
    /// A fragmented message being reassembled.
    partial: Vec<u8>,
    /// The last reassembled message, lent out until the next call.
    done: Vec<u8>,
}

/// A frame the client acts on.
pub enum Frame<'a> {
    Message(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>),
}

impl FrameReader {
    /// The first frame in `data` to act on and the bytes up to its end
    /// (fragments and pongs before it are taken in on the way); `None`, with
    /// the bytes taken, when no such frame is complete yet.
    pub fn next<'a>(&'a mut self, data: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        self.done.clear();
        let mut pos = 0;
        while let Some((header, len, fin, opcode)) = frame_header(&data[pos..]) {
            let payload = &data[pos + header..pos + header + len];
            pos += header + len;
            match opcode {
                0x1 | 0x2 if fin && self.partial.is_empty() => {
                    return (pos, Some(Frame::Message(payload)))
                }
                0x0..=0x2 => {
                    self.partial.extend_from_slice(payload);
                    if fin {
                        self.done = std::mem::take(&mut self.partial);
                        return (pos, Some(Frame::Message(&self.done)));
                    }
                }
                0x8 => {
                    let code = (len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (pos, Some(Frame::Close(code)));
                }
                0x9 => return (pos, Some(Frame::Ping(payload))),
                _ => {} // pong, reserved: ignored
            }
        }
        (pos, None)
    }
}

/// The close frame that answers the server's, and how the socket ended.
pub fn answer_close(code: Option<u16>) -> (Vec<u8>, Ended) {
    let reply = masked_frame(0x8, &code.unwrap_or(1000).to_be_bytes());
    (
        reply,
        code.map_or("close (no code)".into(), |c| format!("close {c}")),
    )
}

/// A complete frame at the start of `b`: (header length, payload length,
/// FIN, opcode); `None` until all of it has arrived.
fn frame_header(b: &[u8]) -> Option<(usize, usize, bool, u8)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (mut header, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize),
        127 => (
            10,
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, n as usize),
    };
    if masked {
        // Servers do not mask; such a frame is skipped unread.
        header += 4;
    }
    (b.len() >= header + len).then_some((header, len, b0 & 0x80 != 0, b0 & 0x0f))
}
