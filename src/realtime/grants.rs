//! Connect grants: the `c=` of a `connect_url`. Random (256 bits), short-lived,
//! good for one connection, bound to a channel and an account. On SQLite kept
//! in memory: they live seconds, so a restart simply asks clients to open
//! again. On PostgreSQL (several nodes) kept in the database
//! (`store::pg::grants`), so a grant minted on one node connects on any,
//! once. Each remembers the login key (its hash) that minted it, so revoking
//! the key voids the grants it has not used yet (on PostgreSQL, redeeming
//! checks the key is live instead).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiResult;
use crate::store::Store;

/// What a grant lets its holder connect to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Grant {
    /// A thread's channel.
    Thread { thread_id: String, account_id: i64 },
    /// An agent's inbox.
    Agent { aid: String, account_id: i64 },
}

/// The SHA-256 of the login key that minted a grant.
pub type KeyHash = [u8; 32];

/// A grant as issued.
struct Issued {
    grant: Grant,
    key: KeyHash,
    expires: Instant,
}

/// The grants issued and not yet used or expired, and when each expires,
/// oldest first: every grant lives the same `ttl`, so issue order is
/// expiry order and the sweep looks only at the grants that just expired.
#[derive(Default)]
struct Live {
    by_token: HashMap<String, Issued>,
    expiring: VecDeque<(Instant, String)>,
}

/// The grants issued and not yet used or expired.
pub struct Grants {
    ttl: Duration,
    live: Mutex<Live>,
    /// A store shared by several nodes keeps the grants instead.
    shared: Option<Store>,
}

impl Grants {
    pub fn new(ttl: Duration) -> Grants {
        Grants {
            ttl,
            live: Mutex::new(Live::default()),
            shared: None,
        }
    }

    /// Grants kept in `store` when it is shared by several nodes
    /// (PostgreSQL), else in memory.
    pub fn for_store(ttl: Duration, store: &Store) -> Grants {
        Grants {
            shared: store.is_shared().then(|| store.clone()),
            ..Grants::new(ttl)
        }
    }

    /// [`Grants::issue`], in the shared store if there is one.
    pub async fn mint(
        &self,
        grant: Grant,
        key: KeyHash,
    ) -> ApiResult<(String, chrono::DateTime<chrono::Utc>)> {
        let Some(store) = &self.shared else {
            return Ok(self.issue(grant, key));
        };
        let token = new_token();
        let hash = token_hash(&token);
        let json = serde_json::to_string(&grant).expect("expect: a grant serializes");
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        store
            .shared(move |c| crate::store::pg::grants::insert(c, &hash, &json, &key, ttl_ms))
            .await
            .unwrap_or(Ok(()))?;
        Ok((token, self.expiry()))
    }

    /// [`Grants::is_live`], in the shared store if there is one.
    pub async fn live_anywhere(&self, token: &str) -> bool {
        let Some(store) = &self.shared else {
            return self.is_live(token);
        };
        let hash = token_hash(token);
        let found = store
            .shared(move |c| crate::store::pg::grants::exists(c, &hash))
            .await;
        matches!(found, Some(Ok(true)))
    }

    /// [`Grants::redeem`], in the shared store if there is one: of two
    /// nodes redeeming one token, one gets it.
    pub async fn take(&self, token: &str) -> ApiResult<Option<(Grant, KeyHash)>> {
        let Some(store) = &self.shared else {
            return Ok(self.redeem(token));
        };
        let hash = token_hash(token);
        let taken = store
            .shared(move |c| crate::store::pg::grants::take(c, &hash))
            .await
            .unwrap_or(Ok(None))?;
        Ok(taken.and_then(|(json, key)| {
            let grant = serde_json::from_str(&json).ok()?;
            let key = KeyHash::try_from(key.as_slice()).ok()?;
            Some((grant, key))
        }))
    }

