//! What the generator reads from /proc (CPU time, resident memory, the
//! open-file limit) and the one limit it raises.

/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SEC)
}

/// Busy CPU time of the whole machine so far, in seconds (from /proc/stat).
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4).unwrap_or(&0);
    Some(busy as f64 / TICKS_PER_SEC)
}

/// The soft limit on open files of a process, from /proc.
pub fn open_files_limit(pid: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Makes sure this process may hold `need` descriptors, raising its soft
/// limit to the hard one with `prlimit` (util-linux) when that is enough.
pub fn ensure_fds(need: u64) -> Result<(), String> {
    let have = open_files_limit("self").unwrap_or(0);
    if have >= need {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={need}:")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let now = open_files_limit("self").unwrap_or(0);
    if raised && now >= need {
        println!("  raised this process's open-file limit from {have} to {now}");
        return Ok(());
    }
    Err(format!(
        "this process may open {now} files but needs about {need}: run `ulimit -n {need}` \
         in the shell first (above the hard limit needs root), or use a smaller --sockets"
    ))
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
