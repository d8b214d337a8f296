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
//! statement inserts them all and moves each thread's `last_seq`.
//!
//! What another statement may have changed (a status, a seq) is forgotten
//! when a statement that writes runs, and read again by the next post.

use std::collections::HashMap;

use postgres::Client;

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

    /// Sends the held-back posts in one statement; returns the rows written.
    pub fn flush(&mut self, client: &mut Client) -> Result<u64, postgres::Error> {
        if self.posts.is_empty() {
            return Ok(0);
        }
        let posts = std::mem::take(&mut self.posts);
        let n = posts.len();
        let mut ids = Vec::with_capacity(n);
        let mut uuids = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        let mut contents = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut jsons = Vec::with_capacity(n);
        // Each thread's last seq and time (posts are in seq order).
        let mut last: HashMap<i64, (i64, &str)> = HashMap::new();
        for p in &posts {
            ids.push(p.id);
            uuids.push(p.uuid.as_str());
            threads.push(p.thread_id);
            seqs.push(p.seq);
            agents.push(p.sender_agent_id);
            senders.push(p.sender.as_str());
            contents.push(p.content.as_str());
            types.push(p.msg_type);
            metadata.push(p.metadata.as_str());
            times.push(p.created_at.as_str());
            jsons.push(p.json.as_str());
            last.insert(p.thread_id, (p.seq, p.created_at.as_str()));
        }
        let (t_ids, (t_seqs, t_times)): (Vec<i64>, (Vec<i64>, Vec<&str>)) =
            last.into_iter().unzip();
        let row = client.query_one(
            "WITH m AS (
                 INSERT INTO messages (id, uuid, thread_id, seq, sender_agent_id, sender, content,
                                       msg_type, metadata, created_at, json)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[],
                                      $5::bigint[], $6::text[], $7::text[], $8::text[],
                                      $9::text[], $10::text[], $11::text[])
                 RETURNING 1
             ), t AS (
                 UPDATE threads SET last_seq = u.seq, last_message_at = u.at, activity_at = u.at,
                                    updated_at = u.at
                 FROM unnest($12::bigint[], $13::bigint[], $14::text[]) AS u(id, seq, at)
                 WHERE threads.id = u.id
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM m) + (SELECT count(*) FROM t)",
            &[
                &ids, &uuids, &threads, &seqs, &agents, &senders, &contents, &types, &metadata,
                &times, &jsons, &t_ids, &t_seqs, &t_times,
            ],
        )?;
        let written: i64 = row.try_get(0)?;
        Ok(written.max(0) as u64)
    }
}
