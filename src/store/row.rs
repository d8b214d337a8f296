//! What every table module needs to read rows: "no row" as `None`. A leaf
//! module, so that the table modules, the writer and its cache all depend on
//! it without depending on each other.

use crate::error::{ApiError, ApiResult};

/// Maps "no row" to `None`.
pub(crate) fn optional<T>(r: rusqlite::Result<T>) -> ApiResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(ApiError::from(e)),
    }
}
