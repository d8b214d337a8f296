//! Turn-taking: the local, deterministic stand-in for the hosted service's
//! decisions (`policy`), the splitting and pacing of replies (`split`), and
//! the scheduler that delivers paced replies and social signals (`scheduler`).

pub mod policy;
pub mod scheduler;
pub mod split;

pub use scheduler::Scheduler;
