//! The node's PostgreSQL writer: group commit, as `store::writer` does for
//! SQLite. Concurrent writes queue on a bounded channel; one thread, on a
//! connection of its own, takes what is waiting (up to [`MAX_BATCH`]) and
//! runs it as one transaction:
//!
//! 1. `BEGIN` and lock the `log_head` row first. Every event-logging write
//!    of every node goes through a writer, so batches of two nodes run one
//!    after the other, whole: they can never hold thread rows in opposite
//!    orders (no deadlock), and a batch's events get positions in commit
//!    order across nodes.
//! 2. Look up, in one statement, the login keys, agents and threads the
//!    queued jobs named ([`WriteHint`]): inside the transaction, so as
//!    fresh as a lookup by the job itself, but one round trip for the
//!    batch instead of three a job.
//! 3. Run the jobs; number their logged events; COMMIT once; answer each
//!    job with the position of the batch's last event.
//!
//! Failure semantics are SQLite's writer's: a job that fails before it
//! writes (unknown key, no such thread, thread not active) leaves its batch
//! alone; one that fails having written, or whose statement failed (which
//! aborts a PostgreSQL transaction), rolls the batch back, and the next
//! [`GUARDED_BATCHES`] batches give every job a savepoint of its own. Only
//! repeatable jobs (posts, [`PgWriter::write_repeatable`]) run without
//! one: every other write (rarer, and with statements that can fail on a
//! row another node or task just changed) always has its savepoint, so its
//! failure undoes only itself.
//!
//! Posts are held back and sent together (`deferred`): before the next
//! statement, or at COMMIT. A row refused there (a constraint, a trigger,
//! a value the database rejects) is no single job's failure, and aborts
//! the batch. So when a batch is rolled back by a failure no savepoint
//! holds, the posts that ran go back to the front of the queue and run
//! again, once, in the next batch, guarded: there each job's held posts are
//! sent inside its savepoint (and deferrable constraints are checked at
//! once), so a refused row undoes its own job alone, answered with the
//! error, and the others commit.
//!
//! The other writes (`FnOnce`: thread creation, read marks, status
//! changes, webhooks, turn-taking …) cannot run again, so none of them
//! runs where a post's row can still be refused: an unguarded batch runs
//! its bare jobs (posts) first and the others after them, and the first
//! savepoint sends every held-back post and checks the deferred
//! constraints (`SET CONSTRAINTS ALL IMMEDIATE`). A refusal there spoils
//! the batch before any of them has run: they run in the next batch, after
//! the posts that run again, each once. Each such job's own rows are sent
//! and checked inside its savepoint, so what is left for COMMIT is the
//! batch's event rows and the COMMIT itself: if that fails with the
//! connection standing, the posts run again and the others are answered
//! 503 (nothing of theirs was committed). A COMMIT that failed with the
//! connection lost may have committed: then nothing runs again, and every
//! job is answered 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::conn::PgConn;
use super::{accounts, threads, PgCtx, Signals};
use crate::domain::{Aid, ThreadId};
use crate::error::{ApiError, ApiResult};
use crate::events::{CommitListener, Committed};
use crate::store::accounts::{Account, AgentRef};
use crate::store::model::ThreadRecord;
use crate::store::{Durability, WriteHint};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// Batches that run each job in its own savepoint after a job spoiled one
/// (the first of them runs the spoiled batch's posts again). A guarded
/// batch costs the writer about four times a plain one a post (four round
/// trips a post: savepoint, thread row, its own insert, release; a plain
/// batch reads the threads once and sends its posts in one statement):
/// `post -c 32` on PostgreSQL, 1,150–1,680 msg/s guarded against
/// 5,160–6,690 plain. A spoiled batch costs one plain batch thrown away, so
/// guarding longer pays only when refusals come nearly every batch; a
/// stream of them, guarded this long, spoils one batch in nine. With 1,024,
/// one refused post cut the rate to a quarter for some 10 s (about 1,024 ×
/// 8 ms); with 8 it is some 80 ms at that load.
const GUARDED_BATCHES: u32 = 8;
/// How long the writer waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// What a batch's jobs look up, found once for the whole batch (only what
/// exists: a miss is looked up again by the job, which may follow a job of
/// the same batch that created it). Dropped with the batch.
#[derive(Default)]
pub struct Known {
    accounts: HashMap<[u8; 32], Account>,
    agents: HashMap<String, AgentRef>,
    threads: HashMap<ThreadId, Arc<ThreadRecord>>,
}

