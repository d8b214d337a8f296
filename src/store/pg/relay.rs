//! Signals (typing) carried to the other nodes in a NOTIFY payload.
//!
//! The durable log never travels in a NOTIFY: a notification can be lost
//! (a follower reconnecting, a node starting), and a lost message would be
//! a gap, so NOTIFY only wakes and the follower reads the table. Signals
//! are different: they are not stored anywhere, they matter only to whoever
//! listens at that moment, and a lost one is a typing indicator missed —
//! exactly what a subscriber reconnecting on SQLite misses too. So the
//! notification is their carrier: one per signal, on [`CHANNEL`], naming
//! the node that raised it (which publishes its own signals itself, in
//! place) and the log position it follows (the receiving node publishes it
//! once its follower has published that position, never before).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::conn::PgConn;
use crate::error::ApiResult;
use crate::events::{Event, Kind};

/// The channel every node LISTENs on for the other nodes' signals.
pub const CHANNEL: &str = "threadline_signals";

/// PostgreSQL refuses a payload of 8,000 bytes or more; a signal is a few
/// hundred (its data is `{state, turn_epoch}` or `{signal, sender}`), so a
/// larger one is a bug, dropped with a warning rather than failing a write
/// that has committed already.
const MAX_PAYLOAD: usize = 7_999;

/// One signal on the wire.
#[derive(Serialize, Deserialize)]
struct Note<'a> {
    /// The node that raised it.
    origin: &'a str,
    /// The log position it follows (`None`: it follows no logged event).
    after: Option<i64>,
    id: &'a str,
    kind: &'a str,
    thread_id: &'a str,
    seq: i64,
    participants: Vec<&'a str>,
    #[serde(borrow)]
    data: &'a RawValue,
    created_at: &'a str,
}

/// The kinds a note may carry: signals only (logged events are read from
/// the log).
fn signal_kind(name: &str) -> Option<Kind> {
    [Kind::Typing, Kind::Signal]
        .into_iter()
        .find(|k| k.as_str() == name)
}

/// The payload for `event`, raised on node `origin` after `after`.
fn encode(origin: &str, after: Option<i64>, event: &Event) -> Option<String> {
    let note = Note {
        origin,
        after,
        id: &event.id,
        kind: event.kind.as_str(),
        thread_id: &event.thread_id,
        seq: event.seq,
        participants: event.participants.iter().map(String::as_str).collect(),
        data: &event.data,
        created_at: &event.created_at,
    };
    let payload = serde_json::to_string(&note).ok()?;
    if payload.len() > MAX_PAYLOAD || signal_kind(note.kind).is_none() {
        log::warn!(
            "a {} signal of {} bytes is not shared with the other nodes",
            note.kind,
            payload.len()
        );
        return None;
    }
    Some(payload)
}

/// Tells the other nodes of a committed write's signals, each run with the
/// position it follows, in the order raised (one statement; PostgreSQL
/// delivers one session's notifications in the order sent).
pub(super) fn share(
    c: &PgConn,
    origin: &str,
    runs: &[(Option<i64>, Vec<Arc<Event>>)],
) -> ApiResult<()> {
    let payloads: Vec<String> = runs
        .iter()
        .flat_map(|(after, batch)| batch.iter().map(move |e| (*after, e)))
        .filter_map(|(after, event)| encode(origin, after, event))
        .collect();
    if payloads.is_empty() {
        return Ok(());
    }
    c.one(
        "SELECT count(pg_notify('threadline_signals', p)) FROM unnest($1::text[]) AS p",
        &[&payloads],
    )?;
    Ok(())
}

/// The signal in a notification's payload, with the position it follows;
/// `None` for this node's own (published already) and for a payload that
/// is not a signal.
pub(super) fn receive(payload: &str, me: &str) -> Option<(Option<i64>, Event)> {
    let note: Note<'_> = match serde_json::from_str(payload) {
        Ok(note) => note,
        Err(e) => {
            log::warn!("a signal notification that does not parse is ignored: {e}");
            return None;
        }
    };
    if note.origin == me {
        return None;
    }
    let kind = signal_kind(note.kind)?;
    let event = Event {
        position: None,
        id: note.id.to_owned(),
        kind,
        thread_id: note.thread_id.to_owned(),
        seq: note.seq,
        participants: note.participants.iter().map(|&p| p.to_owned()).collect(),
        data: note.data.to_owned(),
        created_at: note.created_at.to_owned(),
    };
    Some((note.after, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing() -> Event {
        Event {
            position: None,
            id: "0190-typing".into(),
            kind: Kind::Typing,
            thread_id: "thr_1".into(),
            seq: 4,
            participants: vec!["agt_a".into(), "agt_b".into()],
            data: crate::events::data(&crate::events::Typing {
                state: "start",
                turn_epoch: 2,
            }),
            created_at: "2026-11-28T12:00:00.000Z".into(),
        }
    }

    #[test]
    fn another_nodes_signal_arrives_whole_with_the_position_it_follows() {
        let payload = encode("node-b", Some(17), &typing()).expect("small enough");
        let (after, got) = receive(&payload, "node-a").expect("a signal from b");
        assert_eq!(after, Some(17));
        let want = typing();
        assert_eq!(
            (got.id, got.kind, got.thread_id, got.seq, got.participants),
            (
                want.id,
                want.kind,
                want.thread_id,
                want.seq,
                want.participants
            )
        );
        assert_eq!(got.data.get(), want.data.get());
        assert_eq!(got.created_at, want.created_at);
        assert_eq!(got.position, None, "still a signal, not a logged event");
    }

    #[test]
    fn a_node_ignores_its_own_signals_and_payloads_that_are_not_signals() {
        let payload = encode("node-a", None, &typing()).expect("small enough");
        assert!(receive(&payload, "node-a").is_none(), "published in place");
        assert!(receive("not json", "node-a").is_none());
        let logged = payload.replace("turn_taking.typing", "thread.message");
        assert!(
            receive(&logged, "node-b").is_none(),
            "the log carries those"
        );
    }

    #[test]
    fn a_signal_too_large_for_a_notification_is_not_shared() {
        let mut big = typing();
        big.data = crate::events::data(&"x".repeat(MAX_PAYLOAD));
        assert!(encode("node-a", None, &big).is_none());
    }
}
