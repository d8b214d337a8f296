//! Turn-taking state on PostgreSQL (mirrors `store::turn`). A due part is
//! delivered by exactly one node: [`deliver_due`] claims parts with
//! `FOR UPDATE SKIP LOCKED`, so a second node skips the rows the first holds
//! and, once those commit, no longer sees them as pending. (Today two
//! nodes' rounds never overlap: every writer batch takes the `log_head`
//! lock at its BEGIN. What SKIP LOCKED skips is a row locked outside a
//! round.) And a thread's parts go out in order even then: a node delivers
//! only the parts it claimed that follow, with none missing, from the
//! thread's first pending part ([`in_order`]).

use std::collections::HashMap;

use super::conn::{get, PgConn};
use super::threads::{by_row_id, insert_quietly, post};
use super::PgCtx;
use crate::domain::{self, BatchTiming, Metadata, MsgType};
use crate::error::{ApiError, ApiResult};
use crate::events::{Kind, ReplyPart};
use crate::store::messages::Sender;
use crate::store::model::ThreadRecord;
use crate::store::turn::{
    check_room, delivered_event, is_store_fault, log_failure, part_event, retry_pause_ms, typing,
    Delivery, Failed, GivenUp, Inbound, PartView, Respond, Scheduled, Submitted, TurnPage,
    TurnView, AGENT_SENDER, MAX_ATTEMPTS, PARTS_PER_TURN,
};
use crate::store::writer::Refs;

fn log_part(
    ctx: &mut PgCtx,
    thread: &ThreadRecord,
    kind: Kind,
    seq: i64,
    refs: Refs,
    part: &ReplyPart<'_>,
) {
    ctx.log(part_event(thread, kind, seq, part), refs);
}

fn last_seq(c: &PgConn, thread_row: i64) -> ApiResult<i64> {
    get(
        &c.one("SELECT last_seq FROM threads WHERE id = $1", &[&thread_row])?,
        0,
    )
}

