//! The operator's commands (through `threadline::cli`, on the database of a
//! running server, and through the binary for refusals and messages), and
//! `GET /api/acsp/me`.

use serde_json::{json, Value};
use threadline::cli;

use crate::helpers::process::run_cli;
use crate::helpers::{assert_error, json_of, spawn_app, spawn_app_with, TestApp};

fn parse(out: Result<String, String>) -> Value {
    let out = out.expect("the command succeeds");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// The row id of the thread with this public id.
fn thread_row(app: &TestApp, thread: &str) -> i64 {
    app.db_count(&format!("SELECT id FROM threads WHERE uuid = '{thread}'"))
}

/// Rows of `table` that refer to the thread with this row id.
fn rows_of_thread(app: &TestApp, table: &str, row: i64) -> i64 {
    app.db_count(&format!(
        "SELECT COUNT(*) FROM {table} WHERE thread_id = {row}"
    ))
}

#[tokio::test]
async fn agent_list_shows_every_agent_or_one_accounts() {
    let app = spawn_app().await;
    let carol = app.new_agent("carol");

    let all = parse(cli::agent_list(&app.db, None));
    let names: Vec<&str> = all["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"], "{all}");
    assert_eq!(all["agents"][0]["aid"], app.alice.aid.as_str());
    assert_eq!(all["agents"][0]["user_id"], app.user_id.as_str());

    let mine = parse(cli::agent_list(&app.db, Some(&carol.user_id)));
    assert_eq!(
        mine["agents"].as_array().expect("agents").len(),
        1,
        "{mine}"
    );
    assert_eq!(mine["agents"][0]["aid"], carol.aid.as_str());

    let err = cli::agent_list(&app.db, Some("usr_0000000000000000")).expect_err("unknown");
    assert!(err.contains("no account"), "{err}");
}

