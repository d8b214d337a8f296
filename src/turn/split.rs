//! Splitting a reply into 1–5 chat messages, and pacing them.
//!
//! Splitting: the reply is cut into sentences (after `.`, `!`, `?` or `…`,
//! or the stops of other scripts that are followed by a space (`؟`, `۔`,
//! `।`, `॥`, `։`, `።`), with any closing quotes or brackets, when
//! whitespace follows, except the `.` of a known abbreviation such as
//! `e.g.` or `Dr.` ([`ABBREVIATIONS`]); after the CJK full stops `。`,
//! `｡`, `！`, `？` whatever follows, as CJK text puts no space after them;
//! and at line breaks). A sentence shorter than [`MIN_PART_CHARS`] is merged into the
//! next one (the last into the previous). While there are more than
//! [`MAX_PARTS`] parts, the adjacent pair with the smallest combined length
//! is merged. Merged sentences are joined with one space (none where the
//! text had none, after a CJK full stop); no text is lost or reordered:
//! only the whitespace at the seams changes.
//!
//! Pacing: each part is "typed" for `min(BASE + PER_CHAR × chars, MAX)`,
//! scaled by `--pace-scale`; part i is delivered when parts 0..=i have been
//! typed, one after the other.

use std::time::Duration;

/// Most parts a reply is split into.
pub const MAX_PARTS: usize = 5;
/// Sentences shorter than this are merged with a neighbour.
pub const MIN_PART_CHARS: usize = 40;
/// Typing time of any message.
pub const TYPING_BASE: Duration = Duration::from_millis(500);
/// Typing time per character.
pub const TYPING_PER_CHAR: Duration = Duration::from_millis(25);
/// Longest typing time of one message.
pub const TYPING_MAX: Duration = Duration::from_millis(4_000);

/// Splits a reply into 1..=5 parts. Returns no part only for blank text.
pub fn split_reply(text: &str) -> Vec<String> {
    let mut parts: Vec<Sentence> = sentences(text);
    if parts.is_empty() {
        return Vec::new();
    }
    // Merge short sentences forward (the last one backward).
    let mut merged: Vec<Sentence> = Vec::new();
    let mut carry: Option<Sentence> = None;
    for s in parts.drain(..) {
        let s = match carry.take() {
            Some(mut c) => {
                c.append(s);
                c
            }
            None => s,
        };
        if s.text.chars().count() < MIN_PART_CHARS {
            carry = Some(s);
        } else {
            merged.push(s);
        }
    }
    if let Some(c) = carry {
        match merged.last_mut() {
            Some(last) => last.append(c),
            None => merged.push(c),
        }
    }
    // Too many: merge the smallest adjacent pair until at most MAX_PARTS.
    while merged.len() > MAX_PARTS {
        let i = (0..merged.len() - 1)
            .min_by_key(|&i| merged[i].text.chars().count() + merged[i + 1].text.chars().count())
            .expect("expect: more than MAX_PARTS parts means at least one pair");
        let next = merged.remove(i + 1);
        merged[i].append(next);
    }
    merged.into_iter().map(|s| s.text).collect()
}

/// A sentence, trimmed, and whether white space came before it.
struct Sentence {
    text: String,
    spaced: bool,
}

impl Sentence {
    /// Joins `next` on: with one space where the text had white space
    /// between them, with none where it had none (after `。`).
    fn append(&mut self, next: Sentence) {
        if next.spaced {
            self.text.push(' ');
        }
        self.text.push_str(&next.text);
    }
}

/// Ends a sentence followed by white space: the Latin stops, and those of
/// other scripts that put a space after them (Arabic and Urdu, Devanagari,
/// Armenian, Ethiopic).
fn terminal(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '؟' | '۔' | '।' | '॥' | '։' | '።'
    )
}

/// Ends a sentence whatever follows: the full stops of CJK text, which
/// puts no space after them.
fn wide_terminal(c: char) -> bool {
    matches!(c, '。' | '｡' | '！' | '？')
}

/// Closing quotes and brackets that stay with the sentence they close.
fn closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '”' | '’' | '」' | '』' | '）' | '】' | '〕' | '〉' | '》' | '］'
    )
}

