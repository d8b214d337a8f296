//! The single writer thread with group commit.
//!
//! Concurrent writes queue on a bounded channel. The thread takes the first
//! job (with an empty queue it looks again for a few tens of µs before it
//! sleeps: see [`POLL_BEFORE_SLEEP`]), drains whatever else is waiting (up
//! to `MAX_BATCH`), runs each job in
//! inside one `BEGIN IMMEDIATE` transaction, commits once,
//! then reports the committed jobs' events (in order, with the log position
//! reached) to its [`CommitListener`] and answers each caller (an HTTP
//! worker's callers through its [`Mailbox`], one wake per worker a batch).
//! One commit for many writes is what makes SQLite fast here.
//!
//! A job that fails must not spoil its batch. Jobs almost always fail before
//! they write (unknown key, no such thread, thread not active), so they run
//! without a savepoint of their own: each savepoint copied every page the
//! job touched into a sub-journal, ~15% of the post rate, measured. A job
//! that fails having written something (SQLite's change count moved) rolls
//! back the whole batch instead: the jobs before it are answered 503 (nothing
//! of theirs was committed), the jobs after it run in the next batch, and
//! for the next `GUARDED_BATCHES` batches every job gets its own SAVEPOINT
//! again, so a kind of job that fails that way cannot keep costing its
//! neighbours. The batch's logged events are appended to the event log after
//! the last job, in the same transaction, outside the jobs' savepoints
//! (inside one, SQLite would copy the log's last page for every job).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, Statement, ToSql};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, ApiResult};
use crate::events::{CommitListener, Committed, Event, Kind};

/// Batches committed since the last checkpoint that call for another (the
/// writer's own and the background checkpointer's).
pub(super) const CHECKPOINT_AFTER_COMMITS: u64 = 256;
/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// How often, at most, the writer itself finishes a checkpoint so the WAL can
/// restart (and only after `CHECKPOINT_AFTER_COMMITS` batches). Every write
/// waits while it does (three syncs of the disk: 10–60 ms on a shared one),
/// so under load each catch-up holds up the ~32 requests in flight: at four
/// a second that was 0.3% of `post`'s answers, i.e. its p99.9 (20–40 ms
/// against a p99 of ~4). Once a second puts them under 0.1%; the WAL then
/// grows to ~180 MB at 40,000 posts/s before it restarts (see
/// `journal_size_limit` in `init`).
const WRITER_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Most batches the writer's catch-up copies: it waits for a background
/// checkpoint that left no more than this behind it.
const CATCH_UP_TAIL: u64 = CHECKPOINT_AFTER_COMMITS / 2;
/// Batches after which the writer catches up even without such a tail (the
/// background checkpoints kept failing: readers in the way), so the WAL
/// still restarts. Well above what one `WRITER_CHECKPOINT_EVERY` sees under
/// load (~1,000 batches a second), so it stays the exception.
const CATCH_UP_ANYWAY: u64 = 16 * CHECKPOINT_AFTER_COMMITS;
/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// Batches that run each job in its own savepoint after a job failed
/// having written (see the module doc).
const GUARDED_BATCHES: u32 = 1024;

/// What a job's closure gets: the connection (inside the batch transaction)
/// and a buffer for the events to report once the batch commits.
pub struct WriteCtx<'c> {
    pub conn: &'c Connection,
    /// What never changes once stored (agents, thread participants), kept
    /// by the writer so hot writes skip those lookups.
    pub identities: &'c mut super::identities::Identities,
    /// The statements every post runs, prepared once on `conn`.
    prepared: &'c mut (dyn Execute + 'c),
    events: Vec<Pending>,
    checkpoint: bool,
    /// The log's position the writer has reported up to: what another
    /// process logged after it (a thread's `thread.deleted`, written by
    /// `threadline thread delete` or `prune`) is reported with the next
    /// batch, before the batch's own events. `None`: not looked for (the
    /// writer's unit tests, which have no log).
    reported_upto: Option<i64>,
}

/// The statements the writer runs for (nearly) every post. Each is prepared
/// once, on the writer's connection, and kept for as long as the writer runs:
/// through `prepare_cached` each call hashed the SQL text and moved the
/// statement out of and back into rusqlite's cache (~5% of the writer's
/// time, measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hot {
    Begin,
    Commit,
    /// `messages::TAKE_KEPT_SEQ`.
    TakeKeptSeq,
    /// `messages::INSERT_MESSAGE`.
    InsertMessage,
    InsertEvent,
}

impl Hot {
    const COUNT: usize = 5;

    fn sql(self) -> &'static str {
        match self {
            Hot::Begin => "BEGIN IMMEDIATE",
            Hot::Commit => "COMMIT",
            Hot::TakeKeptSeq => super::messages::TAKE_KEPT_SEQ,
            Hot::InsertMessage => super::messages::INSERT_MESSAGE,
            Hot::InsertEvent => INSERT_EVENT,
        }
    }
}

