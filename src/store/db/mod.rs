//! The store's backend-neutral face: what the layers above call. Each
//! function here has the name and arguments of the SQLite one in `store`
//! and dispatches to it, or to its PostgreSQL twin in `store::pg`. A read
//! gets a [`Db`] (a connection of either backend), a write a [`Tx`] (the
//! write's connection, and where its events go).

pub mod accounts;
pub mod admin;
pub mod events;
pub mod generation;
pub mod messages;
pub mod threads;
pub mod turn;
pub mod webhooks;

use std::sync::Arc;

use rusqlite::Connection;

use super::accounts::{Account, AgentRef};
use super::model::ThreadRecord;
use super::pg::{PgConn, PgCtx};
use super::WriteCtx;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// A connection of either backend, for reads (and inside a write, `Tx::conn`).
#[derive(Clone, Copy)]
pub enum Db<'a> {
    Sqlite(&'a Connection),
    Pg(&'a PgConn),
}

/// A write in progress: its connection, and what gathers its events.
pub struct Tx<'a, 'c> {
    pub conn: Db<'a>,
    inner: Inner<'a, 'c>,
}

enum Inner<'a, 'c> {
    Sqlite(&'a mut WriteCtx<'c>),
    Pg(&'a PgConn, &'a mut PgCtx),
}

impl<'a, 'c: 'a> Tx<'a, 'c> {
    pub(super) fn sqlite(ctx: &'a mut WriteCtx<'c>) -> Tx<'a, 'c> {
        Tx {
            conn: Db::Sqlite(ctx.conn),
            inner: Inner::Sqlite(ctx),
        }
    }

    pub(super) fn pg(conn: &'a PgConn, ctx: &'a mut PgCtx) -> Tx<'a, 'c> {
        Tx {
            conn: Db::Pg(conn),
            inner: Inner::Pg(conn, ctx),
        }
    }

    /// The account of a live login key. On SQLite from the writer's cache
    /// (forgotten when another process commits); on PostgreSQL read in the
    /// write's transaction (once for a batch of the node's writer), so a key
    /// revoked through any node is refused by every node at once.
    pub fn account(&mut self, key_hash: &[u8; 32]) -> ApiResult<Option<Account>> {
        match &mut self.inner {
            Inner::Sqlite(ctx) => ctx.identities.account(ctx.conn, key_hash),
            Inner::Pg(c, ctx) => ctx.known.account(c, key_hash),
        }
    }

    /// The agent with this AID (cached by the SQLite writer; looked up once
    /// a batch by PostgreSQL's).
    pub fn agent(&mut self, aid: &Aid) -> ApiResult<Option<AgentRef>> {
        match &mut self.inner {
            Inner::Sqlite(ctx) => ctx.identities.agent(ctx.conn, aid),
            Inner::Pg(c, ctx) => ctx.known.agent(c, aid),
        }
    }

    /// The thread with this id; only its identity is current (cached by
    /// the SQLite writer).
    pub fn thread(&mut self, id: ThreadId) -> ApiResult<Option<Arc<ThreadRecord>>> {
        match &mut self.inner {
            Inner::Sqlite(ctx) => ctx.identities.thread(ctx.conn, id),
            Inner::Pg(c, ctx) => ctx.known.thread(c, id),
        }
    }
}

/// What a dispatcher matches on: the write's context for either backend.
pub(crate) enum Ctx<'x, 'c> {
    Sqlite(&'x mut WriteCtx<'c>),
    Pg(&'x PgConn, &'x mut PgCtx),
}

impl<'a, 'c> Tx<'a, 'c> {
    pub(crate) fn ctx(&mut self) -> Ctx<'_, 'c> {
        match &mut self.inner {
            Inner::Sqlite(ctx) => Ctx::Sqlite(ctx),
            Inner::Pg(conn, ctx) => Ctx::Pg(conn, ctx),
        }
    }
}
