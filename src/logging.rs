//! Log output: env_logger's text lines (the default), or one JSON object per
//! line (`--log-format json`) for a log shipper. `RUST_LOG` filters both
//! (env_logger's filter); the lines are formatted and written here.
//!
//! A text line is env_logger's default: `[time LEVEL target] message`, the
//! time in RFC 3339 seconds, a multi-line message indented by four spaces.
//! A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`,
//! `target` and `message`, plus the record's key-values: the request line
//! (target `threadline::request`) adds `request_id`, `method`, `route`,
//! `status`, `latency_ms`, `client` and `user_id` (null unless the request
//! authenticated). Only what the code names as a key-value is written: no
//! header, query string or body ever reaches a record.
//!
//! Request lines, one per request, are buffered and written together at
//! most [`FLUSH_EVERY`] later (or once [`FLUSH_AT`] bytes wait in a
//! thread's buffer): one `write` to stderr for many requests instead of
//! one each, measured as a tenth of a cached read's CPU. Each thread
//! buffers its own lines (the workers do not queue on one lock for every
//! request), so within one flush the lines come thread by thread, each
//! thread's in order. Every other line is written at once, after the
//! request lines before it, so the order is kept. [`flush`] writes what
//! waits (at exit, and before a panic's message); a process killed outright
//! loses at most the last [`FLUSH_EVERY`] of request lines.
//!
//! Request lines of requests that did not get in with a key are bounded
//! per client address and minute ([`UnauthenticatedLines`]); the rest of
//! such a minute is summed up in one line.
//!
//! Whether `RUST_LOG` lets request lines through is decided once, at
//! start, unless it filters messages by a regex (`RUST_LOG=info/regex`),
//! which is then matched against every line as before.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use log::kv::{Error, Key, Value, VisitSource};

/// How log records are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// env_logger's lines: `[time LEVEL target] message`.
    Text,
    /// One JSON object per line.
    Json,
}

/// The target of the request lines, the only ones buffered.
pub const REQUEST_TARGET: &str = "threadline::request";
/// The longest a request line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Waiting lines are written at once when they reach this many bytes.
pub const FLUSH_AT: usize = 64 * 1024;

/// The log filter when `RUST_LOG` is unset. actix-http's connection
/// dispatcher logs an ERROR line for every malformed request (bad header,
/// conflicting lengths, head too large) and every broken connection: any
/// unauthenticated client could fill the log. Those requests are answered
/// (400/431) all the same; `RUST_LOG` replaces this filter as a whole.
/// The MCP SDK logs every request it serves at info (through `tracing`'s
/// log bridge): its warnings are enough. The docs and the systemd unit
/// quote it (a test holds them to it).
pub const DEFAULT_FILTER: &str = "info,actix_http::h1::dispatcher=off,rmcp=warn,tracing::span=warn";

/// Installs the logger. `default_filter` ([`DEFAULT_FILTER`] for the
/// binary) applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .build();
    // env_logger reads the same variable the same way.
    let spec = std::env::var(env_logger::DEFAULT_FILTER_ENV).ok();
    let request_lines = request_lines(&filter, spec.as_deref().unwrap_or(default_filter));
    // Only the JSON request line shows the account.
    REQUEST_ACCOUNTS.store(
        format == LogFormat::Json && request_lines != Some(false),
        Ordering::Relaxed,
    );
    let sink = Arc::new(Sink::default());
    start_flusher(&sink);
    let max_level = filter.filter();
    let logger = Logger {
        filter,
        request_lines,
        format,
        sink,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max_level);
        // A panic's message goes straight to stderr: the lines logged
        // before it go first.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    }
}

/// Whether request lines may show the account a request authenticated as
/// (so the key check must note it): yes until [`init`] says otherwise.
static REQUEST_ACCOUNTS: AtomicBool = AtomicBool::new(true);

