use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io, mem, net,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use actix_codec::{Framed, FramedParts};
use actix_service::Service;
use bitflags::bitflags;
use bytes::{Buf, BytesMut};
use futures_core::ready;
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{sleep, sleep_until, Sleep},
};
use tokio_util::codec::{Decoder as _, Encoder as _};
use tracing::{error, trace};

use super::{
    codec::{AnswerTo, Codec},
    decoder::MAX_BUFFER_SIZE,
    payload::{Payload, PayloadSender, PayloadStatus},
    timer::TimerState,
    Message, MessageType,
};
use crate::{
    body::{BodySize, BoxBody, MessageBody},
    config::ServiceConfig,
    error::{DispatchError, ParseError, PayloadError},
    service::HttpFlow,
    ConnectionType, Error, Extensions, HttpMessage, OnConnectData, Request, Response, StatusCode,
};

const LW_BUFFER_SIZE: usize = 1024;
const HW_BUFFER_SIZE: usize = 1024 * 8;
const MAX_PIPELINED_MESSAGES: usize = 16;

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The most bytes of answers the client has not taken yet, after which no more of its
/// requests are read (threadline patch, see PATCHES.md). One answer may take it past this.
const MAX_WRITE_BUF_PENDING: usize = 128 * 1024;

/// Write buffer capacity at which we reallocate it after flushing.
const WRITE_BUFFER_RETENTION_LIMIT: usize = 1024 * 128;

// threadline patch (see vendor/actix-http/PATCHES.md): once a connection has
// switched protocols (an upgrade answer with a streamed body, e.g. a
// WebSocket), it is long-lived and mostly idle, so it reads into and writes
// from small buffers instead of holding 2 x 8 KiB for its whole life.
const LEAN_LW_BUFFER_SIZE: usize = 256;
const LEAN_HW_BUFFER_SIZE: usize = 1024;

/// threadline patch (see vendor/actix-http/PATCHES.md): put into the
/// extensions of an answer with a streamed body (a WebSocket's `101`, a
/// `text/event-stream`), it bounds how long the connection may hold bytes
/// its peer does not take. Once the write buffer has waited this long
/// without the peer taking a single byte, the connection is dropped (its
/// task ends with an I/O error, `TimedOut`). Upstream has no write timeout:
/// a client that stops reading, and whose TCP stack keeps acknowledging
/// with a zero window, holds its connection, buffers and file descriptor
/// forever. On Linux, with [`ResetOnWriteTimeout`] in the connection's
/// data, the bound also holds at its close for the bytes already handed
/// to the kernel ([`CloseDrain`]). Once an answer has set it, it holds for
/// the rest of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamWriteTimeout(pub std::time::Duration);

/// threadline patch (see vendor/actix-http/PATCHES.md): put into a
/// connection's on-connect data (`HttpServer::on_connect`), its socket's
/// file descriptor. A connection dropped by its [`StreamWriteTimeout`] is
/// then reset (`SO_LINGER` 0) instead of closed: closed, the kernel keeps
/// its unsent bytes in an orphaned socket for as long as the peer goes on
/// acknowledging with a zero window (measured: 1.5 MB per connection, held
/// until the client went away). On Linux it also lets the dispatcher see
/// what the kernel still has to send when the connection ends.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetOnWriteTimeout(pub std::os::fd::RawFd);

/// threadline patch (see vendor/actix-http/PATCHES.md): whether the server
/// is short of connection slots, shared by all its connections. While it
/// is, a connection idle between requests is kept open for
/// [`KeepAlivePressure::short_keep_alive`] instead of the configured
/// keep-alive, so that slots held idle come back within seconds: one that
/// goes idle then is closed once it has been idle that long, and one idle
/// for longer already when the pressure starts is closed at once (see
/// [`KeepAlivePressure::reclaim_idle`]). Requests in flight, event streams
/// and upgraded connections have no keep-alive timer, and are not touched.
#[derive(Debug)]
pub struct KeepAlivePressure {
    under_pressure: std::sync::atomic::AtomicBool,
    short_keep_alive: std::time::Duration,
    /// Waited on by the connections idle for longer than the short
    /// keep-alive (a list of their wakers, each entry in its connection's
    /// own allocation); notified when the pressure starts.
    reclaim: std::sync::Arc<tokio::sync::Notify>,
}