pub fn submit(
    c: &PgConn,
    ctx: &mut PgCtx,
    thread: &ThreadRecord,
    batch: &[Inbound],
    now_ms: i64,
) -> ApiResult<Submitted> {
    let row = c.one(
        "UPDATE threads SET turn_epoch = turn_epoch + 1 WHERE id = $1
         RETURNING turn_epoch, last_batch_ms",
        &[&thread.row_id],
    )?;
    let (epoch, previous_batch_ms): (i64, Option<i64>) = (get(&row, 0)?, get(&row, 1)?);
    let mut cancelled = c.all(
        "UPDATE scheduled_replies SET state = 'cancelled'
         WHERE thread_id = $1 AND state = 'pending' AND turn_epoch < $2
         RETURNING id, uuid, idx, count, content, turn_epoch, deliver_at",
        &[&thread.row_id, &epoch],
    )?;
    if !cancelled.is_empty() {
        cancelled.sort_by_key(|r| r.get::<_, i64>(0));
        let seq = last_seq(c, thread.row_id)?;
        for r in &cancelled {
            let (uuid, content, deliver_at): (String, String, String) =
                (get(r, 1)?, get(r, 4)?, get(r, 6)?);
            let part = ReplyPart {
                id: &uuid,
                index: get(r, 2)?,
                count: get(r, 3)?,
                content: &content,
                turn_epoch: get(r, 5)?,
                deliver_at: &deliver_at,
            };
            let refs = Refs {
                reply_row: Some(get(r, 0)?),
                ..Refs::thread(thread.row_id)
            };
            log_part(ctx, thread, Kind::ReplyCancelled, seq, refs, &part);
        }
        ctx.signal(typing(thread, seq, "stop", epoch - 1));
    }
    let empty = Metadata::parse("metadata", None)?;
    // Each sender's last time, read once for the batch (one statement, not
    // one a message): nothing writes them until the end of this job.
    let mut names: Vec<&str> = batch.iter().map(|m| m.sender.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut stored: HashMap<String, i64> = HashMap::with_capacity(names.len());
    for r in c.all(
        "SELECT sender, last_ms FROM turn_senders WHERE thread_id = $1 AND sender = ANY($2)",
        &[&thread.row_id, &names],
    )? {
        stored.insert(get(&r, 0)?, get(&r, 1)?);
    }
    let mut senders = Vec::with_capacity(batch.len());
    let mut seqs: Option<(i64, i64)> = None;
    for m in batch {
        let last = stored.get(&m.sender).copied();
        let before_batch = senders
            .iter()
            .zip(batch)
            .rev()
            .find(|(_, b): &(&(i64, Option<i64>), &Inbound)| b.sender == m.sender)
            .map(|((at, _), _)| *at);
        senders.push((m.at_ms, before_batch.or(last)));
        // Held back (`pg::deferred`): the batch's messages go in one
        // statement, as no statement runs between them.
        let posted = post(
            c,
            ctx,
            thread,
            Sender::Named(&m.sender),
            &m.content,
            MsgType::Text,
            &empty,
        )?;
        let seq = posted.message.seq;
        seqs = Some(seqs.map_or((seq, seq), |(first, _)| (first, seq)));
    }
    // As on SQLite (`store::turn::submit`): a last time after this batch's
    // receipt was stored from a stamp in the future, before such stamps
    // were timed as their receipt; it is replaced, not kept as the maximum.
    // SQLite applies that rule message by message; each sender's result is
    // worked out here from the time read above, the same rule applied in
    // the batch's order, and stored in one statement.
    let mut last_ms: Vec<(&str, i64)> = Vec::with_capacity(names.len());
    for m in batch {
        let at = m.at_ms;
        match last_ms.iter_mut().find(|(s, _)| *s == m.sender) {
            Some((_, last)) => *last = next_last_ms(*last, at, now_ms),
            None => {
                let last = stored.get(&m.sender).copied();
                last_ms.push((&m.sender, last.map_or(at, |l| next_last_ms(l, at, now_ms))));
            }
        }
    }
    let (who, when): (Vec<&str>, Vec<i64>) = last_ms.into_iter().unzip();
    c.exec(
        "INSERT INTO turn_senders (thread_id, sender, last_ms)
         SELECT $1, u.sender, u.last_ms FROM unnest($2::text[], $3::bigint[]) AS u(sender, last_ms)
         ON CONFLICT (thread_id, sender) DO UPDATE SET last_ms = excluded.last_ms",
        &[&thread.row_id, &who, &when],
    )?;
    let batch_ms = batch.iter().map(|m| m.at_ms).max().unwrap_or(now_ms);
    c.exec(
        "UPDATE threads SET last_batch_ms = $2 WHERE id = $1",
        &[&thread.row_id, &batch_ms],
    )?;
    let timing = BatchTiming {
        previous_batch_ms,
        batch_ms,
        size: batch.len(),
        senders,
    };
    let seqs = seqs.ok_or_else(|| ApiError::Internal("an empty turn-taking batch".into()))?;
    Ok(Submitted {
        epoch,
        timing,
        seqs,
    })
}

/// A sender's last time after a message of theirs at `at`, received at
/// `now`: it only moves forward, except from a time after `now` (stored
/// from a stamp in the future), which is replaced (SQLite's upsert in
/// `store::turn::submit`).
fn next_last_ms(last: i64, at: i64, now: i64) -> i64 {
    if last > now {
        at
    } else {
        last.max(at)
    }
}

pub fn record_decision(
    c: &PgConn,
    thread: &ThreadRecord,
    submitted: &Submitted,
    decision: &str,
    tags: &[&str],
) -> ApiResult<()> {
    let tags = serde_json::to_string(tags).expect("expect: a list of strings always serializes");
    c.exec(
        "INSERT INTO turn_decisions (thread_id, turn_epoch, decision, tags, first_seq,
                                     last_seq, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &thread.row_id,
            &submitted.epoch,
            &decision,
            &tags,
            &submitted.seqs.0,
            &submitted.seqs.1,
            &domain::now(),
        ],
    )?;
    Ok(())
}