impl Known {
    /// The account of a live login key.
    pub fn account(&mut self, c: &PgConn, key_hash: &[u8; 32]) -> ApiResult<Option<Account>> {
        if let Some(a) = self.accounts.get(key_hash) {
            return Ok(Some(a.clone()));
        }
        let found = accounts::authenticate(c, key_hash)?;
        if let Some(a) = &found {
            self.accounts.insert(*key_hash, a.clone());
        }
        Ok(found)
    }

    /// The agent with this AID.
    pub fn agent(&mut self, c: &PgConn, aid: &Aid) -> ApiResult<Option<AgentRef>> {
        if let Some(a) = self.agents.get(aid.as_str()) {
            return Ok(Some(a.clone()));
        }
        let found = accounts::agent_by_aid(c, aid)?;
        if let Some(a) = &found {
            self.agents.insert(a.aid.clone(), a.clone());
        }
        Ok(found)
    }

    /// The thread with this id (its identity; its view as of the lookup).
    pub fn thread(&mut self, c: &PgConn, id: ThreadId) -> ApiResult<Option<Arc<ThreadRecord>>> {
        if let Some(t) = self.threads.get(&id) {
            return Ok(Some(t.clone()));
        }
        let found = threads::by_id(c, id)?.map(Arc::new);
        if let Some(t) = &found {
            self.threads.insert(id, t.clone());
        }
        Ok(found)
    }

    /// Looks up what `hints` name, in one statement.
    fn prefetch<'h>(
        &mut self,
        c: &PgConn,
        hints: impl Iterator<Item = &'h WriteHint> + Clone,
    ) -> ApiResult<()> {
        let mut keys: Vec<&[u8]> = hints
            .clone()
            .filter_map(|h| h.key.as_ref())
            .map(|k| &k[..])
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut aids: Vec<&str> = hints
            .clone()
            .filter_map(|h| h.agent.as_ref().map(|a| a.as_str()))
            .collect();
        aids.sort_unstable();
        aids.dedup();
        let mut ids: Vec<String> = hints
            .filter_map(|h| h.thread)
            .map(ThreadId::to_text)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if keys.is_empty() && aids.is_empty() && ids.is_empty() {
            return Ok(());
        }
        let found = threads::lookup_batch(c, &keys, &aids, &ids)?;
        self.accounts.extend(found.accounts);
        for a in found.agents {
            self.agents.insert(a.aid.clone(), a);
        }
        for t in found.threads {
            if let Ok(id) = ThreadId::parse("thread_id", &t.view.id) {
                self.threads.insert(id, Arc::new(t));
            }
        }
        Ok(())
    }
}

/// Called once the job's fate is known: the position of its batch's last
/// logged event if it committed, else why not.
type Completion = Box<dyn FnOnce(ApiResult<i64>) + Send>;
/// A job: runs in the transaction, says whether it succeeded, and hands
/// back its completion. A repeatable job may run again (see [`Queued`]).
type Job = Box<dyn FnMut(&PgConn, &mut PgCtx) -> (bool, Completion) + Send>;

struct Queued {
    hint: WriteHint,
    job: Job,
    /// Whether the job may run again when its batch is undone (its closure
    /// is `Fn`): only such jobs run without a savepoint of their own.
    repeatable: bool,
    /// Whether it runs again already (a job is redone once at most).
    redone: bool,
}

/// A job that ran in the current batch, and what became of it.
struct Ran {
    queued: Queued,
    done: Completion,
    /// Whether it succeeded (its writes stand unless the batch is undone).
    ok: bool,
    /// Why it is answered with an error although it succeeded: its own
    /// held-back posts were refused, and undone alone.
    refused: Option<ApiError>,
}

/// A cloneable handle on the node's writer thread.
#[derive(Clone)]
pub struct PgWriter {
    tx: mpsc::Sender<Queued>,
}

impl PgWriter {
    /// Connects to `url`, sets `durability` on the connection, and starts
    /// the writer thread (it stops when every handle is dropped). Returns
    /// the handle and the durability the database applies (read back).
    /// Blocking: call it off the async workers.
    pub fn start(
        url: &str,
        durability: Durability,
        signals: Arc<Signals>,
        writes: Arc<dyn CommitListener>,
    ) -> Result<(PgWriter, Durability), String> {
        let conn = connect(url, durability)?;
        let applied = applied_durability(&conn)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("threadline-pg-writer".into())
            .spawn(move || run(conn, url, durability, rx, signals, writes))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok((PgWriter { tx }, applied))
    }