impl KeepAlivePressure {
    /// Not under pressure; idle connections get `short_keep_alive` once it is.
    pub fn new(short_keep_alive: std::time::Duration) -> Self {
        KeepAlivePressure {
            under_pressure: std::sync::atomic::AtomicBool::new(false),
            short_keep_alive,
            reclaim: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// One atomic load (relaxed: a connection that goes idle just as the
    /// pressure starts or ends may get the other keep-alive).
    #[inline]
    pub fn under_pressure(&self) -> bool {
        self.under_pressure
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the state (stored only when it changes, so that the idle
    /// connections' loads do not miss their cache on every connect).
    /// Returns whether the pressure has just started: the caller then calls
    /// [`KeepAlivePressure::reclaim_idle`] (outside its own locks).
    #[must_use = "a pressure that starts calls for reclaim_idle"]
    pub fn set(&self, under_pressure: bool) -> bool {
        if self.under_pressure() == under_pressure {
            return false;
        }
        self.under_pressure
            .store(under_pressure, std::sync::atomic::Ordering::Relaxed);
        under_pressure
    }

    /// Wakes every connection idle for longer than the short keep-alive,
    /// which then closes (call it after [`KeepAlivePressure::set`] has
    /// started the pressure). One that went idle more recently closes
    /// once it has been idle for the short keep-alive.
    pub fn reclaim_idle(&self) {
        self.reclaim.notify_waiters();
    }

    /// The keep-alive an idle connection gets under pressure.
    pub fn short_keep_alive(&self) -> std::time::Duration {
        self.short_keep_alive
    }
}

/// threadline patch (see vendor/actix-http/PATCHES.md): put into a
/// connection's on-connect data (`HttpServer::on_connect`), the
/// connection's timeouts where they differ from the server's. The
/// dispatcher takes it out of the data when it starts (it keeps the
/// pressure, 8 bytes).
#[derive(Debug, Clone)]
pub struct ConnectionTimeouts {
    /// The server's connection pressure: see [`KeepAlivePressure`].
    pub pressure: std::sync::Arc<KeepAlivePressure>,
    /// The time for the first request's head, instead of the server's
    /// `client_request_timeout` (a connection the server will refuse
    /// anyway need not hold its slot for long); `None`: the server's. A
    /// head that does not arrive in time is answered `408` and the
    /// connection closed, as with the server's timeout.
    pub head_timeout: Option<std::time::Duration>,
}

/// Sets `SO_LINGER` 0 on `fd`, so that closing it resets the connection
/// and frees its buffers at once.
#[cfg(unix)]
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's own socket (its on-connect data names
    // it), still open: the dispatcher owns the stream and drops it only
    // after the write timeout returns. `linger` outlives the call.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Bytes in `fd`'s send queue not yet sent (`SIOCOUTQNSD`): held back by
/// the peer's window (or congestion), as against sent and awaiting their
/// acknowledgement. `None` if the kernel does not say.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unsent_bytes(fd: std::os::fd::RawFd) -> Option<usize> {
    const SIOCOUTQNSD: libc::c_ulong = 0x894B;
    let mut unsent: libc::c_int = 0;
    // SAFETY: `fd` is the connection's own socket (its on-connect data names
    // it), open while the dispatcher holds the stream; the ioctl writes one
    // `c_int` to `unsent`, which outlives the call.
    let done = unsafe { libc::ioctl(fd, SIOCOUTQNSD as _, &mut unsent as *mut libc::c_int) };
    if done == 0 {
        usize::try_from(unsent).ok()
    } else {
        None
    }
}

/// threadline patch (see vendor/actix-http/PATCHES.md): a connection whose
/// answer had a [`StreamWriteTimeout`] and that ends with bytes its peer has
/// not taken yet is not closed at once. Closed, the kernel would keep them
/// in an orphaned socket for as long as the peer answers its window probes
/// (minutes), out of reach of any timeout. The dispatcher holds the socket
/// instead, looking at what is left to send now and then, and closes it
/// once everything has gone out, or resets it once the peer has taken
/// nothing for the write timeout.
struct CloseDrain {
    /// What the dispatcher ended with, returned once the drain is over.
    result: Option<Result<(), DispatchError>>,
    /// Unsent bytes at the last look.
    unsent: usize,
    /// When to give up if nothing more is taken.
    deadline: tokio::time::Instant,
    /// Time to the next look (10 ms, doubling up to 1 s).
    interval: std::time::Duration,
    timer: Pin<Box<Sleep>>,
    /// Bytes the peer sent during the drain, read and dropped.
    discarded: usize,
    /// Set once everything has gone out: the end of the grace in which
    /// the peer may still be sending (see [`DRAIN_GRACE`]).
    grace_until: Option<tokio::time::Instant>,
}

/// threadline patch (PATCHES.md): once a [`CloseDrain`] has sent
/// everything, the socket stays open this long more (or until the peer's
/// EOF), its input read and dropped. The peer has the last bytes in its
/// receive buffer, not yet read: a client that writes as it reads them (a
/// ping per frame, its answer to the close) would otherwise write to a
/// closed socket, and the kernel's reset makes that client's next write,
/// or its read, fail before it has read the close.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// threadline patch (PATCHES.md): what a [`CloseDrain`] reads and drops in
/// all before it closes regardless (a peer cannot hold the socket open by
/// streaming at it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const DRAIN_DISCARD_MAX: usize = 64 * 1024;

/// threadline patch (PATCHES.md): reads and drops what `fd` has received,
/// without waiting, at most `room` bytes. `Some(n)`: `n` bytes dropped (0
/// when nothing was there); `None`: the peer has closed its side (EOF) or
/// the socket failed.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn drop_input(fd: std::os::fd::RawFd, room: usize) -> Option<usize> {
    let mut scratch = [0u8; 4096];
    let mut dropped = 0;
    while dropped < room {
        let want = scratch.len().min(room - dropped);
        // SAFETY: `fd` is the connection's own socket (as for
        // `unsent_bytes`); `recv` writes at most `want` bytes into `scratch`,
        // which outlives the call.
        let got = unsafe {
            libc::recv(
                fd,
                scratch.as_mut_ptr().cast(),
                want,
                libc::MSG_DONTWAIT,
            )
        };
        match got {
            0 => return None,
            n if n > 0 => dropped += n as usize,
            _ => {
                let err = std::io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Some(dropped),
                    _ => None,
                };
            }
        }
    }
    Some(dropped)
}

bitflags! {
    #[derive(Debug, Clone, Copy)]
    pub struct Flags: u8 {
        /// Set when stream is read for first time.
        const STARTED          = 0b0000_0001;

        /// Set when full request-response cycle has occurred.
        const FINISHED         = 0b0000_0010;

        /// Set if connection is in keep-alive (inactive) state.
        const KEEP_ALIVE       = 0b0000_0100;

        /// Set if in shutdown procedure.
        const SHUTDOWN         = 0b0000_1000;

        /// Set if read-half is disconnected.
        const READ_DISCONNECT  = 0b0001_0000;

        /// Set if write-half is disconnected.
        const WRITE_DISCONNECT = 0b0010_0000;

        /// Set while gracefully closing a connection after an early response.
        const LINGER           = 0b0100_0000;

        /// Set when the server is draining this connection during graceful shutdown.
        ///
        /// Unlike [`SHUTDOWN`](Self::SHUTDOWN), this state continues polling the current request
        /// and response. It prevents queued requests from starting and transitions to `SHUTDOWN`
        /// after the current response finishes. [`LINGER`](Self::LINGER) remains separate and is
        /// used only to close cleanly after a response to an unread request payload.
        const DRAINING         = 0b1000_0000;
    }
}

// there's 2 versions of Dispatcher state because of:
// https://github.com/taiki-e/pin-project-lite/issues/3
//
// tl;dr: pin-project-lite doesn't play well with other attribute macros

#[cfg(not(test))]
pin_project! {
    /// Dispatcher for HTTP/1.1 protocol
    pub struct Dispatcher<T, S, B, X, U>
    where
        S: Service<Request>,
        S::Error: Into<Response<BoxBody>>,

        B: MessageBody,

        X: Service<Request, Response = Request>,
        X::Error: Into<Response<BoxBody>>,

        U: Service<(Request, Framed<T, Codec>), Response = ()>,
        U::Error: fmt::Display,
    {
        #[pin]
        inner: DispatcherState<T, S, B, X, U>,
    }
}

#[cfg(test)]
pin_project! {
    /// Dispatcher for HTTP/1.1 protocol
    pub struct Dispatcher<T, S, B, X, U>
    where
        S: Service<Request>,
        S::Error: Into<Response<BoxBody>>,

        B: MessageBody,

        X: Service<Request, Response = Request>,
        X::Error: Into<Response<BoxBody>>,

        U: Service<(Request, Framed<T, Codec>), Response = ()>,
        U::Error: fmt::Display,
    {
        #[pin]
        pub(super) inner: DispatcherState<T, S, B, X, U>,

        // used in tests
        pub(super) poll_count: u64,
    }
}

pin_project! {
    #[project = DispatcherStateProj]
    pub(super) enum DispatcherState<T, S, B, X, U>
    where
        S: Service<Request>,
        S::Error: Into<Response<BoxBody>>,

        B: MessageBody,

        X: Service<Request, Response = Request>,
        X::Error: Into<Response<BoxBody>>,

        U: Service<(Request, Framed<T, Codec>), Response = ()>,
        U::Error: fmt::Display,
    {
        Normal { #[pin] inner: InnerDispatcher<T, S, B, X, U> },
        Upgrade { #[pin] fut: U::Future },
    }
}

pin_project! {
    #[project = InnerDispatcherProj]
    pub(super) struct InnerDispatcher<T, S, B, X, U>
    where
        S: Service<Request>,
        S::Error: Into<Response<BoxBody>>,

        B: MessageBody,

        X: Service<Request, Response = Request>,
        X::Error: Into<Response<BoxBody>>,

        U: Service<(Request, Framed<T, Codec>), Response = ()>,
        U::Error: fmt::Display,
    {
        flow: Rc<HttpFlow<S, X, U>>,
        pub(super) flags: Flags,
        peer_addr: Option<net::SocketAddr>,
        conn_data: Option<Rc<Extensions>>,
        config: ServiceConfig,
        error: Option<DispatchError>,

        #[pin]
        pub(super) state: State<S, B, X>,
        // when Some(_) dispatcher is in state of receiving request payload
        payload: Option<PayloadSender>,
        // true when current request uses chunked transfer encoding (drainable when payload is dropped)
        payload_drainable: bool,
        // threadline patch (PATCHES.md): `100 Continue` owed to the request in
        // hand, written once its handler first reads the body.
        continue_pending: bool,
        // threadline patch (PATCHES.md): what the answer to the request in
        // hand is encoded for (its version, `HEAD` or not, the connection's
        // type): the codec has the last decoded request's, a pipelined one's.
        answer_to: Option<AnswerTo>,
        // threadline patch (PATCHES.md): set once nothing more can be decoded
        // (a malformed head or chunked body): the connection lingers after the
        // answer instead of closing under a client still sending.
        linger_after_answer: bool,
        // threadline patch (PATCHES.md): set while `shutdown_timer` bounds the
        // drain of a chunked body its handler answered without reading.
        drain_timed: bool,
        // threadline patch (PATCHES.md, `last_request`): set once a request
        // that closes the connection (`Connection: close`, HTTP/1.0 without
        // keep-alive) is decoded: nothing after its body is decoded or
        // answered (RFC 9112 §9.6), and the connection closes after its answer.
        last_request: bool,
        messages: VecDeque<DispatcherMessage>,

        head_timer: TimerState,
        ka_timer: TimerState,
        shutdown_timer: TimerState,
        graceful_shutdown: Option<crate::config::GracefulShutdownFuture>,

        pub(super) io: Option<T>,
        read_buf: BytesMut,
        write_buf: BytesMut,

        // Number of bytes to busy-buffer before flushing.
        h1_write_buffer_size: usize,

        // True if backing allocation of `write_buf` needs to be released.
        write_buf_needs_reset: bool,

        // True once an upgrade response is being streamed: small buffers.
        lean_buffers: bool,

        // The upgrade answer's `UpgradeWriteTimeout`, and the deadline it
        // sets while the write buffer waits on a peer that takes nothing.
        write_timeout: Option<std::time::Duration>,
        write_stall: Option<Pin<Box<Sleep>>>,
        // Set once the socket is to be reset when closed (`SO_LINGER` 0).
        reset_on_close: bool,
        // The wait at the close for the kernel to send what it holds.
        close_drain: Option<Box<CloseDrain>>,
        // The server's connection pressure, if the connection's data gave
        // it (`ConnectionTimeouts`): a short keep-alive while it holds.
        keep_alive_pressure: Option<std::sync::Arc<KeepAlivePressure>>,
        // Set while the connection, idle for longer than the short
        // keep-alive, waits out the rest of its keep-alive: the pressure's
        // notice, which closes it (`KeepAlivePressure::reclaim_idle`).
        ka_reclaim: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,

        codec: Codec,
    }
}

/// threadline patch (PATCHES.md, `refusal_body`): what the application
/// gives the answers the dispatcher makes itself (`400` for a malformed
/// head, `408`, `414`, `431`, `501`): it may add headers, and returns the
/// body. Upstream sends them with no body.
pub type RefusalBody = fn(StatusCode, &mut crate::header::HeaderMap) -> bytes::Bytes;

static REFUSAL_BODY: std::sync::OnceLock<RefusalBody> = std::sync::OnceLock::new();

/// threadline patch (PATCHES.md, `refusal_body`): sets, once per process,
/// the body of the answers the dispatcher makes itself (later calls are
/// ignored). Without it they have none, as upstream.
pub fn set_refusal_body(body: RefusalBody) {
    let _ = REFUSAL_BODY.set(body);
}

fn refusal_body(res: &mut Response<()>) -> BoxBody {
    match REFUSAL_BODY.get() {
        Some(body) => {
            let status = res.status();
            BoxBody::new(body(status, res.headers_mut()))
        }
        None => BoxBody::new(()),
    }
}

enum DispatcherMessage {
    Item(Request),
    Upgrade(Request),
    Error(Response<()>),
}

pin_project! {
    #[project = StateProj]
    pub(super) enum State<S, B, X>
    where
        S: Service<Request>,
        X: Service<Request, Response = Request>,
        B: MessageBody,
    {
        None,
        ExpectCall { #[pin] fut: X::Future },
        ServiceCall { #[pin] fut: S::Future },
        SendPayload { #[pin] body: B },
        SendErrorPayload { #[pin] body: BoxBody },
    }
}

impl<S, B, X> State<S, B, X>
where
    S: Service<Request>,
    X: Service<Request, Response = Request>,
    B: MessageBody,
{
    pub(super) fn is_none(&self) -> bool {
        matches!(self, State::None)
    }
}

impl<S, B, X> fmt::Debug for State<S, B, X>
where
    S: Service<Request>,
    X: Service<Request, Response = Request>,
    B: MessageBody,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "State::None"),
            Self::ExpectCall { .. } => f.debug_struct("State::ExpectCall").finish_non_exhaustive(),
            Self::ServiceCall { .. } => {
                f.debug_struct("State::ServiceCall").finish_non_exhaustive()
            }
            Self::SendPayload { .. } => {
                f.debug_struct("State::SendPayload").finish_non_exhaustive()
            }
            Self::SendErrorPayload { .. } => f
                .debug_struct("State::SendErrorPayload")
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Debug)]
enum PollResponse {
    Upgrade(Request),
    DoNothing,
    DrainWriteBuf,
}

impl<T, S, B, X, U> Dispatcher<T, S, B, X, U>
where
    T: AsyncRead + AsyncWrite + Unpin,

    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,

    B: MessageBody,

    X: Service<Request, Response = Request>,
    X::Error: Into<Response<BoxBody>>,

    U: Service<(Request, Framed<T, Codec>), Response = ()>,
    U::Error: fmt::Display,
{
    /// Create HTTP/1 dispatcher.
    pub(crate) fn new(
        io: T,
        flow: Rc<HttpFlow<S, X, U>>,
        config: ServiceConfig,
        peer_addr: Option<net::SocketAddr>,
        conn_data: OnConnectData,
    ) -> Self {
        // threadline patch (PATCHES.md): the connection's own timeouts, taken
        // out of its data (the dispatcher keeps what it needs).
        let mut conn_data = conn_data.0;
        let timeouts = conn_data
            .as_mut()
            .and_then(|data| data.remove::<ConnectionTimeouts>());
        let mut flags = Flags::empty();
        let mut head_timer = TimerState::new(config.client_request_deadline().is_some());
        if let Some(head_timeout) = timeouts.as_ref().and_then(|t| t.head_timeout) {
            if head_timer.is_enabled() {
                // Armed here rather than at the first poll, which `STARTED`
                // now skips (it only arms the head timer).
                head_timer.set(sleep_until((config.now() + head_timeout).into()), line!());
                flags.insert(Flags::STARTED);
            }
        }
        Dispatcher {
            inner: DispatcherState::Normal {
                inner: InnerDispatcher {
                    flow,
                    flags,
                    peer_addr,
                    conn_data: conn_data.map(Rc::new),
                    config: config.clone(),
                    error: None,

                    state: State::None,
                    payload: None,
                    payload_drainable: false,
                    continue_pending: false,
                    answer_to: None,
                    linger_after_answer: false,
                    drain_timed: false,
                    last_request: false,
                    messages: VecDeque::new(),

                    head_timer,
                    ka_timer: TimerState::new(config.keep_alive().enabled()),
                    shutdown_timer: TimerState::new(config.client_disconnect_deadline().is_some()),
                    graceful_shutdown: config.graceful_shutdown(),

                    io: Some(io),
                    read_buf: BytesMut::with_capacity(HW_BUFFER_SIZE),
                    write_buf: BytesMut::with_capacity(HW_BUFFER_SIZE),
                    h1_write_buffer_size: config.h1_write_buffer_size(),
                    write_buf_needs_reset: false,
                    lean_buffers: false,
                    write_timeout: None,
                    write_stall: None,
                    reset_on_close: false,
                    close_drain: None,
                    keep_alive_pressure: timeouts.map(|t| t.pressure),
                    ka_reclaim: None,
                    codec: Codec::new(config),
                },
            },

            #[cfg(test)]
            poll_count: 0,
        }
    }
}

impl<T, S, B, X, U> InnerDispatcher<T, S, B, X, U>
where
    T: AsyncRead + AsyncWrite + Unpin,

    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,

    B: MessageBody,

    X: Service<Request, Response = Request>,
    X::Error: Into<Response<BoxBody>>,

    U: Service<(Request, Framed<T, Codec>), Response = ()>,
    U::Error: fmt::Display,
{
    fn can_read(&self, cx: &mut Context<'_>) -> bool {
        if self.flags.contains(Flags::READ_DISCONNECT) {
            false
        } else if let Some(ref info) = self.payload {
            matches!(
                info.need_read(cx),
                PayloadStatus::Read | PayloadStatus::Dropped
            )
        } else {
            true
        }
    }

    /// threadline patch (PATCHES.md): the deadline of an idle connection's
    /// keep-alive timer: the configured keep-alive, or, if the connection
    /// knows the server's connection pressure, the short one if that ends
    /// sooner. That first step over, `poll_ka_timer` closes the connection
    /// if the server is under pressure, or waits out the rest of the
    /// keep-alive (`rest_of_keep_alive`).
    #[inline]
    fn keep_alive_deadline(&self) -> Option<std::time::Instant> {
        let deadline = self.config.keep_alive_deadline()?;
        Some(match &self.keep_alive_pressure {
            Some(pressure) => deadline.min(self.config.now() + pressure.short_keep_alive()),
            None => deadline,
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let InnerDispatcherProj {
            io,
            write_buf,
            h1_write_buffer_size,
            write_buf_needs_reset,
            lean_buffers,
            write_timeout,
            write_stall,
            reset_on_close: reset_set,
            conn_data,
            ..
        } = self.project();
        let mut io = Pin::new(io.as_mut().unwrap());

        // Allow normal buffer growth, but do not retain allocations caused by large response
        // chunks on idle connections.
        let retention_limit = if *lean_buffers {
            LEAN_HW_BUFFER_SIZE
        } else {
            (*h1_write_buffer_size).max(WRITE_BUFFER_RETENTION_LIMIT)
        };

        if write_buf.capacity() > retention_limit {
            // Needs stored flag because `write_buf.advance(n)` reduces reported capacity without
            // releasing the backing allocation.
            *write_buf_needs_reset = true;
        }

        let len = write_buf.len();
        let mut written = 0;

        while written < len {
            match io.as_mut().poll_write(cx, &write_buf[written..])? {
                Poll::Ready(0) => {
                    error!("write zero; closing");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::WriteZero, "")));
                }

                Poll::Ready(n) => written += n,

                Poll::Pending => {
                    write_buf.advance(written);
                    if let Some(limit) = *write_timeout {
                        // Bytes taken (or the first wait): the clock starts again.
                        match write_stall {
                            Some(stall) if written == 0 => {
                                if stall.as_mut().poll(cx).is_ready() {
                                    trace!("peer took nothing for {limit:?}; dropping connection");
                                    #[cfg(unix)]
                                    if let Some(reset) = conn_data
                                        .as_deref()
                                        .and_then(|data| data.get::<ResetOnWriteTimeout>())
                                    {
                                        reset_on_close(reset.0);
                                        *reset_set = true;
                                    }
                                    return Poll::Ready(Err(io::Error::new(
                                        io::ErrorKind::TimedOut,
                                        "the peer stopped reading",
                                    )));
                                }
                            }
                            Some(stall) => {
                                stall.as_mut().reset(tokio::time::Instant::now() + limit);
                                let _ = stall.as_mut().poll(cx);
                            }
                            None => {
                                let mut stall = Box::pin(sleep(limit));
                                let _ = stall.as_mut().poll(cx);
                                *write_stall = Some(stall);
                            }
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        *write_stall = None;

        // All bytes have been accepted by the I/O stream, so the buffer can be reused or released.
        if *write_buf_needs_reset {
            *write_buf = if *lean_buffers {
                // Allocated by the next write, at the size it needs.
                BytesMut::new()
            } else {
                BytesMut::with_capacity(HW_BUFFER_SIZE)
            };
            *write_buf_needs_reset = false;
        } else {
            write_buf.clear();
        }

        // flush the I/O and check if get blocked
        io.poll_flush(cx)
    }

    /// threadline patch (PATCHES.md, `unchunked_for_http_1_0`): a body
    /// delimited by the connection's close (a stream to HTTP/1.0) has
    /// ended, so the connection ends here. Requests pipelined behind it are
    /// not answered on it, as their answers would read as the body's tail:
    /// they are dropped (the client retries them, RFC 9112 §9.3.2) and the
    /// connection lingers, as the client may still be sending them. With
    /// nothing behind it, it is shut at once (the shut is the body's end),
    /// and nothing more is read or decoded. Whether it was such a body.
    fn end_close_delimited(self: Pin<&mut Self>) -> bool {
        let mut this = self.project();
        if !this.codec.close_delimited() {
            return false;
        }
        this.state.set(State::None);
        // A request body not read to its end may still be coming.
        if this.messages.is_empty() && this.read_buf.is_empty() && this.payload.is_none() {
            this.flags.remove(Flags::KEEP_ALIVE);
            this.flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
        } else {
            this.messages.clear();
            this.payload.take();
            Self::linger_before_close(
                this.flags,
                this.config,
                this.keep_alive_pressure.as_deref(),
            );
        }
        true
    }

    fn enter_linger(flags: &mut Flags) {
        flags.remove(Flags::KEEP_ALIVE);
        flags.insert(Flags::LINGER | Flags::FINISHED);
    }

    /// threadline patch (PATCHES.md): the connection has answered a request
    /// it could not read to its end (a malformed head or chunked body, a head
    /// that timed out) and is to close. It lingers, as after an answer given
    /// with the body unread: the answer is flushed, the write half shut only
    /// once the client stops sending (or after `client_disconnect_timeout`),
    /// and what it sends meanwhile is read and dropped, so that closing with
    /// unread bytes (which resets the connection, and may cut the answer
    /// short) is avoided. Upstream shut down at once. While the server is
    /// short of connection slots (`KeepAlivePressure`) it still does.
    fn linger_before_close(
        flags: &mut Flags,
        config: &ServiceConfig,
        pressure: Option<&KeepAlivePressure>,
    ) {
        let pressed = pressure.is_some_and(KeepAlivePressure::under_pressure);
        if config.client_disconnect_deadline().is_some() && !pressed {
            // Nothing more is decoded (the linger only reads and drops).
            flags.remove(Flags::READ_DISCONNECT | Flags::SHUTDOWN);
            Self::enter_linger(flags);
        } else {
            flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
        }
    }

    fn ensure_linger_timer(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let this = self.as_mut().project();

        if matches!(this.shutdown_timer, TimerState::Active { .. }) {
            return true;
        }

        if let Some(deadline) = this.config.client_disconnect_deadline() {
            this.shutdown_timer
                .set_and_init(cx, sleep_until(deadline.into()), line!());
            true
        } else {
            false
        }
    }

    fn poll_linger(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Result<Poll<()>, DispatchError> {
        if self.as_mut().poll_flush(cx)?.is_pending() {
            return Ok(Poll::Pending);
        }

        // threadline patch (PATCHES.md, `end_close_delimited`): a body that
        // ends with the connection ends when the write half is shut, not
        // after the linger (the client reads to that end before it stops).
        if self.codec.close_delimited() && !self.flags.contains(Flags::WRITE_DISCONNECT) {
            let this = self.as_mut().project();
            if let Some(io) = this.io.as_mut() {
                match Pin::new(io).poll_shutdown(cx) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Ok(Poll::Pending),
                }
            }
            this.flags.insert(Flags::WRITE_DISCONNECT);
        }

        if !self.as_mut().ensure_linger_timer(cx) {
            let this = self.as_mut().project();
            this.flags.remove(Flags::LINGER);
            this.flags.insert(Flags::SHUTDOWN);
            return Ok(Poll::Ready(()));
        }

        loop {
            let should_disconnect = self.as_mut().read_available(cx)?;
            let this = self.as_mut().project();
            let mut progressed = false;

            if !this.read_buf.is_empty() {
                this.read_buf.clear();
                progressed = true;
            }

            if should_disconnect {
                this.flags.remove(Flags::LINGER);
                this.flags.insert(Flags::READ_DISCONNECT | Flags::SHUTDOWN);
                return Ok(Poll::Ready(()));
            }

            if !progressed {
                return Ok(Poll::Pending);
            }
        }
    }

    fn send_response_inner(
        self: Pin<&mut Self>,
        res: Response<()>,
        body: &impl MessageBody,
    ) -> Result<BodySize, DispatchError> {
        let this = self.project();

        let size = body.size();

        // A final answer: no `100 Continue` after it.
        *this.continue_pending = false;
        if let Some(to) = this.answer_to.take() {
            this.codec.answering(to);
        }

        this.codec
            .encode(Message::Item((res, size)), this.write_buf)
            .map_err(|err| {
                if let Some(mut payload) = this.payload.take() {
                    payload.set_error(PayloadError::Incomplete(None));
                }

                DispatchError::Io(err)
            })?;

        Ok(size)
    }

    fn send_response(
        mut self: Pin<&mut Self>,
        mut res: Response<()>,
        body: B,
    ) -> Result<(), DispatchError> {
        let is_upgrade = res.upgrade();
        let write_timeout = res
            .extensions()
            .get::<StreamWriteTimeout>()
            .map(|timeout| timeout.0);
        let (draining, close_for_unread_payload) = {
            let this = self.as_mut().project();
            (
                this.flags.contains(Flags::DRAINING),
                !is_upgrade
                    && should_close_for_unread_payload(
                        this.payload.as_ref(),
                        *this.payload_drainable,
                    ),
            )
        };
        let close_after_response = (!is_upgrade && draining) || close_for_unread_payload;

        if close_after_response {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }

        let size = self.as_mut().send_response_inner(res, &body)?;
        if size == BodySize::Stream {
            let this = self.as_mut().project();
            // Once given, the timeout holds for the rest of the connection
            // (an event stream's may be followed by plain answers), its
            // close included (`close_or_drain`).
            if write_timeout.is_some() {
                *this.write_timeout = write_timeout;
            }
            if is_upgrade {
                *this.lean_buffers = true;
                // Released once the response head is flushed.
                *this.write_buf_needs_reset = true;
                if this.read_buf.is_empty() {
                    *this.read_buf = BytesMut::new();
                }
            }
        }
        match size {
            BodySize::None | BodySize::Sized(0) => {
                let mut this = self.as_mut().project();

                if close_for_unread_payload {
                    if this.config.client_disconnect_deadline().is_some() {
                        Self::enter_linger(this.flags);
                    } else {
                        this.flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
                    }
                } else {
                    this.flags.insert(Flags::FINISHED);
                }

                this.state.set(State::None);
            }
            _ => self
                .as_mut()
                .project()
                .state
                .set(State::SendPayload { body }),
        }

        Ok(())
    }

    fn send_error_response(
        mut self: Pin<&mut Self>,
        mut res: Response<()>,
        mut body: BoxBody,
    ) -> Result<(), DispatchError> {
        let is_upgrade = res.upgrade();
        let (draining, close_for_unread_payload) = {
            let this = self.as_mut().project();
            (
                this.flags.contains(Flags::DRAINING),
                !is_upgrade
                    && should_close_for_unread_payload(
                        this.payload.as_ref(),
                        *this.payload_drainable,
                    ),
            )
        };
        let close_after_response = (!is_upgrade && draining) || close_for_unread_payload;

        if close_after_response {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }

        let mut size = self.as_mut().send_response_inner(res, &body)?;
        // threadline patch (PATCHES.md, `refusal_body`): a body in hand (the
        // application's, for the dispatcher's own answers) goes out with the
        // head: these answers are followed by a close or a linger, which do
        // not poll a body left for later.
        if matches!(size, BodySize::Sized(n) if n > 0) {
            match body.try_into_bytes() {
                Ok(bytes) => {
                    let this = self.as_mut().project();
                    this.codec.encode(Message::Chunk(Some(bytes)), this.write_buf)?;
                    this.codec.encode(Message::Chunk(None), this.write_buf)?;
                    size = BodySize::None;
                    body = BoxBody::new(());
                }
                Err(unread) => body = unread,
            }
        }
        match size {
            BodySize::None | BodySize::Sized(0) => {
                let mut this = self.as_mut().project();

                if close_for_unread_payload {
                    if this.config.client_disconnect_deadline().is_some() {
                        Self::enter_linger(this.flags);
                    } else {
                        this.flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
                    }
                } else {
                    this.flags.insert(Flags::FINISHED);
                }

                this.state.set(State::None);
            }
            _ => self
                .as_mut()
                .project()
                .state
                .set(State::SendErrorPayload { body }),
        }

        Ok(())
    }

    /// threadline patch (PATCHES.md): an `Expect: 100-continue` request's
    /// `100 Continue` waits for its handler's first read of the body (see
    /// `poll_response`), so an answer given without reading it (`401`, `404`,
    /// `413` by its `Content-Length`, ...) comes first and alone, and the
    /// client sends no body for it (RFC 9110 §10.1.1). Upstream wrote it
    /// here, before the handler ran. The body left unsent, the connection
    /// closes after such an answer rather than read on (`payload_drainable`).
    fn await_continue(self: Pin<&mut Self>, cx: &mut Context<'_>) {
        let this = self.project();
        // With requests queued behind it, the body in hand is a later one's:
        // this one's came whole already.
        if !this.messages.is_empty() {
            return;
        }
        if let Some(payload) = this.payload.as_ref() {
            payload.await_continue(cx);
            *this.continue_pending = true;
            *this.payload_drainable = false;
        }
    }

    fn poll_response(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Result<PollResponse, DispatchError> {
        'res: loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::None if this.flags.contains(Flags::DRAINING) => {
                    this.messages.clear();
                    this.flags.remove(Flags::KEEP_ALIVE);

                    if !this.flags.contains(Flags::LINGER) {
                        this.flags.insert(Flags::SHUTDOWN);
                    }

                    return Ok(PollResponse::DoNothing);
                }

                // no future is in InnerDispatcher state; pop next message
                StateProj::None => match this.messages.pop_front() {
                    // handle request message
                    Some(DispatcherMessage::Item(req)) => {
                        // threadline patch (PATCHES.md): its answer is encoded
                        // for it, not for the last request decoded.
                        *this.answer_to = Some(AnswerTo::of(req.head()));
                        // Handle `EXPECT: 100-Continue` header
                        if req.head().expect() {
                            // set InnerDispatcher state and continue loop to poll it
                            let fut = this.flow.expect.call(req);
                            this.state.set(State::ExpectCall { fut });
                        } else {
                            // set InnerDispatcher state and continue loop to poll it
                            let fut = this.flow.service.call(req);
                            this.state.set(State::ServiceCall { fut });
                        };
                    }

                    // handle error message
                    Some(DispatcherMessage::Error(mut res)) => {
                        // send_response would update InnerDispatcher state to SendPayload or None
                        // (If response body is empty)
                        // continue loop to poll it
                        // threadline patch (PATCHES.md, `refusal_body`): with the
                        // application's body, if it gave one.
                        let body = refusal_body(&mut res);
                        self.as_mut().project().codec.answering_refusal();
                        self.as_mut().send_error_response(res, body)?;
                    }

                    // return with upgrade request and poll it exclusively
                    Some(DispatcherMessage::Upgrade(req)) => return Ok(PollResponse::Upgrade(req)),

                    // all messages are dealt with
                    None => {
                        // threadline patch (PATCHES.md): requests left in the read buffer
                        // when the queue was full are decoded now.
                        if !self.read_buf.is_empty() && self.as_mut().poll_request(cx)? {
                            continue 'res;
                        }
                        let this = self.as_mut().project();

                        // start keep-alive only if request payload is fully read/drained
                        this.flags.set(
                            Flags::KEEP_ALIVE,
                            this.payload.is_none() && this.codec.keep_alive(),
                        );

                        return Ok(PollResponse::DoNothing);
                    }
                },

                StateProj::ServiceCall { fut } => {
                    match fut.poll(cx) {
                        // service call resolved. send response.
                        Poll::Ready(Ok(res)) => {
                            let (res, body) = res.into().replace_body(());
                            self.as_mut().send_response(res, body)?;
                        }

                        // send service call error as response
                        Poll::Ready(Err(err)) => {
                            let res: Response<BoxBody> = err.into();
                            let (res, body) = res.replace_body(());
                            self.as_mut().send_error_response(res, body)?;
                        }

                        // service call pending and could be waiting for more chunk messages
                        // (pipeline message limit and/or payload can_read limit)
                        Poll::Pending => {
                            // threadline patch (PATCHES.md): `100 Continue` once the
                            // handler has asked for the body.
                            if *this.continue_pending {
                                match this.payload.as_ref() {
                                    Some(payload) if payload.take_continue_wanted() => {
                                        *this.continue_pending = false;
                                        this.write_buf.extend_from_slice(CONTINUE);
                                    }
                                    Some(_) => {}
                                    None => *this.continue_pending = false,
                                }
                            }
                            // no new message is decoded and no new payload is fed
                            // nothing to do except waiting for new incoming data from client
                            if !self.as_mut().poll_request(cx)? {
                                return Ok(PollResponse::DoNothing);
                            }
                            // else loop
                        }
                    }
                }

                StateProj::SendPayload { mut body } => {
                    // keep populate writer buffer until buffer size limit hit,
                    // get blocked or finished.
                    while this.write_buf.len() < *this.h1_write_buffer_size {
                        match body.as_mut().poll_next(cx) {
                            Poll::Ready(Some(Ok(item))) => {
                                this.codec
                                    .encode(Message::Chunk(Some(item)), this.write_buf)?;
                            }

                            Poll::Ready(None) => {
                                this.codec.encode(Message::Chunk(None), this.write_buf)?;
                                if self.as_mut().end_close_delimited() {
                                    return Ok(PollResponse::DoNothing);
                                }
                                let mut this = self.as_mut().project();

                                // if we have not yet pipelined to the next request, then
                                // this.payload was the payload for the request we just finished
                                // responding to. We can check to see if we finished reading it
                                // yet, and if not, shutdown the connection.
                                let close_for_unread_payload = should_close_for_unread_payload(
                                    this.payload.as_ref(),
                                    *this.payload_drainable,
                                );
                                let not_pipelined = this.messages.is_empty();

                                // payload stream finished.
                                // set state to None and handle next message
                                this.state.set(State::None);

                                if not_pipelined && close_for_unread_payload {
                                    if this.config.client_disconnect_deadline().is_some() {
                                        Self::enter_linger(this.flags);
                                    } else {
                                        this.flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
                                    }
                                } else {
                                    this.flags.insert(Flags::FINISHED);
                                }

                                continue 'res;
                            }

                            Poll::Ready(Some(Err(err))) => {
                                let err = err.into();
                                tracing::error!("Response payload stream error: {err:?}");
                                this.flags.insert(Flags::FINISHED);
                                return Err(DispatchError::Body(err));
                            }

                            Poll::Pending => return Ok(PollResponse::DoNothing),
                        }
                    }

                    // buffer is beyond max size
                    // return and try to write the whole buffer to I/O stream.
                    return Ok(PollResponse::DrainWriteBuf);
                }

                StateProj::SendErrorPayload { mut body } => {
                    // TODO: de-dupe impl with SendPayload

                    // keep populate writer buffer until buffer size limit hit,
                    // get blocked or finished.
                    while this.write_buf.len() < *this.h1_write_buffer_size {
                        match body.as_mut().poll_next(cx) {
                            Poll::Ready(Some(Ok(item))) => {
                                this.codec
                                    .encode(Message::Chunk(Some(item)), this.write_buf)?;
                            }

                            Poll::Ready(None) => {
                                this.codec.encode(Message::Chunk(None), this.write_buf)?;
                                if self.as_mut().end_close_delimited() {
                                    return Ok(PollResponse::DoNothing);
                                }
                                let mut this = self.as_mut().project();

                                // if we have not yet pipelined to the next request, then
                                // this.payload was the payload for the request we just finished
                                // responding to. We can check to see if we finished reading it
                                // yet, and if not, shutdown the connection.
                                let close_for_unread_payload = should_close_for_unread_payload(
                                    this.payload.as_ref(),
                                    *this.payload_drainable,
                                );
                                let not_pipelined = this.messages.is_empty();

                                // payload stream finished.
                                // set state to None and handle next message
                                this.state.set(State::None);

                                if not_pipelined && close_for_unread_payload {
                                    if this.config.client_disconnect_deadline().is_some() {
                                        Self::enter_linger(this.flags);
                                    } else {
                                        this.flags.insert(Flags::SHUTDOWN | Flags::FINISHED);
                                    }
                                } else {
                                    this.flags.insert(Flags::FINISHED);
                                }

                                continue 'res;
                            }

                            Poll::Ready(Some(Err(err))) => {
                                tracing::error!("Response payload stream error: {err:?}");
                                this.flags.insert(Flags::FINISHED);
                                return Err(DispatchError::Body(
                                    Error::new_body().with_cause(err).into(),
                                ));
                            }

                            Poll::Pending => return Ok(PollResponse::DoNothing),
                        }
                    }

                    // buffer is beyond max size
                    // return and try to write the whole buffer to stream
                    return Ok(PollResponse::DrainWriteBuf);
                }

                StateProj::ExpectCall { fut } => {
                    trace!("  calling expect service");

                    match fut.poll(cx) {
                        // expect resolved: `100 Continue` awaits the body's first read
                        // (threadline patch); set InnerDispatcher state to service call.
                        Poll::Ready(Ok(req)) => {
                            self.as_mut().await_continue(cx);
                            let mut this = self.as_mut().project();
                            let fut = this.flow.service.call(req);
                            this.state.set(State::ServiceCall { fut });
                        }

                        // send expect error as response
                        Poll::Ready(Err(err)) => {
                            let res: Response<BoxBody> = err.into();
                            let (res, body) = res.replace_body(());
                            self.as_mut().send_error_response(res, body)?;
                        }

                        // expect must be solved before progress can be made.
                        Poll::Pending => return Ok(PollResponse::DoNothing),
                    }
                }
            }
        }
    }

    fn handle_request(
        mut self: Pin<&mut Self>,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<(), DispatchError> {
        // initialize dispatcher state
        {
            let mut this = self.as_mut().project();
            // threadline patch (PATCHES.md): its answer is encoded for it.
            *this.answer_to = Some(AnswerTo::of(req.head()));

            // Handle `EXPECT: 100-Continue` header
            if req.head().expect() {
                // set dispatcher state to call expect handler
                let fut = this.flow.expect.call(req);
                this.state.set(State::ExpectCall { fut });
            } else {
                // set dispatcher state to call service handler
                let fut = this.flow.service.call(req);
                this.state.set(State::ServiceCall { fut });
            };
        };

        // eagerly poll the future once (or twice if expect is resolved immediately).
        loop {
            match self.as_mut().project().state.project() {
                StateProj::ExpectCall { fut } => {
                    match fut.poll(cx) {
                        // expect is resolved; continue loop and poll the service call branch.
                        Poll::Ready(Ok(req)) => {
                            self.as_mut().await_continue(cx);

                            let mut this = self.as_mut().project();
                            let fut = this.flow.service.call(req);
                            this.state.set(State::ServiceCall { fut });

                            continue;
                        }

                        // future is error; send response and return a result
                        // on success to notify the dispatcher a new state is set and the outer loop
                        // should be continued
                        Poll::Ready(Err(err)) => {
                            let res: Response<BoxBody> = err.into();
                            let (res, body) = res.replace_body(());
                            return self.send_error_response(res, body);
                        }

                        // future is pending; return Ok(()) to notify that a new state is
                        // set and the outer loop should be continue.
                        Poll::Pending => return Ok(()),
                    }
                }

                StateProj::ServiceCall { fut } => {
                    // return no matter the service call future's result.
                    return match fut.poll(cx) {
                        // Future is resolved. Send response and return a result. On success
                        // to notify the dispatcher a new state is set and the outer loop
                        // should be continue.
                        Poll::Ready(Ok(res)) => {
                            let (res, body) = res.into().replace_body(());
                            self.as_mut().send_response(res, body)
                        }

                        // see the comment on ExpectCall state branch's Pending
                        Poll::Pending => Ok(()),

                        // see the comment on ExpectCall state branch's Ready(Err(_))
                        Poll::Ready(Err(err)) => {
                            let res: Response<BoxBody> = err.into();
                            let (res, body) = res.replace_body(());
                            self.as_mut().send_error_response(res, body)
                        }
                    };
                }

                _ => {
                    unreachable!("State must be set to ServiceCall or ExceptCall in handle_request")
                }
            }
        }
    }

    /// Process one incoming request.
    ///
    /// Returns true if any meaningful work was done.
    /// Whether answers the client has not taken yet fill the write buffer (threadline
    /// patch, see PATCHES.md): no more requests are read or decoded until it drains. Without
    /// this, a client that pipelines requests and never reads the answers made the server
    /// buffer every answer (tens of MB per connection within seconds, with no key).
    fn write_buf_full(&self) -> bool {
        self.write_buf.len() >= MAX_WRITE_BUF_PENDING
    }

    fn poll_request(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<bool, DispatchError> {
        if self.flags.contains(Flags::DRAINING) && self.state.is_none() {
            return Ok(false);
        }

        let pipeline_queue_full = self.messages.len() >= MAX_PIPELINED_MESSAGES;
        let can_not_read = !self.can_read(cx);

        // limit amount of non-processed requests
        if pipeline_queue_full || can_not_read || self.write_buf_full() {
            return Ok(false);
        }

        let mut this = self.as_mut().project();

        let mut updated = false;

        // decode from read buf as many full requests as possible
        loop {
            // threadline patch (PATCHES.md, `last_request`): after a request
            // that closes the connection, its body is decoded and nothing more.
            if *this.last_request && this.payload.is_none() {
                break;
            }
            match this.codec.decode(this.read_buf) {
                Ok(Some(msg)) => {
                    updated = true;

                    match msg {
                        Message::Item(mut req) => {
                            // head timer only applies to first request on connection
                            this.head_timer.clear(line!());

                            req.head_mut().peer_addr = *this.peer_addr;

                            req.conn_data.clone_from(this.conn_data);

                            // threadline patch (PATCHES.md, `last_request`):
                            // the client's close, or keep-alive off on the server.
                            if req.head().connection_type() == ConnectionType::Close
                                || !this.codec.keep_alive_enabled()
                            {
                                *this.last_request = true;
                            }

                            match this.codec.message_type() {
                                // request has no payload
                                MessageType::None => *this.payload_drainable = false,

                                // Request is upgradable. Add upgrade message and break.
                                // Everything remaining in read buffer will be handed to
                                // upgraded Request.
                                MessageType::Stream if this.flow.upgrade.is_some() => {
                                    *this.payload_drainable = false;
                                    this.messages.push_back(DispatcherMessage::Upgrade(req));
                                    break;
                                }

                                // request is not upgradable
                                MessageType::Payload | MessageType::Stream => {
                                    // PayloadSender and Payload are smart pointers share the
                                    // same state. PayloadSender is attached to dispatcher and used
                                    // to sink new chunked request data to state. Payload is
                                    // attached to Request and passed to Service::call where the
                                    // state can be collected and consumed.
                                    let (sender, payload) = Payload::create(false);
                                    *req.payload() = crate::Payload::H1 { payload };
                                    *this.payload = Some(sender);
                                    *this.payload_drainable = req.chunked().unwrap_or(false);
                                }
                            }

                            // handle request early when no future in InnerDispatcher state.
                            if this.state.is_none() {
                                self.as_mut().handle_request(req, cx)?;
                                this = self.as_mut().project();
                            } else {
                                this.messages.push_back(DispatcherMessage::Item(req));
                                // threadline patch (PATCHES.md): the rest waits in the read
                                // buffer, decoded as these are answered (`poll_response`).
                                if this.messages.len() >= MAX_PIPELINED_MESSAGES {
                                    break;
                                }
                            }
                        }

                        Message::Chunk(Some(chunk)) => {
                            if let Some(ref mut payload) = this.payload {
                                payload.feed_data(chunk);
                            } else {
                                error!("Internal server error: unexpected payload chunk");
                                this.flags.insert(Flags::READ_DISCONNECT);
                                this.messages.push_back(DispatcherMessage::Error(
                                    Response::internal_server_error().drop_body(),
                                ));
                                *this.error = Some(DispatchError::InternalError);
                                break;
                            }
                        }

                        Message::Chunk(None) => {
                            if let Some(mut payload) = this.payload.take() {
                                payload.feed_eof();
                                *this.payload_drainable = false;
                                // threadline patch (PATCHES.md): drained in time.
                                if *this.drain_timed {
                                    *this.drain_timed = false;
                                    this.shutdown_timer.clear(line!());
                                }
                            } else {
                                error!("Internal server error: unexpected eof");
                                this.flags.insert(Flags::READ_DISCONNECT);
                                this.messages.push_back(DispatcherMessage::Error(
                                    Response::internal_server_error().drop_body(),
                                ));
                                *this.error = Some(DispatchError::InternalError);
                                break;
                            }
                        }
                    }
                }

                // decode is partial and buffer is not full yet
                // break and wait for more read
                Ok(None) => break,

                // threadline patch (PATCHES.md): decoding a buffer does no I/O; only the
                // payload decoder fails this way, on a malformed chunked body (a bad chunk
                // size, no CRLF after a chunk). Upstream took it for a disconnect and closed
                // the connection without an answer (or with the handler's, had it one
                // ready in the same poll). The framing is lost, so nothing more is read:
                // the body ends in an error, which its handler answers (threadline: `422`),
                // and the connection closes after the answer.
                Err(ParseError::Io(err)) => {
                    trace!("malformed request body: {}", &err);
                    if let Some(mut payload) = this.payload.take() {
                        payload.set_error(PayloadError::EncodingCorrupted);
                    }
                    this.codec.close_after_answer();
                    this.flags.insert(Flags::READ_DISCONNECT);
                    *this.linger_after_answer = true;
                    break;
                }

                Err(ParseError::TooLarge) => {
                    trace!("request head was too big; returning 431 response");

                    if let Some(mut payload) = this.payload.take() {
                        payload.set_error(PayloadError::Overflow);
                    }

                    // request heads that overflow buffer size return a 431 error
                    this.messages
                        .push_back(DispatcherMessage::Error(Response::with_body(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            (),
                        )));

                    this.flags.insert(Flags::READ_DISCONNECT);
                    *this.linger_after_answer = true;
                    *this.error = Some(ParseError::TooLarge.into());

                    break;
                }

                Err(err) => {
                    trace!("parse error {}", &err);

                    if let Some(mut payload) = this.payload.take() {
                        payload.set_error(PayloadError::EncodingCorrupted);
                    }

                    // malformed requests should be responded with 400; a transfer coding
                    // not supported, 501; a request line that does not end,
                    // 414 (threadline patch, PATCHES.md)
                    let res = match err {
                        ParseError::TransferCoding => {
                            Response::with_body(StatusCode::NOT_IMPLEMENTED, ())
                        }
                        ParseError::UriTooLong => Response::with_body(StatusCode::URI_TOO_LONG, ()),
                        _ => Response::bad_request().drop_body(),
                    };
                    this.messages.push_back(DispatcherMessage::Error(res));

                    this.flags.insert(Flags::READ_DISCONNECT);
                    *this.linger_after_answer = true;
                    *this.error = Some(err.into());
                    break;
                }
            }
        }

        Ok(updated)
    }

    fn poll_head_timer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Result<(), DispatchError> {
        let this = self.as_mut().project();

        let fired = match this.head_timer {
            TimerState::Active { timer } => timer.as_mut().poll(cx).is_ready(),
            _ => false,
        };
        if fired {
            // timeout on first request (slow request) return 408

            trace!("timed out on slow request; replying with 408 and closing connection");

            // threadline patch (PATCHES.md): the timer fires once (a lingering
            // connection polls it again). A connection that has sent part of a
            // head lingers after the `408` rather than closing at once under a
            // client still sending; one that has sent nothing closes as before.
            this.head_timer.clear(line!());
            let partial_head = !this.read_buf.is_empty();
            let mut res = Response::with_body(StatusCode::REQUEST_TIMEOUT, ());
            res.head_mut().set_connection_type(ConnectionType::Close);
            let body = refusal_body(&mut res);
            self.as_mut().project().codec.answering_refusal();
            let _ = self.as_mut().send_error_response(res, body);

            let this = self.project();
            if partial_head {
                Self::linger_before_close(
                    this.flags,
                    this.config,
                    this.keep_alive_pressure.as_deref(),
                );
            } else {
                this.flags.insert(Flags::SHUTDOWN);
            }
        }

        Ok(())
    }

    fn poll_ka_timer(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<(), DispatchError> {
        let this = self.as_mut().project();
        if let TimerState::Active { timer } = this.ka_timer {
            debug_assert!(
                this.flags.contains(Flags::KEEP_ALIVE),
                "keep-alive flag should be set when timer is active",
            );
            debug_assert!(
                this.state.is_none(),
                "dispatcher should not be in keep-alive phase if state is not none: {:?}",
                this.state,
            );

            // Assert removed by @robjtede on account of issue #2655. There are cases where an I/O
            // flush can be pending after entering the keep-alive state causing the subsequent flush
            // wake up to panic here. This appears to be a Linux-only problem. Leaving original code
            // below for posterity because a simple and reliable test could not be found to trigger
            // the behavior.
            // debug_assert!(
            //     this.write_buf.is_empty(),
            //     "dispatcher should not be in keep-alive phase if write_buf is not empty",
            // );

            let mut expired = timer.as_mut().poll(cx).is_ready();

            // threadline patch (PATCHES.md): with the server's pressure known,
            // the timer's first step is the short keep-alive; past it, the
            // connection waits out the rest unless the pressure holds or starts.
            // (A timer that has ended the connection stays elapsed: once it is
            // shutting down, there is nothing left to wait out.)
            if let Some(pressure) = this.keep_alive_pressure.as_deref() {
                match this.ka_reclaim {
                    Some(reclaim) => expired |= reclaim.as_mut().poll(cx).is_ready(),
                    None if expired && !this.flags.contains(Flags::SHUTDOWN) => {
                        if let Some(reclaim) = rest_of_keep_alive(pressure, this.config, timer, cx)
                        {
                            *this.ka_reclaim = Some(reclaim);
                            expired = false;
                        }
                    }
                    None => {}
                }
            }

            // keep-alive timer has timed out
            if expired {
                *this.ka_reclaim = None;
                // no tasks at hand
                trace!("timer timed out; closing connection");
                this.flags.insert(Flags::SHUTDOWN);

                if let Some(deadline) = this.config.client_disconnect_deadline() {
                    // start shutdown timeout if enabled
                    this.shutdown_timer
                        .set_and_init(cx, sleep_until(deadline.into()), line!());
                } else {
                    // no shutdown timeout, drop socket
                    this.flags.insert(Flags::WRITE_DISCONNECT);
                }
            }
        }

        Ok(())
    }

    fn poll_shutdown_timer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Result<(), DispatchError> {
        let this = self.as_mut().project();
        if let TimerState::Active { timer } = this.shutdown_timer {
            debug_assert!(
                this.flags.intersects(Flags::LINGER | Flags::SHUTDOWN) || *this.drain_timed,
                "shutdown or linger flag should be set when timer is active",
            );

            if timer.as_mut().poll(cx).is_ready() {
                if this.flags.contains(Flags::LINGER) {
                    trace!("timed-out during linger; shutting down connection");
                    this.flags.remove(Flags::LINGER);
                    this.flags.insert(Flags::SHUTDOWN);
                    this.shutdown_timer.clear(line!());
                } else if *this.drain_timed && !this.flags.contains(Flags::SHUTDOWN) {
                    // threadline patch (PATCHES.md): the rest of a body nobody
                    // reads did not come in time; the connection closes.
                    trace!("unread request body not drained in time; closing connection");
                    *this.drain_timed = false;
                    this.shutdown_timer.clear(line!());
                    this.payload.take();
                    Self::linger_before_close(
                        this.flags,
                        this.config,
                        this.keep_alive_pressure.as_deref(),
                    );
                } else {
                    trace!("timed-out during shutdown");
                    return Err(DispatchError::DisconnectTimeout);
                }
            }
        }

        Ok(())
    }

    fn poll_graceful_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) {
        let this = self.as_mut().project();

        let notified = this
            .graceful_shutdown
            .as_mut()
            .is_some_and(|signal| signal.as_mut().poll(cx).is_ready());

        if notified {
            *this.graceful_shutdown = None;
            this.flags.remove(Flags::KEEP_ALIVE);
            this.flags.insert(Flags::DRAINING);

            if this.ka_timer.is_enabled() {
                this.ka_timer.clear(line!());
                *this.ka_reclaim = None;
            }
        }
    }

    /// Poll head, keep-alive, and disconnect timer.
    fn poll_timers(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<(), DispatchError> {
        self.as_mut().poll_head_timer(cx)?;
        self.as_mut().poll_ka_timer(cx)?;
        self.as_mut().poll_shutdown_timer(cx)?;

        Ok(())
    }

    /// Returns true when I/O stream can be disconnected after write to it.
    ///
    /// It covers these conditions:
    /// - `std::io::ErrorKind::ConnectionReset` after partial read;
    /// - all data read done.
    #[inline(always)] // TODO: bench this inline
    fn read_available(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<bool, DispatchError> {
        if self.write_buf_full() {
            // Not read until the client takes some of the answers: the flush that left
            // them waiting registered this task's waker with the socket.
            return Ok(false);
        }

        let this = self.project();

        if this.flags.contains(Flags::READ_DISCONNECT) {
            return Ok(false);
        };

        let mut io = Pin::new(this.io.as_mut().unwrap());

        let mut read_some = false;

        loop {
            // Return early when read buf exceed decoder's max buffer size.
            if this.read_buf.len() >= MAX_BUFFER_SIZE {
                // At this point it's not known IO stream is still scheduled to be waked up so
                // force wake up dispatcher just in case.
                //
                // Reason:
                // AsyncRead mostly would only have guarantee wake up when the poll_read
                // return Poll::Pending.
                //
                // Case:
                // When read_buf is beyond max buffer size the early return could be successfully
                // be parsed as a new Request. This case would not generate ParseError::TooLarge and
                // at this point IO stream is not fully read to Pending and would result in
                // dispatcher stuck until timeout (keep-alive).
                //
                // Note:
                // This is a perf choice to reduce branch on <Request as MessageType>::decode.
                //
                // A Request head too large to parse is only checked on `httparse::Status::Partial`.

                if !this.messages.is_empty() {
                    // threadline patch (PATCHES.md): queued requests are being answered;
                    // the read buffer is decoded as they are, no need to spin meanwhile.
                    return Ok(false);
                }

                match this.payload.as_ref().map(|p| p.need_read(cx)) {
                    // Payload consumer is alive but applying backpressure. Wait for its waker.
                    Some(PayloadStatus::Pause) => {}

                    // Consumer dropped means drain/discard mode; keep polling to make progress.
                    Some(PayloadStatus::Dropped) | Some(PayloadStatus::Read) | None => {
                        cx.waker().wake_by_ref()
                    }
                }

                return Ok(false);
            }

            // grow buffer if necessary.
            let (low, high) = if *this.lean_buffers {
                (LEAN_LW_BUFFER_SIZE, LEAN_HW_BUFFER_SIZE)
            } else {
                (LW_BUFFER_SIZE, HW_BUFFER_SIZE)
            };
            let remaining = this.read_buf.capacity() - this.read_buf.len();
            if remaining < low {
                this.read_buf.reserve(high - remaining);
            }

            match tokio_util::io::poll_read_buf(io.as_mut(), cx, this.read_buf) {
                Poll::Ready(Ok(n)) => {
                    // When draining a dropped request payload, keep FINISHED set so the
                    // disconnect/keep-alive decision can be made once the payload is fully drained.
                    if !this.payload.as_ref().is_some_and(|pl| pl.is_dropped()) {
                        this.flags.remove(Flags::FINISHED);
                    }

                    if n == 0 {
                        return Ok(true);
                    }

                    read_some = true;
                }

                Poll::Pending => {
                    return Ok(false);
                }

                Poll::Ready(Err(err)) => {
                    return match err.kind() {
                        // convert WouldBlock error to the same as Pending return
                        io::ErrorKind::WouldBlock => Ok(false),

                        // connection reset after partial read
                        io::ErrorKind::ConnectionReset if read_some => Ok(true),

                        _ => Err(DispatchError::Io(err)),
                    };
                }
            }
        }
    }

    /// threadline patch (PATCHES.md): the dispatcher has ended with `result`.
    /// A connection whose answer had a write timeout and whose socket still
    /// holds unsent bytes starts its [`CloseDrain`]; any other ends now.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn close_or_drain(
        mut self: Pin<&mut Self>,
        result: Result<(), DispatchError>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DispatchError>> {
        let Some(limit) = self.write_timeout else {
            return Poll::Ready(result);
        };
        if self.reset_on_close || self.io.is_none() {
            return Poll::Ready(result);
        }
        let Some(socket) = self
            .conn_data
            .as_deref()
            .and_then(|data| data.get::<ResetOnWriteTimeout>())
        else {
            return Poll::Ready(result);
        };
        let unsent = match unsent_bytes(socket.0) {
            Some(n) if n > 0 => n,
            _ => return Poll::Ready(result),
        };
        trace!("closing with {unsent} bytes unsent; waiting up to {limit:?} for the peer");
        let interval = std::time::Duration::from_millis(10);
        *self.as_mut().project().close_drain = Some(Box::new(CloseDrain {
            result: Some(result),
            unsent,
            deadline: tokio::time::Instant::now() + limit,
            interval,
            timer: Box::pin(sleep(interval)),
            discarded: 0,
            grace_until: None,
        }));
        // Polls the timer, so that it wakes this task.
        self.poll_close_drain(cx)
    }

    /// threadline patch (PATCHES.md): one look at a [`CloseDrain`]: done once
    /// nothing is left to send (the socket then closes as usual), or once
    /// the peer has taken nothing for the write timeout (the socket is then
    /// reset, and the kernel frees what it held).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn poll_close_drain(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DispatchError>> {
        let this = self.project();
        let fd = this
            .conn_data
            .as_deref()
            .and_then(|data| data.get::<ResetOnWriteTimeout>())
            .map(|socket| socket.0);
        let limit = this.write_timeout.unwrap_or_default();
        let drain = this
            .close_drain
            .as_mut()
            .expect("a close drain is under way");
        loop {
            if drain.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = tokio::time::Instant::now();
            // What the peer sent meanwhile is dropped: left unread, it would
            // make the close a reset.
            let room = DRAIN_DISCARD_MAX.saturating_sub(drain.discarded);
            let peer_open = match fd {
                Some(fd) if room > 0 => match drop_input(fd, room) {
                    Some(n) => {
                        drain.discarded += n;
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            let unsent = fd.and_then(unsent_bytes).unwrap_or(0);
            if unsent == 0 {
                // Everything has gone out; the peer may still be reading it,
                // and writing as it reads.
                let grace_until = *drain.grace_until.get_or_insert(now + DRAIN_GRACE);
                if !peer_open || now >= grace_until {
                    return Poll::Ready(drain.result.take().unwrap_or(Ok(())));
                }
                let next = (now + std::time::Duration::from_millis(20)).min(grace_until);
                drain.timer.as_mut().reset(next);
                continue;
            }
            if unsent < drain.unsent {
                drain.unsent = unsent;
                drain.deadline = now + limit;
            } else if now >= drain.deadline {
                trace!("peer took nothing for {limit:?} after the close; resetting");
                if let Some(fd) = fd {
                    reset_on_close(fd);
                }
                *this.reset_on_close = true;
                return Poll::Ready(drain.result.take().unwrap_or(Ok(())));
            }
            drain.interval = (drain.interval * 2).min(std::time::Duration::from_secs(1));
            let next = (now + drain.interval).min(drain.deadline);
            drain.timer.as_mut().reset(next);
        }
    }

    /// call upgrade service with request.
    fn upgrade(self: Pin<&mut Self>, req: Request) -> U::Future {
        let this = self.project();
        let mut parts = FramedParts::with_read_buf(
            this.io.take().unwrap(),
            mem::take(this.codec),
            mem::take(this.read_buf),
        );
        parts.write_buf = mem::take(this.write_buf);
        let framed = Framed::from_parts(parts);
        this.flow.upgrade.as_ref().unwrap().call((req, framed))
    }
}

impl<T, S, B, X, U> Future for Dispatcher<T, S, B, X, U>
where
    T: AsyncRead + AsyncWrite + Unpin,

    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,

    B: MessageBody,

    X: Service<Request, Response = Request>,
    X::Error: Into<Response<BoxBody>>,

    U: Service<(Request, Framed<T, Codec>), Response = ()>,
    U::Error: fmt::Display,
{
    type Output = Result<(), DispatchError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // threadline patch (PATCHES.md): a connection that ends with bytes
        // its peer has not taken waits for them (`CloseDrain`).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let DispatcherStateProj::Normal { inner } = self.as_mut().project().inner.project() {
            if inner.close_drain.is_some() {
                return inner.poll_close_drain(cx);
            }
        }
        let poll = self.as_mut().poll_inner(cx);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Poll::Ready(result) = poll {
            return match self.as_mut().project().inner.project() {
                DispatcherStateProj::Normal { inner } => inner.close_or_drain(result, cx),
                DispatcherStateProj::Upgrade { .. } => Poll::Ready(result),
            };
        }
        poll
    }
}

impl<T, S, B, X, U> Dispatcher<T, S, B, X, U>
where
    T: AsyncRead + AsyncWrite + Unpin,

    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,

    B: MessageBody,

    X: Service<Request, Response = Request>,
    X::Error: Into<Response<BoxBody>>,

    U: Service<(Request, Framed<T, Codec>), Response = ()>,
    U::Error: fmt::Display,
{
    #[inline]
    fn poll_inner(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), DispatchError>> {
        let this = self.as_mut().project();

        #[cfg(test)]
        {
            *this.poll_count += 1;
        }

        match this.inner.project() {
            DispatcherStateProj::Upgrade { fut: upgrade } => upgrade.poll(cx).map_err(|err| {
                error!("Upgrade handler error: {}", err);
                DispatchError::Upgrade
            }),

            DispatcherStateProj::Normal { mut inner } => {
                trace!("start flags: {:?}", &inner.flags);

                trace_timer_states(
                    "start",
                    &inner.head_timer,
                    &inner.ka_timer,
                    &inner.shutdown_timer,
                );

                inner.as_mut().poll_graceful_shutdown(cx);
                inner.as_mut().poll_timers(cx)?;

                let poll = if inner.flags.contains(Flags::LINGER) {
                    match inner.as_mut().poll_linger(cx)? {
                        Poll::Ready(()) => {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        Poll::Pending => Poll::Pending,
                    }
                } else if inner.flags.contains(Flags::SHUTDOWN) {
                    if inner.flags.contains(Flags::WRITE_DISCONNECT) {
                        Poll::Ready(Ok(()))
                    } else {
                        // flush buffer and wait on blocked
                        ready!(inner.as_mut().poll_flush(cx))?;
                        Pin::new(inner.as_mut().project().io.as_mut().unwrap())
                            .poll_shutdown(cx)
                            .map_err(DispatchError::from)
                    }
                } else {
                    // read from I/O stream and fill read buffer
                    let should_disconnect = inner.as_mut().read_available(cx)?;

                    // after reading something from stream, clear keep-alive timer
                    if !inner.read_buf.is_empty() && inner.flags.contains(Flags::KEEP_ALIVE) {
                        let inner = inner.as_mut().project();
                        inner.flags.remove(Flags::KEEP_ALIVE);
                        inner.ka_timer.clear(line!());
                        *inner.ka_reclaim = None;
                    }

                    if !inner.flags.contains(Flags::STARTED) {
                        inner.as_mut().project().flags.insert(Flags::STARTED);

                        if let Some(deadline) = inner.config.client_request_deadline() {
                            inner.as_mut().project().head_timer.set_and_init(
                                cx,
                                sleep_until(deadline.into()),
                                line!(),
                            );
                        }
                    }

                    inner.as_mut().poll_request(cx)?;

                    if should_disconnect {
                        // I/O stream should to be closed
                        let inner = inner.as_mut().project();
                        inner.flags.insert(Flags::READ_DISCONNECT);
                        if let Some(mut payload) = inner.payload.take() {
                            payload.set_error(PayloadError::Incomplete(None));
                            payload.feed_eof();
                        }
                    };

                    loop {
                        // poll response to populate write buffer
                        // drain indicates whether write buffer should be emptied before next run
                        let drain = match inner.as_mut().poll_response(cx)? {
                            PollResponse::DrainWriteBuf => true,

                            PollResponse::DoNothing => {
                                // KEEP_ALIVE is set in send_response_inner if client allows it
                                // FINISHED is set after writing last chunk of response
                                // (threadline patch: not again while the timer waits out
                                // the rest of the keep-alive, `ka_reclaim`)
                                if inner.flags.contains(Flags::KEEP_ALIVE | Flags::FINISHED)
                                    && inner.ka_reclaim.is_none()
                                {
                                    if let Some(timer) = inner.keep_alive_deadline() {
                                        inner.as_mut().project().ka_timer.set_and_init(
                                            cx,
                                            sleep_until(timer.into()),
                                            line!(),
                                        );
                                    }
                                }

                                false
                            }

                            // upgrade request and goes Upgrade variant of DispatcherState.
                            PollResponse::Upgrade(req) => {
                                let upgrade = inner.upgrade(req);
                                self.as_mut()
                                    .project()
                                    .inner
                                    .set(DispatcherState::Upgrade { fut: upgrade });
                                return self.poll_inner(cx);
                            }
                        };

                        // we didn't get WouldBlock from write operation, so data get written to
                        // kernel completely (macOS) and we have to write again otherwise response
                        // can get stuck
                        //
                        // TODO: want to find a reference for this behavior
                        // see introduced commit: 3872d3ba
                        let flush_was_ready = inner.as_mut().poll_flush(cx)?.is_ready();

                        // this assert seems to always be true but not willing to commit to it until
                        // we understand what Nikolay meant when writing the above comment
                        // debug_assert!(flush_was_ready);

                        if !flush_was_ready || !drain {
                            break;
                        }
                    }

                    // client is gone
                    if inner.flags.contains(Flags::WRITE_DISCONNECT) {
                        trace!("client is gone; disconnecting");
                        return Poll::Ready(Ok(()));
                    }

                    let inner_p = inner.as_mut().project();
                    let state_is_none = inner_p.state.is_none();

                    // threadline patch (PATCHES.md): a chunked body answered
                    // without being read is drained for the next request, once
                    // (upstream: with no deadline, so a client that stopped
                    // sending it held the connection for good). After an answer
                    // that said `Connection: close` nothing would follow it: the
                    // connection lingers and closes. Else the rest of the body
                    // must come within the time a request head has.
                    if state_is_none
                        && !*inner_p.drain_timed
                        && inner_p.payload.as_ref().is_some_and(PayloadSender::is_dropped)
                        && !inner_p.flags.intersects(Flags::LINGER | Flags::SHUTDOWN)
                    {
                        if !inner_p.codec.keep_alive() {
                            inner_p.payload.take();
                            *inner_p.linger_after_answer = true;
                        } else if let Some(deadline) = inner_p.config.client_request_deadline() {
                            inner_p.shutdown_timer.set_and_init(
                                cx,
                                sleep_until(deadline.into()),
                                line!(),
                            );
                            *inner_p.drain_timed = true;
                        }
                    }

                    // threadline patch (PATCHES.md): a malformed request or body,
                    // answered: linger rather than close under a client still
                    // sending. (The parse error, which the server would only
                    // drop unlogged, goes with it.)
                    if *inner_p.linger_after_answer && state_is_none && inner_p.messages.is_empty()
                    {
                        *inner_p.linger_after_answer = false;
                        if *inner_p.drain_timed {
                            // The linger's own timer replaces the drain's.
                            *inner_p.drain_timed = false;
                            inner_p.shutdown_timer.clear(line!());
                        }
                        if inner_p.error.take().is_some() {
                            trace!("malformed request answered; lingering before the close");
                        }
                        // threadline patch (PATCHES.md, `ka_timer` at the
                        // linger): an answer before this one may have started
                        // the keep-alive timer; the connection is not kept
                        // alive now, so the timer is over (it would fire into
                        // the linger; debug builds asserted, and panicked).
                        if inner_p.ka_timer.is_enabled() {
                            inner_p.ka_timer.clear(line!());
                            *inner_p.ka_reclaim = None;
                        }
                        InnerDispatcher::<T, S, B, X, U>::linger_before_close(
                            inner_p.flags,
                            inner_p.config,
                            inner_p.keep_alive_pressure.as_deref(),
                        );
                        return self.poll_inner(cx);
                    }

                    // If the read-half is closed, we start the shutdown procedure if either is
                    // true:
                    //
                    // - state is [`State::None`], which means that we're done with request
                    //   processing, so if the client closed its writer-side it means that it won't
                    //   send more requests.
                    // - The user requested to not allow half-closures
                    if inner_p.flags.contains(Flags::READ_DISCONNECT)
                        && (!inner_p.config.h1_allow_half_closed() || state_is_none)
                    {
                        trace!("read half closed; start shutdown");
                        inner_p.flags.insert(Flags::SHUTDOWN);
                    }

                    // keep-alive and stream errors
                    if state_is_none && inner_p.write_buf.is_empty() {
                        if let Some(err) = inner_p.error.take() {
                            error!("stream error: {}", &err);
                            return Poll::Ready(Err(err));
                        }

                        // disconnect if keep-alive is not enabled
                        if inner_p.flags.contains(Flags::FINISHED)
                            && !inner_p.flags.contains(Flags::KEEP_ALIVE)
                            && inner_p.payload.is_none()
                        {
                            inner_p.flags.remove(Flags::FINISHED);
                            // threadline patch (PATCHES.md, `last_request`):
                            // requests the client sent after the one that
                            // closes the connection are left unread; it may
                            // still be sending them, so the connection lingers
                            // rather than closing under it.
                            if *inner_p.last_request && !inner_p.read_buf.is_empty() {
                                InnerDispatcher::<T, S, B, X, U>::linger_before_close(
                                    inner_p.flags,
                                    inner_p.config,
                                    inner_p.keep_alive_pressure.as_deref(),
                                );
                            } else {
                                inner_p.flags.insert(Flags::SHUTDOWN);
                            }
                            return self.poll_inner(cx);
                        }

                        // disconnect if shutdown
                        if inner_p.flags.contains(Flags::SHUTDOWN) {
                            return self.poll_inner(cx);
                        }
                    }

                    trace_timer_states(
                        "end",
                        inner_p.head_timer,
                        inner_p.ka_timer,
                        inner_p.shutdown_timer,
                    );

                    if inner_p.flags.intersects(Flags::LINGER | Flags::SHUTDOWN) {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                };

                trace!("end flags: {:?}", &inner.flags);

                poll
            }
        }
    }
}

/// threadline patch (see vendor/actix-http/PATCHES.md): an idle
/// connection's keep-alive `timer` has fired at its first step, the short
/// keep-alive. Unless the server is under pressure (or the configured
/// keep-alive is no longer), the connection waits out the rest: `timer` is
/// moved to the configured deadline, and the pressure's notice returned,
/// registered with `cx`'s waker. `None`: the connection is to close.
fn rest_of_keep_alive(
    pressure: &KeepAlivePressure,
    config: &ServiceConfig,
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
) -> Option<Pin<Box<tokio::sync::futures::OwnedNotified>>> {
    let rest = config
        .keep_alive()
        .duration()?
        .checked_sub(pressure.short_keep_alive())
        .filter(|rest| !rest.is_zero())?;
    // The notice is taken before the pressure is read: a pressure that
    // starts after the read notifies it (the two are read in that order,
    // written in the other, see `KeepAlivePressure::set`).
    let mut reclaim = Box::pin(std::sync::Arc::clone(&pressure.reclaim).notified_owned());
    if pressure.under_pressure() || reclaim.as_mut().poll(cx).is_ready() {
        return None;
    }
    // The first step ended the short keep-alive after the connection went
    // idle; the configured keep-alive ends `rest` later.
    let deadline = timer.deadline() + rest;
    timer.as_mut().reset(deadline);
    if timer.as_mut().poll(cx).is_ready() {
        return None;
    }
    Some(reclaim)
}

fn should_close_for_unread_payload(
    payload: Option<&PayloadSender>,
    payload_drainable: bool,
) -> bool {
    let payload_unfinished = payload.is_some();
    let drain_payload = payload.is_some_and(|pl| pl.is_dropped()) && payload_drainable;

    payload_unfinished && !drain_payload
}

#[allow(dead_code)]
fn trace_timer_states(
    label: &str,
    head_timer: &TimerState,
    ka_timer: &TimerState,
    shutdown_timer: &TimerState,
) {
    trace!("{} timers:", label);

    if head_timer.is_enabled() {
        trace!("  head {}", &head_timer);
    }

    if ka_timer.is_enabled() {
        trace!("  keep-alive {}", &ka_timer);
    }

    if shutdown_timer.is_enabled() {
        trace!("  shutdown {}", &shutdown_timer);
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod dispatcher_tests;

#[cfg(test)]
#[path = "dispatcher_buffer_tests.rs"]
mod buffer_tests;
