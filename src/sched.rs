//! Shorter scheduler slices for the threads a write hands off between.
//!
//! A post crosses threads twice: an HTTP worker queues the job, the writer
//! commits the batch, the worker answers. On a busy machine each of those
//! wake-ups used to wait ~75-110 µs for a core, because the thread that held
//! it ran on to the end of its slice (~1.4 ms by default here). Since Linux
//! 6.12 (EEVDF) a SCHED_OTHER thread may ask for a shorter slice with
//! `sched_setattr(2)` (`sched_runtime`, clamped by the kernel to 0.1-100 ms,
//! no privilege needed): it then gets an earlier virtual deadline and, when
//! it wakes, preempts a longer-slice thread instead of waiting for it. Its
//! share of the CPU does not change (that is what nice is for).
//!
//! Off by default (`--thread-slice-us 0`): on the idle two-core machine of
//! docs/performance.md a slice did not raise `post` and made the fan-out's
//! p99 ~6% worse; it helped `post` (~+8%) only while other processes kept
//! the cores busy.
//!
//! Only the calling thread is changed (threads it creates later inherit the
//! slice, as they inherit its nice value), and only its slice: its policy and
//! nice value stay as they were. A thread under a real-time or idle policy
//! (`chrt`, systemd's `CPUSchedulingPolicy=`) is left alone. Off Linux this
//! is a no-op; on a kernel before 6.12 the call succeeds but the runtime is
//! ignored, which [`request_for_this_thread`] reports.

use std::fmt;

/// The slice the server's hand-off threads ask for: none (the kernel's
/// default) or 100 µs to 100 ms, the range the kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSlice {
    /// 0 = leave the kernel's default.
    micros: u32,
}

impl ThreadSlice {
    /// The shortest slice the kernel grants.
    pub const MIN_MICROS: u32 = 100;
    /// The longest slice the kernel grants.
    pub const MAX_MICROS: u32 = 100_000;

    /// Leave every thread at the kernel's default slice.
    pub const KERNEL_DEFAULT: ThreadSlice = ThreadSlice { micros: 0 };

    /// `0`, or microseconds between [`Self::MIN_MICROS`] and [`Self::MAX_MICROS`].
    pub fn parse(s: &str) -> Result<ThreadSlice, String> {
        let micros: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a whole number of microseconds"))?;
        if micros != 0 && !(Self::MIN_MICROS..=Self::MAX_MICROS).contains(&micros) {
            return Err(format!(
                "{micros} is outside what the kernel grants: give 0 (the kernel's default) \
                 or {} to {} microseconds",
                Self::MIN_MICROS,
                Self::MAX_MICROS
            ));
        }
        Ok(ThreadSlice { micros })
    }

    /// The slice in microseconds; 0 = the kernel's default.
    pub fn micros(self) -> u32 {
        self.micros
    }
}

/// What the kernel made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was asked ([`ThreadSlice::KERNEL_DEFAULT`]).
    NotAsked,
    /// The thread now runs with this slice, in nanoseconds (as read back).
    Applied(u64),
    /// The call succeeded but the slice is not in force: a kernel before
    /// 6.12, which has no per-thread slice for SCHED_OTHER.
    Ignored,
    /// The thread runs under another policy (real-time, deadline, idle),
    /// whose scheduling is left as it was; the value is the policy number.
    OtherPolicy(u32),
    /// Not Linux: there is nothing to ask.
    Unsupported,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::NotAsked => write!(f, "the kernel's default slice (none asked)"),
            Outcome::Applied(ns) => write!(f, "a {} µs scheduler slice", ns / 1000),
            Outcome::Ignored => write!(
                f,
                "the kernel's default slice (this kernel ignores a per-thread slice; Linux 6.12 or later has it)"
            ),
            Outcome::OtherPolicy(p) => write!(
                f,
                "its own scheduling policy ({p}), left as it was; no slice asked"
            ),
            Outcome::Unsupported => write!(f, "the system's scheduling (slices are Linux only)"),
        }
    }
}

/// Asks the kernel for `slice` on the calling thread, keeping its policy
/// and nice value. Errors are the system call's; the thread runs on either
/// way, with whatever it had.
pub fn request_for_this_thread(slice: ThreadSlice) -> std::io::Result<Outcome> {
    if slice.micros == 0 {
        return Ok(Outcome::NotAsked);
    }
    os::request(u64::from(slice.micros) * 1000)
}

