//! PostgreSQL operations, round 25: a database host that takes connections
//! and never answers (at start, mid-run, for a command), the turn-taking
//! scheduler and the log's pruner after an outage.
//!
//! The silent host is a listener in the test that accepts and stays quiet
//! (what a stuck server, or a proxy whose backend is gone, looks like);
//! mid-run it is a proxy in front of the test cluster that cuts its
//! connections and then goes quiet. The outages of the scheduler and the
//! pruner are a throwaway cluster's restarts (probe24's helpers).

use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::process::{output_within, BIN};

/// A TCP listener that accepts every connection and never says a word
/// (the sockets are held open until it is dropped).
struct Silent {
    port: u16,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::downgrade(&held);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Some(keep) = keep.upgrade() else { return };
                if let Ok(conn) = conn {
                    keep.lock().unwrap().push(conn);
                }
            }
        });
        Silent { port, held }
    }

    /// How many connections it took.
    fn taken(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://tl:s3cret-pw@127.0.0.1:{}/threadline{query}",
            self.port
        )
    }
}

/// Runs `threadline ARGS` (bounded by `output_within`); its exit code,
/// stderr, and how long it ran.
fn run(args: &[&str]) -> (Option<i32>, String, Duration) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    let started = Instant::now();
    let out = output_within(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// A database host that accepts the connection and never answers: `serve`
/// with `--pg-start-wait-secs 0` gives up after the connect timeout (5 s by
/// default) with exit 1 and one clear line, no password; with a wait, it
/// says once that it waits, tries again, and gives up once the wait is
/// over; a command (`agent create`) ends with exit 1 and the same words.
/// Each hung until killed: the driver's `connect_timeout` bounds only the
/// TCP connection, not the server's greeting.
#[test]
fn a_host_that_accepts_and_never_answers_ends_start_and_commands_within_the_timeout() {
    let silent = Silent::start();

    // The default timeout, no wait.
    let url = silent.url("");
    let (code, stderr, took) = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--pg-start-wait-secs",
        "0",
    ]);
    eprintln!("serve, no wait: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(silent.taken() >= 1, "it never connected");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("cannot connect to postgres://…@127.0.0.1:")
            && errors[0].contains("no answer within 5 s"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    assert!(took >= Duration::from_secs(4), "gave up early: {took:?}");

    // The URL's own timeout, and a wait of 3 s: several attempts, one line
    // about waiting, then exit 1.
    let url = silent.url("?connect_timeout=1");
    let before = silent.taken();
    let (code, stderr, took) = run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--pg-start-wait-secs",
        "3",
    ]);
    eprintln!("serve, 3 s wait: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        silent.taken() >= before + 2,
        "one attempt only: {}",
        silent.taken() - before
    );
    assert_eq!(
        stderr.matches("waiting up to 3 s for it").count(),
        1,
        "{stderr}"
    );
    let last = stderr.lines().rfind(|l| l.starts_with("error:"));
    assert!(
        last.is_some_and(|l| l.contains("no answer within 1 s")
            && l.contains("after waiting 3 s for it")),
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(3), "gave up early: {took:?}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    // A command: exit 1, the reason, no hang.
    let (code, stderr, took) = run(&["agent", "create", "--name", "x", "--database-url", &url]);
    eprintln!("agent create: exit {code:?} after {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no answer within 1 s"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}