#[tokio::test]
async fn key_list_never_shows_a_key_and_revoke_all_locks_the_account_out_at_once() {
    let app = spawn_app().await;
    let second = parse(cli::key_create(&app.db, &app.user_id));
    let second_key = second["login_key"].as_str().expect("key").to_owned();
    let other = app.new_agent("other");

    let listed = cli::key_list(&app.db, &app.user_id).expect("key list");
    for key in [&app.key, &second_key] {
        assert!(
            !listed.contains(key.as_str()),
            "a key was printed: {listed}"
        );
        assert!(
            !listed.contains(&key[3..12]),
            "part of a key was printed: {listed}"
        );
    }
    let v: Value = serde_json::from_str(&listed).expect("JSON");
    let keys = v["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{v}");
    for k in keys {
        assert_eq!(k["hash_prefix"].as_str().expect("prefix").len(), 8, "{k}");
        assert!(
            k["created_at"].is_string() && k["revoked_at"].is_null(),
            "{k}"
        );
    }

    let list = format!("/api/acsp/threads?aid={}", app.alice.aid);
    assert_eq!(app.get(&list, &app.key).await.status(), 200);
    let revoked = parse(cli::key_revoke_all(&app.db, &app.user_id));
    assert_eq!(revoked["revoked"], 2, "{revoked}");

    // The running server refuses both keys from the next request, for reads
    // and writes; another account's key still works.
    for key in [&app.key, &second_key] {
        assert_error(app.get(&list, key).await, 401, "UNAUTHORIZED").await;
        let res = app
            .create_thread(
                key,
                json!({"aid": app.alice.aid, "target_aid": app.bob.aid}),
            )
            .await;
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
    let theirs = format!("/api/acsp/threads?aid={}", other.aid);
    assert_eq!(app.get(&theirs, &other.key).await.status(), 200);

    let v = parse(cli::key_list(&app.db, &app.user_id));
    assert!(
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .all(|k| k["revoked_at"].is_string()),
        "{v}"
    );
    let again = parse(cli::key_revoke_all(&app.db, &app.user_id));
    assert_eq!(again["revoked"], 0, "nothing left to revoke: {again}");
}

#[tokio::test]
async fn agent_rename_shows_on_the_running_server_at_once() {
    let app = spawn_app().await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    let before = app.say(&app.bob, &thread, "one").await;
    assert_eq!(before["sender_name"], "bob");

    let out = parse(cli::agent_rename(&app.db, &app.bob.aid, "Robert"));
    assert_eq!(out, json!({"aid": app.bob.aid, "name": "Robert"}));
    let after = app.say(&app.bob, &thread, "two").await;
    assert_eq!(
        after["sender_name"], "Robert",
        "the writer kept a stale name"
    );
    let (_, me) = json_of(app.get("/api/acsp/me", &app.key).await).await;
    assert_eq!(me["agents"][1]["name"], "Robert", "{me}");

    for (aid, name, why) in [
        (app.bob.aid.as_str(), "", "an empty name"),
        ("not-an-aid", "x", "a malformed AID"),
        (&"0".repeat(50), "x", "an unknown AID"),
    ] {
        assert!(
            cli::agent_rename(&app.db, aid, name).is_err(),
            "{why} was accepted"
        );
    }
    let (_, me) = json_of(app.get("/api/acsp/me", &app.key).await).await;
    assert_eq!(
        me["agents"][1]["name"], "Robert",
        "a refused rename changed it: {me}"
    );
}

#[tokio::test]
async fn thread_delete_removes_the_thread_and_everything_of_it_and_nothing_else() {
    let app = spawn_app().await;
    let doomed = app.thread_between(&app.alice, &app.bob).await;
    let kept = app.thread_between(&app.alice, &app.bob).await;
    for thread in [&doomed, &kept] {
        app.say(&app.bob, thread, "hello").await;
        let res = app
            .client
            .post(app.url("/api/acsp/thread/message"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "k1")
            .json(&json!({"aid": app.alice.aid, "thread_id": thread, "content": "once"}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201);
        // Reading sets alice's read mark.
        let res = app
            .get_thread(&app.key, thread, &format!("aid={}", app.alice.aid))
            .await;
        assert_eq!(res.status(), 200);
    }
    let tables = ["messages", "read_marks", "idempotency_keys"];
    let (doomed_row, kept_row) = (thread_row(&app, &doomed), thread_row(&app, &kept));
    for table in tables {
        assert!(
            rows_of_thread(&app, table, doomed_row) > 0,
            "setup: no {table} rows"
        );
    }

    // The doomed thread holds the log's newest event (its read mark write
    // logs nothing, so post last).
    app.say(&app.bob, &doomed, "last words").await;
    let newest = |app: &TestApp| -> i64 { app.db_count("SELECT max(position) FROM events") };
    let newest_before = newest(&app);
    assert!(
        rows_of_thread(&app, "events", doomed_row) > 0,
        "setup: no events"
    );

    let out = parse(cli::thread_delete(&app.db, &doomed));
    assert_eq!(out["deleted"]["threads"], 1, "{out}");
    assert_eq!(out["deleted"]["messages"], 3, "{out}");
    assert!(out["deleted"]["events"].as_u64() > Some(0), "{out}");

    let res = app
        .get_thread(&app.key, &doomed, &format!("aid={}", app.alice.aid))
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    // Posting to it is 404 too (the writer forgot its cached thread).
    let res = app
        .post_message(
            &app.key,
            json!({"aid": app.bob.aid, "thread_id": doomed, "content": "x"}),
        )
        .await;
    assert_error(res, 404, "NOT_FOUND").await;
    for table in tables {
        assert_eq!(
            rows_of_thread(&app, table, doomed_row),
            0,
            "{table} rows left"
        );
        assert!(
            rows_of_thread(&app, table, kept_row) > 0,
            "{table} rows of another thread went"
        );
    }
    assert_eq!(app.stored_threads(), 1);

    // The log: nothing of the thread is left but its `thread.deleted`, the
    // kept thread's events still are, and the next event takes a new
    // position (the deletion's event is the newest, so no consumer that
    // read the thread's last one skips the next one).
    assert_eq!(
        rows_of_thread(&app, "events", doomed_row),
        0,
        "events rows left"
    );
    let log = app.read_log();
    let of_doomed: Vec<_> = log.iter().filter(|e| e.thread_id == doomed).collect();
    assert_eq!(
        of_doomed.len(),
        1,
        "a deleted thread's event: {of_doomed:?}"
    );
    assert_eq!(of_doomed[0].kind.as_str(), "thread.deleted");
    assert!(of_doomed[0].position > Some(newest_before));
    assert!(
        log.iter().any(|e| e.thread_id == kept),
        "the kept thread's events"
    );
    app.say(&app.bob, &kept, "after the delete").await;
    assert!(newest(&app) > newest_before, "a position was reused");

    let err = cli::thread_delete(&app.db, &doomed).expect_err("already gone");
    assert!(err.contains("no thread"), "{err}");
    assert!(cli::thread_delete(&app.db, "not-a-thread").is_err());
}

#[tokio::test]
async fn a_deleted_threads_pages_are_gone_even_those_read_before() {
    let app = spawn_app().await;
    let doomed = app.thread_between(&app.alice, &app.bob).await;
    for i in 1..=3 {
        app.say(&app.bob, &doomed, &format!("m{i}")).await;
    }
    // A final page (a message follows it), read before the delete.
    let query = format!("aid={}&limit=2", app.alice.aid);
    let res = app.get_thread(&app.key, &doomed, &query).await;
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status.as_u16(), body["has_more"].clone()),
        (200, json!(true))
    );

    parse(cli::thread_delete(&app.db, &doomed));
    let res = app.get_thread(&app.key, &doomed, &query).await;
    assert_error(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn prune_deletes_old_idempotency_keys_and_old_closed_threads_only_by_flag() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 0).await;
    let old = app.thread_between(&app.alice, &app.bob).await;
    let active = app.thread_between(&app.alice, &app.bob).await;
    let post_once = |thread: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url("/api/acsp/thread/message"))
                .bearer_auth(&app.key)
                .header("Idempotency-Key", "retry-me")
                .json(&json!({"aid": app.alice.aid, "thread_id": thread, "content": "once"}))
                .send()
                .await
                .expect("request");
            let (status, body) = json_of(res).await;
            assert_eq!(status, 201, "{body}");
            body["message"]["id"].as_str().expect("id").to_owned()
        }
    };
    let first = post_once(active.clone()).await;
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": old, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Age everything by ten days (the clock cannot be moved).
    app.db_exec(
        "UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000Z';
         UPDATE threads SET updated_at = '2000-01-01T00:00:00.000Z';",
    );

    let out = parse(cli::prune(&app.db, 7, None));
    assert_eq!(out["pruned"]["idempotency_keys"], 1, "{out}");
    assert_eq!(
        out["pruned"]["threads"], 0,
        "no thread without the flag: {out}"
    );
    assert_eq!(app.stored_threads(), 2);
    // The key is forgotten: the same retry now stores a new message.
    assert_ne!(post_once(active.clone()).await, first);

    let out = parse(cli::prune(&app.db, 7, Some(30)));
    assert_eq!(out["pruned"]["threads"], 1, "the old closed thread: {out}");
    assert_eq!(app.stored_threads(), 1, "the active thread stays");
    let res = app
        .get_thread(&app.key, &active, &format!("aid={}", app.alice.aid))
        .await;
    assert_eq!(res.status(), 200);
    // A fresh key is inside the window and stays.
    let out = parse(cli::prune(&app.db, 7, Some(30)));
    assert_eq!(out["pruned"]["idempotency_keys"], 0, "{out}");
}

