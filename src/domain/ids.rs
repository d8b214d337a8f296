//! Identifiers: agent AIDs, thread ids, account user ids and login keys.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// An agent identity: 50 lowercase hex characters, kept inline: parsing
/// one (every post names its agent) allocates nothing, and a copy for the
/// writer's hint is a plain copy.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Aid([u8; Aid::LEN]);

impl Aid {
    /// Length of an AID in hex characters.
    pub const LEN: usize = 50;

    /// Parses a client-supplied AID; `field` names the input for the error.
    pub fn parse(field: &str, s: &str) -> ApiResult<Aid> {
        match <[u8; Self::LEN]>::try_from(s.as_bytes()) {
            Ok(bytes) if bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                Ok(Aid(bytes))
            }
            _ => Err(ApiError::field(
                field,
                format!("{field} must be {} lowercase hex characters", Self::LEN),
            )),
        }
    }

    /// A fresh random AID (agents created without a public key).
    pub fn random() -> Aid {
        let mut bytes = [0u8; 25];
        rand::thread_rng().fill_bytes(&mut bytes);
        let mut aid = [0u8; Self::LEN];
        // 25 bytes are exactly 50 hex digits: the slice always fits.
        let _ = hex::encode_to_slice(bytes, &mut aid);
        Aid(aid)
    }

    /// The AID the hosted service derives from an Ed25519 public key: its
    /// first 50 hex digits. `hex64` must be 64 hex characters (any case).
    pub fn from_pubkey(field: &str, hex64: &str) -> ApiResult<Aid> {
        if hex64.len() != 64 || !hex64.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::field(
                field,
                format!("{field} must be 64 hex characters"),
            ));
        }
        let mut aid = [0u8; Self::LEN];
        aid.copy_from_slice(&hex64.as_bytes()[..Self::LEN]);
        aid.make_ascii_lowercase();
        Ok(Aid(aid))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for Aid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Aid").field(&self.as_str()).finish()
    }
}

/// A thread id: a UUID (v7 when threadline mints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadId(Uuid);

impl ThreadId {
    /// Parses a client-supplied thread id; `field` names the input. Only
    /// the hyphenated form (8-4-4-4-12 hex digits, either case), the one
    /// the API writes and its document's `format: uuid` names: the uuid
    /// crate also reads `{…}`, `urn:uuid:…` and 32 bare digits, and a
    /// client sending one of those has an id it did not get from us.
    pub fn parse(field: &str, s: &str) -> ApiResult<ThreadId> {
        // Of the forms the crate reads, only the hyphenated one is 36 long.
        match Uuid::try_parse(s) {
            Ok(id) if s.len() == 36 => Ok(ThreadId(id)),
            _ => Err(ApiError::field(
                field,
                format!("{field} must be a UUID (8-4-4-4-12 hex digits)"),
            )),
        }
    }

    /// A fresh, time-ordered id.
    pub fn new() -> ThreadId {
        ThreadId(Uuid::now_v7())
    }

    /// The canonical text form (lowercase, hyphenated), as stored.
    pub fn to_text(self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl Default for ThreadId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A fresh message id (UUID v7), as text.
pub fn new_message_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// An account id: `usr_` + 16 lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub fn random() -> UserId {
        let mut bytes = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        UserId(format!("usr_{}", hex::encode(bytes)))
    }