/// The writer's [`Hot`] statements on its connection, each prepared the
/// first time it runs (a writer that never posts never prepares the
/// message's). They borrow the connection, so they live in the writer's
/// `run` frame next to it and are dropped (finalized) before it.
struct Prepared<'conn> {
    conn: &'conn Connection,
    statements: [Option<Statement<'conn>>; Hot::COUNT],
}

impl<'conn> Prepared<'conn> {
    fn new(conn: &'conn Connection) -> Prepared<'conn> {
        Prepared {
            conn,
            statements: Default::default(),
        }
    }
}

/// Runs a [`Hot`] statement. A trait so that `WriteCtx` can hold the
/// prepared statements, which borrow the connection for longer than one
/// batch, without a second lifetime on every signature that names it.
trait Execute {
    fn execute(&mut self, which: Hot, params: &[&dyn ToSql]) -> rusqlite::Result<usize>;
}

impl Execute for Prepared<'_> {
    fn execute(&mut self, which: Hot, params: &[&dyn ToSql]) -> rusqlite::Result<usize> {
        let slot = &mut self.statements[which as usize];
        let statement = match slot {
            Some(statement) => statement,
            None => slot.insert(self.conn.prepare(which.sql())?),
        };
        statement.execute(params)
    }
}

/// What a logged event's row points at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refs {
    pub thread_row: i64,
    pub message_row: Option<i64>,
    pub reply_row: Option<i64>,
}

impl Refs {
    /// Only the thread.
    pub fn thread(thread_row: i64) -> Refs {
        Refs {
            thread_row,
            message_row: None,
            reply_row: None,
        }
    }
}

/// An event raised by a job, waiting for its batch: `refs` (what its log
/// row points at) for a logged one, `None` for a signal.
struct Pending {
    event: Event,
    refs: Option<Refs>,
}

impl WriteCtx<'_> {
    /// Runs one of the writer's [`Hot`] statements with `params`; returns
    /// the rows it changed.
    pub(crate) fn execute(&mut self, which: Hot, params: &[&dyn ToSql]) -> rusqlite::Result<usize> {
        self.prepared.execute(which, params)
    }

    /// Queues a signal (not logged: typing); it is reported, in order among
    /// the logged events, only if this job's writes commit.
    pub fn signal(&mut self, event: Event) {
        self.events.push(Pending { event, refs: None });
    }

    /// Queues a logged event: its row is written in this batch's
    /// transaction (if this job's writes stand), and it is reported after
    /// the commit.
    pub(crate) fn log(&mut self, event: Event, refs: Refs) {
        self.events.push(Pending {
            event,
            refs: Some(refs),
        });
    }

    /// Asks the writer to checkpoint the WAL once this batch has committed.
    pub(super) fn checkpoint_after_commit(&mut self) {
        self.checkpoint = true;
    }
}

/// What the writer and the background checkpointer tell each other.
#[derive(Default)]
pub(super) struct WalProgress {
    /// Batches committed.
    pub commits: AtomicU64,
    /// `commits` as it was when the last background checkpoint that copied
    /// the whole WAL it saw began: every batch up to it is in the database.
    pub copied: AtomicU64,
}

/// Called once the batch's fate is known: `true` if it committed.
type Completion = Box<dyn FnOnce(bool) + Send>;
/// A job: runs in the transaction, says whether it succeeded, and hands back
/// its completion.
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Completion) + Send>;

/// A cloneable handle on the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
}

/// A job as queued: with the mailbox of the thread waiting for its
/// answer, if that thread has one.
struct Queued {
    job: Job,
    mailbox: Option<Arc<Mailbox>>,
}

/// Answers for the writes of one HTTP worker thread, handed over once a
/// batch: the writer queues them and wakes the thread's
/// mailbox task once, and that task completes them on its own thread.
/// Completing each answer from the writer woke the worker once per write
/// (an `eventfd` write each, which often also switched the writer's core
/// over to the woken worker mid-batch).
pub(super) struct Mailbox {
    answers: std::sync::Mutex<Vec<Answer>>,
    ready: tokio::sync::Notify,
}

/// A write's answer, ready to be handed to its caller: its completion and
/// whether its batch committed (no box around the box).
type Answer = (Completion, bool);

thread_local! {
    /// This thread's mailbox, made (with its task) by [`answer_here`].
    static MAILBOX: std::cell::OnceCell<Arc<Mailbox>> = const { std::cell::OnceCell::new() };
}

impl Mailbox {
    /// The calling thread's mailbox, if [`answer_here`] made one.
    fn of_this_thread() -> Option<Arc<Mailbox>> {
        MAILBOX.with(|cell| cell.get().cloned())
    }
}

