//! Comparing servers in one sitting: the scenario runs against each
//! `--server` in turn, round after round (the order reversed every other
//! round, A B B A A B …, so a machine that drifts, busier or quieter,
//! weighs on every server alike), and each server's median is shown as a
//! percentage of the first server's. A server given as a command is started
//! for each run on a free port and a fresh database, its output going to a
//! log file, and stopped after it: no run inherits another's data or warmth.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Args, Scenario};
use crate::scenarios::Outcome;

/// Longest a started server may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One `--server LABEL=…`.
struct Server {
    label: String,
    how: How,
}

enum How {
    Url(String),
    /// The command's words; `{port}` and `{db}` are filled in per run.
    Command(Vec<String>),
}

fn parse(spec: &str) -> Result<Server, String> {
    let (label, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--server {spec}: expected LABEL=URL or LABEL=COMMAND"))?;
    let rest = rest.trim();
    let how = if rest.starts_with("http://") {
        How::Url(rest.to_owned())
    } else {
        let words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err(format!("--server {spec}: empty command"));
        }
        if !words.iter().any(|w| w.contains("{port}")) {
            return Err(format!(
                "--server {spec}: the command must bind to {{port}} (e.g. --bind 127.0.0.1:{{port}})"
            ));
        }
        How::Command(words)
    };
    Ok(Server {
        label: label.trim().to_owned(),
        how,
    })
}

