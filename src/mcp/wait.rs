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

fn waited(messages: Vec<Value>) -> Value {
    let timed_out = messages.is_empty();
    json!({ "messages": messages, "timed_out": timed_out })
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
        Ok::<_, ApiFailure>(page["messages"].as_array().cloned().unwrap_or_default())
    };
    // Also the access check: a thread the agent is not in is NOT_FOUND here.
    let messages = read().await?;
    if !messages.is_empty() {
        return Ok(waited(messages));
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
    let mut messages = Vec::new();
    while messages.is_empty() && woken(&mut socket, deadline, is_new).await? {
        messages = read().await?;
    }
    socket.close().await;
    Ok(waited(messages))
}

/// The agent's unread messages from its peers, in any of its threads.
pub async fn in_inbox(api: &ApiClient, aid: &str, timeout: Duration) -> ApiCall {
    let deadline = Instant::now() + timeout;
    // The socket first: whatever is committed from now on wakes us, and
    // anything before is found by the read below.
    let mut socket = api.inbox_socket(aid).await?;
    let from_peer =
        |e: &Value| e["type"] == "thread.message" && e["data"]["sender_aid"].as_str() != Some(aid);
    let mut messages = unread(api, aid).await?;
    while messages.is_empty() && woken(&mut socket, deadline, from_peer).await? {
        messages = unread(api, aid).await?;
    }
    socket.close().await;
    Ok(waited(messages))
}

/// Reads the threads with unread messages. Read marks are a high-water
/// mark and `unread_count` counts the peer's messages above it, so the
/// unread ones are the thread's last `unread_count` messages from the peer.
async fn unread(api: &ApiClient, aid: &str) -> ApiCall<Vec<Value>> {
    let list = api
        .list_threads(Some(aid), Some("all"), Some(INBOX_THREADS), None)
        .await?;
    let mut found = Vec::new();
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
        // event wakes the next round instead.
        let after = count.saturating_sub(PAGE as u64);
        let limit = (count - after) as u32;
        let page = match api
            .get_thread(id, Some(aid), Some(limit), Some(after))
            .await
        {
            Ok(page) => page,
            // The threads read so far are marked read: answer with their
            // messages (the rest stay unread for the next call) rather
            // than with the refusal (over the key's quota), which would
            // drop them unseen.
            Err(_) if !found.is_empty() => break,
            Err(refused) => return Err(refused),
        };
        let from_peer: Vec<Value> = page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["sender_aid"].as_str() != Some(aid))
            .cloned()
            .collect();
        let skip = from_peer.len().saturating_sub(unread);
        found.extend(from_peer.into_iter().skip(skip));
    }
    // Oldest first across threads.
    found.sort_by(|a, b| text(&a["created_at"]).cmp(text(&b["created_at"])));
    Ok(found)
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