/// The trimmed, non-empty sentences of `text`, in order.
fn sentences(text: &str) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut current = String::new();
    // A line break since the last sentence (it is not kept in `current`).
    let mut broke = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            push_trimmed(&mut out, &mut current, &mut broke);
            broke = true;
            continue;
        }
        current.push(c);
        if terminal(c) || wide_terminal(c) {
            let mut wide = wide_terminal(c);
            // Keep a run of terminal punctuation and closers with the sentence.
            while let Some(&n) = chars.peek() {
                if terminal(n) || wide_terminal(n) || closer(n) {
                    wide |= wide_terminal(n);
                    current.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let ends = wide
                || (chars.peek().is_some_and(|n| n.is_whitespace())
                    && !ends_with_abbreviation(&current));
            if ends {
                push_trimmed(&mut out, &mut current, &mut broke);
            }
        }
    }
    push_trimmed(&mut out, &mut current, &mut broke);
    out
}

/// Abbreviations whose `.` does not end a sentence (compared lowercased).
/// Only those that rarely end one: "etc." and "a.m." often do.
pub const ABBREVIATIONS: &[&str] = &[
    "e.g.", "i.e.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "cf.", "approx.", "incl.",
    "fig.",
];

/// Whether `text` ends with one of [`ABBREVIATIONS`] as a word of its own
/// (after white space or an opening bracket or quote).
fn ends_with_abbreviation(text: &str) -> bool {
    let word = text
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or(text)
        .trim_start_matches(['(', '[', '"', '\'', '“', '‘']);
    ABBREVIATIONS
        .iter()
        .any(|a| word.len() == a.len() && word.eq_ignore_ascii_case(a))
}

fn push_trimmed(out: &mut Vec<Sentence>, current: &mut String, broke: &mut bool) {
    let t = current.trim();
    if !t.is_empty() {
        out.push(Sentence {
            text: t.to_owned(),
            spaced: *broke || current.starts_with(char::is_whitespace),
        });
        *broke = false;
    }
    current.clear();
}

/// How long typing one part takes, before scaling.
pub fn typing_time(part: &str) -> Duration {
    let chars = part.chars().count() as u32;
    (TYPING_BASE + TYPING_PER_CHAR * chars).min(TYPING_MAX)
}

