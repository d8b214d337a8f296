//! The speak / stay_silent decision and the social-signal tags.
//!
//! Decision (`--turn-policy`):
//! - `always`: every batch → `speak`;
//! - `heuristic` (default): `stay_silent` when every message of the batch is a
//!   bare acknowledgement (see [`is_acknowledgement`]), `speak` otherwise.
//!
//! Tags (only when the thread's `integrations.social_signals` is set):
//! - `fast`: the batch came less than 3 s from the previous batch, either
//!   side (stamps out of order by a second are still close together; one
//!   stamped an hour before is not fast);
//! - `burst`: the batch has 3 or more messages;
//! - `comeback`: a sender of the batch had last spoken in this thread 10
//!   minutes or more before.
//!
//! "When" a message came is its `client_ts` if given, else the server's
//! clock on receipt; a stamp later than the receipt counts as the receipt
//! ([`message_time`]), so a clock ahead (or `9999-12-31`) cannot hold off
//! a sender's `comeback` for good. A batch's time is its latest message's.

use unicode_properties::UnicodeEmoji;

pub use crate::domain::{BatchTiming, TurnPolicy};
use crate::store::model::ThreadRecord;

/// The fixed list of bare acknowledgements (compared after normalizing).
pub const ACKNOWLEDGEMENTS: &[&str] = &[
    "ok",
    "okay",
    "k",
    "kk",
    "okie",
    "thanks",
    "thank you",
    "thx",
    "ty",
    "lol",
    "lmao",
    "haha",
    "hehe",
    "cool",
    "nice",
    "got it",
    "sure",
    "np",
    "yep",
    "yup",
    "great",
    "awesome",
    "sounds good",
];

/// The `fast` window.
pub const FAST_WINDOW_MS: i64 = 3_000;
/// Messages that make a `burst`.
pub const BURST_SIZE: usize = 3;
/// Silence after which a sender's return is a `comeback`.
pub const COMEBACK_AFTER_MS: i64 = 10 * 60 * 1000;

/// When a message came, for the tag rules (Unix ms): its `client_ts` when
/// given, but never later than the server's receipt of it (`received_ms`).
/// A stamp in the past is taken as given (a client sending what it held
/// while offline).
pub fn message_time(client_ts_ms: Option<i64>, received_ms: i64) -> i64 {
    client_ts_ms.map_or(received_ms, |at| at.min(received_ms))
}

/// Whether one message is a bare acknowledgement: with punctuation, symbols
/// and emoji removed, lowercased and whitespace collapsed, it is one or more
/// of [`ACKNOWLEDGEMENTS`] (so "Thanks! 👍" and "ok, thanks" are), with
/// laughter of any length ("hahaha") as one — or nothing is left and it
/// had at least one emoji ("👍🙂"). An emoji is a character Unicode marks
/// `Emoji=Yes`, outside ASCII (where that covers `#`, `*` and the digits, as
/// keycap bases), or a keycap (`1️⃣`: a digit, `#` or `*` closed by U+20E3);
/// other punctuation ("…", "？", "—") is not one, nor is a digit alone.
pub fn is_acknowledgement(content: &str) -> bool {
    let mut words = String::with_capacity(content.len());
    let mut pictograph = false;
    let mut chars = content.chars().peekable();
    while let Some(c) = chars.next() {
        if is_keycap(c, &chars) {
            // `1️⃣`: its digit is no word. The VS16 and the keycap are
            // neither words nor emoji of their own: the loop skips them.
            pictograph = true;
        } else if c.is_alphanumeric() || c.is_whitespace() {
            words.extend(c.to_lowercase());
        } else if !c.is_ascii() && c.is_emoji_char() {
            pictograph = true;
        }
    }
    let words: Vec<&str> = words.split_whitespace().collect();
    if words.is_empty() {
        return pictograph;
    }
    acknowledgements_only(&words)
}

/// Whether `words` are one or more of [`ACKNOWLEDGEMENTS`] in a row ("ok",
/// "ok thanks", "thank you lol"), laughter of any length counting as one
/// ([`is_laughter`]).
fn acknowledgements_only(words: &[&str]) -> bool {
    // ends[i]: the first i words are acknowledgements.
    let mut ends = vec![false; words.len() + 1];
    ends[0] = true;
    for i in 0..words.len() {
        if !ends[i] {
            continue;
        }
        if is_laughter(words[i]) {
            ends[i + 1] = true;
        }
        for phrase in ACKNOWLEDGEMENTS {
            let n = phrase.split(' ').count();
            if words
                .get(i..i + n)
                .is_some_and(|w| w.iter().copied().eq(phrase.split(' ')))
            {
                ends[i + n] = true;
            }
        }
    }
    ends[words.len()]
}

/// "haha", "hehe" and "lol" at any length ("hahaha", "hehehe", "lolol"),
/// and "k" repeated ("kkk").
fn is_laughter(word: &str) -> bool {
    // `of` is `unit` repeated, at least `least` times.
    let repeats = |unit: &str, least: usize, of: &str| {
        of.len() >= unit.len() * least
            && of.len().is_multiple_of(unit.len())
            && of
                .as_bytes()
                .chunks(unit.len())
                .all(|c| c == unit.as_bytes())
    };
    repeats("ha", 2, word)
        || repeats("he", 2, word)
        || repeats("k", 1, word)
        || word
            .strip_prefix('l')
            .is_some_and(|rest| repeats("ol", 1, rest))
}