    /// Parses a user id given on the command line.
    pub fn parse(s: &str) -> Result<UserId, String> {
        let ok = s.len() == 20
            && s.starts_with("usr_")
            && s[4..]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(UserId(s.to_owned()))
        } else {
            Err(format!("`{s}` is not a user id (usr_ + 16 lowercase hex)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login key: `nk_` + 43 URL-safe base64 characters (32 random bytes).
/// Only its SHA-256 is ever stored; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginKey(String);

impl std::fmt::Debug for LoginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginKey(..)")
    }
}

impl LoginKey {
    pub fn generate() -> LoginKey {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        LoginKey(format!(
            "nk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Accepts a key of the right shape; anything else is not a key.
    pub fn parse(s: &str) -> Option<LoginKey> {
        Self::well_formed(s).then(|| LoginKey(s.to_owned()))
    }

    /// The stored form of `s` if it is a key of the right shape, without
    /// keeping a copy of the key (a request only needs its hash).
    pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
        Self::well_formed(s).then(|| hash_of(s))
    }

    fn well_formed(s: &str) -> bool {
        s.len() == 46
            && s.starts_with("nk_")
            && s[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// The stored form: SHA-256 of the whole key string.
    pub fn hash(&self) -> [u8; 32] {
        hash_of(&self.0)
    }

    /// The key itself, for the one time it is shown to its owner.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

fn hash_of(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_the_same_parsed_or_not() {
        let key = LoginKey::generate();
        assert_eq!(LoginKey::parse_hash(key.reveal()), Some(key.hash()));
        let parsed = LoginKey::parse(key.reveal()).map(|k| k.hash());
        assert_eq!(parsed, Some(key.hash()));
        for bad in [
            "",
            "nk_",
            &key.reveal()[1..],
            &format!("{}=", &key.reveal()[..45]),
        ] {
            assert_eq!(LoginKey::parse_hash(bad), None, "{bad}");
            assert!(LoginKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn aid_accepts_50_lowercase_hex_only() {
        assert!(Aid::parse("aid", &"a".repeat(50)).is_ok());
        assert!(Aid::parse("aid", &"A".repeat(50)).is_err());
        assert!(Aid::parse("aid", &"a".repeat(49)).is_err());
        assert!(Aid::parse("aid", &"g".repeat(50)).is_err());
        assert_eq!(Aid::random().as_str().len(), 50);
        // Inline bytes: a random one is well-formed, and two differ.
        let (one, two) = (Aid::random(), Aid::random());
        assert_eq!(Aid::parse("aid", one.as_str()).ok(), Some(one.clone()));
        assert_ne!(one, two);
        assert_eq!(
            format!("{:?}", Aid::parse("aid", &"a".repeat(50)).unwrap()),
            format!("Aid({:?})", "a".repeat(50))
        );
        // 51 characters, or 50 bytes that are not 50 characters.
        assert!(Aid::parse("aid", &"a".repeat(51)).is_err());
        assert!(Aid::parse("aid", &format!("{}é", "a".repeat(48))).is_err());
    }

    #[test]
    fn aid_from_pubkey_is_its_first_50_hex_digits_lowercased() {
        let key = "ABCDEF".repeat(10) + "0123";
        let aid = Aid::from_pubkey("ed25519_pubkey", &key).unwrap();
        assert_eq!(aid.as_str(), &key[..50].to_ascii_lowercase());
        assert!(Aid::from_pubkey("k", "abc").is_err());
    }

    #[test]
    fn login_keys_have_the_documented_shape_and_round_trip() {
        let key = LoginKey::generate();
        assert_eq!(key.reveal().len(), 46);
        assert_eq!(LoginKey::parse(key.reveal()), Some(key.clone()));
        assert!(LoginKey::parse("nk_short").is_none());
        assert!(!format!("{key:?}").contains(key.reveal()));
    }

    #[test]
    fn thread_ids_parse_uuids_and_reject_other_text() {
        let id = ThreadId::new();
        assert_eq!(ThreadId::parse("thread_id", &id.to_text()).unwrap(), id);
        assert!(ThreadId::parse("thread_id", "nope").is_err());
        // Either case, one id; no other spelling of it.
        let upper = id.to_text().to_ascii_uppercase();
        assert_eq!(ThreadId::parse("thread_id", &upper).unwrap(), id);
        let uuid = id.0;
        for other in [
            format!("{{{}}}", uuid.hyphenated()),
            uuid.urn().to_string(),
            uuid.simple().to_string(),
            format!(" {}", uuid.hyphenated()),
        ] {
            let e = ThreadId::parse("thread_id", &other).unwrap_err();
            assert_eq!(e.field_name(), Some("thread_id"), "{other}");
        }
    }

    #[test]
    fn user_ids_are_usr_and_16_hex() {
        let u = UserId::random();
        assert!(UserId::parse(u.as_str()).is_ok());
        assert!(UserId::parse("usr_123").is_err());
    }
}