/// Whether request lines may show the account a request authenticated as.
pub fn request_accounts_logged() -> bool {
    REQUEST_ACCOUNTS.load(Ordering::Relaxed)
}

/// Whether `filter`, built from the directives `spec`, lets request lines
/// through: known once and for all when it depends only on their level and
/// target; `None` when `spec` filters messages too (after a `/`), so each
/// line's text must be matched.
fn request_lines(filter: &env_logger::Logger, spec: &str) -> Option<bool> {
    if spec.contains('/') {
        return None;
    }
    let request = log::Metadata::builder()
        .level(log::Level::Info)
        .target(REQUEST_TARGET)
        .build();
    Some(log::Log::enabled(filter, &request))
}

/// The target of the lines that sum up request lines left out (see
/// [`UnauthenticatedLines`]): under the request lines' own, so a filter
/// that leaves those out leaves these out too.
pub const SUMMARY_TARGET: &str = "threadline::request::summary";

/// Addresses [`UnauthenticatedLines`] keeps apart within a minute; the
/// ones after them share one count ("other addresses").
pub const MAX_SUMMED_ADDRESSES: usize = 1024;

/// The bound on request lines of requests that did not get in with a key
/// (refusals, unmatched paths, open routes; the middleware says which):
/// per client address and minute, the first `per_minute` are written, the
/// rest only counted, and once the minute is over one line per address
/// says how many were left out, by status. Such requests cost a client
/// nothing to send, so without the bound one client could write the log
/// as fast as it can send (~100 bytes a request). Authenticated requests
/// never come here: each keeps its line.
///
/// Minutes are the clock's (`15:20:00` to `15:21:00`): the summaries of a
/// minute are written at its end (by [`UnauthenticatedLines::tick`], or
/// the next request that comes here) and at shutdown
/// ([`UnauthenticatedLines::finish`]). At most [`MAX_SUMMED_ADDRESSES`]
/// addresses are counted apart; the rest share one allowance and one
/// count, so a client of many addresses writes at most
/// `(MAX_SUMMED_ADDRESSES + 1) × per_minute` lines and as many summaries
/// a minute.
pub struct UnauthenticatedLines {
    /// 0: every line is written.
    per_minute: u32,
    window: Mutex<Window>,
}

/// One minute's counts.
#[derive(Default)]
struct Window {
    /// Unix minute.
    minute: u64,
    per_ip: std::collections::HashMap<std::net::IpAddr, Tally>,
    /// Addresses beyond [`MAX_SUMMED_ADDRESSES`].
    others: Tally,
}

#[derive(Default)]
struct Tally {
    written: u32,
    left_out: u64,
    /// Lines left out by status, in the order the statuses came.
    by_status: Vec<(u16, u64)>,
}

/// One address's (or the others') left-out lines of one minute.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    /// None: the addresses beyond [`MAX_SUMMED_ADDRESSES`].
    client: Option<std::net::IpAddr>,
    minute: u64,
    left_out: u64,
    by_status: Vec<(u16, u64)>,
}