/// Has the writes of the calling thread answered through a mailbox (see
/// [`Mailbox`]): once per thread, from a task on it. Must run inside a
/// `LocalSet` (an actix worker: the server calls it from its app factory,
/// which each HTTP worker runs); threads that never call it are answered
/// by the writer directly.
pub fn answer_here() {
    MAILBOX.with(|cell| {
        cell.get_or_init(|| {
            let mailbox = Arc::new(Mailbox {
                answers: std::sync::Mutex::new(Vec::new()),
                ready: tokio::sync::Notify::new(),
            });
            let own = mailbox.clone();
            actix_web::rt::spawn(async move {
                loop {
                    own.ready.notified().await;
                    let answers = std::mem::take(&mut *lock(&own.answers));
                    for (done, committed) in answers {
                        done(committed);
                    }
                }
            });
            mailbox
        });
    });
}

/// The mailbox's queue, even if a thread panicked holding it (the queue
/// is a plain list; nothing is left half-done).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Completes a batch's answers: those of a worker thread through its
/// mailbox, one wake per thread; the others (plain threads) at once.
fn answer_all(completions: &mut Vec<(Completion, Option<Arc<Mailbox>>)>, committed: bool) {
    let mut by_thread: Vec<(Arc<Mailbox>, Vec<Answer>)> = Vec::new();
    for (done, mailbox) in completions.drain(..) {
        let Some(mailbox) = mailbox else {
            done(committed);
            continue;
        };
        let answer: Answer = (done, committed);
        match by_thread.iter_mut().find(|(m, _)| Arc::ptr_eq(m, &mailbox)) {
            Some((_, answers)) => answers.push(answer),
            None => by_thread.push((mailbox, vec![answer])),
        }
    }
    for (mailbox, answers) in by_thread {
        lock(&mailbox.answers).extend(answers);
        mailbox.ready.notify_one();
    }
}

impl Writer {
    /// Starts the writer thread on `conn`, with `slice` as its scheduler
    /// slice. It stops when every handle is dropped.
    /// `progress` counts committed batches (the checkpointer reads it) and
    /// says how far the checkpointer got; `listener` hears of every commit.
    pub(super) fn start(
        conn: Connection,
        listener: Arc<dyn CommitListener>,
        progress: Arc<WalProgress>,
        slice: crate::sched::ThreadSlice,
    ) -> Result<Writer, String> {
        let upto = super::events::last_position(&conn)
            .map_err(|e| format!("cannot read the event log: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("threadline-writer".into())
            .spawn(move || {
                // Every post's answer waits for this thread to get a core.
                crate::sched::request_and_log(slice, "writer", log::Level::Info);
                run(conn, rx, listener, progress, upto)
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Writer { tx })
    }

    /// Runs `f` in the next batch; resolves after its commit.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (job, done_rx) = job(f);
        let queued = Queued {
            job,
            mailbox: Mailbox::of_this_thread(),
        };
        // A queue with room takes the job at once: `try_send` skips the
        // semaphore's acquire future that `send` builds and polls.
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => self
                .tx
                .send(queued)
                .await
                .map_err(|_| ApiError::Unavailable)?,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ApiError::Unavailable),
        }
        done_rx.await.map_err(|_| ApiError::Unavailable)?
    }

    /// [`Writer::write`] for a plain thread (not an async worker): blocks
    /// until the batch has committed.
    pub fn write_blocking<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (job, done_rx) = job(f);
        self.tx
            .blocking_send(Queued { job, mailbox: None })
            .map_err(|_| ApiError::Unavailable)?;
        done_rx.blocking_recv().map_err(|_| ApiError::Unavailable)?
    }
}

/// Runs a job's work, turning a panic into a failed job (500, with the
/// panic's message in the log only): the writer then undoes what the job
/// wrote, as for any job that fails half-way, and stays up for every later
/// write. A panic let through would end the writer thread, and every write
/// after it would answer 503 until a restart. Shared by both backends.
pub(crate) fn survive_panic<T>(work: impl FnOnce() -> ApiResult<T>) -> ApiResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(ApiError::Internal("a write job panicked".into())))
}

