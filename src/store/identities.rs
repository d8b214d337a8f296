//! The writer's cache of what never changes once stored: an agent's row id,
//! account, AID and name, and a thread's kind and participants. Hot writes
//! (posting a message) take these from memory instead of two join queries;
//! a thread's status is still read in the write itself.
//!
//! It also caches which account a login key belongs to. A key changes only
//! when it is revoked, which only the command line does, from another
//! process; the writer checks `PRAGMA data_version` (which moves when another
//! connection commits) before each batch and forgets every key when it has.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use super::accounts::{self, Account, AgentRef};
use super::lookup;
use super::model::ThreadRecord;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// Entries kept per map before it is emptied (a crude bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// Agents by AID and threads by id. Only the writer thread holds one.
#[derive(Default)]
pub struct Identities {
    agents: HashMap<String, AgentRef>,
    threads: HashMap<ThreadId, Arc<ThreadRecord>>,
    accounts: HashMap<[u8; 32], Account>,
    data_version: Option<i64>,
}

impl Identities {
    /// The agent with this AID, if it exists.
    pub fn agent(&mut self, conn: &Connection, aid: &Aid) -> ApiResult<Option<AgentRef>> {
        if let Some(a) = self.agents.get(aid.as_str()) {
            return Ok(Some(a.clone()));
        }
        let found = accounts::agent_by_aid(conn, aid)?;
        if let Some(a) = &found {
            if self.agents.len() >= MAX_ENTRIES {
                self.agents.clear();
            }
            self.agents.insert(a.aid.clone(), a.clone());
        }
        Ok(found)
    }

    /// The thread with this id, if it exists. Only its identity (row id,
    /// kind, owner, participants, id) is current: its `view` (status,
    /// counts, times) is as of when it was first looked up.
    pub fn thread(
        &mut self,
        conn: &Connection,
        id: ThreadId,
    ) -> ApiResult<Option<Arc<ThreadRecord>>> {
        if let Some(t) = self.threads.get(&id) {
            return Ok(Some(t.clone()));
        }
        let found = lookup::by_id(conn, id)?.map(Arc::new);
        if let Some(t) = &found {
            if self.threads.len() >= MAX_ENTRIES {
                self.threads.clear();
            }
            self.threads.insert(id, t.clone());
        }
        Ok(found)
    }

    /// The account of a live login key (by its SHA-256), if any.
    pub fn account(
        &mut self,
        conn: &Connection,
        key_hash: &[u8; 32],
    ) -> ApiResult<Option<Account>> {
        if let Some(a) = self.accounts.get(key_hash) {
            return Ok(Some(a.clone()));
        }
        let found = accounts::authenticate(conn, key_hash)?;
        if let Some(a) = &found {
            if self.accounts.len() >= MAX_ENTRIES {
                self.accounts.clear();
            }
            self.accounts.insert(*key_hash, a.clone());
        }
        Ok(found)
    }

    /// Called before each batch: if another connection (another process)
    /// has committed since the last batch, a key may have been revoked, an
    /// agent renamed or a thread deleted, so everything cached is forgotten.
    /// Returns whether another connection may have committed since the
    /// last check (then the writer also looks for events it logged).
    pub fn check_outside_changes(&mut self, conn: &Connection) -> bool {
        match super::data_version(conn) {
            Ok(v) if self.data_version == Some(v) => false,
            Ok(v) => {
                // The admin commands also rename agents and delete threads.
                self.agents.clear();
                self.threads.clear();
                self.accounts.clear();
                self.data_version = Some(v);
                true
            }
            Err(e) => {
                log::warn!("cannot read data_version, not caching keys: {e}");
                self.accounts.clear();
                self.data_version = None;
                true
            }
        }
    }

    /// Forgets everything (after a batch that did not commit).
    pub fn clear(&mut self) {
        self.agents.clear();
        self.threads.clear();
        self.accounts.clear();
        self.data_version = None;
    }
}
