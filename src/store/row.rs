//! What every table module needs to read rows: "no row" as `None`, stored
//! enum names as enums. A leaf
//! module, so that the table modules, the writer and its cache all depend on
//! it without depending on each other.

use crate::error::{ApiError, ApiResult};

/// An enum read back from its stored name (`from_name` of a `domain::kinds`
/// enum). A name this code does not know is a failed read (500), never a
/// silent default.
pub(crate) fn stored<T>(name: &str, from_name: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    from_name(name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown stored name {name:?}").into(),
        )
    })
}

/// Maps "no row" to `None`.
pub(crate) fn optional<T>(r: rusqlite::Result<T>) -> ApiResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(ApiError::from(e)),
    }
}