/// [`request_for_this_thread`], its outcome logged at `level`: info for
/// one thread per server (the writer), debug for the many others, which get
/// the same answer from the same kernel.
pub fn request_and_log(slice: ThreadSlice, role: &str, level: log::Level) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or(role);
    match request_for_this_thread(slice) {
        Ok(Outcome::NotAsked) => {}
        Ok(outcome) => log::log!(level, "{role} thread {name} runs with {outcome}"),
        Err(e) => log::log!(
            level,
            "{role} thread {name} keeps the kernel's default slice: sched_setattr refused {} µs: {e}",
            slice.micros
        ),
    }
}

#[cfg(target_os = "linux")]
mod os {
    use super::Outcome;

    /// `struct sched_attr` of sched_setattr(2), its first published size
    /// (SCHED_ATTR_SIZE_VER1, 56 bytes), which every kernel since 3.14 reads.
    #[repr(C)]
    #[derive(Debug, Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    /// The only flag kept from what the thread had: the utilisation-clamp
    /// flags would make the kernel apply `util_min`/`util_max` as read.
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

    /// The calling thread's attributes.
    fn get() -> std::io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
        #[allow(unsafe_code)]
        // SAFETY: the kernel writes at most `size` bytes into `attr`, a
        // live, writable, #[repr(C)] struct of that size; pid 0 is this
        // thread; no pointer is kept past the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0 as libc::pid_t,
                &mut attr as *mut SchedAttr,
                size,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(attr)
    }

    /// Sets the calling thread's attributes.
    fn set(attr: &SchedAttr) -> std::io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: the kernel reads `attr.size` bytes from `attr`, a live
        // #[repr(C)] struct of that size; pid 0 is this thread; no pointer
        // is kept past the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0 as libc::pid_t,
                attr as *const SchedAttr,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn request(runtime_ns: u64) -> std::io::Result<Outcome> {
        let now = get()?;
        if now.policy != SCHED_OTHER && now.policy != SCHED_BATCH {
            return Ok(Outcome::OtherPolicy(now.policy));
        }
        // sched_setattr sets the nice value too: pass the one in force.
        set(&SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: now.policy,
            flags: now.flags & SCHED_FLAG_RESET_ON_FORK,
            nice: now.nice,
            runtime: runtime_ns,
            ..SchedAttr::default()
        })?;
        // Since 6.12 a fair thread's runtime reads back as its slice (after
        // the kernel's clamp); before, as 0.
        match get()?.runtime {
            0 => Ok(Outcome::Ignored),
            ns => Ok(Outcome::Applied(ns)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use super::Outcome;

    pub(super) fn request(_runtime_ns: u64) -> std::io::Result<Outcome> {
        Ok(Outcome::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_zero_or_within_what_the_kernel_grants() {
        for (input, micros) in [("0", 0), ("100", 100), (" 250 ", 250), ("100000", 100_000)] {
            assert_eq!(
                ThreadSlice::parse(input).map(ThreadSlice::micros),
                Ok(micros),
                "{input:?}"
            );
        }
        for input in ["1", "99", "100001", "-5", "1.5", "", "fast"] {
            assert!(ThreadSlice::parse(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn asking_for_the_kernel_default_changes_nothing() {
        assert_eq!(
            request_for_this_thread(ThreadSlice::KERNEL_DEFAULT).ok(),
            Some(Outcome::NotAsked)
        );
    }

    /// On its own thread: the test harness reuses threads, and the slice
    /// would outlive the test on one of them.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_requested_slice_is_applied_or_reported_as_ignored_and_the_nice_value_kept() {
        let outcome = std::thread::spawn(|| {
            let before = linux_nice();
            let outcome = request_for_this_thread(ThreadSlice::parse("200").expect("valid"));
            (before, linux_nice(), outcome.map_err(|e| e.to_string()))
        })
        .join()
        .expect("the thread ran");
        let (before, after, outcome) = outcome;
        assert_eq!(before, after, "the nice value changed");
        match outcome {
            Ok(Outcome::Applied(ns)) => assert_eq!(ns, 200_000),
            Ok(Outcome::Ignored) | Ok(Outcome::OtherPolicy(_)) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// The nice value from /proc (`prio` = 120 + nice), read without libc.
    #[cfg(target_os = "linux")]
    fn linux_nice() -> Option<String> {
        std::fs::read_to_string("/proc/thread-self/sched")
            .ok()?
            .lines()
            .find(|l| l.starts_with("prio "))
            .map(str::to_owned)
    }
}
