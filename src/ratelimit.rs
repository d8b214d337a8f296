//! Rate limits (GCRA, from `governor`): per login key and route, per client
//! IP for requests without a valid key, and per IP for registration. Every
//! quota is "N a minute, bursting the whole minute"; 0 turns a limit off.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::config::ServeConfig;
use crate::error::ApiError;

/// The routes that have their own quota per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    ThreadCreate,
    ThreadMessage,
    ThreadGet,
    ThreadList,
    ThreadStatus,
    RealtimeOpen,
    OpenThread,
    SubmitMessages,
    Respond,
    RecordEvent,
    /// GET /api/acsp/me
    Me,
    /// GET /v1/sse opened with a key (a grant was counted when minted)
    EventStream,
    /// /mcp (each JSON-RPC request; the API calls its tools make count on
    /// their own routes too)
    Mcp,
    /// The webhook routes that change something (create, delete, rotate,
    /// pause, resume), one quota between them. A GET or HEAD on a resource
    /// of this route is a read: it counts as [`Route::WebhookRead`].
    WebhookChange,
    /// The webhook reads (list, attempts), one roomier quota between them
    /// (see [`webhook_reads_per_minute`]).
    WebhookRead,
}

impl Route {
    /// The route a request with `method` on a resource of this route
    /// counts under.
    pub fn counted_as(self, method: &Method) -> Route {
        match self {
            Route::WebhookChange if method == Method::GET || method == Method::HEAD => {
                Route::WebhookRead
            }
            route => route,
        }
    }
}

/// The webhook reads' quota for a per-key quota of `per_minute`: 20 times
/// it, and at least 600 a minute. The web inspector reads the list and
/// each endpoint's attempts every 5 s: 12 + 12 x 20 = 252 reads a minute at
/// an account's 20 endpoints. 0 (limits off) stays 0.
pub fn webhook_reads_per_minute(per_minute: u32) -> u32 {
    match per_minute {
        0 => 0,
        n => n.saturating_mul(20).max(600),
    }
}

/// What a limited response tells the client in `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the full quota is available again.
    pub reset: u64,
}

/// The outcome of a check that failed: the error and the headers.
pub type Denied = (ApiError, RateInfo);

/// governor's keyed store, shared: the limiter measures in it, and
/// [`Quotaed::forget`] removes a key from it (governor itself only drops
/// keys in bulk, once they are back to a full quota).
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

type Limiter<K> = RateLimiter<K, SharedStore<K>, DefaultClock, StateInformationMiddleware>;

/// One keyed quota, or none (0 a minute).
struct Quotaed<K: Hash + Eq + Clone> {
    per_minute: u32,
    limiter: Option<(Limiter<K>, Arc<DashMapStateStore<K>>)>,
}

impl<K: Hash + Eq + Clone> Quotaed<K> {
    fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            // n a minute, with a burst of n: a fresh key may use its whole minute at once.
            let quota = Quota::per_minute(n).allow_burst(n);
            let store = Arc::new(DashMapStateStore::default());
            let shared = SharedStore(Arc::clone(&store));
            let limiter: Limiter<K> = RateLimiter::new(quota, shared, DefaultClock::default());
            (limiter, store)
        });
        Quotaed {
            per_minute,
            limiter,
        }
    }

    fn check(&self, key: &K) -> Result<Option<RateInfo>, Denied> {
        let Some((limiter, _)) = &self.limiter else {
            return Ok(None);
        };
        let interval = Duration::from_secs(60) / self.per_minute;
        let now = unix_now();
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let until_full = interval * (self.per_minute - remaining);
                Ok(Some(RateInfo {
                    limit: self.per_minute,
                    remaining,
                    reset: now + until_full.as_secs_f64().ceil() as u64,
                }))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
                let until_full = wait + interval * (self.per_minute - 1);
                let info = RateInfo {
                    limit: self.per_minute,
                    remaining: 0,
                    reset: now + until_full.as_secs_f64().ceil() as u64,
                };
                Err((ApiError::RateLimited { retry_after }, info))
            }
        }
    }

    /// Drops state of keys that are back to a full quota.
    fn shrink(&self) {
        if let Some((l, _)) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Drops a key's state, whatever it is.
    fn forget(&self, key: &K) {
        if let Some((_, store)) = &self.limiter {
            store.remove(key);
        }
    }

    /// Keys with state.
    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |(_, store)| store.len())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a client address's per-IP quotas count under: an IPv4 address
