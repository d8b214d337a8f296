//! Posts held back by the writer's connection and stored together.
//!
//! A node's writer runs its batch's posts one after the other while every
//! node waits for `log_head`, so one statement a post was one round trip
//! (and one statement's fixed cost in PostgreSQL) a post, for the whole
//! cluster. On the writer's connection a post is not sent at once: its seq
//! comes from the thread's row, read and locked (`FOR UPDATE`) once a batch
//! and then counted here; its row id from the messages' sequence, reserved
//! in blocks. The posts wait in [`Deferred`] until the connection runs any
//! other statement (which then sees them), or the batch commits: then one
//! statement inserts them all and moves each thread's `last_seq`. At the
//! commit that statement is the head of the event append's own
//! ([`store_posts!`], `PgConn::one_storing_held`): one round trip for both.
//!
//! What another statement may have changed (a status, a seq) is forgotten
//! when a statement that writes runs, and read again by the next post.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, Statement};

/// The common table expressions that store held-back posts and move their
/// threads' `last_seq`, parameters `$1`–`$14` ([`Columns::params`]): the
/// start of a statement's `WITH`, which may go on with statements of its
/// own numbered from `$15`.
macro_rules! store_posts {
    () => {
        "m AS (
             INSERT INTO messages (id, uuid, thread_id, seq, sender_agent_id, sender, content,
                                   msg_type, metadata, created_at, json)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[],
                                  $5::bigint[], $6::text[], $7::text[], $8::text[],
                                  $9::text[], $10::text[], $11::text[])
         ), t AS (
             UPDATE threads SET last_seq = u.seq, last_message_at = u.at, activity_at = u.at,
                                updated_at = u.at
             FROM unnest($12::bigint[], $13::bigint[], $14::text[]) AS u(id, seq, at)
             WHERE threads.id = u.id
         )"
    };
}
pub(crate) use store_posts;

/// Message row ids reserved from the sequence at once.
const RESERVE: i64 = 256;

/// A post not yet sent.
pub struct Post {
    pub id: i64,
    pub uuid: String,
    pub thread_id: i64,
    pub seq: i64,
    pub sender_agent_id: Option<i64>,
    pub sender: String,
    pub content: String,
    pub msg_type: &'static str,
    pub metadata: String,
    pub created_at: String,
    pub json: String,
}

/// A thread as this batch's posts see it: its row locked, its seq counted.
#[derive(Debug, Clone)]
pub struct ThreadState {
    pub last_seq: i64,
    pub status: String,
}

/// The writer connection's held-back posts.
#[derive(Default)]
pub struct Deferred {
    pub posts: Vec<Post>,
    /// Threads whose row this transaction has locked, with their seq
    /// counting the held-back posts.
    pub threads: HashMap<i64, ThreadState>,
    /// Message row ids taken from the sequence and not used yet
    /// (sequence values outlive a rollback, so they stay good).
    ids: Vec<i64>,
    /// [`Deferred::flush`]'s statement, once prepared.
    flush: Option<Statement>,
}

impl Deferred {
    /// A message row id.
    pub fn next_id(&mut self, client: &mut Client) -> Result<i64, postgres::Error> {
        if self.ids.is_empty() {
            let rows = client.query(
                "SELECT nextval(pg_get_serial_sequence('messages', 'id'))
                 FROM generate_series(1, $1::bigint)",
                &[&RESERVE],
            )?;
            for r in rows.iter().rev() {
                self.ids.push(r.try_get(0)?);
            }
        }
        Ok(self
            .ids
            .pop()
            .expect("expect: a block of ids was reserved above"))
    }

    /// Sends the held-back posts in one statement (prepared once per
    /// connection: parsing and planning it every batch cost a round trip
    /// and PostgreSQL's CPU).
    pub fn flush(&mut self, client: &mut Client) -> Result<(), postgres::Error> {
        if self.posts.is_empty() {
            return Ok(());
        }
        let posts = std::mem::take(&mut self.posts);
        let statement = match &self.flush {
            Some(s) => s.clone(),
            None => {
                let s = client.prepare(concat!("WITH ", store_posts!(), " SELECT 0"))?;
                self.flush = Some(s.clone());
                s
            }
        };
        let columns = Columns::new(&posts);
        client.execute(&statement, &columns.params())?;
        Ok(())
    }

    /// Takes the held-back posts, to be stored by a statement that starts
    /// with [`store_posts!`] (and forgets the thread states, as any
    /// statement that writes does).
    pub fn take(&mut self) -> Vec<Post> {
        self.threads.clear();
        std::mem::take(&mut self.posts)
    }
}

/// Held-back posts as the columns [`store_posts!`] takes.
pub struct Columns<'p> {
    ids: Vec<i64>,
    uuids: Vec<&'p str>,
    threads: Vec<i64>,
    seqs: Vec<i64>,
    agents: Vec<Option<i64>>,
    senders: Vec<&'p str>,
    contents: Vec<&'p str>,
    types: Vec<&'p str>,
    metadata: Vec<&'p str>,
    times: Vec<&'p str>,
    jsons: Vec<&'p str>,
    /// Each thread's last seq and time.
    t_ids: Vec<i64>,
    t_seqs: Vec<i64>,
    t_times: Vec<&'p str>,
}

impl<'p> Columns<'p> {
    pub fn new(posts: &'p [Post]) -> Columns<'p> {
        let n = posts.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            uuids: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            agents: Vec::with_capacity(n),
            senders: Vec::with_capacity(n),
            contents: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            jsons: Vec::with_capacity(n),
            t_ids: Vec::new(),
            t_seqs: Vec::new(),
            t_times: Vec::new(),
        };
        // Each thread's last seq and time (posts are in seq order).
        let mut last: HashMap<i64, (i64, &str)> = HashMap::new();
        for p in posts {
            c.ids.push(p.id);
            c.uuids.push(p.uuid.as_str());
            c.threads.push(p.thread_id);
            c.seqs.push(p.seq);
            c.agents.push(p.sender_agent_id);
            c.senders.push(p.sender.as_str());
            c.contents.push(p.content.as_str());
            c.types.push(p.msg_type);
            c.metadata.push(p.metadata.as_str());
            c.times.push(p.created_at.as_str());
            c.jsons.push(p.json.as_str());
            last.insert(p.thread_id, (p.seq, p.created_at.as_str()));
        }
        for (id, (seq, at)) in last {
            c.t_ids.push(id);
            c.t_seqs.push(seq);
            c.t_times.push(at);
        }
        c
    }

    /// `$1`–`$14` of [`store_posts!`].
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.uuids,
            &self.threads,
            &self.seqs,
            &self.agents,
            &self.senders,
            &self.contents,
            &self.types,
            &self.metadata,
            &self.times,
            &self.jsons,
            &self.t_ids,
            &self.t_seqs,
            &self.t_times,
        ]
    }
}
