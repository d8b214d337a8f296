//! The event log, on either backend.

use super::Db;
use crate::error::ApiResult;
use crate::events::Event;
use crate::store::events::{LogPage, LogScope};
use crate::store::{events as sqlite, pg::events as pg};

pub fn last_position(db: Db<'_>) -> ApiResult<i64> {
    match db {
        Db::Sqlite(c) => sqlite::last_position(c),
        Db::Pg(c) => pg::last_position(c),
    }
}

/// Makes the log number its next event [`RESTORE_POSITION_GAP`] past its
/// newest (see `store::backup`); returns that next position.
///
/// [`RESTORE_POSITION_GAP`]: crate::store::backup::RESTORE_POSITION_GAP
pub fn leave_a_gap(db: Db<'_>) -> ApiResult<i64> {
    match db {
        Db::Sqlite(c) => Ok(crate::store::backup::leave_a_gap_in_the_log(c)?.1),
        Db::Pg(c) => pg::leave_a_gap(c),
    }
}

pub fn first_position(db: Db<'_>) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::first_position(c),
        Db::Pg(c) => pg::first_position(c),
    }
}

pub fn events_after(db: Db<'_>, position: i64, limit: i64) -> ApiResult<Vec<Event>> {
    match db {
        Db::Sqlite(c) => sqlite::events_after(c, position, limit),
        Db::Pg(c) => pg::events_after(c, position, limit),
    }
}

pub fn events_after_in(
    db: Db<'_>,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<Vec<Event>> {
    match db {
        Db::Sqlite(c) => sqlite::events_after_in(c, position, limit, scope),
        Db::Pg(c) => pg::events_after_in(c, position, limit, scope),
    }
}

/// [`events_after_in`] as a page: how far the read went, too (see
/// `store::events::LogPage`).
pub fn page_after_in(
    db: Db<'_>,
    position: i64,
    limit: i64,
    scope: &LogScope,
) -> ApiResult<LogPage> {
    match db {
        Db::Sqlite(c) => sqlite::page_after_in(c, position, limit, scope),
        Db::Pg(c) => pg::page_after_in(c, position, limit, scope),
    }
}

pub fn save_cursor(db: Db<'_>, consumer: &str, position: i64) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::save_cursor(c, consumer, position),
        Db::Pg(c) => pg::save_cursor(c, consumer, position),
    }
}

pub fn cursor(db: Db<'_>, consumer: &str) -> ApiResult<Option<i64>> {
    match db {
        Db::Sqlite(c) => sqlite::cursor(c, consumer),
        Db::Pg(c) => pg::cursor(c, consumer),
    }
}

pub fn drop_cursor(db: Db<'_>, consumer: &str) -> ApiResult<()> {
    match db {
        Db::Sqlite(c) => sqlite::drop_cursor(c, consumer),
        Db::Pg(c) => pg::drop_cursor(c, consumer),
    }
}