impl UnauthenticatedLines {
    pub fn new(per_minute: u32) -> UnauthenticatedLines {
        UnauthenticatedLines {
            per_minute,
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether the line of a request from `client` (as the per-IP quotas
    /// count it, [`crate::ratelimit::ip_key`]) answered `status` is
    /// written; if not, it is counted. Writes the last minute's summaries
    /// first when a new minute has begun.
    pub fn admit(&self, client: std::net::IpAddr, status: u16) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let (admitted, ended) = self.admit_at(client, status, unix_minute());
        write_summaries(ended);
        admitted
    }

    fn admit_at(&self, client: std::net::IpAddr, status: u16, minute: u64) -> (bool, Vec<Summary>) {
        let mut guard = lock(&self.window);
        let window = &mut *guard;
        let ended = window.roll(minute);
        let tally =
            if window.per_ip.len() < MAX_SUMMED_ADDRESSES || window.per_ip.contains_key(&client) {
                window.per_ip.entry(client).or_default()
            } else {
                &mut window.others
            };
        let admitted = tally.written < self.per_minute;
        if admitted {
            tally.written += 1;
        } else {
            tally.left_out += 1;
            match tally.by_status.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => tally.by_status.push((status, 1)),
            }
        }
        (admitted, ended)
    }

    /// Writes the summaries of a minute that has ended (called every
    /// second or so, so a flood that stopped is still summed up).
    pub fn tick(&self) {
        let ended = lock(&self.window).roll(unix_minute());
        write_summaries(ended);
    }

    /// Writes the summaries of the minute under way (at shutdown).
    pub fn finish(&self) {
        let ended = lock(&self.window).roll(u64::MAX);
        write_summaries(ended);
    }
}

impl Window {
    /// Moves to `minute`, returning the summaries of the one before if it
    /// ended (its counts are dropped with it).
    fn roll(&mut self, minute: u64) -> Vec<Summary> {
        if self.minute == minute {
            return Vec::new();
        }
        let ended = std::mem::take(self);
        self.minute = minute;
        let ended_minute = ended.minute;
        let summary = |client, tally: Tally| {
            (tally.left_out > 0).then_some(Summary {
                client,
                minute: ended_minute,
                left_out: tally.left_out,
                by_status: tally.by_status,
            })
        };
        let mut summaries: Vec<Summary> = ended
            .per_ip
            .into_iter()
            .filter_map(|(ip, tally)| summary(Some(ip), tally))
            .collect();
        summaries.sort_by_key(|s| std::cmp::Reverse(s.left_out));
        summaries.extend(summary(None, ended.others));
        summaries
    }
}

fn unix_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl std::fmt::Display for Summary {
    /// `127.0.0.2: 99940 request lines without a key left out in the
    /// minute from 2026-11-29T15:20:00Z (401: 4, 429: 99936)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.client {
            Some(ip) => write!(f, "{ip}: ")?,
            None => f.write_str("other addresses: ")?,
        }
        let since = seconds_text(self.minute.saturating_mul(60));
        write!(
            f,
            "{} request lines without a key left out in the minute from {}Z (",
            self.left_out,
            std::str::from_utf8(&since).unwrap_or("?"),
        )?;
        for (i, (status, n)) in self.by_status.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{status}: {n}")?;
        }
        f.write_str(")")
    }
}

fn write_summaries(summaries: Vec<Summary>) {
    for mut summary in summaries {
        summary.by_status.sort_unstable();
        let client = summary
            .client
            .map_or_else(|| "other".to_owned(), |ip| ip.to_string());
        log::info!(
            target: SUMMARY_TARGET,
            client = client.as_str(),
            left_out = summary.left_out;
            "{summary}"
        );
    }
}

/// Writes the request lines that wait (before the process exits).
pub fn flush() {
    log::logger().flush();
}

struct Logger {
    filter: env_logger::Logger,
    /// The filter's verdict on request lines, when it is the same for all.
    request_lines: Option<bool>,
    format: LogFormat,
    sink: Arc<Sink>,
}

impl Logger {
    fn admits(&self, record: &log::Record<'_>) -> bool {
        match self.request_lines {
            Some(verdict)
                if record.level() == log::Level::Info && record.target() == REQUEST_TARGET =>
            {
                verdict
            }
            _ => self.filter.matches(record),
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.admits(record) {
            return;
        }
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        let write = |line: &mut String| {
            line.clear();
            match self.format {
                LogFormat::Text => text_line(line, record),
                LogFormat::Json => json_line(line, record),
            }
            if record.target() == REQUEST_TARGET {
                self.sink.buffer(line.as_bytes());
            } else {
                self.sink.write_now(line.as_bytes());
            }
        };
        // A record logged while formatting one (a Display that logs) gets
        // its own buffer.
        let _ = LINE.try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut String::new()),
        });
    }

    fn flush(&self) {
        self.sink.flush();
    }
}

