//! A `/v1/sse` stream read event by event, for the tests that follow one.

use serde_json::Value;

use super::WAIT;

/// A `text/event-stream` response and what was read of it past the last
/// event taken.
pub struct EventStream {
    res: reqwest::Response,
    buf: String,
}

/// One event of a stream: its `id:` (a log position; none for what has no
/// position), its `event:` and its `data:` (the WebSocket frame).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub id: Option<i64>,
    pub kind: String,
    pub data: Value,
}

impl EventStream {
    /// `GET url` with `key`, resumed after `last_id` when given; the stream
    /// must be accepted.
    pub async fn open(
        client: &reqwest::Client,
        url: String,
        key: &str,
        last_id: Option<i64>,
    ) -> EventStream {
        let mut req = client.get(url).bearer_auth(key);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200, "stream refused");
        EventStream {
            res,
            buf: String::new(),
        }
    }

    /// The response (its headers).
    pub fn response(&self) -> &reqwest::Response {
        &self.res
    }

    /// The next event (comments and the `retry:` hint skipped), within `WAIT`.
    pub async fn event(&mut self) -> StreamEvent {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("JSON data"));
                    }
                }
                if let (Some(kind), Some(data)) = (kind, data) {
                    return StreamEvent { id, kind, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("timed out waiting for the stream")
                .expect("stream read")
                .expect("the stream ended");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}
