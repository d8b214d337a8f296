//! What the server counts for `/metrics` (Prometheus/OpenMetrics text, through
//! `prometheus-client`: typed families in a registry we own, no global one, so
//! two servers in one test process count apart).
//!
//! The request path pays for two atomic increments and one histogram
//! observation: labels are a route pattern (`&'static str`, fixed at
//! startup, never the raw path) and a status code, so no label set is
//! allocated once a route/status pair has been seen, and each worker thread
//! keeps the handles of the pairs it has seen (no family lookup, with its
//! hashing of the route text and the family's lock shared by all workers).
//! Refusals by rate limit are labelled by route only, a closed set
//! (`http::LIMITED_ROUTES`): each has its series at 0 from the start, as
//! has each route's success (`http::metrics::ANSWERED`). Everything else
//! (sockets, actors, deliveries, the WAL's size, pending replies) is read
//! from its owner when scraped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::events::{CommitListener, Committed};
use crate::realtime::Hub;

/// The `Content-Type` of the scrape answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A route's pattern as registered (`/api/acsp/thread/{thread_id}`), or
/// [`RoutePattern::UNMATCHED`]: a fixed set, so a client cannot grow the
/// label space by inventing paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutePattern(pub &'static str);

impl RoutePattern {
    /// Requests that matched no route (answered 404).
    pub const UNMATCHED: RoutePattern = RoutePattern("unmatched");
}

impl EncodeLabelValue for RoutePattern {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RoutePattern,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: RoutePattern,
}

/// The bearer token `/metrics` asks for (`--metrics-token`). Its `Debug`
/// does not show it, so printing the settings cannot leak it.
#[derive(Clone)]
pub struct MetricsToken(String);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl FromStr for MetricsToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the metrics token must be at least 16 printable characters, no spaces".into(),
            );
        }
        Ok(MetricsToken(s.to_owned()))
    }
}

impl MetricsToken {
    /// Whether an `Authorization` header value carries this token. The
    /// comparison takes the same time wherever the first difference is.
    pub fn admits(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        }) else {
            return false;
        };
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Values read at scrape time from the database (off the async workers).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreGauges {
    /// Bytes in the `-wal` file (0 when it is absent).
    pub wal_bytes: u64,
    /// Scheduled reply parts not yet delivered.
    pub pending_replies: u64,
    /// Reply parts given up after their delivery kept failing.
    pub failed_replies: u64,
}

