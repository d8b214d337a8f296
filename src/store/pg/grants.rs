//! Connect grants on PostgreSQL, shared by every node: minted on one,
//! redeemed once on any. Expiry uses the database's clock, so nodes whose
//! clocks differ agree on it.

use super::conn::{get, PgConn};
use crate::error::ApiResult;

/// Stores a grant (by the SHA-256 of its token) for `ttl_ms`, and sweeps
/// grants that expired a while ago.
pub fn insert(
    c: &PgConn,
    token_hash: &[u8; 32],
    grant_json: &str,
    key_hash: &[u8; 32],
    ttl_ms: i64,
) -> ApiResult<()> {
    c.exec(
        "DELETE FROM grants WHERE expires_at < now() - interval '1 minute'",
        &[],
    )?;
    c.exec(
        "INSERT INTO grants (token_hash, grant_json, key_hash, expires_at)
         VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')",
        &[
            &&token_hash[..],
            &grant_json,
            &&key_hash[..],
            &(ttl_ms as f64),
        ],
    )?;
    Ok(())
}

/// Whether an unexpired grant has this token, minted by a key that is
/// still live (a revoked key's unused grants are void), without using it.
pub fn exists(c: &PgConn, token_hash: &[u8; 32]) -> ApiResult<bool> {
    get(
        &c.one(
            "SELECT EXISTS (SELECT 1 FROM grants g JOIN login_keys k ON k.key_hash = g.key_hash
                            WHERE g.token_hash = $1 AND g.expires_at > now()
                              AND k.revoked_at IS NULL)",
            &[&&token_hash[..]],
        )?,
        0,
    )
}

/// Uses a grant up: deletes it and returns what it opens and the key that
/// minted it, if it had not expired. Of two nodes redeeming one token at
/// once, only one gets the row.
pub fn take(c: &PgConn, token_hash: &[u8; 32]) -> ApiResult<Option<(String, Vec<u8>)>> {
    let Some(row) = c.opt(
        "DELETE FROM grants WHERE token_hash = $1
         RETURNING grant_json, key_hash, expires_at > now()",
        &[&&token_hash[..]],
    )?
    else {
        return Ok(None);
    };
    if !get::<bool>(&row, 2)? {
        return Ok(None);
    }
    Ok(Some((get(&row, 0)?, get(&row, 1)?)))
}
