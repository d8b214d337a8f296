//! Turn-taking values shared by the layers: the decision policy a server
//! runs with (a setting) and the batch timing the store gathers for the tag
//! rules (`turn::policy`) to read.

/// How `submit_messages` decides whether the agent should speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TurnPolicy {
    /// Every batch: speak.
    Always,
    /// Stay silent when every message is a bare acknowledgement.
    Heuristic,
}

/// What the tag rules look at, gathered by the store.
#[derive(Debug, Clone)]
pub struct BatchTiming {
    /// Time of the previous batch in this thread (Unix ms), if any.
    pub previous_batch_ms: Option<i64>,
    /// Time of this batch (its latest message).
    pub batch_ms: i64,
    /// Messages in the batch.
    pub size: usize,
    /// For each message: its time, and when its sender last spoke before
    /// this batch (if ever).
    pub senders: Vec<(i64, Option<i64>)>,
}
