//! A client's fragmented text messages, checked for UTF-8 as they arrive.
//! The server ignores what a client sends (but pings and close), so it does
//! not put a message's fragments together; RFC 6455 (8.1) still has an
//! endpoint fail a connection whose text is not UTF-8 (1007), and a
//! character may be split between two fragments. So each fragment is
//! checked as it comes, holding back at most the three bytes of a
//! character it ends in the middle of: the memory a socket holds for this
//! does not grow with the message. A sequence out of order (a continuation
//! without a start, a new start before the last one finished) is refused
//! by the frame codec, before this (1002).

use actix_ws::Item;

/// The close reason when a fragmented text message is not UTF-8 (1007).
pub const NOT_UTF8: &str = "text message is not UTF-8";

/// Where the client's current fragmented message stands.
#[derive(Debug, Default)]
pub struct Fragments {
    /// A fragmented text message has started and not yet ended.
    text: bool,
    /// The start of a character the last fragment ended in the middle of.
    held: [u8; 3],
    held_len: u8,
}

/// A fragmented text message that is not UTF-8: the connection fails (1007).
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8;

impl Fragments {
    /// Takes one fragment of a message; `Err` as soon as a text message
    /// cannot be UTF-8 (bytes that are not, or a character still unfinished
    /// at the last fragment). Binary messages are not looked at.
    pub fn take(&mut self, item: &Item) -> Result<(), NotUtf8> {
        match item {
            Item::FirstText(bytes) => {
                self.text = true;
                self.held_len = 0;
                self.check(bytes)
            }
            Item::FirstBinary(_) => {
                self.text = false;
                Ok(())
            }
            Item::Continue(bytes) if self.text => self.check(bytes),
            Item::Last(bytes) if self.text => {
                self.text = false;
                self.check(bytes)?;
                match std::mem::take(&mut self.held_len) {
                    0 => Ok(()),
                    _ => Err(NotUtf8),
                }
            }
            Item::Continue(_) | Item::Last(_) => Ok(()),
        }
    }

    /// Checks the next bytes of a text message, holding back the start of
    /// a character they end in the middle of.
    fn check(&mut self, mut bytes: &[u8]) -> Result<(), NotUtf8> {
        let held = usize::from(self.held_len);
        if held > 0 {
            // The held character with what this fragment adds to it (a
            // character has at most four bytes).
            let mut joined = [0u8; 4];
            let added = bytes.len().min(4 - held);
            joined[..held].copy_from_slice(&self.held[..held]);
            joined[held..held + added].copy_from_slice(&bytes[..added]);
            let joined = &joined[..held + added];
            let (valid, unfinished) = match std::str::from_utf8(joined) {
                Ok(_) => (joined.len(), false),
                Err(e) => (e.valid_up_to(), e.error_len().is_none()),
            };
            if valid > held {
                // The character is complete: check the rest after it.
                self.held_len = 0;
                bytes = &bytes[valid - held..];
            } else if unfinished {
                // Still unfinished (the fragment was shorter than what the
                // character lacks): all of it is held.
                self.hold(joined);
                return Ok(());
            } else {
                return Err(NotUtf8);
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.hold(&bytes[e.valid_up_to()..]);
                Ok(())
            }
            Err(_) => Err(NotUtf8),
        }
    }

    /// Holds the start of an unfinished character (at most three bytes).
    fn hold(&mut self, start: &[u8]) {
        self.held[..start.len()].copy_from_slice(start);
        self.held_len = u8::try_from(start.len()).expect("expect: at most 3 bytes are held");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(fragments: &[&[u8]]) -> Result<(), NotUtf8> {
        let mut state = Fragments::default();
        let last = fragments.len() - 1;
        for (i, fragment) in fragments.iter().enumerate() {
            let bytes = Bytes::copy_from_slice(fragment);
            let item = match i {
                0 => Item::FirstText(bytes),
                i if i == last => Item::Last(bytes),
                _ => Item::Continue(bytes),
            };
            state.take(&item)?;
        }
        Ok(())
    }

    #[test]
    fn characters_split_anywhere_between_fragments_are_utf8() {
        let message = "a é € 😀 z".as_bytes();
        // Every way of cutting the message in three.
        for i in 0..=message.len() {
            for j in i..=message.len() {
                let cut = [&message[..i], &message[i..j], &message[j..]];
                assert_eq!(text(&cut), Ok(()), "cut at {i} and {j}");
            }
        }
        // One byte a fragment, empty fragments between.
        let mut bytes: Vec<&[u8]> = Vec::new();
        for b in message.chunks(1) {
            bytes.push(b);
            bytes.push(b"");
        }
        assert_eq!(text(&bytes), Ok(()));
    }

    #[test]
    fn bytes_that_are_not_utf8_fail_wherever_they_are_cut() {
        let bad: [&[u8]; 6] = [
            b"ab\xff",
            b"\xc3\x28",              // a lead byte, then no continuation
            b"\xed\xa0\x80",          // a surrogate
            b"\xe0\x80\x80",          // overlong
            b"\xf4\x90\x80\x80",      // past U+10FFFF
            b"ok \xe2\x82\xac \x80 ", // a lone continuation byte
        ];
        for message in bad {
            for i in 0..=message.len() {
                for j in i..=message.len() {
                    let cut = [&message[..i], &message[i..j], &message[j..]];
                    assert_eq!(text(&cut), Err(NotUtf8), "{message:?} cut at {i} and {j}");
                }
            }
        }
    }

    #[test]
    fn a_character_unfinished_at_the_last_fragment_fails() {
        assert_eq!(text(&[b"a", b"\xe2\x82"]), Err(NotUtf8));
        assert_eq!(text(&[b"\xf0", b"\x9f", b"\x98"]), Err(NotUtf8));
        assert_eq!(text(&[b"\xf0\x9f\x98", b""]), Err(NotUtf8));
    }

    #[test]
    fn binary_messages_are_not_looked_at_and_a_new_message_starts_afresh() {
        let mut state = Fragments::default();
        let take = |state: &mut Fragments, item| state.take(&item);
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        assert_eq!(take(&mut state, Item::FirstBinary(b(b"\xff"))), Ok(()));
        assert_eq!(take(&mut state, Item::Continue(b(b"\xc3"))), Ok(()));
        assert_eq!(take(&mut state, Item::Last(b(b"\xfe"))), Ok(()));
        // A text message after it, its own character split.
        assert_eq!(take(&mut state, Item::FirstText(b(b"\xc3"))), Ok(()));
        assert_eq!(take(&mut state, Item::Last(b(b"\xa9"))), Ok(()));
        // Then binary again: nothing held over from the text.
        assert_eq!(take(&mut state, Item::FirstBinary(b(b"\xa9"))), Ok(()));
        assert_eq!(take(&mut state, Item::Last(b(b""))), Ok(()));
    }
}
