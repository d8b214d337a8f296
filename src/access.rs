//! Who may act as which agent and see or write which thread. One place for
//! the rules that every route applies, reads and writes alike (HTTP
//! handlers, the closures they hand the writer, the realtime connect path):
//! - a key acts only as agents its account owns (else 403);
//! - an ACSP thread is visible to its two participants (else 404, never
//!   revealing that it exists); a turn-taking thread to the account that
//!   opened it;
//! - only an active thread takes messages (else 409 THREAD_NOT_ACTIVE).
//!
//! It sits above the store and below http and realtime. The store checks a
//! thread's status itself inside the statement that takes the next seq (no
//! race with a status change), answering with the same named error from
//! `error.rs`.

use std::sync::Arc;

use crate::domain::{Aid, ThreadId, ThreadStatus};
use crate::error::{ApiError, ApiResult};
use crate::store::db::accounts::{self, AgentRef};
use crate::store::db::threads;
use crate::store::model::{ReaderView, ThreadKind, ThreadRecord};
use crate::store::{Db, Tx};

/// The agent `aid`, if the account owns it; 403 on `aid` otherwise (also
/// when no such agent exists: the caller learns nothing about other
/// accounts' agents).
pub fn acting_agent(conn: Db<'_>, account_id: i64, aid: &Aid) -> ApiResult<AgentRef> {
    owned(accounts::agent_by_aid(conn, aid)?, account_id, aid)
}

/// [`acting_agent`], from the writer's cache of identities.
pub fn acting_agent_in(ctx: &mut Tx<'_, '_>, account_id: i64, aid: &Aid) -> ApiResult<AgentRef> {
    owned(ctx.agent(aid)?, account_id, aid)
}

fn owned(agent: Option<AgentRef>, account_id: i64, aid: &Aid) -> ApiResult<AgentRef> {
    match agent {
        Some(agent) if agent.account_id == account_id => Ok(agent),
        // Whether it came in the body or the query, the input is `aid`.
        _ => Err(ApiError::Forbidden(format!(
            "this key's account does not own agent {}",
            aid.as_str()
        ))
        .on_field("aid")),
    }
}

/// The agent to act as when `aid` may be omitted: the given one, or the
/// account's only agent (422 on `aid` when it has none or several).
pub fn acting_or_only_agent(
    conn: Db<'_>,
    account_id: i64,
    aid: Option<&Aid>,
) -> ApiResult<AgentRef> {
    if let Some(aid) = aid {
        return acting_agent(conn, account_id, aid);
    }
    let mut agents = accounts::agents_of_account(conn, account_id, 2)?;
    if agents.len() == 1 {
        return Ok(agents.remove(0));
    }
    Err(ApiError::field(
        "aid",
        if agents.is_empty() {
            "aid is required: this account has no agent"
        } else {
            "aid is required: this account has several agents"
        },
    ))
}

/// An ACSP thread the agent takes part in; 404 for anything else.
pub fn thread_for_agent(conn: Db<'_>, agent: &AgentRef, id: ThreadId) -> ApiResult<ThreadRecord> {
    taking_part(threads::by_id(conn, id)?, agent)
}

/// [`thread_for_agent`], from the writer's cache of identities: only the
/// thread's identity is current, not its view (status, counts).
pub fn thread_identity_for_agent(
    ctx: &mut Tx<'_, '_>,
    agent: &AgentRef,
    id: ThreadId,
) -> ApiResult<Arc<ThreadRecord>> {
    taking_part(ctx.thread(id)?, agent)
}

fn taking_part<T: std::borrow::Borrow<ThreadRecord>>(
    thread: Option<T>,
    agent: &AgentRef,
) -> ApiResult<T> {
    match thread {
        Some(t) if t.borrow().kind == ThreadKind::Acsp && takes_part(t.borrow(), agent.id) => Ok(t),
        // The agent's own account opened it and reads it: "not found"
        // would contradict that read, so say why it is not for this route
        // (as the turn-taking actions do for an ACSP thread).
        Some(t)
            if t.borrow().kind == ThreadKind::Turn
                && t.borrow().owner_account_id == agent.account_id =>
        {
            Err(ApiError::field(
                "thread_id",
                "thread_id is a turn-taking thread (it has no agents): ACSP routes do not \
                 act on it; post its messages with POST /v1/turn-taking/actions/submit_messages",
            ))
        }
        _ => Err(ApiError::thread_not_found()),
    }
}

