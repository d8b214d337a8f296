//! `--thread-slice-us`: the writer thread and every HTTP worker of a real
//! server (a child process, so that its threads are its own) run with the
//! slice asked for, 0 leaves them at the kernel's default, other threads
//! are never touched, and a server whose threads cannot take a slice (they
//! run under another policy) starts and serves all the same.
//!
//! The kernel shows a thread's slice as `se.slice` (ns) in
//! /proc/PID/task/TID/sched. Where it does not (not Linux, a kernel before
//! EEVDF) or ignores a per-thread slice (before 6.12), the tests say so and
//! check only that the server serves.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::process::{provision, Server, DEADLINE};
use crate::helpers::POLL;

/// One thread of a process: its name (as the kernel shortens it, 15
/// bytes), scheduling policy and slice in ns.
#[derive(Debug)]
struct Task {
    comm: String,
    policy: Option<u32>,
    slice: Option<u64>,
}

/// A `name : value` line of a /proc sched file.
fn field(sched: &str, name: &str) -> Option<u64> {
    sched.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().parse().ok())?
    })
}

/// Every thread of process `pid` (threads that end while being read are skipped).
fn tasks(pid: u32) -> Vec<Task> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's /proc entry");
    dir.filter_map(|entry| {
        let path = entry.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        let sched = std::fs::read_to_string(path.join("sched")).ok()?;
        Some(Task {
            comm: comm.trim().to_owned(),
            policy: field(&sched, "policy").and_then(|p| u32::try_from(p).ok()),
            slice: field(&sched, "se.slice"),
        })
    })
    .collect()
}

/// The writer, the HTTP workers (actix names them `actix-rt|system:0|arbiter:N`)
/// and the main thread, which never asks for a slice.
struct Threads {
    writer: Task,
    workers: Vec<Task>,
    main: Task,
}

fn threads(pid: u32) -> Threads {
    let mut writer = None;
    let mut workers = Vec::new();
    let mut main = None;
    for task in tasks(pid) {
        match task.comm.as_str() {
            "threadline-writ" => writer = Some(task),
            "actix-rt|system" => workers.push(task),
            "threadline" => main = Some(task),
            _ => {}
        }
    }
    Threads {
        writer: writer.expect("a threadline-writer thread"),
        workers,
        main: main.expect("the main thread"),
    }
}

/// How long a server under SCHED_IDLE may take to start and to answer. Such
/// a process runs only on CPU time no other process wants: while the rest
/// of the suite keeps both cores busy it barely runs at all, so this bounds
/// how long the others' bursts last, not how fast this server is.
const IDLE_DEADLINE: Duration = Duration::from_secs(120);

/// Waits (bounded by `limit`) until the server has logged what the writer
/// got, and says whether the kernel applied a slice at all.
async fn writer_outcome(server: &Server, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let stderr = server.stderr();
        if let Some(line) = stderr.lines().find(|l| l.contains("writer thread")) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line about the writer's slice: {stderr}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Starts a server with `args` and two workers; waits for its /healthz.
async fn start(dir: &Path, args: &[&str]) -> Server {
    let db = dir.join("slices.db");
    let args = [&["--workers", "2"], args].concat();
    Server::start(dir, &db, &args, "info,threadline::sched=debug").await
}

/// A post through the server: it stores and answers.
async fn serves(dir: &Path, server: &Server) {
    let account = provision(&dir.join("slices.db"));
    let (thread, body) = server.api.thread_with_a_post(&account).await;
    let message = &body["message"];
    let (stored, _) = server.api.messages(&account, &thread).await;
    assert_eq!(
        stored.get(&message["seq"].as_i64().expect("seq")),
        Some(&message["id"].as_str().expect("id").to_owned()),
        "the post is stored"
    );
}

#[tokio::test]
async fn the_writer_and_every_http_worker_run_with_the_slice_asked_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Not the default (0), so that the flag is what is seen.
    let server = start(dir.path(), &["--thread-slice-us", "300"]).await;
    let line = writer_outcome(&server, DEADLINE).await;
    if !line.contains("300 µs scheduler slice") {
        eprintln!("skipped: this kernel keeps a per-thread slice to itself: {line}");
        return;
    }
    // Each worker asks as it starts, which may follow the first answer.
    let deadline = Instant::now() + DEADLINE;
    let seen = loop {
        let seen = threads(server.child.id());
        if seen.workers.len() == 2 && seen.workers.iter().all(|w| w.slice == Some(300_000)) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the workers never got a 300 µs slice: {:?}",
            seen.workers
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(seen.writer.slice, Some(300_000), "{:?}", seen.writer);
    assert_eq!(seen.writer.policy, Some(0), "the writer's policy changed");
    // A thread that never asked keeps the kernel's default, so 300 µs is not it.
    assert_ne!(
        seen.main.slice,
        Some(300_000),
        "the main thread has the slice too: {:?}",
        seen.main
    );
    serves(dir.path(), &server).await;
}

#[tokio::test]
async fn a_slice_of_zero_leaves_every_thread_at_the_kernel_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path(), &["--thread-slice-us", "0"]).await;
    serves(dir.path(), &server).await;
    let seen = threads(server.child.id());
    if seen.main.slice.is_none() {
        eprintln!("skipped: this kernel does not show se.slice in /proc");
        return;
    }
    assert_eq!(seen.workers.len(), 2, "{:?}", seen.workers);
    for task in seen.workers.iter().chain([&seen.writer]) {
        assert_eq!(task.slice, seen.main.slice, "{task:?} left the default");
    }
    assert!(
        !server.stderr().contains("scheduler slice"),
        "nothing asked, nothing reported: {}",
        server.stderr()
    );
}

/// A server started from a SCHED_IDLE thread inherits that policy: its
/// threads keep it (no slice is asked for, the policy is not switched back
/// to SCHED_OTHER), the writer says why, and the server serves.
#[tokio::test]
async fn a_server_whose_threads_run_under_another_policy_keeps_it_and_serves() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("slices.db");
    let path = dir.path().to_owned();
    // The child inherits the policy of the thread that spawns it; a thread
    // of its own, so that no test thread stays idle.
    let mut server = std::thread::spawn(move || {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
        .expect("any thread may lower itself to SCHED_IDLE");
        Server::spawn(
            &path,
            &db,
            "127.0.0.1:0",
            &["--workers", "2", "--thread-slice-us", "200"],
            "info,threadline::sched=debug",
        )
    })
    .join()
    .expect("the spawning thread ran");
    server.api.client = reqwest::Client::builder()
        .timeout(IDLE_DEADLINE)
        .build()
        .expect("client");
    server.wait_ready_within(IDLE_DEADLINE).await;
    let line = writer_outcome(&server, IDLE_DEADLINE).await;
    assert!(
        line.contains("own scheduling policy (5)"),
        "the writer did not report SCHED_IDLE: {line}"
    );
    let seen = threads(server.child.id());
    assert_eq!(seen.writer.policy, Some(5), "the writer left SCHED_IDLE");
    assert!(
        seen.workers.iter().all(|w| w.policy == Some(5)),
        "a worker left SCHED_IDLE: {:?}",
        seen.workers
    );
    serves(dir.path(), &server).await;
}