/// Wraps `f` as a job, and the receiver of its answer.
fn job<T, F>(f: F) -> (Job, oneshot::Receiver<ApiResult<T>>)
where
    F: FnOnce(&mut WriteCtx<'_>) -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel::<ApiResult<T>>();
    let job: Job = Box::new(move |ctx| {
        let result = survive_panic(|| f(ctx));
        let ok = result.is_ok();
        let completion: Completion = Box::new(move |committed| {
            let answer = match result {
                Ok(_) if !committed => Err(ApiError::Unavailable),
                other => other,
            };
            // The caller may have gone away (client disconnected); the
            // write stands either way.
            let _ = done_tx.send(answer);
        });
        (ok, completion)
    });
    (job, done_rx)
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Queued>,
    listener: Arc<dyn CommitListener>,
    progress: Arc<WalProgress>,
    mut upto: i64,
) {
    let mut identities = super::identities::Identities::default();
    let mut prepared = Prepared::new(&conn);
    let mut last_checkpoint = std::time::Instant::now();
    let mut commits_at_checkpoint = 0;
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    let mut completions = Vec::with_capacity(MAX_BATCH);
    let mut guarded_batches: u32 = 0;
    loop {
        if !fill_batch(&mut rx, &mut batch, MAX_BATCH, POLL_BEFORE_SLEEP) {
            break;
        }
        let mut ctx = WriteCtx {
            conn: &conn,
            identities: &mut identities,
            prepared: &mut prepared,
            events: Vec::new(),
            checkpoint: false,
            reported_upto: Some(upto),
        };
        let (jobs, started) = (batch.len(), std::time::Instant::now());
        let guarded = guarded_batches > 0;
        guarded_batches = guarded_batches.saturating_sub(1);
        let (committed, spoiled) = run_batch(&mut ctx, &mut batch, &mut completions, guarded);
        if spoiled {
            guarded_batches = GUARDED_BATCHES;
        }
        let took = started.elapsed();
        if !committed {
            // Whatever was looked up inside a batch that did not commit may
            // not exist.
            ctx.identities.clear();
        }
        if committed {
            progress.commits.fetch_add(1, Ordering::Relaxed);
            let events: Vec<Arc<Event>> = ctx.events.drain(..).map(|p| Arc::new(p.event)).collect();
            if let Some(p) = events.iter().rev().find_map(|e| e.position) {
                upto = p;
            }
            listener.committed(Committed {
                upto,
                events: &events,
                jobs,
                took,
            });
        }
        // Checkpoint before answering: the caller (shutdown) exits the
        // process as soon as it has its answer.
        if committed && ctx.checkpoint {
            checkpoint_wal(&conn);
        }
        answer_all(&mut completions, committed);
        // The background thread copies the WAL into the database without
        // blocking, but under constant writes it never reaches the end, and
        // the WAL only starts over once a checkpoint has. So now and then
        // the writer, between batches, catches up the tail itself: right
        // after a background checkpoint has finished, when that tail is
        // short (the background's `copy_back` also synced the database file,
        // so only the tail is left to sync). Catching up at any moment copied
        // the whole WAL most times (the background one runs only every
        // `CHECKPOINT_AFTER_COMMITS` batches too), 30-80 ms in which no write
        // was answered.
        let now = progress.commits.load(Ordering::Relaxed);
        if committed
            && last_checkpoint.elapsed() >= WRITER_CHECKPOINT_EVERY
            && catch_up_now(
                now,
                commits_at_checkpoint,
                progress.copied.load(Ordering::Relaxed),
            )
        {
            last_checkpoint = std::time::Instant::now();
            commits_at_checkpoint = now;
            if let Err(e) = super::passive_checkpoint(&conn) {
                log::warn!("WAL checkpoint failed: {e}");
            }
        }
    }
}

/// Whether the writer catches up the WAL now, `commits` batches committed,
/// `at_last` when it last did, `copied` where the last complete background
/// checkpoint began (see [`WalProgress`]): only after
/// `CHECKPOINT_AFTER_COMMITS` batches, and then once a background checkpoint
/// since has left a tail of at most `CATCH_UP_TAIL` batches, or after
/// `CATCH_UP_ANYWAY` batches without one.
fn catch_up_now(commits: u64, at_last: u64, copied: u64) -> bool {
    let since = commits.saturating_sub(at_last);
    let short_tail = copied > at_last && commits.saturating_sub(copied) <= CATCH_UP_TAIL;
    since >= CHECKPOINT_AFTER_COMMITS && (short_tail || since >= CATCH_UP_ANYWAY)
}

/// Fills `batch` for a writer: jobs left over from a batch rolled back by a
/// failing job go first; with none, polls the queue for up to `poll` (see
/// [`POLL_BEFORE_SLEEP`]), then sleeps until one comes; then takes whatever
/// else is already waiting, up to `max`. False once every sender is gone
/// and nothing is left to run. Shared by both backends' writers.
pub(crate) fn fill_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    max: usize,
    poll: std::time::Duration,
) -> bool {
    if batch.is_empty() {
        let first = match poll_briefly(rx, poll) {
            Polled::Job(job) => job,
            Polled::Closed => return false,
            Polled::Empty => match rx.blocking_recv() {
                Some(job) => job,
                None => return false,
            },
        };
        batch.push(first);
    }
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    true
}

