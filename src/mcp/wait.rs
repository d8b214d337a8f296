//! `wait_for_messages`: answer as soon as a message arrives, fed by the same
//! event stream as the WebSocket (not by polling). History is read first
//! (and the thread socket replays from `after_seq` too), so a message
//! committed before the socket opened is not missed. The socket only wakes
//! the wait; the messages themselves are read through the API, so they
//! count as read exactly as with `read_thread`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::api::{ApiCall, ApiClient, ApiFailure, EventSocket};

/// The longest a wait may last.
pub const MAX_WAIT_SECS: u64 = 60;
const DEFAULT_WAIT_SECS: u64 = 30;
/// Messages read at once (the API's largest page).
const PAGE: u32 = 200;
/// Threads searched for unread messages (the most recently active).
const INBOX_THREADS: u32 = 100;

/// The wait's timeout: 1–60 s, 30 s when not given.
pub fn timeout(secs: Option<u64>) -> ApiCall<Duration> {
    match secs.unwrap_or(DEFAULT_WAIT_SECS) {
        s @ 1..=MAX_WAIT_SECS => Ok(Duration::from_secs(s)),
        _ => Err(ApiFailure::invalid(
            "timeout_secs",
            crate::http::json::out_of_range("timeout_secs", 1, MAX_WAIT_SECS),
        )),
    }
}

/// The answer: the messages, and the generation of the database they were
/// read from (the last read's; none from a server that does not say it).
fn waited(messages: Vec<Value>, more: bool, generation: Option<Value>) -> Value {
    let timed_out = messages.is_empty();
    let mut answer = json!({ "messages": messages, "timed_out": timed_out, "more": more });
    if let Some(generation) = generation.filter(Value::is_string) {
        answer["generation"] = generation;
    }
    answer
}

/// Waits for the next event the caller cares about (`wanted`), until
/// `deadline`. `Ok(false)` at the deadline.
async fn woken(
    socket: &mut EventSocket,
    deadline: Instant,
    wanted: impl Fn(&Value) -> bool,
) -> ApiCall<bool> {
    loop {
        match tokio::time::timeout_at(deadline, socket.next_event()).await {
            Err(_) => return Ok(false),
            Ok(None) => return Err(socket.closed()),
            Ok(Some(event)) if wanted(&event) => return Ok(true),
            Ok(Some(_)) => {}
        }
    }
}

/// Messages of one thread with a seq above `after`.
pub async fn in_thread(
    api: &ApiClient,
    thread_id: &str,
    aid: Option<&str>,
    after: u64,
    timeout: Duration,
) -> ApiCall {
    let deadline = Instant::now() + timeout;
    let read = || async move {
        let page = api
            .get_thread(thread_id, aid, Some(PAGE), Some(after))
            .await?;
        let more = page["has_more"].as_bool().unwrap_or(false);
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        Ok::<_, ApiFailure>((messages, more, page.get("generation").cloned()))
    };
    // Also the access check: a thread the agent is not in is NOT_FOUND here.
    let (messages, more, mut generation) = read().await?;
    if !messages.is_empty() {
        return Ok(waited(messages, more, generation));
    }
    // The socket replays what was stored after `after` before going live,
    // so a message committed since the read above still wakes us.
    let mut socket = api.thread_socket(thread_id, after).await?;
    let is_new = |e: &Value| {
        matches!(
            e["type"].as_str(),
            Some("thread.message" | "turn_taking.message")
        ) && e["seq"].as_u64().is_some_and(|seq| seq > after)
    };
    let (mut messages, mut more) = (Vec::new(), false);
    while messages.is_empty() && woken(&mut socket, deadline, is_new).await? {
        (messages, more, generation) = read().await?;
    }
    socket.close().await;
    Ok(waited(messages, more, generation))
}

/// The agent's unread messages from its peers, in any of its threads.
pub async fn in_inbox(api: &ApiClient, aid: &str, timeout: Duration) -> ApiCall {
    let deadline = Instant::now() + timeout;
    // The socket first: whatever is committed from now on wakes us, and
    // anything before is found by the read below.
    let mut socket = api.inbox_socket(aid).await?;
    let from_peer =
        |e: &Value| e["type"] == "thread.message" && e["data"]["sender_aid"].as_str() != Some(aid);
    let mut found = unread(api, aid).await?;
    while found.messages.is_empty() && woken(&mut socket, deadline, from_peer).await? {
        found = unread(api, aid).await?;
    }
    socket.close().await;
    Ok(waited(found.messages, found.more, found.generation))
}

/// What one round of reading found: the messages, and whether unread ones
/// were left for the next call (a thread with more than a page of them, or
/// a read refused after others were marked read).
struct Found {
    messages: Vec<Value>,
    more: bool,
    /// The generation the thread list was read in.
    generation: Option<Value>,
}

