//! Revocation and deletion reaching what is already open. `key revoke`,
//! `thread delete` and `prune` run in another process (on PostgreSQL maybe
//! on another node); HTTP requests see the change at once (each looks its
//! key and thread up), but an unused grant and an open socket or stream
//! would not. A watcher thread reads `PRAGMA data_version` on its own
//! connection every [`TICK`]; when another connection has committed, it asks
//! the store which keys were revoked and which threads deleted lately. It
//! voids a revoked key's unused grants and tells its sockets to close with
//! [`CLOSE_REVOKED`]; it tells the hub to end a deleted thread's channel:
//! its sockets close with [`CLOSE_THREAD_DELETED`] and its SSE streams end
//! with a `closed` event, after what was queued for them.
//!
//! A socket registers its key ([`Revocations::watch`]) before the connect
//! path checks that the key is still live, so a revocation is either seen by
//! that check or committed after the registration, where the watcher finds it.
//! Likewise a socket joins its thread's channel before it reads the thread:
//! a deletion is either seen by that read (404) or ends the channel.
//!
//! `open_thread` may create a thread under a deleted one's id, before the
//! watcher has looked. A subscriber says which of the id's threads it
//! serves (its `created_at`), and the watcher asks which one has the id
//! now: a deletion closes the subscribers of the threads no longer there,
//! never those of the one created again (see `Hub::end_channel`; the
//! creation itself closes the earlier thread's subscribers before its first
//! event, see `Hub::publish_all`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::grants::{Grants, KeyHash};
use super::{body, thread_channel, Hub, Incarnation};
use crate::domain;
use crate::error::ApiResult;
use crate::store::{self, accounts, admin, pg, Location};

/// WebSocket close code for a socket whose login key was revoked.
pub const CLOSE_REVOKED: u16 = 4001;
/// WebSocket close code for a socket whose thread was deleted.
pub const CLOSE_THREAD_DELETED: u16 = 4004;
/// Its reason (also the SSE `closed` event's).
pub const THREAD_DELETED: &str = "thread deleted";
/// How often the watcher looks for commits of other connections.
pub const TICK: Duration = Duration::from_millis(250);
/// How far back each look reaches: a revocation is stamped by the process
/// that made it, before its commit (busy timeout 5 s); this covers that gap
/// and a small clock step.
const LOOKBACK: Duration = Duration::from_secs(60);

/// The open sockets of each key: one channel per key, a receiver per socket
/// (a pointer and a counter: 10,000 sockets cost well under a megabyte).
pub struct Revocations {
    keys: Mutex<HashMap<KeyHash, watch::Sender<bool>>>,
}

/// One socket's registration: `revoked()` resolves once its key is revoked.
/// Dropping it unregisters the socket.
pub struct KeyWatch {
    key: KeyHash,
    owner: Arc<Revocations>,
    revoked: watch::Receiver<bool>,
}

impl KeyWatch {
    /// Resolves when the key is revoked (never, if it is not).
    pub async fn revoked(&mut self) {
        if self.revoked.wait_for(|revoked| *revoked).await.is_err() {
            // The channel is gone without a revocation: nothing will come.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        let mut keys = self.owner.lock();
        // A revoked key's channel has left the map already (and a new one
        // of the same key may be there); otherwise the key's channel is
        // this one, removed with its last socket.
        if *self.revoked.borrow() {
            return;
        }
        if keys
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            keys.remove(&self.key);
        }
    }
}