/// Whether `c` is the base of a keycap emoji (`1️⃣`, `#️⃣`, `*️⃣`): a
/// digit, `#` or `*` followed by U+20E3 COMBINING ENCLOSING KEYCAP, with or
/// without U+FE0F VARIATION SELECTOR-16 between.
fn is_keycap(c: char, rest: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    const KEYCAP: char = '\u{20e3}';
    const VS16: char = '\u{fe0f}';
    if !(c.is_ascii_digit() || c == '#' || c == '*') {
        return false;
    }
    let mut next = rest.clone();
    match next.next() {
        Some(KEYCAP) => true,
        Some(VS16) => next.next() == Some(KEYCAP),
        _ => false,
    }
}

/// Whether the thread's integrations turn social signals on (the tags of
/// `submit_messages`, and `typing_without_sending`).
pub fn social_signals(thread: &ThreadRecord) -> bool {
    thread
        .integrations
        .as_deref()
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .is_some_and(|v| v.get("social_signals").is_some_and(|s| s.is_object()))
}

/// The decision for a batch of message contents.
pub fn decide<'a>(policy: TurnPolicy, contents: impl IntoIterator<Item = &'a str>) -> &'static str {
    match policy {
        TurnPolicy::Always => "speak",
        TurnPolicy::Heuristic => {
            if contents.into_iter().all(is_acknowledgement) {
                "stay_silent"
            } else {
                "speak"
            }
        }
    }
}

/// The tags of a batch, in the order fast, burst, comeback.
pub fn tags(t: &BatchTiming) -> Vec<&'static str> {
    let mut tags = Vec::new();
    // The distance, either side: a batch stamped before the previous one
    // is not "fast" by its negative gap alone.
    if t.previous_batch_ms
        .is_some_and(|prev| t.batch_ms.abs_diff(prev) < FAST_WINDOW_MS.unsigned_abs())
    {
        tags.push("fast");
    }
    if t.size >= BURST_SIZE {
        tags.push("burst");
    }
    if t.senders
        .iter()
        .any(|(at, last)| last.is_some_and(|last| at - last >= COMEBACK_AFTER_MS))
    {
        tags.push("comeback");
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_recognised_loosely() {
        for ack in [
            "ok",
            "OK.",
            " thanks! ",
            "Thank you",
            "lol",
            "👍",
            "🙂🙂",
            "❤️",
            "👍🏽",
            "🇺🇸",
            "👨‍👩‍👧",
            "thanks…",
            "got it.",
            "1️⃣",
            "1\u{20e3}",
            "#️⃣ *️⃣",
            "ok 🔟",
            "ok thanks",
            "Thank you, lol!",
            "hahaha",
            "HEHEHEHE 😂",
            "lolol ok",
            "kkk",
            "ok ok ok",
        ] {
            assert!(is_acknowledgement(ack), "{ack:?}");
        }
        for not_ack in [
            "ok, but why?",
            "thanks for the report, one question",
            "what?",
            "...",
            "…",
            "？",
            "—",
            "→",
            "★",
            "#",
            "42",
            "1\u{fe0f}",
            "1 1️⃣",
            "\u{20e3}",
            "thank",
            "you",
            "ok then",
            "hah",
            "hahah",
            "lo",
            "lool",
            "haha, and?",
        ] {
            assert!(!is_acknowledgement(not_ack), "{not_ack:?}");
        }
    }

    #[test]
    fn heuristic_stays_silent_only_when_every_message_is_an_ack() {
        assert_eq!(
            decide(TurnPolicy::Heuristic, ["ok", "thanks"]),
            "stay_silent"
        );
        assert_eq!(decide(TurnPolicy::Heuristic, ["ok", "and then?"]), "speak");
        assert_eq!(decide(TurnPolicy::Always, ["ok"]), "speak");
    }

    #[test]
    fn a_stamp_counts_as_given_unless_it_is_after_the_receipt() {
        let received = 1_800_000_000_000;
        assert_eq!(message_time(None, received), received);
        assert_eq!(message_time(Some(received - 5), received), received - 5);
        assert_eq!(message_time(Some(received + 5), received), received);
        assert_eq!(message_time(Some(i64::MAX), received), received);
    }

    #[test]
    fn tags_follow_the_documented_rules() {
        let base = BatchTiming {
            previous_batch_ms: None,
            batch_ms: 100_000_000,
            size: 1,
            senders: vec![(100_000_000, None)],
        };
        assert!(tags(&base).is_empty());
        let fast = BatchTiming {
            previous_batch_ms: Some(99_998_000),
            ..base.clone()
        };
        assert_eq!(tags(&fast), ["fast"]);
        let slow = BatchTiming {
            previous_batch_ms: Some(99_997_000),
            ..base.clone()
        };
        assert!(tags(&slow).is_empty());
        // Stamped before the previous batch: fast only when as close.
        let close_behind = BatchTiming {
            previous_batch_ms: Some(100_002_000),
            ..base.clone()
        };
        assert_eq!(tags(&close_behind), ["fast"]);
        for far_behind in [100_003_000, 100_000_000 + 3_600_000, i64::MAX] {
            let far_behind = BatchTiming {
                previous_batch_ms: Some(far_behind),
                ..base.clone()
            };
            assert!(tags(&far_behind).is_empty(), "{far_behind:?}");
        }
        let burst = BatchTiming {
            size: 3,
            ..base.clone()
        };
        assert_eq!(tags(&burst), ["burst"]);
        let comeback = BatchTiming {
            senders: vec![(100_000_000, Some(100_000_000 - COMEBACK_AFTER_MS))],
            ..base.clone()
        };
        assert_eq!(tags(&comeback), ["comeback"]);
        let recent = BatchTiming {
            senders: vec![(100_000_000, Some(100_000_000 - COMEBACK_AFTER_MS + 1))],
            ..base
        };
        assert!(tags(&recent).is_empty());
    }
}