/// (IPv4-mapped ones included) as itself, an IPv6 address by its /64. One
/// host or site is given a whole /64 (a rented server included): counted
/// address by address, its 2^64 addresses would each get a fresh quota, and
/// the per-IP limits on bad keys and on registration would hold nobody.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The block a client address belongs to, for the connection cap per
/// block: an IPv4 address's /24, an IPv6 address's /48 (IPv4-mapped ones
/// as IPv4). A site is commonly given an IPv6 /48 (a home often a /56, a
/// cloud network a /56 or /64s of one), so one site's 65,536 /64s, each
/// under [`ip_key`]'s per-address cap, would otherwise hold any number of
/// connections between them; a /24 is the smallest IPv4 block routed on
/// its own, and one provider's neighbouring addresses usually share it.
pub fn block_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
        }
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
    }
}

/// What per-key quotas count under: the first 128 bits of the key's SHA-256.
fn key_id(key_hash: &[u8; 32]) -> u128 {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&key_hash[..16]);
    u128::from_le_bytes(prefix)
}

/// All of the server's limiters.
pub struct RateLimits {
    per_key: Quotaed<(u128, Route)>,
    per_key_status: Quotaed<(u128, Route)>,
    per_key_webhook_reads: Quotaed<(u128, Route)>,
    per_ip: Quotaed<IpAddr>,
    registration: Quotaed<IpAddr>,
}

impl RateLimits {
    pub fn from_config(config: &ServeConfig) -> RateLimits {
        RateLimits {
            per_key: Quotaed::new(config.rate_limit_per_minute),
            per_key_status: Quotaed::new(config.status_rate_limit_per_minute),
            per_key_webhook_reads: Quotaed::new(webhook_reads_per_minute(
                config.rate_limit_per_minute,
            )),
            per_ip: Quotaed::new(config.ip_rate_limit_per_minute),
            registration: Quotaed::new(config.registration_rate_limit_per_minute),
        }
    }

    /// Counts a request by the login key with this SHA-256 on `route`. Keys
    /// are counted before they are checked (so the check can share the
    /// request's database call); a made-up key only ever gets a fresh
    /// quota, and is then refused and counted against its client IP.
    pub fn check_key(&self, key_hash: &[u8; 32], route: Route) -> Result<Option<RateInfo>, Denied> {
        self.per_key_quota(route).check(&(key_id(key_hash), route))
    }

    /// Drops the per-key state [`RateLimits::check_key`] made for a key the
    /// store then did not know: made-up keys would otherwise each hold an
    /// entry until the next shrink (tens of megabytes a minute at speed).
    /// Such a key is counted against its client IP instead.
    pub fn forget_key(&self, key_hash: &[u8; 32], route: Route) {
        self.per_key_quota(route).forget(&(key_id(key_hash), route));
    }

    fn per_key_quota(&self, route: Route) -> &Quotaed<(u128, Route)> {
        match route {
            Route::ThreadStatus => &self.per_key_status,
            Route::WebhookRead => &self.per_key_webhook_reads,
            _ => &self.per_key,
        }
    }

    /// Counts a request that had no valid key, by client IP (see [`ip_key`]).
    pub fn check_unauthenticated(&self, ip: IpAddr) -> Result<Option<RateInfo>, Denied> {
        self.per_ip.check(&ip_key(ip))
    }

    /// Counts an agent-init request by client IP (see [`ip_key`]).
    pub fn check_registration(&self, ip: IpAddr) -> Result<Option<RateInfo>, Denied> {
        self.registration.check(&ip_key(ip))
    }

