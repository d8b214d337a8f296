//! Signing, as the Standard Webhooks specification has it (the scheme
//! Svix and many hosted services use, with libraries for most languages):
//! the secret is `whsec_` + base64 of the HMAC key; each delivery carries
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//! The timestamp is signed, so a receiver can refuse replays of old requests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn mac(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `webhook-signature` header of a delivery.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    // Secrets are made by `new_secret`; an unreadable one signs nothing a
    // receiver would accept, rather than failing the delivery loop.
    let tag = mac(secret, id, timestamp, body)
        .map(|m| STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("v1,{tag}")
}

/// Whether one of the header's space-separated `v1,` signatures is right
/// (compared in constant time).
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').any(|sig| {
        let Some(tag) = sig
            .strip_prefix("v1,")
            .and_then(|t| STANDARD.decode(t).ok())
        else {
            return false;
        };
        mac(secret, id, timestamp, body).is_some_and(|m| m.verify_slice(&tag).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let secret = new_secret();
        let sig = signature(&secret, "evt", 1, b"{}");
        assert!(verify(&secret, "evt", 1, b"{}", &sig));
        assert!(verify(&secret, "evt", 1, b"{}", &format!("v1,AAAA {sig}")));
        assert!(!verify(&new_secret(), "evt", 1, b"{}", &sig));
        assert!(
            !verify(&secret, "evt", 2, b"{}", &sig),
            "timestamp is signed"
        );
        assert!(!verify(&secret, "evt", 1, b"{ }", &sig));
    }
}
