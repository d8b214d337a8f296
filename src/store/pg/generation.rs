//! The database's generation on PostgreSQL (mirrors `store::generation`).
//! There is no `threadline backup` here: a restore (`pg_restore`, a
//! point-in-time recovery) is followed by `threadline mark-restored`.

use super::conn::{get, PgConn};
use crate::error::ApiResult;
use crate::store::generation::new_id;

pub fn settle(c: &PgConn) -> ApiResult<(String, bool)> {
    let given = c.exec(
        "INSERT INTO generation (only_row, id, created_at) VALUES (1, $1, $2)
         ON CONFLICT (only_row) DO NOTHING",
        &[&new_id(), &crate::domain::now()],
    )? == 1;
    let id = get(&c.one("SELECT id FROM generation", &[])?, 0)?;
    Ok((id, given))
}

pub fn renew(c: &PgConn) -> ApiResult<(Option<String>, String)> {
    let was = c
        .opt("SELECT id FROM generation", &[])?
        .map(|r| get(&r, 0))
        .transpose()?;
    let id = new_id();
    c.exec(
        "INSERT INTO generation (only_row, id, created_at) VALUES (1, $1, $2)
         ON CONFLICT (only_row) DO UPDATE SET id = excluded.id, created_at = excluded.created_at",
        &[&id, &crate::domain::now()],
    )?;
    Ok((was, id))
}