pub fn turns_page(
    c: &PgConn,
    thread_row: i64,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<TurnView>, bool)> {
    let epochs: Vec<i64> = c
        .all(
            "SELECT turn_epoch FROM turn_decisions WHERE thread_id = $1 AND turn_epoch < $2
             UNION
             SELECT turn_epoch FROM scheduled_replies WHERE thread_id = $1 AND turn_epoch < $2
             ORDER BY turn_epoch DESC LIMIT $3",
            &[&thread_row, &before.unwrap_or(i64::MAX), &(limit + 1)],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<ApiResult<_>>()?;
    let mut page = TurnPage::new(epochs, limit);
    let Some((oldest, newest)) = page.range() else {
        return Ok(page.finish());
    };
    for r in &c.all(
        "SELECT turn_epoch, decision, tags, first_seq, last_seq, created_at FROM turn_decisions
         WHERE thread_id = $1 AND turn_epoch BETWEEN $2 AND $3",
        &[&thread_row, &oldest, &newest],
    )? {
        let tags: String = get(r, 2)?;
        page.decision(
            get(r, 0)?,
            get(r, 1)?,
            &tags,
            get(r, 3)?,
            get(r, 4)?,
            get(r, 5)?,
        )?;
    }
    for r in &c.all(
        "SELECT s.turn_epoch, s.uuid, s.idx, s.count, s.content, s.state, s.deliver_at, m.seq
         FROM (SELECT *, row_number() OVER (PARTITION BY turn_epoch ORDER BY id DESC) AS nth
               FROM scheduled_replies
               WHERE thread_id = $1 AND turn_epoch BETWEEN $2 AND $3) s
         LEFT JOIN messages m ON m.id = s.message_id
         WHERE s.nth <= $4
         ORDER BY s.id",
        &[&thread_row, &oldest, &newest, &PARTS_PER_TURN],
    )? {
        let state: String = get(r, 5)?;
        page.part(
            get(r, 0)?,
            &state,
            PartView {
                id: get(r, 1)?,
                index: get(r, 2)?,
                count: get(r, 3)?,
                content: get(r, 4)?,
                status: "",
                deliver_at: get(r, 6)?,
                seq: get(r, 7)?,
            },
        );
    }
    Ok(page.finish())
}

pub fn schedule(
    c: &PgConn,
    ctx: &mut PgCtx,
    thread: &ThreadRecord,
    epoch: i64,
    parts: &[String],
    offsets_ms: &[i64],
    now_ms: i64,
) -> ApiResult<Respond> {
    // The row lock orders this against a submit on another node.
    let current: i64 = get(
        &c.one(
            "SELECT turn_epoch FROM threads WHERE id = $1 FOR UPDATE",
            &[&thread.row_id],
        )?,
        0,
    )?;
    if epoch < current {
        return Ok(Respond::Superseded);
    }
    if epoch > current {
        return Err(ApiError::field(
            "turn_epoch",
            format!("turn_epoch {epoch} is ahead of the thread's current turn ({current})"),
        ));
    }
    let row = c.one(
        "SELECT max(deliver_at_ms), count(*) FROM scheduled_replies
         WHERE thread_id = $1 AND state = 'pending'",
        &[&thread.row_id],
    )?;
    let (pending_until, pending): (Option<i64>, i64) = (get(&row, 0)?, get(&row, 1)?);
    check_room(pending, parts.len())?;
    let typing_now = pending_until.is_none();
    let start = pending_until.map_or(now_ms, |p| p.max(now_ms));
    let count = parts.len() as i64;
    let seq = last_seq(c, thread.row_id)?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, (part, offset)) in parts.iter().zip(offsets_ms).enumerate() {
        let at_ms = start + offset;
        let deliver_at = domain::format_time(
            chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_else(chrono::Utc::now),
        );
        let id = domain::ids::new_message_id();
        let row = c.one(
            "INSERT INTO scheduled_replies (uuid, thread_id, turn_epoch, idx, count, content,
                                            deliver_at, deliver_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &id,
                &thread.row_id,
                &epoch,
                &(i as i64),
                &count,
                part,
                &deliver_at,
                &at_ms,
            ],
        )?;
        let logged = ReplyPart {
            id: &id,
            index: i as i64,
            count,
            content: part,
            turn_epoch: epoch,
            deliver_at: &deliver_at,
        };
        let refs = Refs {
            reply_row: Some(get(&row, 0)?),
            ..Refs::thread(thread.row_id)
        };
        log_part(ctx, thread, Kind::ReplyScheduled, seq, refs, &logged);
        out.push(Scheduled {
            id,
            index: i as i64,
            content: part.clone(),
            deliver_at,
        });
    }
    if typing_now {
        ctx.signal(typing(thread, seq, "start", epoch));
    }
    Ok(Respond::Scheduled(out))
}

