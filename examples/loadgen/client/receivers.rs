//! The receiver threads that read the raw WebSocket client's sockets once
//! connected: one epoll loop (mio) each over its share of the sockets.
//!
//! Each read also takes the kernel's receive timestamp of the bytes
//! (`SO_TIMESTAMPNS`): when the server's frame reached this socket, before
//! the generator's own threads, sharing the cores, got round to reading it.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

use super::frame::{answer_close, masked_frame, Frame, FrameReader};
use super::ws::RawWs;
use crate::figures::micros;
use crate::load::crowd::SubOut;

/// Threads that read the raw client's connected sockets, each with one
/// epoll loop (mio) over its share. A tokio task per socket costs a wake-up,
/// a schedule and a poll per delivery on top of the read; the generator
/// shares the machine with the server, so its cost per delivery is kept to
/// the `epoll_wait` share, the `recv` and the parse.
pub struct Receivers {
    threads: Vec<ReceiverThread>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
}

struct ReceiverThread {
    tx: std::sync::mpsc::Sender<(RawWs, SubOut)>,
    waker: Arc<mio::Waker>,
    handle: std::sync::Mutex<Option<std::thread::JoinHandle<Vec<SubOut>>>>,
}

/// The token of a receiver's waker (sockets are numbered from 0).
const WAKE: mio::Token = mio::Token(usize::MAX);

impl Receivers {
    /// `nice`: the receiver threads' nice value (0 leaves it as it is);
    /// `batch`: whether they run under `SCHED_BATCH` (no wake-up preemption);
    /// `stamps`: whether reads take the kernel's receive timestamp.
    pub fn start(
        n: usize,
        nice: i32,
        batch: bool,
        stamps: bool,
        epoch: Instant,
        received: Arc<AtomicU64>,
    ) -> Result<Receivers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let poll = mio::Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
            let waker = Arc::new(
                mio::Waker::new(poll.registry(), WAKE)
                    .map_err(|e| format!("cannot create a waker: {e}"))?,
            );
            let (tx, rx) = std::sync::mpsc::channel();
            let receiver = Receiver {
                poll,
                rx,
                stop: stop.clone(),
                epoch,
                stamps,
                received: received.clone(),
                conns: Vec::new(),
                gone: Vec::new(),
                scratch: vec![0; 64 * 1024],
                cmsg: vec![0; 64],
            };
            let handle = std::thread::Builder::new()
                .name(format!("receiver-{i}"))
                .spawn(move || {
                    if batch {
                        // Per thread, like the nice value below, which is set
                        // after it: this call also sets the nice value (to 0).
                        use thread_priority::{
                            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                        };
                        if let Err(e) = thread_priority::set_thread_priority_and_policy(
                            thread_priority::thread_native_id(),
                            ThreadPriority::Os(Default::default()),
                            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
                        ) {
                            eprintln!("receiver: cannot set SCHED_BATCH: {e:?}");
                        }
                    }
                    if nice != 0 {
                        // On Linux a nice value is per thread: this one only.
                        if let Err(e) = rustix::process::setpriority_process(None, nice) {
                            eprintln!("receiver: cannot set nice {nice}: {e}");
                        }
                    }
                    receiver.run()
                })
                .map_err(|e| format!("cannot start a receiver thread: {e}"))?;
            threads.push(ReceiverThread {
                tx,
                waker,
                handle: std::sync::Mutex::new(Some(handle)),
            });
        }
        Ok(Receivers {
            threads,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// Hands a connected socket (past `connection.ready`) and its tally so
    /// far to the next thread in turn.
    pub fn add(&self, ws: RawWs, out: SubOut) {
        let t = &self.threads[self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len()];
        if t.tx.send((ws, out)).is_ok() {
            let _ = t.waker.wake();
        }
    }

    /// Closes every socket and returns what each saw (blocks until the
    /// threads are done).
    pub fn finish(&self) -> Vec<SubOut> {
        self.stop.store(true, Ordering::SeqCst);
        let mut outs = Vec::new();
        for t in &self.threads {
            let _ = t.waker.wake();
            let handle = t.handle.lock().map(|mut h| h.take()).unwrap_or(None);
            if let Some(h) = handle {
                outs.extend(h.join().unwrap_or_default());
            }
        }
        outs
    }
}

/// One receiver thread's state.
struct Receiver {
    poll: mio::Poll,
    rx: std::sync::mpsc::Receiver<(RawWs, SubOut)>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    /// Whether sockets get `SO_TIMESTAMPNS`.
    stamps: bool,
    received: Arc<AtomicU64>,
    conns: Vec<Conn>,
    /// Sockets that could not be moved here: only their tallies.
    gone: Vec<SubOut>,
    /// What each read lands in; a frame that is not complete yet moves to
    /// its socket's own buffer.
    scratch: Vec<u8>,
    /// Room for a read's control message (its receive timestamp).
    cmsg: Vec<u8>,
}

/// A socket a receiver reads.
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes of a frame not complete yet.
    pending: Vec<u8>,
    reader: FrameReader,
    out: SubOut,
    open: bool,
}