/// Longest a started server may take to stop after SIGTERM before it is
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server started for one run; stopped when dropped.
struct Started {
    child: Child,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Started {
    /// Stops the server as an operator would (SIGTERM: it finishes what is
    /// in flight, checkpoints and flushes its log), so a kept log ends with
    /// the server's own last lines; SIGKILL only if it has not stopped
    /// within [`STOP_TIMEOUT`].
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port nothing listens on right now (the OS's pick).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn start(words: &[String], dir: &Path, keep: bool) -> Result<(Started, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let port = free_port()?.to_string();
    let db = dir.join("threadline.db").display().to_string();
    let words: Vec<String> = words
        .iter()
        .map(|w| w.replace("{port}", &port).replace("{db}", &db))
        .collect();
    let log = std::fs::File::create(dir.join("server.log"))
        .map_err(|e| format!("cannot create the server's log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot share the server's log: {e}"))?;
    let child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", words[0]))?;
    Ok((
        Started {
            child,
            dir: dir.to_owned(),
            keep,
        },
        format!("http://127.0.0.1:{port}"),
    ))
}

async fn wait_healthy(url: &str, started: &mut Started) -> Result<(), String> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = started.child.try_wait() {
            started.keep = true;
            return Err(format!(
                "the server exited ({status}) before answering; its log is in {}",
                started.dir.display()
            ));
        }
        if let Ok(res) = http.get(format!("{url}/healthz")).send().await {
            if res.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            started.keep = true;
            return Err(format!(
                "{url} did not answer /healthz within {START_TIMEOUT:?}; log in {}",
                started.dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the comparison; true if every run passed.
pub async fn run(args: &Args) -> Result<bool, String> {
    let servers: Vec<Server> = args
        .servers
        .iter()
        .map(|s| parse(s))
        .collect::<Result<_, _>>()?;
    if args.scenario == Scenario::Sockets {
        // Started servers inherit this process's limit.
        crate::system::ensure_fds(args.sockets as u64 + 512)?;
    }
    let work = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("loadgen-compare-{}", std::process::id()))
    });
    // outcomes[server][round]
    let mut outcomes: Vec<Vec<Outcome>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &i in &order {
            let server = &servers[i];
            println!(
                "\n#### round {} of {}: {}",
                round + 1,
                args.rounds,
                server.label
            );
            let mut run_args = args.clone();
            run_args.servers.clear();
            let outcome = match &server.how {
                How::Url(url) => crate::run_scenarios(&run_args, std::slice::from_ref(url)).await?,
                How::Command(words) => {
                    let dir = work.join(format!("{}-r{}", server.label, round + 1));
                    let (mut started, url) = start(words, &dir, args.keep)?;
                    wait_healthy(&url, &mut started).await?;
                    run_args.server_pid = Some(started.child.id());
                    let result = crate::run_scenarios(&run_args, &[url]).await;
                    if result.is_err() {
                        started.keep = true;
                    }
                    result?
                }
            };
            let outcome = outcome
                .into_iter()
                .next()
                .ok_or("the scenario measured nothing")?;
            outcomes[i].push(outcome);
        }
    }
    if !args.keep {
        let _ = std::fs::remove_dir(&work);
    }
    Ok(report(args, &servers, &outcomes))
}

/// Prints the comparison table and its JSON line; true if every run passed.
fn report(args: &Args, servers: &[Server], outcomes: &[Vec<Outcome>]) -> bool {
    let unit = outcomes[0][0].unit;
    let reference = median(&outcomes[0].iter().map(|o| o.figure).collect::<Vec<_>>());
    println!(
        "\n== compare: {:?}, {} rounds (order reversed every other round), {unit}",
        args.scenario, args.rounds
    );
    let mut rows = Vec::new();
    for (server, runs) in servers.iter().zip(outcomes) {
        let figures: Vec<f64> = runs.iter().map(|o| o.figure).collect();
        let p99: Vec<f64> = runs
            .iter()
            .filter_map(|o| o.p99_us)
            .map(f64::from)
            .collect();
        let cpu: Vec<f64> = runs.iter().filter_map(|o| o.server_cpu).collect();
        let per_op: Vec<f64> = runs.iter().filter_map(|o| o.cpu_us_per_op).collect();
        let arrival: Vec<f64> = runs
            .iter()
            .filter_map(|o| o.arrival_p99_us)
            .map(f64::from)
            .collect();
        let loadgen_per_op: Vec<f64> = runs
            .iter()
            .filter_map(|o| o.loadgen_cpu_us_per_op)
            .collect();
        let m = median(&figures);
        let pct = m / reference * 100.0;
        // Each round's figure over the reference's in the same round.
        let paired: Vec<f64> = runs
            .iter()
            .zip(&outcomes[0])
            .map(|(o, r)| o.figure / r.figure * 100.0)
            .collect();
        let fmt = |f: f64| {
            if f.abs() < 100.0 {
                format!("{f:.1}")
            } else {
                format!("{f:.0}")
            }
        };
        let shown: Vec<String> = figures.iter().map(|&f| fmt(f)).collect();
        println!(
            "  {:<14} median {:>9}  = {pct:>6.1}% of {}  (rounds: {}; per-round {:.1}–{:.1}%)  \
             p99 median {}  server CPU median {}, {} per answer",
            server.label,
            fmt(m),
            servers[0].label,
            shown.join(" / "),
            paired.iter().copied().fold(f64::INFINITY, f64::min),
            paired.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            if p99.is_empty() {
                "-".into()
            } else {
                format!("{:.2} ms", median(&p99) / 1000.0)
            },
            if cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.0}%", median(&cpu))
            },
            if per_op.is_empty() {
                "-".into()
            } else {
                format!("{:.1} µs", median(&per_op))
            },
        );
        if !arrival.is_empty() || !loadgen_per_op.is_empty() {
            let each = |v: &[f64], f: &dyn Fn(f64) -> String| {
                if v.is_empty() {
                    return "-".to_owned();
                }
                v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(" / ")
            };
            println!(
                "  {:<14} per round: p99 read {} ms; p99 arrival {} ms; server CPU {} µs; \
                 loadgen CPU {} µs per delivery",
                "",
                each(&p99, &|x| format!("{:.2}", x / 1000.0)),
                each(&arrival, &|x| format!("{:.2}", x / 1000.0)),
                each(&per_op, &|x| format!("{x:.2}")),
                each(&loadgen_per_op, &|x| format!("{x:.2}")),
            );
        }
        rows.push(
            json!({"label": server.label, "figures": figures, "median": m,
                         "pct_of_first": (pct * 10.0).round() / 10.0,
                         "paired_pct": paired, "p99_us": p99, "server_cpu_pct": cpu,
                         "server_cpu_us_per_answer": per_op, "arrival_p99_us": arrival,
                         "loadgen_cpu_us_per_answer": loadgen_per_op,
                         "pass": runs.iter().all(|o| o.pass)}),
        );
    }
    let pass = outcomes.iter().flatten().all(|o| o.pass);
    println!(
        "{}",
        json!({"compare": format!("{:?}", args.scenario).to_lowercase(), "unit": unit,
               "higher_is_better": outcomes[0][0].higher_is_better,
               "rounds": args.rounds, "servers": rows, "pass": pass})
    );
    pass
}