/// Delivery offsets from now of each part, with `scale` applied.
pub fn schedule(parts: &[String], scale: f64) -> Vec<Duration> {
    let mut at = Duration::ZERO;
    parts
        .iter()
        .map(|p| {
            at += typing_time(p).mul_f64(scale);
            at
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// The splitting properties, over many generated replies.
    #[test]
    fn splitting_keeps_text_and_order_and_makes_one_to_five_parts() {
        let words = [
            "Hello",
            "there",
            "ok.",
            "Sure!",
            "why?",
            "the",
            "report…",
            "x",
            "(see above).",
            "\"quoted.\"",
            "今日は雨。",
            "本当？",
            "「はい。」",
            "e.g.",
            "3.14",
            "!!!",
            "...",
            "Dr.",
        ];
        let seps = [
            " ", "  ", "\n", "\n\n", " \t", "\r\n", "\u{3000}", "\u{a0}", "",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let n = (next() % 60) as usize + 1;
            let mut text = String::new();
            for i in 0..n {
                if i > 0 {
                    text.push_str(seps[(next() % seps.len() as u64) as usize]);
                }
                text.push_str(words[(next() % words.len() as u64) as usize]);
            }
            let parts = split_reply(&text);
            assert!(
                (1..=MAX_PARTS).contains(&parts.len()),
                "{} parts for {text:?}",
                parts.len()
            );
            assert!(parts.iter().all(|p| !p.trim().is_empty() && p.trim() == p));
            assert_eq!(
                squash(&parts.concat()),
                squash(&text),
                "text lost or reordered: {text:?}"
            );
            // Stronger: with white space runs read as one space, the parts
            // are the text in order, seams of one space or none.
            let whole = spaced(&text);
            let mut rest = whole.as_str();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    rest = rest.strip_prefix(' ').unwrap_or(rest);
                }
                rest = rest
                    .strip_prefix(spaced(part).as_str())
                    .unwrap_or_else(|| panic!("{part:?} out of place in {text:?}"));
            }
            assert_eq!(rest, "", "{text:?}");
        }
        for text in [
            "x".repeat(4000),
            "!".repeat(4000),
            ".\n".repeat(2000),
            "。".repeat(4000),
            "no punctuation at all ".repeat(150),
        ] {
            let parts = split_reply(&text);
            assert!((1..=MAX_PARTS).contains(&parts.len()), "{text:?}");
            assert_eq!(squash(&parts.concat()), squash(&text));
        }
    }

    /// `s` with each run of white space read as one space, and trimmed.
    fn spaced(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn short_sentences_merge_and_long_ones_stand_alone() {
        let text = "Hi. I looked at the numbers you sent over this morning. They look right to me, with one exception. The Q3 total is off by a few percent.";
        let parts = split_reply(text);
        assert_eq!(
            parts,
            [
                "Hi. I looked at the numbers you sent over this morning.",
                // The short last sentence joins the one before it.
                "They look right to me, with one exception. The Q3 total is off by a few percent.",
            ]
        );
        assert_eq!(split_reply("ok"), ["ok"]);
        assert!(split_reply("   \n ").is_empty());
    }

    #[test]
    fn cjk_full_stops_end_sentences_and_their_seams_get_no_space() {
        let sentence =
            "今日は朝から雨が降っていて、駅まで歩くのが少し大変でしたが、会議には間に合いました。";
        let text = format!("{sentence}{sentence}「本当に？」と聞かれました！{sentence}");
        let parts = split_reply(&text);
        assert_eq!(
            parts,
            [
                sentence.to_owned(),
                sentence.to_owned(),
                format!("「本当に？」と聞かれました！{sentence}"),
            ]
        );
        assert_eq!(parts.concat(), text);
        // White space after a full stop is a seam like any other.
        let spaced = format!("{sentence} {sentence}\n\n{sentence}");
        assert_eq!(
            split_reply(&spaced).join(" "),
            format!("{sentence} {sentence} {sentence}")
        );
        assert_eq!(split_reply("はい。"), ["はい。"]);
    }

    #[test]
    fn the_stops_of_other_scripts_end_sentences_before_white_space() {
        let hindi = "मैंने आज सुबह आपके भेजे हुए सभी आंकड़े ध्यान से देखे हैं।";
        let arabic = "هل راجعت الأرقام التي أرسلتها إليك صباح اليوم يا صديقي؟";
        let text = format!("{hindi} {hindi} {arabic} {arabic}");
        assert_eq!(split_reply(&text), [hindi, hindi, arabic, arabic]);
        // Without white space after it, a stop is inside the sentence.
        assert_eq!(split_reply("क।ख"), ["क।ख"]);
    }

    #[test]
    fn a_known_abbreviation_does_not_end_a_sentence() {
        let first = "I looked at several options for the trip, e.g. the train and the night bus.";
        let second = "Both are fine, but Dr. Lee says (i.e. as of today) the bus is cheaper.";
        assert_eq!(split_reply(&format!("{first} {second}")), [first, second]);
        // Any other word ending in a dot ends its sentence, "etc." included.
        let listed = "We checked the trains, the buses, the ferries, etc.";
        let after = "Nothing else runs on that route during the winter months.";
        assert_eq!(split_reply(&format!("{listed} {after}")), [listed, after]);
        assert!(ends_with_abbreviation("see fig."));
        assert!(ends_with_abbreviation("(E.G."));
        assert!(!ends_with_abbreviation("a leg."));
        assert!(!ends_with_abbreviation("the end."));
    }

    #[test]
    fn decimals_and_abbreviations_without_space_do_not_split() {
        assert_eq!(
            split_reply("The value is 3.14 and the file is report.pdf in the folder"),
            ["The value is 3.14 and the file is report.pdf in the folder"]
        );
    }

    #[test]
    fn pacing_is_cumulative_capped_and_scaled() {
        let parts = vec!["a".repeat(10), "b".repeat(1000)];
        let at = schedule(&parts, 1.0);
        assert_eq!(at[0], Duration::from_millis(750));
        assert_eq!(at[1], Duration::from_millis(4750));
        assert!(schedule(&parts, 0.0).iter().all(|d| d.is_zero()));
    }
}