impl Receiver {
    fn run(mut self) -> Vec<SubOut> {
        let mut events = mio::Events::with_capacity(1024);
        loop {
            match self.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("receiver: poll failed: {e}");
                    break;
                }
            }
            // Messages of this batch, added to the shared count once: an
            // atomic add per delivery bounced its cache line between threads.
            let mut counted = 0;
            for event in events.iter() {
                let i = event.token().0;
                if event.token() != WAKE && i < self.conns.len() {
                    counted += self.on_readable(i);
                }
            }
            if counted > 0 {
                self.received.fetch_add(counted, Ordering::Relaxed);
            }
            while let Ok((ws, out)) = self.rx.try_recv() {
                self.adopt(ws, out);
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        for c in &mut self.conns {
            if c.open {
                use std::io::Write;
                let _ = (&c.stream).write_all(&masked_frame(0x8, &1000u16.to_be_bytes()));
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        let mut outs = self.gone;
        outs.extend(self.conns.into_iter().map(|c| c.out));
        outs
    }

    fn adopt(&mut self, ws: RawWs, mut out: SubOut) {
        let (stream, rest, reader) = match ws.into_parts() {
            Ok(parts) => parts,
            Err(e) => {
                out.closed_by_server = Some(format!("error: {e}"));
                self.gone.push(out);
                return;
            }
        };
        let mut stream = mio::net::TcpStream::from_std(stream);
        let stamped = if self.stamps {
            setsockopt(&stream, sockopt::ReceiveTimestampns, &true)
        } else {
            Ok(())
        };
        if let Err(e) = stamped {
            out.closed_by_server = Some(format!("error: SO_TIMESTAMPNS: {e}"));
            self.gone.push(out);
            return;
        }
        let token = mio::Token(self.conns.len());
        let registered = self
            .poll
            .registry()
            .register(&mut stream, token, mio::Interest::READABLE);
        let mut conn = Conn {
            stream,
            pending: Vec::new(),
            reader,
            out,
            open: true,
        };
        if let Err(e) = registered {
            conn.end(format!("error: {e}"));
        } else if !rest.is_empty() {
            // Frames that came with `connection.ready`.
            // Read before the socket had timestamps: no arrival time.
            let now = micros(self.epoch.elapsed());
            let counted = conn.take(&rest, now, None);
            self.received.fetch_add(counted, Ordering::Relaxed);
        }
        self.conns.push(conn);
    }

    /// Reads what the socket has (edge-triggered: until it has no more);
    /// returns the messages counted.
    fn on_readable(&mut self, i: usize) -> u64 {
        let conn = &mut self.conns[i];
        let fd = conn.stream.as_raw_fd();
        let mut counted = 0;
        while conn.open {
            let mut iov = [IoSliceMut::new(&mut self.scratch)];
            let read =
                recvmsg::<()>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::empty()).map(|msg| {
                    // TCP reports the timestamp of the last segment the read
                    // took: for an earlier frame in the same read, a later
                    // arrival than its own.
                    let stamp = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                            _ => None,
                        })
                    });
                    (msg.bytes, stamp)
                });
            match read {
                Ok((0, _)) => conn.end("eof".into()),
                Ok((n, stamp)) => {
                    let now = micros(self.epoch.elapsed());
                    // Kernel stamps are wall-clock time, message stamps count
                    // on the monotonic clock: the wall clock only measures
                    // how long the bytes waited before this read (a few ms
                    // at most), so its corrections cannot skew a whole run.
                    // A stamp "after" the read (a clock step) counts as 0.
                    let arrived = stamp.map(|ts| {
                        let wall = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
                        let waited = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH + wall)
                            .unwrap_or_default();
                        now.saturating_sub(micros(waited))
                    });
                    let k = conn.take(&self.scratch[..n], now, arrived);
                    if k > 1 && arrived.is_some() {
                        conn.out.shared_stamps(k - 1);
                    }
                    counted += k;
                    if n < self.scratch.len() {
                        break; // a short read drained the socket
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => conn.end(format!("error: {e}")),
            }
        }
        counted
    }
}

impl Conn {
    fn end(&mut self, why: String) {
        self.open = false;
        self.out.closed_by_server.get_or_insert(why);
    }

    /// Takes the bytes just read (at `now`, having reached the socket at
    /// `arrived`): every complete frame is handled, the rest waits for the
    /// next read. Returns the messages counted.
    fn take(&mut self, data: &[u8], now: u32, arrived: Option<u32>) -> u64 {
        let mut counted = 0;
        if self.pending.is_empty() {
            let used = self.frames(data, now, arrived, &mut counted);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.frames(&pending, now, arrived, &mut counted);
            pending.drain(..used);
            self.pending = pending;
        }
        counted
    }

    /// Handles the complete frames at the start of `data`, adding the
    /// messages to `counted`; returns the bytes they took.
    fn frames(&mut self, data: &[u8], now: u32, arrived: Option<u32>, counted: &mut u64) -> usize {
        use std::io::Write;
        let mut pos = 0;
        while self.open {
            let (used, frame) = self.reader.next(&data[pos..]);
            pos += used;
            match frame {
                None => break,
                Some(Frame::Message(message)) => {
                    if self.out.record(message, now, arrived) {
                        *counted += 1;
                    }
                }
                Some(Frame::Ping(payload)) => {
                    // A pong is a few bytes: it fits in the send buffer.
                    let _ = (&self.stream).write_all(&masked_frame(0xA, payload));
                }
                Some(Frame::Close(code)) => {
                    let (reply, ended) = answer_close(code);
                    let _ = (&self.stream).write_all(&reply);
                    self.end(ended);
                }
            }
        }
        pos
    }
}