/// How long the SQLite writer, finding its queue empty after a batch, keeps
/// looking before it sleeps. Under load the next job mostly comes within
/// tens of µs (the answers of the batch just committed bring the next
/// posts); asleep, the writer is woken by a `futex` call from the worker
/// with the job and then waits for a core (80–110 µs on average on a
/// shared 2-core machine, measured). Bounded once per empty queue, so an
/// idle server's writer sleeps: no load, no CPU. 50 µs against 0, 25, 30
/// and 100 µs: docs/performance.md, round seven (a small gain, near the
/// noise of that machine).
pub(super) const POLL_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// What [`poll_briefly`] found.
enum Polled<T> {
    Job(T),
    /// Nothing came in time: the caller sleeps.
    Empty,
    /// Every sender is gone.
    Closed,
}

/// Looks at the queue until a job comes or `budget` has passed. Between
/// looks it mostly only pauses the core (`spin_loop`); every 16th look it
/// yields, so a thread waiting for this core (on 2 cores, often the worker
/// about to send the next job) gets it then rather than at the end of the
/// poll. (Yielding at every look, or never, measured no better: see
/// docs/performance.md, round seven.)
fn poll_briefly<T>(rx: &mut mpsc::Receiver<T>, budget: std::time::Duration) -> Polled<T> {
    if budget.is_zero() {
        return Polled::Empty;
    }
    let until = std::time::Instant::now() + budget;
    for looks in 1u32.. {
        match rx.try_recv() {
            Ok(job) => return Polled::Job(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return Polled::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if looks % 16 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        // The clock every 8th look: it costs more than a look.
        if looks % 8 == 0 && std::time::Instant::now() >= until {
            break;
        }
    }
    Polled::Empty
}

/// Folds the WAL into the main file and truncates it. The pragma reports a
/// busy database (readers in the way) in its result row, not as an error.
fn checkpoint_wal(conn: &Connection) {
    // Busy while the background checkpointer or a reader still holds part
    // of the WAL; both let go within moments, so try again a few times (this
    // runs only at shutdown, after the last write).
    const TRIES: u32 = 20;
    for attempt in 1..=TRIES {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => return,
            Ok(_) if attempt < TRIES => std::thread::sleep(std::time::Duration::from_millis(50)),
            Ok(_) => log::warn!("WAL checkpoint incomplete: the database was busy"),
            Err(e) => return log::warn!("WAL checkpoint failed: {e}"),
        }
    }
}

/// Runs the jobs in one transaction, each in its own savepoint if
/// `guarded`; returns whether it committed, and whether a job failed having
/// written without a savepoint (then nothing was committed, and the jobs
/// not yet run are left in `batch`).
fn run_batch(
    ctx: &mut WriteCtx<'_>,
    batch: &mut Vec<Queued>,
    completions: &mut Vec<(Completion, Option<Arc<Mailbox>>)>,
    guarded: bool,
) -> (bool, bool) {
    if let Err(e) = ctx.execute(Hot::Begin, &[]) {
        log::error!("writer could not begin a transaction: {e}");
        // Not run at all: dropping a job drops its answer channel, which its
        // caller (`Writer::write`) reports as 503 Unavailable.
        batch.clear();
        return (false, false);
    }
    // Holding the write lock now: no other process can commit until we do.
    if ctx.identities.check_outside_changes(ctx.conn) {
        if let Some(after) = ctx.reported_upto {
            take_outside_events(ctx, after);
        }
    }
    let mut jobs = std::mem::take(batch).into_iter();
    for Queued { job, mailbox } in jobs.by_ref() {
        let mark = ctx.events.len();
        if guarded {
            let savepoint = run_cached(ctx.conn, "SAVEPOINT job");
            let (ok, done) = job(ctx);
            let closed = if ok {
                run_cached(ctx.conn, "RELEASE job")
            } else {
                ctx.events.truncate(mark);
                run_cached(ctx.conn, "ROLLBACK TO job")
                    .and_then(|()| run_cached(ctx.conn, "RELEASE job"))
            };
            if let Err(e) = savepoint.and(closed) {
                log::error!("writer savepoint failed: {e}");
            }
            completions.push((done, mailbox));
            continue;
        }
        let changes = ctx.conn.total_changes();
        let (ok, done) = job(ctx);
        completions.push((done, mailbox));
        if !ok {
            ctx.events.truncate(mark);
            if ctx.conn.total_changes() != changes {
                // Its writes cannot be undone alone: undo the batch.
                log::warn!("a write failed half-way: its batch is rolled back");
                let _ = ctx.conn.execute_batch("ROLLBACK");
                ctx.events.clear();
                batch.extend(jobs);
                return (false, true);
            }
        }
    }
    if let Err(e) = append(ctx.conn, &mut *ctx.prepared, &mut ctx.events) {
        log::error!("writer could not log the batch's events: {e}");
        let _ = ctx.conn.execute_batch("ROLLBACK");
        ctx.events.clear();
        return (false, false);
    }
    match ctx.execute(Hot::Commit, &[]) {
        Ok(_) => (true, false),
        Err(e) => {
            log::error!("writer commit failed: {e}");
            let _ = ctx.conn.execute_batch("ROLLBACK");
            ctx.events.clear();
            (false, false)
        }
    }
}

/// Puts the events another process logged after `after` (positions are
/// the newest + 1, and the write lock is held, so they are all there and
/// before this batch's) at the head of the batch's report: they reach the
/// hub and the webhooks in log order with the writer's own. Not logged
/// again (`refs` is `None`). A read that fails leaves them in the log,
/// unreported live: webhooks and resumed streams still read them there.
fn take_outside_events(ctx: &mut WriteCtx<'_>, after: i64) {
    const PAGE: i64 = 1000;
    let mut after = after;
    loop {
        match super::events::events_after(ctx.conn, after, PAGE) {
            Ok(page) => {
                let full = page.len() as i64 == PAGE;
                for event in page {
                    after = event.position.unwrap_or(after);
                    ctx.events.push(Pending { event, refs: None });
                }
                if !full {
                    return;
                }
            }
            Err(e) => {
                log::warn!("cannot read the events another process logged: {e:?}");
                return;
            }
        }
    }
}

/// Writes the rows of a batch's logged events, in order, and gives each its
/// position: after the batch's last job, outside the jobs' savepoints.
fn append(
    conn: &Connection,
    prepared: &mut dyn Execute,
    pending: &mut [Pending],
) -> rusqlite::Result<()> {
    for Pending { event, refs } in pending.iter_mut() {
        let Some(refs) = refs else {
            continue;
        };
        // A message's event id is the message's own; any other is stored.
        let uuid = (event.kind != Kind::ThreadMessage).then_some(event.id.as_str());
        // Only these have no stored row to rebuild their payload from.
        let data = event.kind.keeps_data().then(|| event.data.get());
        prepared.execute(
            Hot::InsertEvent,
            params![
                event.kind.as_str(),
                refs.thread_row,
                event.seq,
                refs.message_row,
                refs.reply_row,
                uuid,
                data,
                event.created_at,
            ],
        )?;
        event.position = Some(conn.last_insert_rowid());
    }
    Ok(())
}

/// Runs `f` with a writer's context on `conn`, outside any batch: for the
/// store's unit tests of what jobs do.
#[cfg(test)]
pub(super) fn with_ctx<R>(conn: &Connection, f: impl FnOnce(&mut WriteCtx<'_>) -> R) -> R {
    let mut identities = super::identities::Identities::default();
    let mut prepared = Prepared::new(conn);
    f(&mut WriteCtx {
        conn,
        identities: &mut identities,
        prepared: &mut prepared,
        events: Vec::new(),
        checkpoint: false,
        reported_upto: None,
    })
}

/// A logged event's row.
const INSERT_EVENT: &str =
    "INSERT INTO events (kind, thread_id, seq, message_id, reply_id, uuid, data, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Runs a statement without parameters from the prepared-statement cache
/// (the writer runs these few for every job; parsing them each time shows).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().expect("an in-memory database opens");
        conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL UNIQUE)")
            .expect("the table is created");
        conn
    }

    /// A job inserting `x`, then failing with 409 if `fail`.
    fn insert(x: i64, fail: bool) -> (Job, oneshot::Receiver<ApiResult<()>>) {
        job(move |ctx: &mut WriteCtx<'_>| {
            ctx.conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            if fail {
                return Err(ApiError::Conflict {
                    code: "TEST_CONFLICT",
                    message: "failed after writing".into(),
                });
            }
            Ok(())
        })
    }

    /// A job failing with 404 before it writes anything.
    fn refuse() -> (Job, oneshot::Receiver<ApiResult<()>>) {
        job(|_: &mut WriteCtx<'_>| Err(ApiError::NotFound("nothing to write".into())))
    }

    /// A job inserting `x`, then panicking if `after_writing`, else
    /// panicking before it writes.
    fn panic_job(x: i64, after_writing: bool) -> (Job, oneshot::Receiver<ApiResult<()>>) {
        job(move |ctx: &mut WriteCtx<'_>| {
            if after_writing {
                ctx.conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            }
            panic!("a bug in a write job");
        })
    }

    /// Runs `jobs` as one batch: (committed, spoiled, jobs left, answers).
    fn batch_of(
        conn: &Connection,
        jobs: Vec<(Job, oneshot::Receiver<ApiResult<()>>)>,
        guarded: bool,
    ) -> (
        bool,
        bool,
        Vec<Queued>,
        Vec<oneshot::Receiver<ApiResult<()>>>,
    ) {
        let mut identities = super::super::identities::Identities::default();
        let mut prepared = Prepared::new(conn);
        let mut ctx = WriteCtx {
            conn,
            identities: &mut identities,
            prepared: &mut prepared,
            events: Vec::new(),
            checkpoint: false,
            reported_upto: None,
        };
        let (mut batch, answers): (Vec<Queued>, Vec<_>) = jobs
            .into_iter()
            .map(|(job, answer)| (Queued { job, mailbox: None }, answer))
            .unzip();
        let mut completions = Vec::new();
        let (committed, spoiled) = run_batch(&mut ctx, &mut batch, &mut completions, guarded);
        answer_all(&mut completions, committed);
        (committed, spoiled, batch, answers)
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .expect("prepares");
        let rows = stmt.query_map([], |r| r.get(0)).expect("runs");
        rows.collect::<Result<_, _>>().expect("reads")
    }

    #[test]
    fn every_hot_statement_compiles_and_stays_usable_after_it_failed() {
        let conn = Connection::open_in_memory().expect("an in-memory database opens");
        super::super::migrate::migrate(&conn, std::path::Path::new(":memory:"))
            .expect("the migrations apply");
        let mut prepared = Prepared::new(&conn);
        for which in [Hot::TakeKeptSeq, Hot::InsertMessage, Hot::InsertEvent] {
            let statement = conn
                .prepare(which.sql())
                .expect("it compiles on the schema");
            assert!(statement.parameter_count() > 0, "{which:?}");
        }
        conn.execute_batch(
            "INSERT INTO accounts (id, user_id, created_at) VALUES (1, 'usr_0', 't');
             INSERT INTO threads (id, uuid, kind, owner_account_id, activity_at, created_at,
                                  updated_at)
             VALUES (1, 'th', 'turn', 1, 't', 't', 't');",
        )
        .expect("a thread is stored");
        prepared.execute(Hot::Begin, &[]).expect("begins");
        let mut insert = |uuid: &str, seq: i64| {
            let row = params![uuid, 1, seq, None::<i64>, "s", "c", "text", "{}", "t", "{}"];
            prepared.execute(Hot::InsertMessage, row)
        };
        assert_eq!(insert("m1", 1).expect("stored"), 1);
        // The same seq again: refused, and the statement, kept prepared,
        // is reset for the next post.
        assert!(insert("m1b", 1).is_err());
        assert_eq!(insert("m2", 2).expect("stored"), 1);
        prepared.execute(Hot::Commit, &[]).expect("commits");
        let stored: Vec<String> = conn
            .prepare("SELECT uuid FROM messages ORDER BY seq")
            .expect("prepares")
            .query_map([], |r| r.get(0))
            .expect("runs")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(stored, ["m1", "m2"]);
    }

    #[test]
    fn an_empty_queue_is_polled_only_for_a_while_then_left_to_sleep() {
        let (tx, mut rx) = mpsc::channel::<u32>(4);
        // Nothing queued, a sender still there: the poll gives up (an
        // unbounded one would never return here) and the writer would sleep.
        let budget = std::time::Duration::from_micros(200);
        assert!(matches!(poll_briefly(&mut rx, budget), Polled::Empty));
        assert!(matches!(
            poll_briefly(&mut rx, std::time::Duration::ZERO),
            Polled::Empty
        ));
        // A queued job is taken, and the rest of the queue with it.
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        let mut batch = Vec::new();
        assert!(fill_batch(&mut rx, &mut batch, 8, budget));
        assert_eq!(batch, [1, 2]);
        // Every sender gone: the writer stops instead of polling or sleeping.
        drop(tx);
        assert!(matches!(poll_briefly(&mut rx, budget), Polled::Closed));
        let mut batch = Vec::new();
        assert!(!fill_batch(&mut rx, &mut batch, 8, budget));
    }

    #[test]
    fn a_job_sent_while_the_writer_polls_or_sleeps_is_taken() {
        // Whether the job lands during the poll or after the writer went to
        // sleep, it is taken, and answered: no job is left behind.
        for budget in [std::time::Duration::ZERO, POLL_BEFORE_SLEEP] {
            let (tx, mut rx) = mpsc::channel::<u32>(4);
            let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
            let sender = std::thread::spawn(move || {
                tx.blocking_send(7).expect("the writer is there");
                sent_tx.send(()).expect("the test waits");
            });
            let mut batch = Vec::new();
            assert!(fill_batch(&mut rx, &mut batch, 8, budget));
            assert_eq!(batch, [7]);
            sent_rx.recv().expect("the sender finished");
            sender.join().expect("the sender did not panic");
        }
    }

    #[test]
    fn the_writer_catches_up_the_wal_after_a_background_checkpoint_with_a_short_tail() {
        let due = CHECKPOINT_AFTER_COMMITS;
        // Too soon after its last catch-up, whatever the background did.
        assert!(!catch_up_now(due - 1, 0, due - 2));
        // Due, but no complete background checkpoint since: it waits
        // rather than copy the whole WAL itself.
        assert!(!catch_up_now(due, 0, 0));
        assert!(!catch_up_now(1000 + due, 1000, 1000));
        // One since, with a short tail behind it: now.
        assert!(catch_up_now(due, 0, due - CATCH_UP_TAIL));
        assert!(catch_up_now(1000 + due + 5, 1000, 1000 + due));
        // One since, but long ago: the tail is long, so it waits for the next.
        assert!(!catch_up_now(due + CATCH_UP_TAIL + 2, 0, 1));
        // No background checkpoint for long: it catches up anyway, so the
        // WAL restarts and stays bounded.
        assert!(!catch_up_now(CATCH_UP_ANYWAY - 1, 0, 0));
        assert!(catch_up_now(CATCH_UP_ANYWAY, 0, 0));
    }

    #[test]
    fn a_job_failing_before_it_writes_does_not_spoil_its_batch() {
        let conn = conn();
        let jobs = vec![insert(1, false), refuse(), insert(2, false)];
        let (committed, spoiled, left, mut answers) = batch_of(&conn, jobs, false);
        assert!(committed && !spoiled && left.is_empty());
        assert!(matches!(answers[0].try_recv(), Ok(Ok(()))));
        assert!(matches!(
            answers[1].try_recv(),
            Ok(Err(ApiError::NotFound(_)))
        ));
        assert!(matches!(answers[2].try_recv(), Ok(Ok(()))));
        assert_eq!(rows(&conn), [1, 2]);
    }

    #[test]
    fn a_job_that_panics_is_a_failed_job_and_the_writer_goes_on() {
        let conn = conn();
        // Before writing: only the panicking job fails (500).
        let jobs = vec![insert(1, false), panic_job(0, false), insert(2, false)];
        let (committed, spoiled, left, mut answers) = batch_of(&conn, jobs, false);
        assert!(committed && !spoiled && left.is_empty());
        assert!(matches!(
            answers[1].try_recv(),
            Ok(Err(ApiError::Internal(_)))
        ));
        assert_eq!(rows(&conn), [1, 2]);
        // After writing: its row is undone with its batch, like any job
        // failing half-way, and the rest is left for the next batch.
        let jobs = vec![insert(3, false), panic_job(4, true), insert(5, false)];
        let (committed, spoiled, left, mut answers) = batch_of(&conn, jobs, false);
        assert!(!committed && spoiled);
        assert!(matches!(
            answers[1].try_recv(),
            Ok(Err(ApiError::Internal(_)))
        ));
        assert_eq!(left.len(), 1);
        assert_eq!(rows(&conn), [1, 2]);
        // Guarded, the panicking job's savepoint alone is rolled back.
        let jobs = vec![insert(6, false), panic_job(7, true), insert(8, false)];
        let (committed, _, _, _) = batch_of(&conn, jobs, true);
        assert!(committed);
        assert_eq!(rows(&conn), [1, 2, 6, 8]);
    }

    #[test]
    fn a_job_failing_after_it_wrote_rolls_back_its_batch_and_leaves_the_rest() {
        let conn = conn();
        let jobs = vec![insert(1, false), insert(2, true), insert(3, false)];
        let (committed, spoiled, left, mut answers) = batch_of(&conn, jobs, false);
        assert!(!committed && spoiled);
        // Nothing stands: the job before is told so (503), the failing one
        // gets its own error, the one after has not run yet.
        assert_eq!(rows(&conn), Vec::<i64>::new());
        assert!(matches!(
            answers[0].try_recv(),
            Ok(Err(ApiError::Unavailable))
        ));
        assert!(matches!(
            answers[1].try_recv(),
            Ok(Err(ApiError::Conflict { .. }))
        ));
        assert!(answers[2].try_recv().is_err(), "the third job has not run");
        assert_eq!(left.len(), 1);

        // The next batch, guarded, runs it (and a half-way failure there
        // rolls back only its own savepoint).
        let mut left = left.into_iter();
        let third = left.next().expect("one job left");
        let (fourth, mut fourth_answer) = insert(4, true);
        let fourth = Queued {
            job: fourth,
            mailbox: None,
        };
        let (mut batch, mut completions) = (vec![third, fourth], Vec::new());
        let mut identities = super::super::identities::Identities::default();
        let mut prepared = Prepared::new(&conn);
        let mut ctx = WriteCtx {
            conn: &conn,
            identities: &mut identities,
            prepared: &mut prepared,
            events: Vec::new(),
            checkpoint: false,
            reported_upto: None,
        };
        let (committed, spoiled) = run_batch(&mut ctx, &mut batch, &mut completions, true);
        answer_all(&mut completions, committed);
        assert!(committed && !spoiled);
        assert!(matches!(answers[2].try_recv(), Ok(Ok(()))));
        assert!(matches!(
            fourth_answer.try_recv(),
            Ok(Err(ApiError::Conflict { .. }))
        ));
        assert_eq!(rows(&conn), [3]);
    }
}
