//! The pooled read connections, each with a memory of the reader lookups
//! it made (`threads::reader_view`: a key's account, an agent, a thread and
//! a read mark), so a page read again and again costs one short statement
//! instead of the lookup's joins.
//!
//! What a connection remembers is exactly what the lookup would find again,
//! for as long as nobody has committed: each remembered lookup is tagged
//! with the connection's `PRAGMA data_version` read before it ran, and a
//! read first reads that version again. SQLite moves it whenever another
//! connection (this server's writer, or another process: `threadline key
//! revoke`, `thread delete`, …) has committed since; then everything the
//! connection remembers is forgotten and looked up afresh. A read
//! connection never writes itself (`query_only`), so an unmoved version
//! means an unchanged database: a revoked key is refused from the very
//! next request, as without the memory. Any write (a post included)
//! empties every connection's memory, so it pays off when reads repeat
//! between writes, and costs one statement per read otherwise.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::accounts::Account;
use super::model::ReaderView;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// Lookups one connection remembers before it starts over (a bound on
/// memory: a few MiB over the pool).
const MAX_REMEMBERED: usize = 1024;

/// What a reader lookup found: the key's account and the rest.
pub type Found = Arc<(Account, ReaderView)>;

/// A pooled read connection and what it remembers.
pub struct Reader {
    conn: Connection,
    remembered: RefCell<Remembered>,
}

impl Deref for Reader {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

#[derive(Default)]
struct Remembered {
    /// The `data_version` the lookups below were made at.
    data_version: Option<i64>,
    /// By key and thread: the AID asked for, and what was found.
    lookups: HashMap<([u8; 32], ThreadId), Lookup>,
}

/// The AID a lookup asked for, and what it found.
type Lookup = (Option<String>, Option<Found>);

impl Reader {
    /// [`super::lookup::reader_view`] (`None`: the key is unknown or
    /// revoked), from memory when nothing was committed since it ran.
    pub fn reader_view(
        &self,
        key_hash: &[u8; 32],
        aid: Option<&Aid>,
        id: ThreadId,
    ) -> ApiResult<Option<Found>> {
        let version = super::data_version(&self.conn)?;
        let mut remembered = self.remembered.borrow_mut();
        if remembered.data_version != Some(version) {
            remembered.lookups.clear();
            remembered.data_version = Some(version);
        }
        let asked = aid.map(Aid::as_str);
        if let Some((for_aid, found)) = remembered.lookups.get(&(*key_hash, id)) {
            if for_aid.as_deref() == asked {
                return Ok(found.clone());
            }
        }
        // Looked up after the version was read: if anything commits in
        // between, the next read sees the version move and looks again.
        let found = super::lookup::reader_view(&self.conn, key_hash, aid, id)?.map(Arc::new);
        if remembered.lookups.len() >= MAX_REMEMBERED {
            remembered.lookups.clear();
        }
        remembered
            .lookups
            .insert((*key_hash, id), (asked.map(str::to_owned), found.clone()));
        Ok(found)
    }
}

/// Opens [`Reader`]s for the pool: SQLite connections as
/// [`SqliteConnectionManager`] opens them, each with an empty memory.
pub struct ReaderManager(pub SqliteConnectionManager);

impl r2d2::ManageConnection for ReaderManager {
    type Connection = Reader;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Reader, rusqlite::Error> {
        Ok(Reader {
            conn: self.0.connect()?,
            remembered: RefCell::default(),
        })
    }

    fn is_valid(&self, reader: &mut Reader) -> Result<(), rusqlite::Error> {
        self.0.is_valid(&mut reader.conn)
    }

    fn has_broken(&self, reader: &mut Reader) -> bool {
        self.0.has_broken(&mut reader.conn)
    }
}
