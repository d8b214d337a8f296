//! What happened, in the one shape every consumer reads: the realtime hub
//! today, webhooks and other nodes later. The store builds these as it
//! commits a change and reports each committed batch through
//! [`CommitListener`]; [`crate::store::events::events_after`] reads the same
//! events back from the durable log. Nothing here knows about sockets,
//! frames or SQL: this module imports nothing from the crate.
//!
//! Two sorts of event share the shape:
//! - logged ones (`position` is `Some`): a committed change with a place in
//!   the one total order of the `events` table;
//! - signals (`position` is `None`): typing indicators, which matter only to
//!   whoever is listening at that moment. They are never stored, but a
//!   batch's report carries them in order among its logged events.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// The kinds of event. `as_str` is the name frames and the log use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A thread was created (either kind). Data: the thread object.
    ThreadCreated,
    /// A message was stored. Data: the message object.
    ThreadMessage,
    /// A thread's status changed. Data: `{thread_id, status, updated_at}`.
    ThreadStatus,
    /// A part of a turn-taking reply was scheduled (log only, no frame).
    /// Data: the part (`{id, index, count, content, turn_epoch, deliver_at}`).
    ReplyScheduled,
    /// A scheduled part was delivered and stored as a message. Data: the
    /// part with the stored message's `seq`.
    ReplyDelivered,
    /// A pending part was cancelled by a newer turn (log only, no frame).
    ReplyCancelled,
    /// A pending part was given up after its delivery failed
    /// `store::turn::MAX_ATTEMPTS` times: logged, and sent on the thread's
    /// channel. Data: [`PartFailed`] (no content).
    ReplyFailed,
    /// A thread was deleted (`threadline thread delete`, or `prune
    /// --threads-older-than-days`), by the deleting transaction: the one
    /// event of the thread that outlives it. Data: [`ThreadGone`].
    ThreadDeleted,
    /// Signal: the agent starts or stops "typing" (not logged).
    Typing,
    /// Signal: `typing_without_sending` (not logged).
    Signal,
}

impl Kind {
    /// Every logged kind, as the schema's CHECK lists them.
    pub const LOGGED: [Kind; 8] = [
        Kind::ThreadCreated,
        Kind::ThreadMessage,
        Kind::ThreadStatus,
        Kind::ReplyScheduled,
        Kind::ReplyDelivered,
        Kind::ReplyCancelled,
        Kind::ReplyFailed,
        Kind::ThreadDeleted,
    ];

    /// The event's type name, on the wire and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ThreadCreated => "thread.created",
            Kind::ThreadMessage => "thread.message",
            Kind::ThreadStatus => "thread.status",
            Kind::ReplyScheduled => "turn_taking.reply_scheduled",
            Kind::ReplyDelivered => "turn_taking.message",
            Kind::ReplyCancelled => "turn_taking.reply_cancelled",
            Kind::ReplyFailed => "turn_taking.reply_failed",
            Kind::ThreadDeleted => "thread.deleted",
            Kind::Typing => "turn_taking.typing",
            Kind::Signal => "turn_taking.signal",
        }
    }

    /// The kind of a logged event's stored name; `None` for anything else
    /// (the schema's CHECK admits only logged kinds).
    pub fn logged(name: &str) -> Option<Kind> {
        Kind::LOGGED.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the log row keeps the event's payload (`events.data`): no
    /// other row holds it. A status change has no row of its own; a part
    /// given up may be one whose stored row no longer reads back, and its
    /// event must read back all the same; a deleted thread has no row left.
    pub fn keeps_data(self) -> bool {
        matches!(
            self,
            Kind::ThreadStatus | Kind::ReplyFailed | Kind::ThreadDeleted
        )
    }

    /// Whether `seq` is the seq of a message this event stored (a resume
    /// replays those as `thread.message`, so live copies are de-duplicated).
    pub fn carries_message(self) -> bool {
        matches!(self, Kind::ThreadMessage | Kind::ReplyDelivered)
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the log; `None` for a signal, which is not logged.
    pub position: Option<i64>,
    /// Unique per event and stable: a message's event reuses the message id,
    /// any other logged event has its id stored with it.
    pub id: String,
    pub kind: Kind,
    /// The thread's public id.
    pub thread_id: String,
    /// The thread's seq this event belongs to (the message's own for
    /// messages; the thread's last seq at the time for the others).
    pub seq: i64,
    /// The AIDs of the thread's two agents (empty for turn-taking threads).
    pub participants: Vec<String>,
    /// The payload, serialized once when the change was made.
    pub data: Box<RawValue>,
    /// When it happened (RFC 3339, as the API writes times).
    pub created_at: String,
}

/// A batch the writer has committed: the log now holds every position up
/// to `upto`, and `events` are the batch's events (logged and signals) in
/// commit order (none, for a batch of writes that raise no event).
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    pub upto: i64,
    pub events: &'a [Arc<Event>],
    /// Jobs (writes) the batch committed together.
    pub jobs: usize,
    /// Time from the batch's `BEGIN` to its `COMMIT` returning.
    pub took: std::time::Duration,
}

