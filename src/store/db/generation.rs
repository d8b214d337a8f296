//! The database's generation, on either backend (see `store::generation`).

use super::Db;
use crate::error::ApiResult;
use crate::store::{generation as sqlite, pg::generation as pg};

/// The generation, given one first if the database has none; `true` when
/// it was given now.
pub fn settle(db: Db<'_>) -> ApiResult<(String, bool)> {
    match db {
        Db::Sqlite(c) => sqlite::settle(c),
        Db::Pg(c) => pg::settle(c),
    }
}

/// Gives the database a new generation: the old one (if any) and the new.
pub fn renew(db: Db<'_>) -> ApiResult<(Option<String>, String)> {
    match db {
        Db::Sqlite(c) => sqlite::renew(c),
        Db::Pg(c) => pg::renew(c),
    }
}
