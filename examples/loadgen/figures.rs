//! Figures: latency percentiles from the full sample, CPU use over a span,
//! and the output (a table per scenario and one JSON line).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{Args, SERVER_FLAGS};
use crate::system::{cpu_secs, machine_busy_secs};

/// Percentiles of a full sample (nearest rank), in µs.
pub struct Latency {
    n: usize,
    p50: u32,
    p90: u32,
    p99: u32,
    p999: u32,
    max: u32,
    mean: f64,
}

impl Latency {
    pub fn of(mut v: Vec<u32>) -> Latency {
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| -> u32 {
            if n == 0 {
                return 0;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            v[rank - 1]
        };
        let mean = if n == 0 {
            0.0
        } else {
            v.iter().map(|&x| x as f64).sum::<f64>() / n as f64
        };
        Latency {
            n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: v.last().copied().unwrap_or(0),
            mean,
        }
    }

    pub fn p99(&self) -> u32 {
        self.p99
    }

    /// The size of the sample.
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99,
               "p999": self.p999, "max": self.max, "mean": (self.mean * 10.0).round() / 10.0})
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.n
        )
    }
}

/// µs shown as milliseconds with µs resolution.
fn ms(us: u32) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

pub fn row(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<26} {value}");
}

/// The slowest and fastest second, and the series.
pub fn per_second_line(series: &[u64]) -> String {
    let (min, max) = (series.iter().min(), series.iter().max());
    let all: Vec<String> = series.iter().map(u64::to_string).collect();
    format!(
        "min {} max {}  [{}]",
        min.unwrap_or(&0),
        max.unwrap_or(&0),
        all.join(" ")
    )
}

pub fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU use over a span, in % of one core.
#[derive(Clone, Copy)]
pub struct CpuUse {
    pub server: Option<f64>,
    pub loadgen: f64,
    /// The rest of the machine (other processes): a busy neighbour skews
    /// the figures. Known only with --server-pid.
    pub others: Option<f64>,
    /// The span measured.
    pub wall: Duration,
}

impl CpuUse {
    pub fn line(&self) -> String {
        match (self.server, self.others) {
            (Some(s), Some(o)) => format!(
                "server {s}%  loadgen {}%  rest of machine {o}%  (100% = one core)",
                self.loadgen
            ),
            _ => format!(
                "loadgen {}%  (pass --server-pid for the server's)",
                self.loadgen
            ),
        }
    }
}

/// Measures how busy the server, the generator and the machine were over a span.
pub struct CpuMeter {
    server: Option<String>,
    server_at: Option<f64>,
    me_at: f64,
    machine_at: Option<f64>,
    wall: Instant,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        let server = server_pid.map(|p| p.to_string());
        CpuMeter {
            server_at: server.as_deref().and_then(cpu_secs),
            server,
            me_at: cpu_secs("self").unwrap_or(0.0),
            machine_at: machine_busy_secs(),
            wall: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let pct = |now: f64, then: f64| ((now - then) / wall * 1000.0).round() / 10.0;
        let server = match (&self.server, self.server_at) {
            (Some(pid), Some(then)) => cpu_secs(pid).map(|now| pct(now, then)),
            _ => None,
        };
        let loadgen = pct(cpu_secs("self").unwrap_or(0.0), self.me_at);
        let machine = match (self.machine_at, machine_busy_secs()) {
            (Some(then), Some(now)) => Some(pct(now, then)),
            _ => None,
        };
        let others = match (machine, server) {
            (Some(m), Some(s)) => Some(((m - s - loadgen).max(0.0) * 10.0).round() / 10.0),
            _ => None,
        };
        CpuUse {
            server,
            loadgen,
            others,
            wall: self.wall.elapsed(),
        }
    }
}

fn client_json(args: &Args) -> Value {
    json!({
        "client": format!("{:?}", args.client).to_lowercase(),
        "runtime": format!("{:?}", args.runtime).to_lowercase(),
        "runtime_threads": args.runtime_threads,
        "receivers": args.receivers,
        "receiver_nice": args.receiver_nice,
        "receiver_batch": args.receiver_batch,
        "ws_client": format!("{:?}", args.ws_client).to_lowercase(),
    })
}

/// Prints the JSON line of a scenario, with the generator's settings and
/// the server flags assumed.
pub fn emit(mut v: Value, args: &Args) {
    v["loadgen"] = client_json(args);
    v["server_flags_assumed"] = SERVER_FLAGS.into();
    println!("{v}");
}

/// A duration in whole µs, saturated at `u32::MAX` (71 minutes).
pub fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// KiB shown in MiB and in MB (10^6 bytes), as targets use either.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| {
        format!(
            "{:.1} MiB ({:.1} MB)",
            k as f64 / 1024.0,
            k as f64 * 1.024 / 1000.0
        )
    })
}
