//! The writer's cache of what never changes once stored: an agent's row id,
//! account, AID and name, and a thread's kind and participants. Hot writes
//! (posting a message) take these from memory instead of two join queries;
//! whatever can change (a thread's status, a key's revocation) is still read
//! from the database in the write itself.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use super::accounts::{self, AgentRef};
use super::model::ThreadRecord;
use super::threads;
use crate::domain::{Aid, ThreadId};
use crate::error::ApiResult;

/// Entries kept per map before it is emptied (a crude bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// Agents by AID and threads by id. Only the writer thread holds one.
#[derive(Default)]
pub struct Identities {
    agents: HashMap<String, AgentRef>,
    threads: HashMap<ThreadId, Arc<ThreadRecord>>,
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
        let found = threads::by_id(conn, id)?.map(Arc::new);
        if let Some(t) = &found {
            if self.threads.len() >= MAX_ENTRIES {
                self.threads.clear();
            }
            self.threads.insert(id, t.clone());
        }
        Ok(found)
    }

    /// Forgets everything (after a batch that did not commit).
    pub fn clear(&mut self) {
        self.agents.clear();
        self.threads.clear();
    }
}
