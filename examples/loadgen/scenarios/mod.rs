//! The scenarios, one module each; `post` and `read` share the HTTP
//! measurement below.

pub mod fanout;
pub mod post;
pub mod read;
pub mod sockets;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::cli::Args;
use crate::client::http::{Prepared, Target};
use crate::figures::{emit, errors_line, per_second_line, row, CpuMeter, Latency};
use crate::load::http::run_http_load;

/// What a run measured, for a comparison: its headline figure and p99.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub pass: bool,
    /// post/read: answers a second; fanout: p99 post→receive in µs;
    /// sockets: KiB per socket.
    pub figure: f64,
    pub unit: &'static str,
    /// Whether a larger figure is better.
    pub higher_is_better: bool,
    /// post/read: request p99; fanout: delivery p99 (µs), post to read.
    pub p99_us: Option<u32>,
    /// fanout: delivery p99 (µs), post to the kernel's arrival on the
    /// subscriber's socket.
    pub arrival_p99_us: Option<u32>,
    /// The server's CPU over the run (% of one core), with --server-pid.
    pub server_cpu: Option<f64>,
    /// post/read: the server's CPU time per answer (µs). Steadier than a
    /// rate on a shared machine: it does not count time spent waiting for
    /// a core.
    pub cpu_us_per_op: Option<f64>,
    /// fanout: the generator's CPU time per delivery (µs).
    pub loadgen_cpu_us_per_op: Option<f64>,
}

/// Body of every message the `post` scenario sends (the same bytes each time).
const POST_CONTENT: &str = "loadgen: a message of ordinary length, about as long as a chat line.";

/// Runs an HTTP load (`post` or `read`), prints its table and its JSON line
/// (`fields` plus the figures; the count of answers with `status` goes under
/// `ok_key`). True if nothing failed.
async fn measure_http(
    args: &Args,
    targets: &[Target],
    requests: Vec<Prepared>,
    status: u16,
    ok_key: &str,
    unit_name: &'static str,
    mut fields: Value,
) -> Result<Outcome, String> {
    let cpu = CpuMeter::start(args.server_pid);
    let (out, window) = run_http_load(args, targets, requests, status).await?;
    let cpu = cpu.stop();
    let rate = out.ok as f64 / window.as_secs_f64();
    let errors: u64 = out.errors.values().sum();
    let lat = Latency::of(out.latencies_us);
    row(&format!("{ok_key} ({status})"), out.ok);
    row("throughput", format!("{rate:.0} {unit_name}"));
    row("per second", per_second_line(&out.per_second));
    row("latency", lat.line());
    row("errors", errors_line(&out.errors));
    if let Some(e) = &out.first_error {
        row("first error", e);
    }
    row("cpu", cpu.line());
    // Over the whole span measured (warmup included): CPU time / answers.
    let cpu_us_per_op = cpu.server.filter(|_| out.ok > 0).map(|pct| {
        let answers = out.ok as f64 * cpu.wall.as_secs_f64() / window.as_secs_f64();
        pct / 100.0 * cpu.wall.as_secs_f64() * 1e6 / answers
    });
    if let Some(us) = cpu_us_per_op {
        row("server cpu per answer", format!("{us:.1} µs"));
    }
    hint_on_429(&out.errors);
    let figures = json!({ok_key: out.ok, "throughput_per_s": rate.round(), "latency_us": lat.json(),
                         "per_second": out.per_second,
                         "errors": out.errors, "error_count": errors, "first_error": out.first_error,
                         "server_cpu_pct": cpu.server, "loadgen_cpu_pct": cpu.loadgen,
                         "other_cpu_pct": cpu.others, "server_cpu_us_per_answer": cpu_us_per_op});
    if let (Value::Object(all), Value::Object(more)) = (&mut fields, figures) {
        all.extend(more);
    }
    emit(fields, args);
    Ok(Outcome {
        pass: errors == 0,
        figure: rate,
        unit: unit_name,
        higher_is_better: true,
        p99_us: Some(lat.p99()),
        arrival_p99_us: None,
        server_cpu: cpu.server,
        cpu_us_per_op,
        loadgen_cpu_us_per_op: None,
    })
}

fn hint_on_429(errors: &BTreeMap<String, u64>) {
    if errors.contains_key("429") {
        println!("  hint: the per-key quota was hit; start the server with --rate-limit-per-minute 100000000");
    }
}
