//! Connect grants: the `c=` of a `connect_url`. Random (256 bits), short-lived,
//! good for one connection, bound to a channel and an account. Kept in memory:
//! they live seconds, so a restart simply asks clients to open again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// What a grant lets its holder connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A thread's channel.
    Thread { thread_id: String, account_id: i64 },
    /// An agent's inbox.
    Agent { aid: String, account_id: i64 },
}

/// The grants issued and not yet used or expired.
pub struct Grants {
    ttl: Duration,
    live: Mutex<HashMap<String, (Grant, Instant)>>,
}

impl Grants {
    pub fn new(ttl: Duration) -> Grants {
        Grants {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a grant; returns the token and its expiry (wall clock).
    pub fn issue(&self, grant: Grant) -> (String, chrono::DateTime<chrono::Utc>) {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        // Sweep expired grants as new ones come in, so the map stays small.
        live.retain(|_, (_, expires)| *expires > now);
        live.insert(token.clone(), (grant, now + self.ttl));
        let expires_at = chrono::Utc::now()
            + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(30));
        (token, expires_at)
    }

    /// Whether a grant exists and has not expired (without using it).
    pub fn is_live(&self, token: &str) -> bool {
        let live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        live.get(token)
            .is_some_and(|(_, expires)| Instant::now() < *expires)
    }

    /// Uses a grant: returns it if it exists and has not expired. Either way
    /// the token is gone afterwards.
    pub fn redeem(&self, token: &str) -> Option<Grant> {
        let mut live = self
            .live
            .lock()
            .expect("expect: the grant lock is never held across a panic");
        let (grant, expires) = live.remove(token)?;
        (Instant::now() < expires).then_some(grant)
    }
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

    #[test]
    fn a_grant_works_once() {
        let grants = Grants::new(Duration::from_secs(30));
        let (token, _) = grants.issue(grant());
        assert!(grants.is_live(&token));
        assert_eq!(grants.redeem(&token), Some(grant()));
        assert!(!grants.is_live(&token));
        assert_eq!(grants.redeem(&token), None);
        assert_eq!(grants.redeem("unknown"), None);
    }

    #[test]
    fn an_expired_grant_is_refused() {
        let grants = Grants::new(Duration::ZERO);
        let (token, _) = grants.issue(grant());
        assert_eq!(grants.redeem(&token), None);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let grants = Grants::new(Duration::from_secs(30));
        let (a, _) = grants.issue(grant());
        let (b, _) = grants.issue(grant());
        assert_ne!(a, b);
        assert!(a.len() >= 43);
    }
}