impl Revocations {
    pub fn new() -> Arc<Revocations> {
        Arc::new(Revocations {
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, watch::Sender<bool>>> {
        self.keys
            .lock()
            .expect("expect: the revocation lock is never held across a panic")
    }

    /// Registers a socket opened with `key`.
    pub fn watch(self: &Arc<Self>, key: KeyHash) -> KeyWatch {
        let revoked = self
            .lock()
            .entry(key)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        KeyWatch {
            key,
            owner: Arc::clone(self),
            revoked,
        }
    }

    /// Tells every socket of these keys to close; returns how many.
    pub fn revoke(&self, keys: &[KeyHash]) -> usize {
        let mut told = 0;
        let mut registered = self.lock();
        for key in keys {
            if let Some(tx) = registered.remove(key) {
                told += tx.receiver_count();
                tx.send_replace(true);
            }
        }
        told
    }

    /// How many sockets are registered (for tests and the log).
    pub fn sockets(&self) -> usize {
        self.lock()
            .values()
            .map(watch::Sender::receiver_count)
            .sum()
    }
}

/// What one look found since a time: revoked keys and deleted threads
/// (by uuid), each with when.
#[derive(Default)]
struct Found {
    revoked: Vec<(KeyHash, String)>,
    deleted: Vec<(String, String)>,
}

/// The watcher's own connection to the database, and what it asks there.
enum Looker {
    /// On SQLite it looks only when `data_version` moved.
    Sqlite {
        conn: rusqlite::Connection,
        seen: i64,
    },
    /// On PostgreSQL (several nodes) every tick: two indexed queries, on the
    /// revoked keys and the recent deletions, reconnecting if the
    /// connection broke.
    Pg {
        url: String,
        conn: Option<Box<pg::PgConn>>,
    },
}

impl Looker {
    fn open(at: Location<'_>) -> Result<Looker, String> {
        Ok(match at {
            Location::Sqlite(path) => {
                let conn = store::open_connection(path)?;
                let seen = store::data_version(&conn).map_err(|e| e.to_string())?;
                Looker::Sqlite { conn, seen }
            }
            Location::Pg(url) => Looker::Pg {
                url: url.to_owned(),
                conn: Some(Box::new(pg::off_runtime(|| pg::open_connection(url))?)),
            },
        })
    }

    /// Keys revoked and threads deleted since a time, if anything may have
    /// changed since the last look.
    fn look(&mut self, since: &str) -> ApiResult<Option<Found>> {
        match self {
            Looker::Sqlite { conn, seen } => {
                let version = store::data_version(conn)?;
                if version == *seen {
                    return Ok(None);
                }
                let found = Found {
                    revoked: accounts::revoked_since(conn, since)?,
                    deleted: admin::deleted_since(conn, since)?,
                };
                *seen = version;
                Ok(Some(found))
            }
            Looker::Pg { url, conn } => on_pg(url, conn, |c| {
                Ok(Some(Found {
                    revoked: pg::accounts::revoked_since(c, since)?,
                    deleted: pg::admin::deleted_since(c, since)?,
                }))
            }),
        }
    }

    /// When the thread that has this id now was created, if one has (a
    /// thread created again under a deleted one's id).
    fn created_at_of(&mut self, uuid: &str) -> ApiResult<Option<String>> {
        match self {
            Looker::Sqlite { conn, .. } => admin::created_at_of(conn, uuid),
            Looker::Pg { url, conn } => on_pg(url, conn, |c| pg::admin::created_at_of(c, uuid)),
        }
    }
}

/// Runs `f` on the watcher's PostgreSQL connection, connecting again if it
/// is closed; a connection that failed a query is dropped.
fn on_pg<T>(
    url: &str,
    conn: &mut Option<Box<pg::PgConn>>,
    f: impl FnOnce(&pg::PgConn) -> ApiResult<T>,
) -> ApiResult<T> {
    let c = match conn.take() {
        Some(c) if !c.is_closed() => c,
        _ => Box::new(pg::PgConn::connect(url)?),
    };
    let answer = f(&c)?;
    *conn = Some(c);
    Ok(answer)
}

/// What the watcher has already acted on, with when it happened: kept as
/// long as the lookback still returns it, so each revocation or deletion
/// is acted on once.
struct Done<K> {
    at: HashMap<K, String>,
}

impl<K: std::hash::Hash + Eq + Clone> Done<K> {
    fn new() -> Done<K> {
        Done { at: HashMap::new() }
    }

    /// Of what a look found since `since`, what was not acted on yet;
    /// forgets what the lookback no longer reaches.
    fn fresh(&mut self, since: &str, found: Vec<(K, String)>) -> Vec<K> {
        self.at.retain(|_, at| at.as_str() >= since);
        found
            .into_iter()
            .filter_map(|(k, at)| self.at.insert(k.clone(), at).is_none().then_some(k))
            .collect()
    }
}

/// Where a look begins: [`LOOKBACK`] before the last look that reached the
/// database, or before now if that is earlier (a clock stepped back). While
/// looks succeed, that is about `LOOKBACK` before now; after the database was
/// away (a PostgreSQL outage, a partition) it reaches back over the whole
/// time away, so a key revoked then on another node still closes this
/// node's sockets once it looks again.
fn look_from(
    looked_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    looked_at.min(now) - chrono::Duration::from_std(LOOKBACK).unwrap_or(chrono::Duration::zero())
}

/// Starts the watcher on its own connection to the database. It stops once
/// the server's grants, registry and hub are gone.
///
/// `report_outside_events` is called once a look found deletions, on SQLite
/// only: it should have the writer run a batch, which reports the
/// `thread.deleted` events the deleting process logged (the writer reports
/// what other processes logged before its own batch's events, so each goes
/// once, in log order; on PostgreSQL the log follower reads them).
pub fn start_watcher(
    at: Location<'_>,
    grants: Weak<Grants>,
    revocations: Weak<Revocations>,
    hub: Weak<Hub>,
    report_outside_events: Box<dyn Fn() + Send>,
) -> Result<(), String> {
    let mut looker = Looker::open(at)?;
    std::thread::Builder::new()
        .name("threadline-revocations".into())
        .spawn(move || {
            let mut keys_done = Done::new();
            let mut threads_done = Done::new();
            let mut failing = false;
            // When the last look that reached the database began.
            let mut looked_at = chrono::Utc::now();
            loop {
                std::thread::sleep(TICK);
                let (Some(grants), Some(revocations), Some(hub)) =
                    (grants.upgrade(), revocations.upgrade(), hub.upgrade())
                else {
                    return;
                };
                let now = chrono::Utc::now();
                let since = domain::format_time(look_from(looked_at, now));
                let found = match looker.look(&since) {
                    Ok(Some(found)) => {
                        looked_at = now;
                        found
                    }
                    Ok(None) => {
                        looked_at = now;
                        continue;
                    }
                    Err(e) => {
                        // Once per outage, not once per tick.
                        if !failing {
                            log::warn!(
                                "cannot look for revoked keys and deleted threads (retrying): {e:?}"
                            );
                        }
                        failing = true;
                        continue;
                    }
                };
                if std::mem::take(&mut failing) {
                    log::warn!("looking for revoked keys and deleted threads again");
                }
                let fresh = keys_done.fresh(&since, found.revoked);
                if !fresh.is_empty() {
                    let voided = grants.forget_keys(&fresh);
                    let closed = revocations.revoke(&fresh);
                    log::info!(
                        "{} login key(s) revoked: {voided} unused grant(s) voided, {closed} socket(s) closing",
                        fresh.len()
                    );
                }
                // Keyed by thread and time: open_thread may create a thread
                // again under a deleted one's id, and it may be deleted again.
                let mut deleted = threads_done.fresh(
                    &since,
                    found
                        .deleted
                        .into_iter()
                        .map(|(uuid, at)| ((uuid, at.clone()), at))
                        .collect(),
                );
                // In the order they were made: whoever saw a deletion's
                // sockets close knows the earlier ones were acted on.
                deleted.sort_by(|a, b| a.1.cmp(&b.1));
                if !deleted.is_empty() && matches!(looker, Looker::Sqlite { .. }) {
                    report_outside_events();
                }
                if !deleted.is_empty() {
                    // Who joins from here on reads the thread after these
                    // deletions and is refused if it asks for a deleted one;
                    // of those who joined before, the subscribers of the
                    // thread that has the id now (created again since) stay.
                    let before = hub.mark();
                    let close = body::close_frame(CLOSE_THREAD_DELETED, THREAD_DELETED);
                    let mut ended = 0;
                    for (uuid, _) in &deleted {
                        let live = looker.created_at_of(uuid).unwrap_or_else(|e| {
                            // Closing them all is the pre-check behaviour:
                            // nobody is left on a deleted thread.
                            log::warn!("cannot tell whether thread {uuid} exists again: {e:?}");
                            None
                        });
                        ended += hub.end_channel(
                            &thread_channel(uuid),
                            close.clone(),
                            live.as_deref().and_then(Incarnation::of),
                            before,
                        );
                    }
                    log::info!(
                        "{} thread(s) deleted: {ended} channel actor(s) closing their sockets",
                        deleted.len()
                    );
                }
            }
        })
        .map_err(|e| format!("cannot start the revocation watcher: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_deletion_is_acted_on_once_while_the_lookback_returns_it() {
        let mut done = Done::new();
        let t = |s: &str| s.to_owned();
        let first = done.fresh("10", vec![(t("a"), t("11")), (t("b"), t("12"))]);
        assert_eq!(first, ["a", "b"]);
        // The next look returns them again, and one more.
        let second = done.fresh(
            "10",
            vec![(t("a"), t("11")), (t("b"), t("12")), (t("c"), t("13"))],
        );
        assert_eq!(second, ["c"]);
        // Past the lookback, what it no longer returns is forgotten.
        assert!(done.fresh("12", vec![(t("b"), t("12"))]).is_empty());
        assert!(
            !done.at.contains_key("a"),
            "a's entry outlived the lookback"
        );
        assert_eq!(done.at.len(), 2);
    }

    #[test]
    fn a_look_after_the_database_was_away_reaches_back_over_the_whole_time_away() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("a time")
                .with_timezone(&chrono::Utc)
        };
        let lookback = chrono::Duration::from_std(LOOKBACK).expect("lookback");
        // Looks succeeding every tick: the lookback before now, as ever.
        let now = at("2026-11-30T18:00:00.250Z");
        assert_eq!(
            look_from(at("2026-11-30T18:00:00Z"), now),
            at("2026-11-30T18:00:00Z") - lookback
        );
        // Ten minutes without a look: from before the last one that worked,
        // so a revocation made at 18:05 on another node is found.
        let back = at("2026-11-30T18:10:00Z");
        let from = look_from(at("2026-11-30T18:00:00Z"), back);
        assert!(from < at("2026-11-30T18:05:00Z"));
        assert_eq!(from, at("2026-11-30T17:59:00Z"));
        // A clock stepped back: never from later than the lookback before now.
        assert_eq!(look_from(back, now), now - lookback);
    }

    #[tokio::test]
    async fn revoking_a_key_tells_its_sockets_only() {
        let revocations = Revocations::new();
        let mut a = revocations.watch([1; 32]);
        let mut b = revocations.watch([1; 32]);
        let other = revocations.watch([2; 32]);
        assert_eq!(revocations.sockets(), 3);
        assert_eq!(revocations.revoke(&[[1; 32]]), 2);
        a.revoked().await;
        b.revoked().await;
        assert!(
            !*other.revoked.borrow(),
            "the other key's socket was told to close"
        );
        assert_eq!(revocations.sockets(), 1);
        drop(other);
    }

    #[tokio::test]
    async fn a_closed_socket_unregisters_and_the_last_one_takes_the_key_along() {
        let revocations = Revocations::new();
        let a = revocations.watch([1; 32]);
        let b = revocations.watch([1; 32]);
        drop(a);
        assert_eq!(revocations.sockets(), 1);
        drop(b);
        assert_eq!(revocations.sockets(), 0);
        assert!(revocations.lock().is_empty(), "the key's channel is gone");
        assert_eq!(revocations.revoke(&[[1; 32]]), 0);
    }

    #[tokio::test]
    async fn a_socket_closing_after_its_key_was_revoked_leaves_a_new_registration_alone() {
        let revocations = Revocations::new();
        let old = revocations.watch([1; 32]);
        assert_eq!(revocations.revoke(&[[1; 32]]), 1);
        // (a key is never live again once revoked, but the registry must
        // not depend on that)
        let new = revocations.watch([1; 32]);
        drop(old);
        assert_eq!(revocations.sockets(), 1);
        drop(new);
        assert_eq!(revocations.sockets(), 0);
    }
}