    /// Runs `f` in the next batch, in a savepoint of its own, after the
    /// batch's posts (see the module doc: it runs once); resolves after its
    /// commit with its value and the position of the batch's last logged
    /// event (0 if none).
    pub async fn write<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<(T, i64)>
    where
        F: FnOnce(&PgConn, &mut PgCtx) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut f = Some(f);
        let once = move |c: &PgConn, ctx: &mut PgCtx| match f.take() {
            Some(f) => f(c, ctx),
            None => Err(ApiError::Internal("a write job ran twice".into())),
        };
        self.enqueue(hint, false, once).await
    }

    /// [`PgWriter::write`] for a job that may run more than once (only its
    /// last run counts): it runs without a savepoint, and if its batch is
    /// undone by another job's failure it runs again, guarded, rather than
    /// being answered 503. For posts, the most frequent write.
    pub async fn write_repeatable<T, F>(&self, hint: WriteHint, f: F) -> ApiResult<(T, i64)>
    where
        F: Fn(&PgConn, &mut PgCtx) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(hint, true, f).await
    }

    async fn enqueue<T, F>(
        &self,
        hint: WriteHint,
        repeatable: bool,
        mut f: F,
    ) -> ApiResult<(T, i64)>
    where
        F: FnMut(&PgConn, &mut PgCtx) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<ApiResult<(T, i64)>>();
        // Each run's completion may answer: only the last run's is called.
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let job: Job = Box::new(move |c, ctx| {
            let result = crate::store::writer::survive_panic(|| f(c, ctx));
            let ok = result.is_ok();
            let done_tx = done_tx.clone();
            let completion: Completion = Box::new(move |committed| {
                let answer = match (result, committed) {
                    (Ok(v), Ok(upto)) => Ok((v, upto)),
                    (Ok(_), Err(e)) | (Err(e), _) => Err(e),
                };
                let sender = done_tx.lock().ok().and_then(|mut s| s.take());
                // The caller may have gone away; the write stands either way.
                if let Some(sender) = sender {
                    let _ = sender.send(answer);
                }
            });
            (ok, completion)
        });
        let queued = Queued {
            hint,
            job,
            repeatable,
            redone: false,
        };
        self.tx
            .send(queued)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        done_rx.await.map_err(|_| ApiError::Unavailable)?
    }
}

/// A connection for the writer, with `synchronous_commit` set for `durability`.
fn connect(url: &str, durability: Durability) -> Result<PgConn, String> {
    let conn = PgConn::connect(url).map_err(|e| super::connect_error(url, &e))?;
    conn.batch(match durability {
        Durability::Normal => "SET synchronous_commit = off",
        Durability::Full => "SET synchronous_commit = on",
    })
    .map_err(|e| format!("cannot set synchronous_commit: {e}"))?;
    conn.defer_posts();
    Ok(conn)
}

/// What the connection's `synchronous_commit` means, read back: `off` is
/// `normal` (a commit survives a crash of threadline, not one of
/// PostgreSQL or the machine), anything that waits for the WAL flush is
/// `full`.
fn applied_durability(conn: &PgConn) -> Result<Durability, String> {
    let row = conn
        .one("SELECT current_setting('synchronous_commit')", &[])
        .map_err(|e| format!("cannot read synchronous_commit: {e}"))?;
    let level: String = row
        .try_get(0)
        .map_err(|e| format!("cannot read synchronous_commit: {e}"))?;
    Ok(match level.as_str() {
        "off" | "local" => Durability::Normal,
        _ => Durability::Full,
    })
}

