//! The ACSP threads API: success paths and every documented error.

use serde_json::json;

use crate::helpers::{assert_error, json_of, spawn_app};

#[tokio::test]
async fn creating_a_thread_with_a_first_message_stores_both() {
    let app = spawn_app().await;
    let res = app
        .create_thread(
            &app.key,
            json!({"aid": app.alice.aid, "target_aid": app.bob.aid,
                   "subject": "Q4", "first_message": "Let's talk", "metadata": {"k": 1}}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    let t = &body["thread"];
    assert_eq!(t["creator_aid"], app.alice.aid.as_str());
    assert_eq!(t["target_aid"], app.bob.aid.as_str());
    assert_eq!(t["subject"], "Q4");
    assert_eq!(t["status"], "active");
    assert_eq!(t["message_count"], 1);
    assert_eq!(t["metadata"], json!({"k": 1}));
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.stored_messages(), 1);
}

#[tokio::test]
async fn a_wrong_type_is_422_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let res = app
        .create_thread(&app.key, json!({"aid": app.alice.aid, "target_aid": app.bob.aid, "subject": 5}))
        .await;
    let body = assert_error(res, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["field"], "subject");
    assert_eq!(app.stored_threads(), 0);
}