/// Reads the threads with unread messages, marking read only what it
/// returns. Read marks are a high-water mark and `unread_count` counts the
/// peer's messages above it, so the unread ones are the thread's last
/// `unread_count` messages from the peer: a page that starts at the oldest
/// of them holds nothing the agent has not seen but its own messages, and
/// reading it marks read no peer message it does not return.
async fn unread(api: &ApiClient, aid: &str) -> ApiCall<Found> {
    let list = api
        .list_threads(Some(aid), Some("all"), Some(INBOX_THREADS), None)
        .await?;
    let mut found = Found {
        messages: Vec::new(),
        more: false,
        generation: list.get("generation").cloned(),
    };
    for thread in list["threads"].as_array().into_iter().flatten() {
        let unread = thread["unread_count"].as_u64().unwrap_or(0) as usize;
        let (Some(id), Some(count)) = (thread["id"].as_str(), thread["message_count"].as_u64())
        else {
            continue;
        };
        if unread == 0 {
            continue;
        }
        // Up to `count` only: a message stored since the list is not in
        // `unread` yet, so reading it here would mark it read unseen; its
        // event wakes the next round instead. A thread of at most a page
        // is read whole; a longer one from its oldest unread message,
        // found without marking anything read (see `oldest_unread`).
        let after = if count <= PAGE as u64 {
            Ok(0)
        } else {
            oldest_unread(api, id, aid, count, unread)
                .await
                .map(|seq| seq - 1)
        };
        let page = match after {
            Ok(after) => {
                let limit = (count - after).min(PAGE as u64) as u32;
                found.more |= after + (limit as u64) < count;
                api.get_thread(id, Some(aid), Some(limit), Some(after))
                    .await
            }
            Err(e) => Err(e),
        };
        let page = match page {
            Ok(page) => page,
            // The threads read so far are marked read: answer with their
            // messages (the rest stay unread for the next call) rather
            // than with the refusal (over the key's quota), which would
            // drop them unseen.
            Err(_) if !found.messages.is_empty() => {
                found.more = true;
                break;
            }
            Err(refused) => return Err(refused),
        };
        let from_peer: Vec<Value> = page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["sender_aid"].as_str() != Some(aid))
            .cloned()
            .collect();
        // A whole thread: its last `unread` messages from the peer. A page
        // from the oldest unread one: all of them (at most `unread`).
        let skip = from_peer.len().saturating_sub(unread);
        found.messages.extend(from_peer.into_iter().skip(skip));
    }
    // Oldest first across threads.
    found
        .messages
        .sort_by(|a, b| text(&a["created_at"]).cmp(text(&b["created_at"])));
    Ok(found)
}

/// How long finding a thread's oldest unread message may take (a replay
/// of stored messages over the server's own socket: quick, but bounded).
const FIND_TIMEOUT: Duration = Duration::from_secs(20);

/// The seq of the oldest of a thread's `unread` messages from the peer,
/// among its messages up to seq `count`. Reading a page marks it read, so
/// the thread is not searched by reading: the thread's socket replays its
/// stored messages without marking any. The replay starts a little before
/// the last `unread` messages (room for the agent's own among them), and
/// from the thread's start if that held too few of the peer's.
async fn oldest_unread(
    api: &ApiClient,
    thread_id: &str,
    aid: &str,
    count: u64,
    unread: usize,
) -> ApiCall<u64> {
    let mut after = count.saturating_sub(unread as u64 + PAGE as u64);
    loop {
        let peers = peer_seqs(api, thread_id, aid, after, count).await?;
        if peers.len() >= unread || after == 0 {
            // Fewer than `unread` from the very start only if messages
            // went meanwhile (the thread was emptied): its first then.
            let at = peers.len().saturating_sub(unread);
            return Ok(peers.get(at).copied().unwrap_or(after + 1).max(1));
        }
        after = 0;
    }
}

/// The seqs of the peer's messages after `after` up to `count`, oldest
/// first, from the thread socket's replay.
async fn peer_seqs(
    api: &ApiClient,
    thread_id: &str,
    aid: &str,
    after: u64,
    count: u64,
) -> ApiCall<Vec<u64>> {
    let mut socket = api.thread_socket(thread_id, after).await?;
    let deadline = Instant::now() + FIND_TIMEOUT;
    let mut seqs = Vec::new();
    let outcome = loop {
        let event = match tokio::time::timeout_at(deadline, socket.next_event()).await {
            Err(_) => {
                break Err(ApiFailure::local(
                    "UNAVAILABLE",
                    "the thread's history did not arrive in time; call again",
                    None,
                ))
            }
            Ok(None) => break Err(socket.closed()),
            Ok(Some(event)) => event,
        };
        if event["type"] == "connection.ready"
            && event["data"]["last_seq"]
                .as_u64()
                .is_some_and(|l| l <= after)
        {
            break Ok(());
        }
        if event["type"] != "thread.message" {
            continue;
        }
        let Some(seq) = event["seq"].as_u64() else {
            continue;
        };
        if seq <= count && event["data"]["sender_aid"].as_str() != Some(aid) {
            seqs.push(seq);
        }
        if seq >= count {
            break Ok(());
        }
    };
    socket.close().await;
    outcome.map(|()| seqs)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_one_to_sixty_seconds_thirty_by_default() {
        assert_eq!(timeout(None).unwrap(), Duration::from_secs(30));
        assert_eq!(timeout(Some(1)).unwrap(), Duration::from_secs(1));
        assert_eq!(timeout(Some(60)).unwrap(), Duration::from_secs(60));
        for bad in [0, 61, u64::MAX] {
            let e = timeout(Some(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("timeout_secs"), "{bad}");
        }
    }
}