/// The lines that wait, and stderr.
#[derive(Default)]
struct Sink {
    /// Each thread's lines not yet written, in the order the threads
    /// logged their first one. A thread locks its own buffer for each line;
    /// only a flush takes the others'.
    buffers: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Set (and signalled) when a thread's buffer gets its first line.
    waiting: Mutex<bool>,
    filled: Condvar,
    /// Held while writing, so lines leave in the order they were logged;
    /// holds the buffer the last write emptied, to fill next time.
    writing: Mutex<Vec<u8>>,
}

impl Sink {
    fn buffer(&self, line: &[u8]) {
        thread_local! {
            static MINE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
        }
        let added = MINE.try_with(|mine| {
            let mut mine = mine.borrow_mut();
            let buffer = mine.get_or_insert_with(|| {
                let buffer = Arc::new(Mutex::new(Vec::new()));
                lock(&self.buffers).push(Arc::clone(&buffer));
                buffer
            });
            let mut pending = lock(buffer);
            let first = pending.is_empty();
            pending.extend_from_slice(line);
            (first, pending.len() >= FLUSH_AT)
        });
        let Ok((first, full)) = added else {
            // The thread is being torn down: the line is written now.
            self.write_now(line);
            return;
        };
        if full {
            self.flush();
        } else if first {
            *lock(&self.waiting) = true;
            self.filled.notify_one();
        }
    }

    fn write_now(&self, line: &[u8]) {
        self.write_pending(Some(line));
    }

    fn flush(&self) {
        self.write_pending(None);
    }