/// The server's metrics: one per server, in its app state.
pub struct Metrics {
    /// Tells this server's handles from another's in a thread's cache
    /// (tests run several servers in one process).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    rate_limited: Family<RouteLabels, Counter>,
    batch_jobs: Histogram,
    commit_seconds: Histogram,
    wal_bytes: Gauge,
    pending_replies: Gauge,
    failed_replies: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every family, reading realtime counts from `hub`.
    pub fn new(hub: Arc<Hub>) -> Metrics {
        let mut registry = Registry::with_prefix("threadline");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            requests.clone(),
        );
        // 0.5 ms to ~4 s: a cached read is well under a millisecond, a
        // batch commit a few milliseconds, a stalled disk seconds.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by route pattern",
            latency.clone(),
        );
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "rate_limit_refusals",
            "Requests refused with 429 by a rate limit, by route pattern",
            rate_limited.clone(),
        );
        let batch_jobs = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "writer_batch_jobs",
            "Writes committed together in one writer transaction",
            batch_jobs.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        registry.register(
            "writer_commit_seconds",
            "Time the writer spent on one batch, BEGIN to COMMIT",
            commit_seconds.clone(),
        );
        let wal_bytes = Gauge::default();
        registry.register(
            "wal_bytes",
            "Size of the database's write-ahead log file",
            wal_bytes.clone(),
        );
        let pending_replies = Gauge::default();
        registry.register(
            "pending_scheduled_replies",
            "Turn-taking reply parts scheduled and not yet delivered",
            pending_replies.clone(),
        );
        let failed_replies = Gauge::default();
        registry.register(
            "failed_scheduled_replies",
            "Turn-taking reply parts given up after their delivery failed 5 times",
            failed_replies.clone(),
        );
        registry.register_collector(Box::new(RealtimeCollector { hub }));
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            latency,
            rate_limited,
            batch_jobs,
            commit_seconds,
            wal_bytes,
            pending_replies,
            failed_replies,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, route: RoutePattern, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let counted = HANDLES.try_with(|handles| {
            let mut handles = handles.borrow_mut();
            if handles.owner != Some(self.id) {
                handles.owner = Some(self.id);
                handles.by_pair.clear();
            }
            let (count, latency) = handles
                .by_pair
                .entry((route.0.as_ptr() as usize, route.0.len(), status))
                .or_insert_with(|| self.handles(route, status));
            count.inc();
            latency.observe(seconds);
        });
        if counted.is_err() {
            // The thread is being torn down: no cache, the families.
            let (count, latency) = self.handles(route, status);
            count.inc();
            latency.observe(seconds);
        }
    }

    /// The counter and histogram of a route/status pair (shared handles:
    /// counting through them counts in the families).
    fn handles(&self, route: RoutePattern, status: u16) -> (Counter, Histogram) {
        let count = self
            .requests
            .get_or_create(&RequestLabels { route, status })
            .clone();
        let latency = self.latency.get_or_create(&RouteLabels { route }).clone();
        (count, latency)
    }

    /// Shows each of `routes` (the routes a limit can refuse,
    /// `http::LIMITED_ROUTES`) with its refusals at 0 until it has some: a
    /// series appears only once it exists, and an alert on refusals would
    /// see none on a fresh server. (Requests are labelled by status too,
    /// which is open-ended: each route's success is shown from the start,
    /// see [`Metrics::answers_from_zero`], the rest as they are answered.)
    pub fn refusals_from_zero(&self, routes: &[&'static str]) {
        for route in routes {
            drop(self.rate_limited.get_or_create(&RouteLabels {
                route: RoutePattern(route),
            }));
        }
    }

    /// Shows each of `answers` (route pattern and status: each route's
    /// success, `http::metrics::ANSWERED`) with its requests at 0, and its
    /// route's latency histogram empty, until it has some: a dashboard's
    /// `rate()` then has a series to compute on a fresh server. Done once,
    /// at start: the request path finds them as it finds any seen before.
    pub fn answers_from_zero(&self, answers: &[(&'static str, u16)]) {
        for &(route, status) in answers {
            drop(self.handles(RoutePattern(route), status));
        }
    }

    /// Counts a request a rate limit refused.
    pub fn rate_limited(&self, route: RoutePattern) {
        self.rate_limited
            .get_or_create(&RouteLabels { route })
            .inc();
    }

    /// Records one committed writer batch.
    pub fn batch(&self, jobs: usize, took: Duration) {
        self.batch_jobs.observe(jobs as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// The whole exposition, with `store` as just read.
    pub fn render(&self, store: StoreGauges) -> Result<String, std::fmt::Error> {
        self.wal_bytes
            .set(i64::try_from(store.wal_bytes).unwrap_or(i64::MAX));
        self.pending_replies
            .set(i64::try_from(store.pending_replies).unwrap_or(i64::MAX));
        self.failed_replies
            .set(i64::try_from(store.failed_replies).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// One thread's handles by route pattern (its address and length: the
/// patterns are `&'static str`s fixed at startup, and one may start where a
/// longer one does) and status, for the server `owner`.
#[derive(Default)]
struct Handles {
    owner: Option<u64>,
    by_pair: HashMap<(usize, usize, u16), (Counter, Histogram), BuildHasherDefault<PairHasher>>,
}

/// A multiplicative hash for the small integer keys above (SipHash, the
/// default, costs more than the lookup it serves). The keys are addresses
/// and status codes fixed by the server, never chosen by a client.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

/// The store's commit listener when metrics are on: records each batch's
/// size and commit time, then hands the batch on (to the realtime hub).
pub struct Metered {
    metrics: Arc<Metrics>,
    next: Arc<dyn CommitListener>,
}

impl Metered {
    pub fn new(metrics: Arc<Metrics>, next: Arc<dyn CommitListener>) -> Metered {
        Metered { metrics, next }
    }
}

impl CommitListener for Metered {
    fn committed(&self, batch: Committed<'_>) {
        self.metrics.batch(batch.jobs, batch.took);
        self.next.committed(batch);
    }
}

/// Reads the hub's counts at each scrape.
struct RealtimeCollector {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for RealtimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealtimeCollector")
    }
}

impl Collector for RealtimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.hub.snapshot();
        let gauges = [
            (
                "websockets_open",
                "WebSockets subscribed to a thread or inbox",
                now.open_sockets,
            ),
            (
                "channel_actors",
                "Channels with subscribers, each served by an actor on every worker with one",
                now.live_actors,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let counters = [
            (
                "ws_deliveries",
                "Event frames queued to sockets",
                now.deliveries,
            ),
            (
                "ws_slow_consumer_closes",
                "Sockets closed with 4008 for a full queue or a replay not taken",
                now.slow_closes,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_admitted_only_exactly() {
        let token: MetricsToken = "s3cret-s3cret-s3cret".parse().unwrap();
        assert!(token.admits(Some("Bearer s3cret-s3cret-s3cret")));
        assert!(token.admits(Some("bearer s3cret-s3cret-s3cret")));
        assert!(!token.admits(Some("Bearer s3cret-s3cret-s3creT")));
        assert!(!token.admits(Some("Bearer s3cret-s3cret-s3cret-")));
        assert!(!token.admits(Some("Basic s3cret-s3cret-s3cret")));
        assert!(!token.admits(None));
    }

    #[test]
    fn a_short_or_spaced_token_is_refused() {
        assert!("short".parse::<MetricsToken>().is_err());
        assert!("has a space in it, long".parse::<MetricsToken>().is_err());
        assert!(
            !format!("{:?}", "0123456789abcdef".parse::<MetricsToken>().unwrap()).contains("0123")
        );
    }

    #[test]
    fn requests_are_counted_by_pattern_and_status() {
        let metrics = Metrics::new(Arc::new(Hub::new(8)));
        let route = RoutePattern("/api/acsp/thread/{thread_id}");
        metrics.request(route, 200, Duration::from_millis(2));
        metrics.request(route, 200, Duration::from_millis(3));
        let text = metrics.render(StoreGauges::default()).unwrap();
        assert!(
            text.contains(
                "threadline_http_requests_total{route=\"/api/acsp/thread/{thread_id}\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("threadline_websockets_open 0"), "{text}");
    }

    #[test]
    fn routes_shown_from_zero_have_their_refusals_at_0_before_any_request() {
        let metrics = Metrics::new(Arc::new(Hub::new(8)));
        let routes = ["/api/acsp/thread/message", "/v1/ws"];
        metrics.refusals_from_zero(&routes);
        let text = metrics.render(StoreGauges::default()).unwrap();
        for route in routes {
            let line = format!("threadline_rate_limit_refusals_total{{route=\"{route}\"}} 0\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        metrics.rate_limited(RoutePattern("/api/acsp/thread/message"));
        let text = metrics.render(StoreGauges::default()).unwrap();
        assert!(
            text.contains(
                "threadline_rate_limit_refusals_total{route=\"/api/acsp/thread/message\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_route_s_success_reads_0_before_any_request_and_counts_on() {
        let metrics = Metrics::new(Arc::new(Hub::new(8)));
        metrics.answers_from_zero(&[("/api/acsp/thread/message", 201), ("/v1/ws", 101)]);
        let text = metrics.render(StoreGauges::default()).unwrap();
        for line in [
            "threadline_http_requests_total{route=\"/api/acsp/thread/message\",status=\"201\"} 0\n",
            "threadline_http_requests_total{route=\"/v1/ws\",status=\"101\"} 0\n",
            "threadline_http_request_duration_seconds_count{route=\"/v1/ws\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        metrics.request(
            RoutePattern("/api/acsp/thread/message"),
            201,
            Duration::from_millis(1),
        );
        let text = metrics.render(StoreGauges::default()).unwrap();
        let line =
            "threadline_http_requests_total{route=\"/api/acsp/thread/message\",status=\"201\"} 1\n";
        assert!(text.contains(line), "{line} in {text}");
    }

    #[test]
    fn servers_sharing_a_thread_count_apart_and_patterns_sharing_a_start_too() {
        // One literal, so the shorter pattern starts where the longer one does.
        const LONG: &str = "/api/acsp/thread/{thread_id}";
        let (short, long) = (RoutePattern(&LONG[..16]), RoutePattern(LONG));
        let first = Metrics::new(Arc::new(Hub::new(8)));
        let second = Metrics::new(Arc::new(Hub::new(8)));
        first.request(long, 200, Duration::from_millis(1));
        second.request(long, 200, Duration::from_millis(1));
        first.request(short, 200, Duration::from_millis(1));
        first.request(long, 404, Duration::from_millis(1));
        first.request(long, 200, Duration::from_millis(1));
        let text = first.render(StoreGauges::default()).unwrap();
        for line in [
            "threadline_http_requests_total{route=\"/api/acsp/thread/{thread_id}\",status=\"200\"} 2",
            "threadline_http_requests_total{route=\"/api/acsp/thread\",status=\"200\"} 1",
            "threadline_http_requests_total{route=\"/api/acsp/thread/{thread_id}\",status=\"404\"} 1",
            "threadline_http_request_duration_seconds_count{route=\"/api/acsp/thread/{thread_id}\"} 3",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let text = second.render(StoreGauges::default()).unwrap();
        assert!(
            text.contains(
                "threadline_http_requests_total{route=\"/api/acsp/thread/{thread_id}\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("status=\"404\""), "{text}");
    }
}
