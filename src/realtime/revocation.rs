//! Revocation reaching what a key already opened. `key revoke` runs in
//! another process; HTTP requests see it at once (each looks its key up), but
//! an unused grant and an open socket would not. A watcher thread reads
//! `PRAGMA data_version` on its own connection every [`TICK`]; when another
//! connection has committed, it asks the store which keys were revoked
//! lately, voids their unused grants and tells their sockets to close with
//! [`CLOSE_REVOKED`].
//!
//! A socket registers its key ([`Revocations::watch`]) before the connect
//! path checks that the key is still live, so a revocation is either seen by
//! that check or committed after the registration, where the watcher finds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::grants::{Grants, KeyHash};
use crate::domain;
use crate::error::ApiResult;
use crate::store::{self, accounts, pg, Location};

/// WebSocket close code for a socket whose login key was revoked.
pub const CLOSE_REVOKED: u16 = 4001;
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

/// Keys revoked since a time, if anything may have changed since the last look.
type Look = Box<dyn FnMut(&str) -> ApiResult<Option<Vec<(KeyHash, String)>>> + Send>;

/// How the watcher looks. On SQLite, only when `data_version` moved; on
/// PostgreSQL (several nodes), every tick: one indexed query on the
/// revoked keys, reconnecting if the connection broke.
fn looker(at: Location<'_>) -> Result<Look, String> {
    match at {
        Location::Sqlite(path) => {
            let conn = store::open_connection(path)?;
            let mut seen = store::data_version(&conn).map_err(|e| e.to_string())?;
            Ok(Box::new(move |since| {
                let version = store::data_version(&conn)?;
                if version == seen {
                    return Ok(None);
                }
                let revoked = accounts::revoked_since(&conn, since)?;
                seen = version;
                Ok(Some(revoked))
            }))
        }
        Location::Pg(url) => {
            let url = url.to_owned();
            let mut conn = Some(pg::off_runtime(|| pg::open_connection(&url))?);
            Ok(Box::new(move |since| {
                let c = match conn.take() {
                    Some(c) if !c.is_closed() => c,
                    _ => pg::PgConn::connect(&url)?,
                };
                let revoked = pg::accounts::revoked_since(&c, since)?;
                conn = Some(c);
                Ok(Some(revoked))
            }))
        }
    }
}

/// Starts the watcher on its own connection to the database. It stops once
/// the server's grants and registry are gone.
pub fn start_watcher(
    at: Location<'_>,
    grants: Weak<Grants>,
    revocations: Weak<Revocations>,
) -> Result<(), String> {
    let mut look = looker(at)?;
    std::thread::Builder::new()
        .name("threadline-revocations".into())
        .spawn(move || {
            // Keys already acted on, with when they were revoked; kept as
            // long as the lookback still returns them.
            let mut done: HashMap<KeyHash, String> = HashMap::new();
            let mut failing = false;
            loop {
                std::thread::sleep(TICK);
                let (Some(grants), Some(revocations)) = (grants.upgrade(), revocations.upgrade())
                else {
                    return;
                };
                let since = domain::format_time(
                    chrono::Utc::now()
                        - chrono::Duration::from_std(LOOKBACK).unwrap_or(chrono::Duration::zero()),
                );
                let revoked = match look(&since) {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(e) => {
                        // Once per outage, not once per tick.
                        if !failing {
                            log::warn!("cannot look for revoked keys (retrying): {e:?}");
                        }
                        failing = true;
                        continue;
                    }
                };
                failing = false;
                done.retain(|_, at| at.as_str() >= since.as_str());
                let fresh: Vec<KeyHash> = revoked
                    .into_iter()
                    .filter_map(|(key, at)| done.insert(key, at).is_none().then_some(key))
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                let voided = grants.forget_keys(&fresh);
                let closed = revocations.revoke(&fresh);
                log::info!(
                    "{} login key(s) revoked: {voided} unused grant(s) voided, {closed} socket(s) closing",
                    fresh.len()
                );
            }
        })
        .map_err(|e| format!("cannot start the revocation watcher: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