    /// When a grant issued now expires (wall clock).
    fn expiry(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Issues a grant minted with the login key `key`; returns the token and
    /// its expiry (wall clock).
    pub fn issue(&self, grant: Grant, key: KeyHash) -> (String, chrono::DateTime<chrono::Utc>) {
        let token = new_token();
        let now = Instant::now();
        let mut live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        // Sweep the grants that expired as new ones come in, so the map
        // stays small; a token already used or voided is simply not found.
        // (Each issue once swept the whole map: with many grants live, a
        // cost that grew with every grant outstanding.)
        while let Some((expires, _)) = live.expiring.front() {
            if *expires > now {
                break;
            }
            if let Some((_, token)) = live.expiring.pop_front() {
                live.by_token.remove(&token);
            }
        }
        let expires = now + self.ttl;
        live.expiring.push_back((expires, token.clone()));
        live.by_token.insert(
            token.clone(),
            Issued {
                grant,
                key,
                expires,
            },
        );
        (token, self.expiry())
    }

    /// Whether a grant exists and has not expired (without using it).
    pub fn is_live(&self, token: &str) -> bool {
        self.live_key(token).is_some()
    }

    /// The key that minted a grant kept in memory, if it is live; `None`
    /// for a grant in the shared store, whose look already checks the key.
    pub fn minted_by(&self, token: &str) -> Option<KeyHash> {
        self.shared
            .is_none()
            .then(|| self.live_key(token))
            .flatten()
    }

    /// The key that minted an in-memory grant that exists and has not expired.
    fn live_key(&self, token: &str) -> Option<KeyHash> {
        let live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        live.by_token
            .get(token)
            .filter(|issued| Instant::now() < issued.expires)
            .map(|issued| issued.key)
    }

    /// Uses a grant: returns it and the key that minted it, if it exists and
    /// has not expired. Either way the token is gone afterwards.
    pub fn redeem(&self, token: &str) -> Option<(Grant, KeyHash)> {
        let mut live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        let issued = live.by_token.remove(token)?;
        (Instant::now() < issued.expires).then_some((issued.grant, issued.key))
    }

    /// Voids every unused grant minted with one of `keys` (they were
    /// revoked); returns how many.
    pub fn forget_keys(&self, keys: &[KeyHash]) -> usize {
        let mut live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        let before = live.by_token.len();
        live.by_token
            .retain(|_, issued| !keys.contains(&issued.key));
        before - live.by_token.len()
    }
}

/// A fresh token: 256 random bits, URL-safe.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the shared store keeps of a token.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant::Thread {
            thread_id: "t".into(),
            account_id: 1,
        }
    }

    const KEY: KeyHash = [7; 32];

    #[test]
    fn a_grant_works_once() {
        let grants = Grants::new(Duration::from_secs(30));
        let (token, _) = grants.issue(grant(), KEY);
        assert!(grants.is_live(&token));
        assert_eq!(grants.redeem(&token), Some((grant(), KEY)));
        assert!(!grants.is_live(&token));
        assert_eq!(grants.redeem(&token), None);
        assert_eq!(grants.redeem("unknown"), None);
    }

    #[test]
    fn an_expired_grant_is_refused() {
        let grants = Grants::new(Duration::ZERO);
        let (token, _) = grants.issue(grant(), KEY);
        assert_eq!(grants.redeem(&token), None);
    }

    #[test]
    fn forgetting_a_key_voids_its_grants_only() {
        let grants = Grants::new(Duration::from_secs(30));
        let (a, _) = grants.issue(grant(), KEY);
        let (b, _) = grants.issue(grant(), KEY);
        let (other, _) = grants.issue(grant(), [8; 32]);
        assert_eq!(grants.forget_keys(&[KEY]), 2);
        assert_eq!(grants.redeem(&a), None);
        assert_eq!(grants.redeem(&b), None);
        assert_eq!(grants.redeem(&other), Some((grant(), [8; 32])));
    }

    #[test]
    fn expired_grants_are_swept_as_new_ones_are_issued() {
        let grants = Grants::new(Duration::ZERO);
        let (used, _) = grants.issue(grant(), KEY);
        assert_eq!(grants.redeem(&used), None);
        for _ in 0..100 {
            grants.issue(grant(), KEY);
        }
        let live = grants.live.lock().unwrap();
        // Each issue swept the ones before it (all expired at once); only
        // the last is left, in the map and in the expiry queue.
        assert_eq!(live.by_token.len(), 1);
        assert_eq!(live.expiring.len(), 1);
    }

    #[test]
    fn unexpired_grants_outlive_the_sweep() {
        let grants = Grants::new(Duration::from_secs(30));
        let tokens: Vec<String> = (0..10).map(|_| grants.issue(grant(), KEY).0).collect();
        assert!(tokens.iter().all(|t| grants.is_live(t)));
        assert_eq!(grants.live.lock().unwrap().by_token.len(), 10);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let grants = Grants::new(Duration::from_secs(30));
        let (a, _) = grants.issue(grant(), KEY);
        let (b, _) = grants.issue(grant(), KEY);
        assert_ne!(a, b);
        assert!(a.len() >= 43);
    }
}
