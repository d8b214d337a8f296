//! What a node's sockets get live is the log's own event. On PostgreSQL a
//! node's writer publishes the events of its own commit itself, when its
//! follower has published everything before them, rather than waiting for
//! the follower to read them back (docs/performance.md, round
//! twenty-one): the events it built must be the ones the log holds, as on
//! SQLite, where the writer always publishes its own.

use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

const REPLY: &str = "Thanks for asking, I had a look at the figures this morning. \
    Revenue is up four percent on the quarter, mostly from the new region. \
    Costs are flat, which is better than the plan expected. \
    I would still double-check the currency conversion in the March numbers.";

#[tokio::test]
async fn every_event_a_socket_gets_live_is_the_one_in_the_log() {
    let app = spawn_app_with(|c| c.pace_scale = 0.0).await;
    let (thread_id, mut ws) = app.open_and_listen(None).await;
    let messages = json!([
        {"sender": "dana", "content": "How did Q1 go?"},
        {"sender": "eli", "content": "And what about costs?"},
    ]);
    let submitted = app.submit(&thread_id, messages).await;
    assert_eq!(submitted["decision"], "speak", "{submitted}");
    let answer = app.respond(&thread_id, REPLY, 1).await;
    let parts = answer["scheduled"].as_array().expect("parts").len();
    assert!(parts >= 2, "{answer}");

    // The two messages, then each part as it is delivered (typing
    // signals between them are not logged).
    let mut live: Vec<Value> = Vec::new();
    while live.len() < 2 + parts {
        let event = ws.event().await;
        if event["type"] != "turn_taking.typing" {
            live.push(event);
        }
    }
    let kinds: Vec<&str> = live.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut want = vec!["thread.message"; 2];
    want.extend(vec!["turn_taking.message"; parts]);
    assert_eq!(kinds, want);

    let log = app.read_log();
    for event in &live {
        let id = event["id"].as_str().expect("an id");
        let logged = log
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("{event} is not in the log"));
        assert_eq!(event["type"], logged.kind.as_str(), "{event}");
        assert_eq!(event["seq"], logged.seq, "{event}");
        let data: Value = serde_json::from_str(logged.data.get()).expect("logged data");
        assert_eq!(event["data"], data, "the live event's data is the log's");
    }
}