fn run(
    conn: PgConn,
    url: String,
    durability: Durability,
    mut rx: mpsc::Receiver<Queued>,
    signals: Arc<Signals>,
    writes: Arc<dyn CommitListener>,
) {
    let mut conn = Some(conn);
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    let mut ran: Vec<Ran> = Vec::with_capacity(MAX_BATCH);
    let mut guarded_batches: u32 = 0;
    // Logs once when the database goes, once when it is back.
    let reach = super::conn::Reach::new("the writer");
    loop {
        // No polling before it sleeps: not measured on PostgreSQL.
        let poll = std::time::Duration::ZERO;
        if !crate::store::writer::fill_batch(&mut rx, &mut batch, MAX_BATCH, poll) {
            break;
        }
        let mut c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => match connect(&url, durability) {
                Ok(c) => {
                    reach.answered();
                    c
                }
                Err(e) => {
                    reach.failed(&e);
                    // Not run: dropping a job drops its answer channel (503).
                    batch.clear();
                    // So are the jobs queued during the attempt, which may
                    // have taken the whole connect timeout (a host that
                    // never answers): they would wait for another.
                    while rx.try_recv().is_ok() {}
                    std::thread::sleep(RECONNECT_AFTER);
                    continue;
                }
            },
        };
        let (jobs, started) = (batch.len(), Instant::now());
        let guarded = guarded_batches > 0;
        guarded_batches = guarded_batches.saturating_sub(1);
        let (committed, spoiled) = match run_batch(&c, &signals, &mut batch, &mut ran, guarded) {
            Some(outcome) => outcome,
            // Its session had ended while idle (PostgreSQL restarted, or
            // the session was terminated): found out at BEGIN, before any
            // job ran, so the batch runs on a new connection rather than
            // every job of it being answered 503.
            None => match connect(&url, durability) {
                Ok(fresh) => {
                    reach.answered();
                    c = fresh;
                    run_batch(&c, &signals, &mut batch, &mut ran, guarded).unwrap_or_else(|| {
                        batch.clear();
                        (None, false)
                    })
                }
                Err(e) => {
                    reach.failed(&e);
                    batch.clear();
                    (None, false)
                }
            },
        };
        if spoiled {
            guarded_batches = GUARDED_BATCHES;
        }
        if let Some(upto) = committed {
            writes.committed(Committed {
                upto,
                events: &[],
                jobs,
                took: started.elapsed(),
            });
        }
        for Ran { done, refused, .. } in ran.drain(..) {
            done(match (refused, committed) {
                (Some(e), _) => Err(e),
                (None, Some(upto)) => Ok(upto),
                (None, None) => Err(ApiError::Unavailable),
            });
        }
        conn = Some(c);
    }
}