    fn write_pending(&self, then: Option<&[u8]>) {
        let mut out = lock(&self.writing);
        lock(&self.buffers).retain(|buffer| {
            let mut pending = lock(buffer);
            out.extend_from_slice(&pending);
            pending.clear();
            // Only this list still holds the buffer of a thread that has
            // ended: it is dropped once empty.
            Arc::strong_count(buffer) > 1
        });
        if let Some(line) = then {
            out.extend_from_slice(line);
        }
        if !out.is_empty() {
            // Nowhere to report a failing stderr: the line is dropped.
            let _ = std::io::stderr().lock().write_all(&out);
            out.clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock leaves bytes, never a broken state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes waiting request lines [`FLUSH_EVERY`] after the first of them
/// arrived; asleep while none wait.
fn start_flusher(sink: &Arc<Sink>) {
    let sink = Arc::clone(sink);
    let spawned = std::thread::Builder::new()
        .name("threadline-log".into())
        .spawn(move || loop {
            let mut waiting = lock(&sink.waiting);
            while !*waiting {
                waiting = sink.filled.wait(waiting).unwrap_or_else(|e| e.into_inner());
            }
            // Lines buffered from here on are taken by the flush below, or
            // set the flag again.
            *waiting = false;
            drop(waiting);
            std::thread::sleep(FLUSH_EVERY);
            sink.flush();
        });
    if let Err(e) = spawned {
        // Without the thread, waiting lines are written when the buffer
        // fills or another line is logged: say so once.
        eprintln!(
            "request log lines are written in batches of {FLUSH_AT} bytes (no flush thread: {e})"
        );
    }
}

/// The seconds of an RFC 3339 time (`2026-11-28T15:32:05`), formatted once
/// a second per thread, and the milliseconds.
fn now() -> (SecondsText, u32) {
    thread_local! {
        static LAST: RefCell<(u64, SecondsText)> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    let text = LAST
        .try_with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != secs {
                *last = (secs, seconds_text(secs));
            }
            last.1
        })
        .unwrap_or_else(|_| seconds_text(secs));
    (text, millis)
}

type SecondsText = [u8; 19];

fn seconds_text(secs: u64) -> SecondsText {
    let mut text = *b"1970-01-01T00:00:00";
    if let Some(t) = chrono::DateTime::from_timestamp(secs as i64, 0) {
        let formatted = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        if formatted.len() == text.len() {
            text.copy_from_slice(formatted.as_bytes());
        }
    }
    text
}

fn push_seconds(out: &mut String, text: &SecondsText) {
    // The text is ASCII digits and separators.
    out.push_str(std::str::from_utf8(text).unwrap_or("1970-01-01T00:00:00"));
}

/// env_logger's default line: `[2026-11-28T15:32:05Z INFO  target] message`.
fn text_line(out: &mut String, record: &log::Record<'_>) {
    let (seconds, _) = now();
    out.push('[');
    push_seconds(out, &seconds);
    out.push_str("Z ");
    out.push_str(match record.level() {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN ",
        log::Level::Info => "INFO ",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    });
    if !record.target().is_empty() {
        out.push(' ');
        out.push_str(record.target());
    }
    out.push_str("] ");
    if record.target() == REQUEST_TARGET {
        // The request line is the server's own text, of bounded length
        // (the path is cut) and without control characters (the HTTP
        // parser refuses them in a request line).
        let message = out.len();
        let _ = write!(out, "{}", record.args());
        if out[message..].contains('\n') {
            let indented = out[message..].replace('\n', "\n    ");
            out.truncate(message);
            out.push_str(&indented);
        }
    } else {
        let mut message = Message::new(out, Form::Text);
        let _ = write!(message, "{}", record.args());
        message.finish();
    }
    out.push('\n');
}

/// The most bytes of a message a line other than a request line carries,
/// as written (escapes included). Libraries log what clients sent (the
/// MCP library, a malformed `Host` header or a protocol version from the
/// body, at WARN), so a client could otherwise make lines as long as its
/// headers and bodies: the rest is left out, and the line says how much.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// How a message is written into its line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A text line: line breaks indented (as env_logger does), other
    /// control and bidi characters escaped (`\u{1b}`), so text a client
    /// sent cannot move the cursor, rewrite a line on a terminal or
    /// reorder it.
    Text,
    /// Inside a JSON string.
    Json,
}

/// A message being written into its line: escaped for its [`Form`], cut
/// at [`MAX_MESSAGE_BYTES`] (on a character boundary) and then marked
/// `…(+N bytes)` with how much of the message was left out.
struct Message<'a> {
    out: &'a mut String,
    form: Form,
    /// Where the message starts in `out`.
    start: usize,
    /// Bytes of the message (as given) left out.
    left_out: usize,
}

impl<'a> Message<'a> {
    fn new(out: &'a mut String, form: Form) -> Message<'a> {
        let start = out.len();
        Message {
            out,
            form,
            start,
            left_out: 0,
        }
    }

    /// Appends `text` (one character's escaped form) if it fits.
    fn push(&mut self, text: &str, given: usize) -> bool {
        if self.out.len() - self.start + text.len() > MAX_MESSAGE_BYTES {
            self.left_out += given;
            return false;
        }
        self.out.push_str(text);
        true
    }

    fn finish(self) {
        if self.left_out > 0 {
            let _ = write!(self.out, "…(+{} bytes)", self.left_out);
        }
    }
}

impl std::fmt::Write for Message<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.left_out > 0 {
            self.left_out += s.len();
            return Ok(());
        }
        let mut buf = [0u8; 4];
        for (at, c) in s.char_indices() {
            let given = c.len_utf8();
            let fitted = match (self.form, c) {
                (Form::Text, '\n') => self.push("\n    ", given),
                (Form::Text, '\t') => self.push("\t", given),
                (Form::Text, c) if c.is_control() || is_bidi_control(c) => {
                    let escaped = format!("\\u{{{:x}}}", c as u32);
                    self.push(&escaped, given)
                }
                (Form::Json, c) if matches!(c, '"' | '\\') || (c as u32) < 0x20 => {
                    let mut escaped = String::with_capacity(6);
                    push_escaped(&mut escaped, c.encode_utf8(&mut buf));
                    self.push(&escaped, given)
                }
                (_, c) => self.push(c.encode_utf8(&mut buf), given),
            };
            if !fitted {
                // Everything after the first character left out is too.
                self.left_out += s.len() - at - given;
                break;
            }
        }
        Ok(())
    }
}