/// Whoever must hear of each commit (the realtime hub, the metrics; wired
/// in `startup`). Called on the writer thread right after each commit,
/// before the writers' callers get their answers: it must hand the events
/// on quickly, never wait on a client.
pub trait CommitListener: Send + Sync {
    fn committed(&self, batch: Committed<'_>);
}

/// Several listeners, told in turn (the realtime hub, then webhooks).
pub struct Fanout(pub Vec<Arc<dyn CommitListener>>);

impl CommitListener for Fanout {
    fn committed(&self, batch: Committed<'_>) {
        for listener in &self.0 {
            listener.committed(batch);
        }
    }
}

/// A fresh event id (time-ordered UUID).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// The JSON of one part of a turn-taking reply, as `respond` lists it and
/// `turn_taking.message` carries it (with the stored message's `seq` once
/// delivered). One function, so the live event and the one read back from
/// the log are the same bytes.
pub fn reply_part_json(part: &ReplyPart<'_>, seq: Option<i64>) -> Box<RawValue> {
    let mut value = serde_json::json!({
        "id": part.id, "index": part.index, "count": part.count, "content": part.content,
        "turn_epoch": part.turn_epoch, "deliver_at": part.deliver_at,
    });
    if let Some(seq) = seq {
        value["seq"] = seq.into();
    }
    serde_json::value::to_raw_value(&value).expect("expect: a JSON value serializes")
}

/// `thread.status`'s data.
#[derive(Debug, Serialize)]
pub struct StatusChanged<'a> {
    pub thread_id: &'a str,
    pub status: &'a str,
    pub updated_at: &'a str,
}

/// `thread.deleted`'s data: which thread is gone, whose it was, when and
/// why. Enough for a receiver to drop its copy; nothing of its content.
#[derive(Debug, Serialize)]
pub struct ThreadGone<'a> {
    pub thread_id: &'a str,
    /// The two agents of an ACSP thread (`null` for a turn-taking one).
    pub creator_aid: Option<&'a str>,
    pub target_aid: Option<&'a str>,
    pub deleted_at: &'a str,
    /// `deleted` (`threadline thread delete`) or `pruned` (`threadline
    /// prune --threads-older-than-days`).
    pub reason: &'a str,
}

/// `turn_taking.reply_failed`'s data: which part was given up, and after
/// how many failed attempts. Not its content: the client that sent the
/// reply has it, and it may be what the database refused.
#[derive(Debug, Serialize)]
pub struct PartFailed<'a> {
    pub id: &'a str,
    pub index: i64,
    pub count: i64,
    pub turn_epoch: i64,
    pub failures: i64,
}

/// `turn_taking.typing`'s data: `state` is `start` or `stop`.
#[derive(Debug, Serialize)]
pub struct Typing<'a> {
    pub state: &'a str,
    pub turn_epoch: i64,
}

/// `turn_taking.signal`'s data.
#[derive(Debug, Serialize)]
pub struct Signal<'a> {
    pub signal: &'a str,
    pub sender: &'a str,
}

/// An event's data, serialized once, from one of the types above (or the
/// thread and message objects of `store::model`).
pub fn data<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value)
        .expect("expect: strings, numbers and the model's objects serialize")
}

/// A part of a turn-taking reply, borrowed from wherever it is held.
#[derive(Debug, Clone, Copy)]
pub struct ReplyPart<'a> {
    pub id: &'a str,
    pub index: i64,
    pub count: i64,
    pub content: &'a str,
    pub turn_epoch: i64,
    pub deliver_at: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_kinds_round_trip_through_their_names_and_signals_do_not() {
        for kind in Kind::LOGGED {
            assert_eq!(Kind::logged(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::logged(Kind::Typing.as_str()), None);
        assert_eq!(Kind::logged(Kind::Signal.as_str()), None);
        assert_eq!(Kind::logged("connection.ready"), None);
    }

    #[test]
    fn a_delivered_part_carries_its_seq_last() {
        let part = ReplyPart {
            id: "p",
            index: 0,
            count: 1,
            content: "hi",
            turn_epoch: 2,
            deliver_at: "t",
        };
        assert_eq!(
            reply_part_json(&part, Some(7)).get(),
            r#"{"id":"p","index":0,"count":1,"content":"hi","turn_epoch":2,"deliver_at":"t","seq":7}"#
        );
        assert!(!reply_part_json(&part, None).get().contains("seq"));
    }
}