    /// How many (login key, route) pairs have per-key state now.
    pub fn key_entries(&self) -> usize {
        self.per_key.len() + self.per_key_status.len() + self.per_key_webhook_reads.len()
    }

    /// Forgets idle keys (called periodically so memory stays bounded).
    pub fn shrink(&self) {
        self.per_key.shrink();
        self.per_key_status.shrink();
        self.per_key_webhook_reads.shrink();
        self.per_ip.shrink();
        self.registration.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_key_bursts_its_whole_minute_then_is_limited() {
        let q: Quotaed<u8> = Quotaed::new(30);
        for i in 0..30 {
            let info = q.check(&1).unwrap().unwrap();
            assert_eq!(info.remaining, 29 - i);
        }
        let (err, info) = q.check(&1).unwrap_err();
        assert_eq!(info.remaining, 0);
        assert!(
            matches!(err, ApiError::RateLimited { retry_after } if (1..=2).contains(&retry_after))
        );
        // Another key is unaffected.
        assert!(q.check(&2).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_slash_64_and_an_ipv4_one_by_itself() {
        let key = |s: &str| ip_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn a_block_is_an_ipv4_slash_24_or_an_ipv6_slash_48() {
        let block = |s: &str| block_key(s.parse().unwrap()).to_string();
        assert_eq!(block("203.0.113.7"), "203.0.113.0");
        assert_eq!(block("203.0.113.255"), block("203.0.113.0"));
        assert_ne!(block("203.0.113.7"), block("203.0.114.7"));
        assert_eq!(block("::ffff:203.0.113.7"), "203.0.113.0");
        assert_eq!(block("2001:db8:1:2:aaaa::1"), "2001:db8:1::");
        // Every /64 of a /56, and every /56 of a /48, is one block ...
        assert_eq!(block("2001:db8:1:ff::1"), block("2001:db8:1:2::1"));
        assert_eq!(block("2001:db8:1:ffff:1::"), block("2001:db8:1::"));
        // ... and the next /48 is another.
        assert_ne!(block("2001:db8:2::1"), block("2001:db8:1::1"));
        // An address's block holds its per-address key.
        for ip in ["198.51.100.9", "2001:db8:5:6:7::8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(block_key(ip_key(ip)), block_key(ip));
        }
    }

    #[test]
    fn a_forgotten_key_has_no_state_and_a_fresh_quota() {
        let q: Quotaed<u8> = Quotaed::new(2);
        q.check(&1).unwrap();
        q.check(&1).unwrap();
        q.check(&2).unwrap();
        assert!(q.check(&1).is_err());
        assert_eq!(q.len(), 2);
        q.forget(&1);
        assert_eq!(q.len(), 1);
        assert!(q.check(&1).is_ok());
        // Forgetting a key without state, or with limits off, is harmless.
        q.forget(&9);
        Quotaed::<u8>::new(0).forget(&1);
    }

    #[test]
    fn webhook_reads_have_room_for_the_inspector_and_count_apart_from_changes() {
        assert_eq!(webhook_reads_per_minute(0), 0);
        assert_eq!(webhook_reads_per_minute(3), 600);
        assert_eq!(webhook_reads_per_minute(30), 600);
        assert_eq!(webhook_reads_per_minute(100), 2000);
        let change = Route::WebhookChange;
        assert_eq!(change.counted_as(&Method::GET), Route::WebhookRead);
        assert_eq!(change.counted_as(&Method::HEAD), Route::WebhookRead);
        assert_eq!(change.counted_as(&Method::POST), change);
        assert_eq!(change.counted_as(&Method::DELETE), change);
        assert_eq!(Route::ThreadGet.counted_as(&Method::GET), Route::ThreadGet);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let q: Quotaed<u8> = Quotaed::new(0);
        for _ in 0..1000 {
            assert!(q.check(&1).unwrap().is_none());
        }
    }
}