#[tokio::test]
async fn get_me_lists_the_keys_account_and_its_agents() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 3).await;
    let other = app.new_agent("other");
    let (status, me) = json_of(app.get("/api/acsp/me", &app.key).await).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], app.user_id.as_str());
    let agents = me["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2, "only this account's agents: {me}");
    assert_eq!(agents[0]["aid"], app.alice.aid.as_str());
    assert_eq!(agents[0]["name"], "alice");
    assert_eq!(agents[1]["aid"], app.bob.aid.as_str());
    assert!(agents[0]["created_at"].is_string(), "{me}");
    assert!(
        !me.to_string().contains(&other.aid),
        "another account's agent: {me}"
    );

    assert_error(
        app.get("/api/acsp/me", "nk_nope").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let res = app
        .client
        .get(app.url("/api/acsp/me"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    let res = app
        .client
        .post(app.url("/api/acsp/me"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
    // Rate limited like the other routes (3 a minute here, 1 used above).
    for _ in 0..2 {
        assert_eq!(app.get("/api/acsp/me", &app.key).await.status(), 200);
    }
    assert_error(app.get("/api/acsp/me", &app.key).await, 429, "RATE_LIMITED").await;
}

#[test]
fn commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("typo.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    let user = "usr_0000000000000000";
    let aid = "0".repeat(50);
    let thread = "0190a0b0-0000-7000-8000-000000000000";
    let key = format!("nk_{}", "A".repeat(43));
    let to = dir.path().join("copy.db");
    let to_arg = to.to_str().expect("UTF-8 path");
    let commands: Vec<Vec<&str>> = vec![
        vec!["agent", "list"],
        vec!["agent", "list", "--user", user],
        vec!["agent", "rename", &aid, "--name", "x"],
        vec!["key", "create", "--user", user],
        vec!["key", "revoke", &key],
        vec!["key", "list", "--user", user],
        vec!["key", "revoke-all", "--user", user],
        vec!["thread", "delete", thread],
        vec!["prune"],
        vec!["backup", "--to", to_arg],
    ];
    for args in commands {
        let mut all = args.clone();
        all.extend(["--db", db_arg]);
        let out = run_cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("no database at"), "{args:?}: {stderr}");
        assert!(stderr.contains(db_arg), "{args:?} names the path: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        assert!(!db.exists() && !to.exists(), "{args:?} created a file");
    }
    // agent create with --user needs the account, so the database, to exist.
    let out = run_cli(&[
        "agent", "create", "--name", "x", "--user", user, "--db", db_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!db.exists(), "agent create --user created the database");
    // agent create is the first command and makes the database.
    let out = run_cli(&["agent", "create", "--name", "first", "--db", db_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

/// Runs `threadline serve ARGS --db DB` with extra environment variables and
/// returns (exit code, stderr). Each case here fails before binding.
fn serve_with_env(db: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(crate::helpers::process::BIN);
    cmd.arg("serve")
        .args(args)
        .args(["--db", db])
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = crate::helpers::process::output_within(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_settings_it_cannot_use_and_says_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("threadline.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    let bind = ["--bind", "127.0.0.1:0"];

    let (code, err) = serve_with_env(db_arg, &[&bind[..], &["--workers", "0"]].concat(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--workers must be at least 1"), "{err}");

    let (code, err) = serve_with_env(db_arg, &[], &[("THREADLINE_BIND", "")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("THREADLINE_BIND"), "names the variable: {err}");

    let missing = dir.path().join("no-such-dir").join("x.db");
    let (code, err) = serve_with_env(missing.to_str().expect("UTF-8"), &bind, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("directory") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!db.exists(), "a refused start created the database");

    // Boolean variables take 1/0/yes/no/true/false/on/off. The start is made to
    // fail after parsing (--workers 0), so an accepted value reaches validation.
    for value in ["1", "0", "yes", "no", "true", "false", "on", "off"] {
        for var in [
            "THREADLINE_DEV",
            "THREADLINE_OPEN_REGISTRATION",
            "THREADLINE_ALLOW_PRIVATE_WEBHOOKS",
        ] {
            let args = [&bind[..], &["--workers", "0"]].concat();
            let (code, err) = serve_with_env(db_arg, &args, &[(var, value)]);
            assert!(
                err.contains("--workers must be"),
                "{var}={value} was refused: {err}"
            );
            assert_eq!(code, Some(1));
        }
    }
    let (code, err) = serve_with_env(db_arg, &bind, &[("THREADLINE_DEV", "maybe")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'maybe'"), "{err}");
}

#[tokio::test]
async fn key_revoke_all_closes_the_accounts_open_sockets_with_4001() {
    let app = spawn_app().await;
    let (_, url) = app.grant_for(&app.key, None).await;
    let mut ws = crate::helpers::Ws::connect(&url).await;
    assert_eq!(ws.event().await["type"], "connection.ready");
    let (_, unused) = app.grant_for(&app.key, None).await;
    // A plain GET does not use a grant up: live, it is refused as no upgrade.
    let res = app
        .client
        .get(unused.replacen("ws://", "http://", 1))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 422, "the grant works before the revocation");

    parse(cli::key_revoke_all(&app.db, &app.user_id));
    match ws.next().await {
        crate::helpers::WsNext::Closed(code) => assert_eq!(code, Some(4001)),
        crate::helpers::WsNext::Event(e) => panic!("an event after revocation: {e}"),
    }
    // The unused grant is void too (the watcher may take a tick: poll).
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let res = app
            .client
            .get(unused.replacen("ws://", "http://", 1))
            .send()
            .await
            .expect("request");
        if res.status() == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant still works"
        );
        tokio::time::sleep(crate::helpers::POLL).await;
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("t.db");
    let db_arg = db.to_str().expect("UTF-8 path");
    let out = run_cli(&["agent", "create", "--name", "first", "--db", db_arg]);
    assert!(out.status.success(), "{out:?}");
    // `threadline agent list | head -c 0`: the pipe's reader is gone before
    // the command writes, so its write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = std::process::Command::new(crate::helpers::process::BIN)
        .args(["agent", "list", "--db", db_arg])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "printed on stderr: {stderr}");
}