/// Whether an account may see this thread: it owns one of the two agents,
/// or (turn-taking) it opened the thread.
pub fn visible_to_account(thread: &ThreadRecord, account_id: i64) -> bool {
    match &thread.participants {
        Some((a, b)) => a.account_id == account_id || b.account_id == account_id,
        None => thread.owner_account_id == account_id,
    }
}

/// Whether the agent takes part in this (ACSP) thread.
pub fn takes_part(thread: &ThreadRecord, agent_id: i64) -> bool {
    thread
        .participants
        .as_ref()
        .is_some_and(|(a, b)| a.agent_id == agent_id || b.agent_id == agent_id)
}

/// The agent reads this thread as one of its participants; 404 otherwise.
pub fn reader_takes_part(thread: &ThreadRecord, agent: &AgentRef) -> ApiResult<()> {
    if takes_part(thread, agent.id) {
        Ok(())
    } else {
        Err(ApiError::thread_not_found())
    }
}

/// A thread as one of its readers may read it: the thread, the agent
/// reading (none for a turn-taking thread, read by its account) and that
/// agent's read mark, when the lookup brought it along.
pub struct Reading<'a> {
    pub thread: &'a ThreadRecord,
    pub reader: Option<AgentRef>,
    pub read_mark: Option<i64>,
}

/// The rules of a read, applied to what [`threads::reader_view`] found for
/// the account: 403 for an `aid` the account does not own, 404 for a thread
/// it may not see, then the reader (the given agent, or the account's only
/// one) must take part in an ACSP thread (404). The same answers, in the
/// same order, as [`acting_agent`], [`thread_for_account`],
/// [`acting_or_only_agent`] and [`reader_takes_part`].
pub fn reading<'a>(
    conn: Db<'_>,
    account_id: i64,
    aid: Option<&Aid>,
    found: &'a ReaderView,
) -> ApiResult<Reading<'a>> {
    let explicit = aid
        .map(|a| owned(found.agent.clone(), account_id, a))
        .transpose()?;
    let thread = match &found.thread {
        Some(t) if visible_to_account(t, account_id) => t,
        _ => return Err(ApiError::thread_not_found()),
    };
    let (reader, read_mark) = match (thread.kind, explicit) {
        (ThreadKind::Turn, _) => (None, None),
        (ThreadKind::Acsp, Some(agent)) => (Some(agent), Some(found.read_mark)),
        (ThreadKind::Acsp, None) => (Some(acting_or_only_agent(conn, account_id, None)?), None),
    };
    if let Some(agent) = &reader {
        reader_takes_part(thread, agent)?;
    }
    Ok(Reading {
        thread,
        reader,
        read_mark,
    })
}

/// A thread these actions may act on: a turn-taking one. Their senders are
/// free-form names, while an ACSP thread's messages carry the identity of one
/// of its two agents; writing there would let a key post under the other
/// agent's name. ACSP threads take messages through `thread/message`.
pub fn turn_taking(thread: ThreadRecord) -> ApiResult<ThreadRecord> {
    match thread.kind {
        ThreadKind::Turn => Ok(thread),
        ThreadKind::Acsp => Err(ApiError::field(
            "thread_id",
            "thread_id is an ACSP thread (between two agents): the turn-taking routes do not \
             act on it; read it with GET /api/acsp/thread/{id} and post its messages with \
             POST /api/acsp/thread/message",
        )),
    }
}

/// The thread, if it takes messages: 409 THREAD_NOT_ACTIVE otherwise.
pub fn active(thread: ThreadRecord) -> ApiResult<ThreadRecord> {
    if thread.view.status == ThreadStatus::Active.as_str() {
        Ok(thread)
    } else {
        Err(ApiError::thread_not_active(thread.view.status))
    }
}

/// A thread of either kind the account can see; 404 for anything else.
pub fn thread_for_account(conn: Db<'_>, account_id: i64, id: ThreadId) -> ApiResult<ThreadRecord> {
    match threads::by_id(conn, id)? {
        Some(t) if visible_to_account(&t, account_id) => Ok(t),
        _ => Err(ApiError::thread_not_found()),
    }
}