/// Runs the jobs in one transaction (each in a savepoint if `guarded`).
/// Returns the position of the batch's last logged event if it committed,
/// and whether the batch was spoiled (then nothing was committed, and the
/// jobs to run again, or not yet run, are left in `batch`). The jobs that
/// ran are left in `ran`, to be answered. `None` if the connection turned
/// out closed before any job ran (the batch is left whole in `batch`).
fn run_batch(
    c: &PgConn,
    signals: &Signals,
    batch: &mut Vec<Queued>,
    ran: &mut Vec<Ran>,
    guarded: bool,
) -> Option<(Option<i64>, bool)> {
    c.take_failed();
    let mut ctx = PgCtx::default();
    // The log_head lock first (see the module doc); a separate statement,
    // so the lookups after it see whatever committed while it waited. A
    // guarded batch checks deferrable constraints at each statement rather
    // than at COMMIT, so that their refusal falls in the job's savepoint.
    let begin = if guarded {
        "BEGIN; SET CONSTRAINTS ALL IMMEDIATE; SELECT 1 FROM log_head FOR UPDATE"
    } else {
        "BEGIN; SELECT 1 FROM log_head FOR UPDATE"
    };
    let begun = c
        .batch(begin)
        .and_then(|()| ctx.known.prefetch(c, batch.iter().map(|q| &q.hint)));
    if let Err(e) = begun {
        c.forget_held();
        if c.is_closed() {
            return None;
        }
        log::error!("writer could not begin a batch: {e:?}");
        let _ = c.batch("ROLLBACK");
        // Not run: dropping a job drops its answer channel (503).
        batch.clear();
        return Some((None, false));
    }
    // The bare jobs (posts) first, the others after them (a stable order
    // otherwise; the jobs of a batch are concurrent requests, so any order
    // is one they could have come in): the first savepoint then sends
    // every held-back post and checks the deferred constraints, so a row
    // refused there spoils the batch before any write that cannot run
    // again has run, and that write runs in the next batch instead of
    // being answered 503.
    if !guarded && !batch.is_sorted_by_key(|q| !q.repeatable) {
        batch.sort_by_key(|q| !q.repeatable);
    }
    let mut immediate = guarded;
    let mut jobs = std::mem::take(batch).into_iter();
    while let Some(mut queued) = jobs.next() {
        let (mark, held) = (ctx.events.len(), c.held());
        // Only repeatable jobs (posts) run bare: any other write's failing
        // statement would abort the transaction and cost the jobs before it
        // a 503, e.g. a webhook deleted while its delivery attempt is being
        // recorded.
        if guarded || !queued.repeatable {
            // This statement sends the posts the bare jobs before it held
            // back, and (the first time) checks what they left to COMMIT,
            // with every later job's constraints checked in its savepoint:
            // if a row is refused, the batch is undone and the bare jobs
            // run again, guarded, with this job and the rest after them.
            let open = if immediate {
                "SAVEPOINT job"
            } else {
                immediate = true;
                "SET CONSTRAINTS ALL IMMEDIATE; SAVEPOINT job"
            };
            if let Err(e) = c.batch(open) {
                log::warn!("held-back posts were refused: their batch runs again ({e:?})");
                batch.push(queued);
                batch.extend(jobs);
                return Some(spoil(c, ran, batch, false));
            }
            let (ok, done) = (queued.job)(c, &mut ctx);
            let mut refused = None;
            let mut closed = Ok(());
            if ok {
                // Sends its own held-back posts first, inside its savepoint:
                // a row the database refuses undoes this job alone.
                if let Err(e) = c.batch("RELEASE job") {
                    if c.is_closed() {
                        closed = Err(e);
                    } else {
                        log::warn!("the database refused a write, undone alone: {e:?}");
                        refused = Some(e);
                    }
                }
            }
            if closed.is_ok() && (!ok || refused.is_some()) {
                ctx.events.truncate(mark);
                // What it looked up may have been its own, now undone.
                ctx.known = Default::default();
                c.forget_held();
                closed = c.batch("ROLLBACK TO job; RELEASE job");
            }
            c.take_failed();
            ran.push(Ran {
                queued,
                done,
                ok: ok && refused.is_none(),
                refused,
            });
            if let Err(e) = closed {
                log::error!("writer savepoint failed: {e:?}");
                c.forget_held();
                let _ = c.batch("ROLLBACK");
                // The jobs not run are dropped, and so answered 503.
                return Some((None, false));
            }
            continue;
        }
        let (changes, sent) = (c.changes(), c.sent());
        let (ok, done) = (queued.job)(c, &mut ctx);
        ran.push(Ran {
            queued,
            done,
            ok,
            refused: None,
        });
        if !ok {
            ctx.events.truncate(mark);
            // A statement of the job sent what was held back before it:
            // the earlier jobs' posts first, then its own.
            let sent_own = (c.sent() - sent).saturating_sub(held as u64);
            let own_from = if c.sent() == sent { held } else { 0 };
            // Its held-back posts go (the others are sent, as they stand).
            let undone = c.undo_since(own_from);
            if c.changes() != changes || sent_own > 0 || c.take_failed() || undone.is_err() {
                // Its writes cannot be undone alone: undo the batch.
                log::warn!("a write failed half-way: its batch runs again");
                batch.extend(jobs);
                return Some(spoil(c, ran, batch, true));
            }
        }
    }
    Some(
        match super::log_and_commit(c, signals, std::mem::take(&mut ctx.events)) {
            Ok(upto) => (Some(upto), false),
            // The server refused (the connection stands): nothing was
            // committed, and a row it refused (a constraint, a trigger …) is
            // one job's. The batch runs again, each job in a savepoint, so
            // the refusal stays with its own job. A lost connection (or one
            // the server is ending) leaves the COMMIT's fate unknown: then no
            // job runs again (answered 503).
            Err(e) if !guarded && !c.is_closed() && !matches!(e, ApiError::Unavailable) => {
                log::warn!("writer commit failed: the batch runs again ({e:?})");
                spoil(c, ran, batch, false)
            }
            Err(e) => {
                log::error!("writer commit failed: {e:?}");
                c.forget_held();
                let _ = c.batch("ROLLBACK");
                (None, false)
            }
        },
    )
}

/// Rolls back a batch that a failure no savepoint contains has spoiled (a
/// bare job's, or that of posts held back and sent together). The
/// repeatable jobs whose work is lost, and the last job if `last_failed`
/// (its failure may be an earlier job's post), go back to the front of
/// `batch` to run again, once, in the next (guarded) batch; the other jobs
/// that ran stay in `ran`, answered 503 unless they failed on their own
/// (jobs that cannot run again run after the bare ones, so only a failed
/// COMMIT leaves any here).
fn spoil(
    c: &PgConn,
    ran: &mut Vec<Ran>,
    batch: &mut Vec<Queued>,
    last_failed: bool,
) -> (Option<i64>, bool) {
    c.forget_held();
    let _ = c.batch("ROLLBACK");
    c.take_failed();
    let last = ran.len().saturating_sub(1);
    let mut again = Vec::with_capacity(ran.len() + batch.len());
    let mut answered = Vec::with_capacity(ran.len());
    for (i, r) in ran.drain(..).enumerate() {
        let lost = r.ok || (last_failed && i == last);
        if lost && r.queued.repeatable && !r.queued.redone {
            // Its first run's answer is dropped unsent.
            let mut queued = r.queued;
            queued.redone = true;
            again.push(queued);
        } else {
            answered.push(r);
        }
    }
    *ran = answered;
    again.append(batch);
    *batch = again;
    (None, true)
}