pub fn next_due_ms(c: &PgConn) -> ApiResult<Option<i64>> {
    get(
        &c.one(
            "SELECT min(deliver_at_ms) FROM scheduled_replies WHERE state = 'pending'",
            &[],
        )?,
        0,
    )
}

pub fn typing_epoch(c: &PgConn, thread_row: i64) -> ApiResult<Option<i64>> {
    c.opt(
        "SELECT turn_epoch FROM scheduled_replies WHERE thread_id = $1 AND state = 'pending'
         ORDER BY id LIMIT 1",
        &[&thread_row],
    )?
    .map(|r| get(&r, 0))
    .transpose()
}

pub fn spoke_since(c: &PgConn, thread_row: i64, sender: &str, seq: i64) -> ApiResult<bool> {
    get(
        &c.one(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE thread_id = $1 AND seq > $3 AND sender = $2)",
            &[&thread_row, &sender, &seq],
        )?,
        0,
    )
}

pub fn failed_count(c: &PgConn) -> ApiResult<u64> {
    let n: i64 = get(
        &c.one(
            "SELECT count(*) FROM scheduled_replies WHERE state = 'failed'",
            &[],
        )?,
        0,
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub fn pending_count(c: &PgConn) -> ApiResult<u64> {
    let n: i64 = get(
        &c.one(
            "SELECT count(*) FROM scheduled_replies WHERE state = 'pending'",
            &[],
        )?,
        0,
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Delivers the due parts as `store::turn::deliver_due` does on SQLite:
/// each in a savepoint of its own, a failed one counted, tried again later
/// with its thread's later parts moved back as much, and given up after
/// `MAX_ATTEMPTS`.
pub fn deliver_due(
    c: &PgConn,
    ctx: &mut PgCtx,
    now_ms: i64,
    retry_base_ms: i64,
) -> ApiResult<Delivery> {
    // SKIP LOCKED: parts another node is delivering right now are left to it.
    let due = c.all(
        "SELECT id, thread_id, deliver_at_ms, failures, uuid, turn_epoch, idx, count, content,
                deliver_at
         FROM scheduled_replies WHERE state = 'pending' AND deliver_at_ms <= $1
         ORDER BY deliver_at_ms, id LIMIT 500
         FOR UPDATE SKIP LOCKED",
        &[&now_ms],
    )?;
    let due = in_order(c, due)?;
    let empty = Metadata::parse("metadata", None)?;
    let mut out = Delivery::default();
    // Threads with a part that failed this round: their later parts wait.
    let mut held = std::collections::HashSet::new();
    for d in &due {
        let (row_id, thread_row): (i64, i64) = (get(d, 0)?, get(d, 1)?);
        let (deliver_at_ms, failures): (i64, i64) = (get(d, 2)?, get(d, 3)?);
        if held.contains(&thread_row) {
            continue;
        }
        c.batch("SAVEPOINT part")?;
        let error = match deliver_part(c, ctx, d, &empty) {
            Ok(()) => {
                c.batch("RELEASE part")?;
                out.delivered += 1;
                continue;
            }
            Err(e) => e,
        };
        // What this part held back, and the thread's seq counted with it, go.
        c.forget_held();
        c.batch("ROLLBACK TO part")?;
        c.take_failed();
        if is_store_fault(&error) {
            c.batch("RELEASE part")?;
            out.store_fault = Some(error);
            break;
        }
        let outcome = match record_failure(
            c,
            row_id,
            thread_row,
            deliver_at_ms,
            failures,
            now_ms,
            retry_base_ms,
        ) {
            Ok(outcome) => outcome,
            Err(fault) => {
                c.batch("ROLLBACK TO part; RELEASE part")?;
                c.take_failed();
                log::debug!("a delivery failed ({error}), and so did recording it");
                out.store_fault = Some(fault);
                break;
            }
        };
        c.batch("RELEASE part")?;
        held.insert(thread_row);
        out.failed_attempts += 1;
        let thread = by_row_id(c, thread_row).ok().flatten();
        let thread_name = thread
            .as_ref()
            .map_or_else(|| format!("(row {thread_row})"), |t| t.view.id.clone());
        let part_name = get::<String>(d, 4).unwrap_or_else(|_| format!("(row {row_id})"));
        log_failure(&part_name, &thread_name, failures + 1, &outcome, &error);
        if matches!(outcome, Failed::GaveUp) {
            out.given_up += 1;
            if let Some(thread) = &thread {
                let more = pending_in(c, thread_row).ok();
                if let Ok(seq) = last_seq(c, thread_row) {
                    let uuid = get::<String>(d, 4).ok();
                    let failed = GivenUp {
                        row_id,
                        uuid: uuid.as_deref(),
                        epoch: get(d, 5).ok(),
                        idx: get(d, 6).ok(),
                        count: get(d, 7).ok(),
                        failures: failures.saturating_add(1),
                    };
                    for (event, refs) in failed.events(thread, seq, more) {
                        match refs {
                            Some(refs) => ctx.log(event, refs),
                            None => ctx.signal(event),
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The claimed parts (`due`, as claimed: by time, then row id) that may go
/// out now: for each thread, those that follow its first pending part
/// with no pending part missing in between. A part the claim skipped
/// (something else holds it locked) or did not reach (the round's limit,
/// were a thread's parts ever due out of their row order) holds back the
/// thread's later parts, which stay
/// pending for the next round, which takes them after it. Without this,
/// a round that skipped a locked part took the thread's next ones, and
/// they went out before it. No other node's round holds a part while this
/// one runs today (the writers' `log_head` lock serializes them), so what
/// this guards against is a part locked by a transaction outside the
/// writers (an operator's session) or a writer that stops serializing; it
/// costs one indexed query per round that claimed anything.
fn in_order(c: &PgConn, due: Vec<postgres::Row>) -> ApiResult<Vec<postgres::Row>> {
    if due.is_empty() {
        return Ok(due);
    }
    // Each claimed thread, up to its last claimed part.
    let mut upto: HashMap<i64, i64> = HashMap::new();
    let mut claimed = std::collections::HashSet::with_capacity(due.len());
    for d in &due {
        let (id, thread): (i64, i64) = (get(d, 0)?, get(d, 1)?);
        claimed.insert(id);
        let last = upto.entry(thread).or_insert(id);
        *last = (*last).max(id);
    }
    let (threads, lasts): (Vec<i64>, Vec<i64>) = upto.into_iter().unzip();
    // Each thread's first pending part this node did not claim, if any.
    let mut first_missing: HashMap<i64, i64> = HashMap::new();
    for r in c.all(
        "SELECT s.thread_id, s.id FROM scheduled_replies s
         JOIN unnest($1::bigint[], $2::bigint[]) AS c (thread_id, upto)
           ON s.thread_id = c.thread_id AND s.id <= c.upto
         WHERE s.state = 'pending'
         ORDER BY s.thread_id, s.id",
        &[&threads, &lasts],
    )? {
        let (thread, id): (i64, i64) = (get(&r, 0)?, get(&r, 1)?);
        if !claimed.contains(&id) {
            first_missing.entry(thread).or_insert(id);
        }
    }
    let mut out = Vec::with_capacity(due.len());
    for d in due {
        let (id, thread): (i64, i64) = (get(&d, 0)?, get(&d, 1)?);
        if first_missing
            .get(&thread)
            .is_none_or(|&missing| id < missing)
        {
            out.push(d);
        }
    }
    Ok(out)
}

fn pending_in(c: &PgConn, thread_row: i64) -> ApiResult<bool> {
    get(
        &c.one(
            "SELECT EXISTS (SELECT 1 FROM scheduled_replies WHERE thread_id = $1 AND state = 'pending')",
            &[&thread_row],
        )?,
        0,
    )
}

/// One part, in the caller's savepoint (see `store::turn::deliver_part`).
fn deliver_part(c: &PgConn, ctx: &mut PgCtx, d: &postgres::Row, empty: &Metadata) -> ApiResult<()> {
    let (row_id, thread_row): (i64, i64) = (get(d, 0)?, get(d, 1)?);
    let (uuid, content, deliver_at): (String, String, String) =
        (get(d, 4)?, get(d, 8)?, get(d, 9)?);
    let epoch: i64 = get(d, 5)?;
    let thread = by_row_id(c, thread_row)?
        .ok_or_else(|| ApiError::Internal("a scheduled part's thread is gone".into()))?;
    let stored = insert_quietly(
        c,
        &thread,
        Sender::Named(AGENT_SENDER),
        &content,
        MsgType::Response,
        empty,
    )?;
    // This statement sends the held-back message first: a row the
    // database refuses fails here, inside the part's savepoint.
    c.exec(
        "UPDATE scheduled_replies SET state = 'delivered', message_id = $2 WHERE id = $1",
        &[&row_id, &stored.row_id],
    )?;
    let more = pending_in(c, thread_row)?;
    let part = ReplyPart {
        id: &uuid,
        index: get(d, 6)?,
        count: get(d, 7)?,
        content: &content,
        turn_epoch: epoch,
        deliver_at: &deliver_at,
    };
    let refs = Refs {
        message_row: Some(stored.row_id),
        reply_row: Some(row_id),
        ..Refs::thread(thread.row_id)
    };
    let seq = stored.message.seq;
    ctx.log(
        delivered_event(&thread, seq, &stored.message.id, &part),
        refs,
    );
    let state = if more { "start" } else { "stop" };
    ctx.signal(typing(&thread, seq, state, epoch));
    Ok(())
}

/// Counts a failed attempt (see `store::turn::record_failure`).
fn record_failure(
    c: &PgConn,
    row_id: i64,
    thread_row: i64,
    deliver_at_ms: i64,
    failures: i64,
    now_ms: i64,
    retry_base_ms: i64,
) -> ApiResult<Failed> {
    let failures = failures.saturating_add(1);
    if failures >= MAX_ATTEMPTS {
        c.exec(
            "UPDATE scheduled_replies SET failures = $2, state = 'failed' WHERE id = $1",
            &[&row_id, &failures],
        )?;
        return Ok(Failed::GaveUp);
    }
    let at_ms = now_ms.saturating_add(retry_pause_ms(failures, retry_base_ms));
    let delay = at_ms.saturating_sub(deliver_at_ms).max(0);
    c.exec(
        "UPDATE scheduled_replies SET deliver_at_ms = deliver_at_ms + $3
         WHERE thread_id = $1 AND state = 'pending' AND id > $2",
        &[&thread_row, &row_id, &delay],
    )?;
    c.exec(
        "UPDATE scheduled_replies SET failures = $2, deliver_at_ms = $3 WHERE id = $1",
        &[&row_id, &failures, &at_ms],
    )?;
    Ok(Failed::Retry { at_ms })
}