/// The bidi embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069): they reorder the text after them on a display.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One record as a JSON object on one line, written straight into `out`
/// (no intermediate map: a request line is written for every request).
fn json_line(out: &mut String, record: &log::Record<'_>) {
    let (seconds, millis) = now();
    out.push_str("{\"time\":\"");
    push_seconds(out, &seconds);
    let _ = write!(out, ".{millis:03}Z");
    out.push_str("\",\"level\":\"");
    out.push_str(record.level().as_str());
    out.push_str("\",\"target\":\"");
    push_escaped(out, record.target());
    out.push_str("\",\"message\":\"");
    if record.target() == REQUEST_TARGET {
        let _ = write!(Escaping(out), "{}", record.args());
    } else {
        let mut message = Message::new(out, Form::Json);
        let _ = write!(message, "{}", record.args());
        message.finish();
    }
    out.push('"');
    // A failing visit only loses the remaining key-values, never the line.
    let _ = record.key_values().visit(&mut Fields(out));
    out.push_str("}\n");
}

/// Appends `s` as the inside of a JSON string.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A `fmt::Write` that escapes what it is given into a JSON string.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends key-values as members, keeping numbers as numbers; an empty
/// string stands for an absent value and is written as `null`.
struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let out = &mut *self.0;
        out.push_str(",\"");
        push_escaped(out, key.as_str());
        out.push_str("\":");
        if let Some(n) = value.to_u64() {
            let _ = write!(out, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(out, "{n}");
        } else if let Some(x) = value.to_f64() {
            // Rust prints finite floats without an exponent: valid JSON.
            if x.is_finite() {
                let _ = write!(out, "{x}");
            } else {
                out.push_str("null");
            }
        } else if let Some(b) = value.to_bool() {
            out.push_str(if b { "true" } else { "false" });
        } else {
            out.push('"');
            let opened = out.len();
            let _ = write!(Escaping(out), "{value}");
            if out.len() == opened {
                out.pop();
                out.push_str("null");
            } else {
                out.push('"');
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(spec: &str) -> Option<bool> {
        let filter = env_logger::Builder::new().parse_filters(spec).build();
        request_lines(&filter, spec)
    }

    #[test]
    fn the_request_line_verdict_is_the_filters() {
        assert_eq!(verdict("info"), Some(true));
        assert_eq!(
            verdict("info,actix_http::h1::dispatcher=off,rmcp=warn"),
            Some(true)
        );
        assert_eq!(verdict("warn"), Some(false));
        assert_eq!(verdict("off"), Some(false));
        assert_eq!(verdict(""), Some(false));
        assert_eq!(verdict("info,threadline::request=off"), Some(false));
        assert_eq!(verdict("info,threadline=warn"), Some(false));
        assert_eq!(verdict("warn,threadline::request=info"), Some(true));
        assert_eq!(verdict("threadline=debug"), Some(true));
        // A message filter: every line is matched against it.
        assert_eq!(verdict("info/POST"), None);
    }

    fn json_of(record: &log::Record<'_>) -> String {
        let mut out = String::new();
        json_line(&mut out, record);
        out
    }

    #[test]
    fn a_text_line_is_env_loggers_default_format() {
        let record = log::Record::builder()
            .args(format_args!("req_x GET /x 200 0.3ms"))
            .level(log::Level::Info)
            .target("threadline::request")
            .build();
        let mut line = String::new();
        text_line(&mut line, &record);
        // [2026-11-28T15:32:05Z INFO  threadline::request] req_x GET /x 200 0.3ms
        let (time, rest) = line.split_at(21);
        assert!(time.starts_with('[') && time.ends_with('Z'), "{line}");
        chrono::DateTime::parse_from_rfc3339(&time[1..]).expect("an RFC 3339 time");
        assert_eq!(rest, " INFO  threadline::request] req_x GET /x 200 0.3ms\n");
    }

    #[test]
    fn a_multi_line_text_message_is_indented_as_env_logger_does() {
        let record = log::Record::builder()
            .args(format_args!("first\nsecond"))
            .level(log::Level::Warn)
            .target("t")
            .build();
        let mut line = String::new();
        text_line(&mut line, &record);
        assert!(line.ends_with(" WARN  t] first\n    second\n"), "{line}");
    }

    fn text_of(target: &str, message: &str) -> String {
        let mut line = String::new();
        text_line(
            &mut line,
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(log::Level::Warn)
                .target(target)
                .build(),
        );
        line
    }

    #[test]
    fn a_long_message_is_cut_and_says_how_much_was_left_out() {
        let long = format!("host={}", "h".repeat(60_000));
        let line = text_of("rmcp::transport", &long);
        let (_, message) = line.split_once("] ").unwrap();
        assert!(message.starts_with("host=hhh"), "{line}");
        let cut = MAX_MESSAGE_BYTES;
        assert_eq!(
            message,
            format!("{}…(+{} bytes)\n", &long[..cut], long.len() - cut)
        );
        // A cut never splits a character; a message just at the limit is whole.
        let wide = "é".repeat(MAX_MESSAGE_BYTES);
        let line = text_of("t", &wide);
        assert!(
            line.contains(&format!("…(+{} bytes)", MAX_MESSAGE_BYTES)),
            "{line}"
        );
        let exact = "x".repeat(MAX_MESSAGE_BYTES);
        assert!(text_of("t", &exact).ends_with(&format!("] {exact}\n")));
        // The JSON line is cut alike, and stays valid JSON.
        let text = json_of(
            &log::Record::builder()
                .args(format_args!("{long}\"quoted\""))
                .level(log::Level::Warn)
                .target("rmcp")
                .build(),
        );
        let line: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let message = line["message"].as_str().unwrap();
        assert!(message.len() < MAX_MESSAGE_BYTES + 32, "{}", message.len());
        assert!(message.ends_with(&format!("…(+{} bytes)", long.len() + 8 - cut)));
    }

    #[test]
    fn control_and_bidi_characters_a_client_sent_are_escaped_in_text_lines() {
        let line = text_of("rmcp", "body=\u{1b}[2J\rfake\u{202e}txt\u{85}\ttab\nnext");
        assert_eq!(
            line.split_once("] ").unwrap().1,
            "body=\\u{1b}[2J\\u{d}fake\\u{202e}txt\\u{85}\ttab\n    next\n"
        );
        // Request lines are the server's own and keep their fast path.
        let line = text_of(REQUEST_TARGET, "req_x GET /x 200 0.3ms");
        assert!(line.ends_with("] req_x GET /x 200 0.3ms\n"), "{line}");
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn past_the_bound_an_addresss_lines_are_counted_and_summed_up_once_a_minute() {
        let gate = UnauthenticatedLines::new(3);
        let minute = 29_431_000;
        let mut written = 0;
        for i in 0..1000 {
            let status = if i < 60 { 401 } else { 429 };
            let (admitted, ended) = gate.admit_at(ip("127.0.0.2"), status, minute);
            assert!(ended.is_empty());
            written += usize::from(admitted);
        }
        assert_eq!(written, 3, "the first 3 of the minute");
        // Another address has an allowance of its own.
        assert!(gate.admit_at(ip("127.0.0.3"), 401, minute).0);
        // The next minute: the summary of the last, and a fresh allowance.
        let (admitted, ended) = gate.admit_at(ip("127.0.0.2"), 401, minute + 1);
        assert!(admitted);
        assert_eq!(
            ended,
            [Summary {
                client: Some(ip("127.0.0.2")),
                minute,
                left_out: 997,
                by_status: vec![(401, 57), (429, 940)],
            }],
            "one summary: 127.0.0.3 left nothing out"
        );
        assert_eq!(
            ended[0].to_string(),
            "127.0.0.2: 997 request lines without a key left out in the minute \
             from 2025-12-16T04:40:00Z (401: 57, 429: 940)"
        );
        // A minute with nothing left out has no summary.
        assert!(lock(&gate.window).roll(minute + 2).is_empty());
    }

    #[test]
    fn addresses_beyond_the_map_share_one_allowance_and_one_summary() {
        let gate = UnauthenticatedLines::new(2);
        let minute = 1;
        for i in 0..MAX_SUMMED_ADDRESSES {
            let client = std::net::IpAddr::from(std::net::Ipv4Addr::from(i as u32 + 1));
            assert!(gate.admit_at(client, 401, minute).0);
        }
        let others: Vec<bool> = (0..5u32)
            .map(|i| gate.admit_at(ip(&format!("10.9.9.{i}")), 404, minute).0)
            .collect();
        assert_eq!(others, [true, true, false, false, false]);
        // The known addresses keep their own count.
        assert!(gate.admit_at(ip("0.0.0.1"), 401, minute).0);
        assert!(!gate.admit_at(ip("0.0.0.1"), 401, minute).0);
        assert_eq!(lock(&gate.window).per_ip.len(), MAX_SUMMED_ADDRESSES);
        let ended = lock(&gate.window).roll(minute + 1);
        assert_eq!(ended.len(), 2, "{ended:?}");
        assert_eq!(ended[1].client, None);
        assert_eq!(
            (ended[1].left_out, ended[1].by_status.clone()),
            (3, vec![(404, 3)])
        );
        assert!(ended[1]
            .to_string()
            .starts_with("other addresses: 3 request lines"));
        // The map is emptied with the minute.
        assert!(lock(&gate.window).per_ip.is_empty());
    }

    #[test]
    fn without_a_bound_every_line_is_written_and_nothing_counted() {
        let gate = UnauthenticatedLines::new(0);
        for _ in 0..100 {
            assert!(gate.admit(ip("127.0.0.2"), 401));
        }
        assert!(lock(&gate.window).per_ip.is_empty());
    }

    #[test]
    fn the_time_text_is_rfc_3339_utc() {
        assert_eq!(&seconds_text(0), b"1970-01-01T00:00:00");
        assert_eq!(&seconds_text(1_795_880_000), b"2026-11-28T15:33:20");
    }

    #[test]
    fn a_request_record_becomes_one_object_with_typed_fields() {
        let kvs: [(&str, Value<'_>); 4] = [
            ("request_id", Value::from("req_x")),
            ("status", Value::from(201u16)),
            ("latency_ms", Value::from(1.5f64)),
            ("user_id", Value::from("")),
        ];
        let record = log::Record::builder()
            .args(format_args!("req_x POST /x 201 1.5ms"))
            .level(log::Level::Info)
            .target("threadline::request")
            .key_values(&kvs)
            .build();
        let text = json_of(&record);
        let line: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "threadline::request");
        assert_eq!(line["message"], "req_x POST /x 201 1.5ms");
        assert_eq!(line["status"], 201);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["user_id"], serde_json::Value::Null);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped() {
        let kvs: [(&str, Value<'_>); 1] = [("path", Value::from("a\"b\\c\u{1}"))];
        let record = log::Record::builder()
            .args(format_args!("line\nbreak \"quoted\""))
            .level(log::Level::Warn)
            .target("t")
            .key_values(&kvs)
            .build();
        let text = json_of(&record);
        assert!(
            text.ends_with('\n') && !text.trim_end_matches('\n').contains('\n'),
            "one line: {text}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(line["message"], "line\nbreak \"quoted\"");
        assert_eq!(line["path"], "a\"b\\c\u{1}");
    }
}
