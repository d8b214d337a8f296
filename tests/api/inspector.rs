//! The web inspector (issue 15): its headers over plain HTTP, and the page
//! itself driven in a real headless Chromium over WebDriver (`fantoccini`).
//!
//! The browser tests need a running chromedriver: `.ci/run` starts one and
//! exports `THREADLINE_WEBDRIVER_URL`. Without it they print a skip line and
//! pass, so a plain `cargo test` still runs everything else. A failing browser
//! test leaves a screenshot in `target/inspector-screenshots/`.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, json_of, spawn_app, spawn_app_with, Agent, TestApp, Ws, POLL, WAIT,
};

/// The CSP every inspector answer carries, directive by directive.
const CSP_DIRECTIVES: &[&str] = &[
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self' ws: wss:",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
];

// ------------------------------------------------------------ plain HTTP

#[tokio::test]
async fn the_page_and_its_assets_carry_a_strict_csp_and_safe_headers() {
    let app = spawn_app().await;
    let cases = [
        ("/", "text/html; charset=utf-8"),
        ("/inspect", "text/html; charset=utf-8"),
        ("/inspect/app.js", "text/javascript; charset=utf-8"),
        ("/inspect/style.css", "text/css; charset=utf-8"),
        ("/inspect/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in cases {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        let header = |name: &str| {
            h.get(name)
                .unwrap_or_else(|| panic!("{path}: no {name} header"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        let csp = header("content-security-policy");
        let got: Vec<&str> = csp.split(';').map(str::trim).collect();
        for directive in CSP_DIRECTIVES {
            assert!(
                got.contains(directive),
                "{path}: CSP {csp:?} lacks {directive:?}"
            );
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'),
            "{path}: CSP {csp:?} must not loosen anything"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let etag = header("etag");
        assert!(
            etag.starts_with('"') && etag.len() > 10,
            "{path}: etag {etag}"
        );
        let body = res.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");

        // An unchanged asset costs a 304 with no body, headers intact.
        let again = app
            .client
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.headers().contains_key("content-security-policy"));
        assert!(again.text().await.unwrap().is_empty(), "{path}: 304 body");
    }

    // The page: no inline script or style, and nothing from another origin.
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "inline style"
    );
    for (i, _) in html.match_indices("<script") {
        assert!(
            html[i..].starts_with(r#"<script src="/inspect/"#),
            "inline or foreign script at {i}"
        );
    }
    assert!(!has_inline_handler(&html), "an on...= attribute");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "a foreign URL"
    );
    assert!(html.contains(r#"<script src="/inspect/app.js" defer></script>"#));
}

/// Whether the HTML has an event-handler attribute (` onclick=` and such).
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

#[tokio::test]
async fn other_inspector_paths_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/inspect/nope.js"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app.client.post(app.url("/")).send().await.unwrap();
    assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn metrics_count_the_inspectors_paths_under_their_own_route_labels() {
    let app = spawn_app().await;
    for path in ["/", "/inspect", "/inspect/app.js", "/inspect/app.js"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for (route, count) in [("/", 1), ("/inspect", 1), ("/inspect/app.js", 2)] {
        let series =
            format!("threadline_http_requests_total{{route=\"{route}\",status=\"200\"}} {count}");
        assert!(
            text.lines().any(|line| line == series),
            "no {series:?} in:\n{text}"
        );
    }
    // None of them fell through to the shared label of unknown paths.
    assert!(
        !text.contains("route=\"unmatched\""),
        "an inspector path counted as unmatched:\n{text}"
    );
}

#[tokio::test]
async fn healthz_reports_version_uptime_and_open_sockets() {
    let app = spawn_app().await;
    let health =
        || async { json_of(app.client.get(app.url("/healthz")).send().await.unwrap()).await };
    let (status, body) = health().await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_secs"].as_u64().is_some(), "{body}");
    assert_eq!(body["realtime"]["live_actors"], 0, "{body}");
    assert_eq!(body["realtime"]["sockets"], 0, "{body}");

    let thread = app.thread_between(&app.alice, &app.bob).await;
    let (_, url) = app.grant_for(&app.key, Some(&thread)).await;
    let mut ws = Ws::connect(&url).await;
    ws.event_of("connection.ready").await;
    let (_, body) = health().await;
    assert_eq!(body["realtime"]["sockets"], 1, "{body}");
    ws.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = health().await;
        if body["realtime"]["sockets"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "socket never counted as closed: {body}"
        );
        tokio::time::sleep(POLL).await;
    }
}

// ------------------------------------------------------------ the browser

/// How long the page may take for something that should be prompt.
pub(crate) const PAGE_WAIT: Duration = Duration::from_secs(10);

/// A headless Chromium session, closed on drop of the test (see `run`).
pub(crate) struct Browser {
    pub(crate) client: Client,
    _profile: tempfile::TempDir,
}

/// The WebDriver URL, or `None` (and a skip line) when it is not set.
fn webdriver_url(test: &str) -> Option<String> {
    match std::env::var("THREADLINE_WEBDRIVER_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("{test}: skipped: THREADLINE_WEBDRIVER_URL not set (.ci/run sets it)");
            None
        }
    }
}

/// One Firefox session at a time (see `run_with`).
static FIREFOX_SESSION: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Which browser the WebDriver at `THREADLINE_WEBDRIVER_URL` drives:
/// `THREADLINE_WEBDRIVER_BROWSER=firefox` (geckodriver) or Chromium (the
/// default; chromedriver). Their headless switches and settings differ.
fn firefox() -> bool {
    std::env::var("THREADLINE_WEBDRIVER_BROWSER").is_ok_and(|b| b == "firefox")
}

async fn open_browser(webdriver: &str, width: u32, height: u32, extra: &[&str]) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    if firefox() {
        // geckodriver makes its own temporary profile; prefs go into it.
        let mut prefs = serde_json::Map::new();
        if extra.contains(&DARK) {
            prefs.insert("ui.systemUsesDarkTheme".into(), json!(1));
        }
        caps.insert("browserName".into(), json!("firefox"));
        caps.insert(
            "moz:firefoxOptions".into(),
            json!({
                "args": ["-headless", format!("--width={width}"), format!("--height={height}")],
                "prefs": prefs,
            }),
        );
    } else {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
    }
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a WebDriver session (is chromedriver or geckodriver running?)");
    Browser {
        client,
        _profile: profile,
    }
}

/// Runs a browser test: opens Chromium, runs `body`, saves a screenshot if it
/// panics, always closes the session, then lets the panic through.
pub(crate) async fn run<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_with(test, 1200, 900, &[], body).await
}

/// `run` with a window size and extra Chromium arguments (in Firefox,
/// [`DARK`] becomes its preference and the others are ignored).
pub(crate) async fn run_with<F, Fut>(test: &str, width: u32, height: u32, extra: &[&str], body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(webdriver) = webdriver_url(test) else {
        return;
    };
    // geckodriver drives one session at a time: Firefox tests take turns
    // (each test's own waits start once it has the browser).
    let _turn = if firefox() {
        Some(FIREFOX_SESSION.acquire().await.expect("never closed"))
    } else {
        None
    };
    let browser = open_browser(&webdriver, width, height, extra).await;
    let client = browser.client.clone();
    let outcome = AssertUnwindSafe(body(browser)).catch_unwind().await;
    if outcome.is_err() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/inspector-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(png) = client.screenshot().await {
            let path = dir.join(format!("{test}.png"));
            let _ = std::fs::write(&path, png);
            eprintln!("{test}: screenshot at {}", path.display());
        }
    }
    let _ = client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Browser {
    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits (bounded) for an element matching `css`.
    pub(crate) async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for_within(css, PAGE_WAIT).await
    }

    pub(crate) async fn wait_for_within(
        &self,
        css: &str,
        limit: Duration,
    ) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(25))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within {limit:?}: {e}"))
    }

    /// Waits (bounded) for a timeline part matching `css` and reads its
    /// deliver-at time and text in one script: the page re-renders a part
    /// when its state changes, so an element found first and read after
    /// can be stale by then (seen under load).
    pub(crate) async fn part(&self, css: &str) -> (Option<String>, String) {
        let script = "const li = document.querySelector(arguments[0]); \
                      if (!li) return null; \
                      const at = li.querySelector('time.deliver-at'); \
                      return [at && at.getAttribute('datetime'), li.textContent]";
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let found = self
                .client
                .execute(script, vec![json!(css)])
                .await
                .expect("script");
            if let Value::Array(pair) = found {
                let at = pair[0].as_str().map(str::to_owned);
                let text = pair[1].as_str().unwrap_or_default().to_owned();
                return (at, text);
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} within {PAGE_WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"))
    }

    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Waits (bounded) until `script` returns true.
    pub(crate) async fn wait_until(&self, what: &str, script: &str) {
        self.wait_until_within(what, script, PAGE_WAIT).await
    }

    /// `wait_until` with another bound.
    pub(crate) async fn wait_until_within(&self, what: &str, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts counting Content-Security-Policy violations on this page load.
    pub(crate) async fn watch_csp(&self) {
        self.js(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', \
             e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); return true",
        )
        .await;
    }

    /// Asserts the page broke no CSP rule since `watch_csp`.
    pub(crate) async fn assert_no_csp_violation(&self) {
        assert_eq!(
            self.js("return window.__csp").await,
            json!([]),
            "CSP violations"
        );
    }

    /// Opens the page and signs in with `key`; returns once the thread list is there.
    pub(crate) async fn sign_in(&self, app: &TestApp, key: &str) {
        self.sign_in_at(&app.url("/"), key).await
    }

    /// `sign_in` on the page at `url` (a server that is not a `TestApp`).
    pub(crate) async fn sign_in_at(&self, url: &str, key: &str) {
        self.goto(url).await;
        let input = self.wait_for("#signin-key").await;
        input.send_keys(key).await.expect("type the key");
        self.find("#signin-submit")
            .await
            .click()
            .await
            .expect("click");
        self.wait_for("#view-threads:not([hidden])").await;
    }
}

/// Seeds two threads for alice: one she started (bob answered twice), one
/// bob started (one message). Returns (ids, alice's unread counts per id).
async fn seed_threads(app: &TestApp) -> (String, String) {
    let started = create(
        app,
        &app.alice,
        &app.bob,
        "Q4 analysis",
        "Let's discuss the Q4 data.",
    )
    .await;
    app.say(&app.bob, &started, "Here are the findings.").await;
    app.say(&app.bob, &started, "And the appendix.").await;
    let theirs = create(app, &app.bob, &app.alice, "Lunch?", "Lunch on Friday?").await;
    (started, theirs)
}

pub(crate) async fn create(
    app: &TestApp,
    from: &Agent,
    to: &Agent,
    subject: &str,
    first: &str,
) -> String {
    let res = app
        .create_thread(
            &from.key,
            json!({"aid": from.aid, "target_aid": to.aid, "subject": subject, "first_message": first}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 201, "{body}");
    body["thread"]["id"].as_str().unwrap().to_owned()
}

pub(crate) fn thread_url(app: &TestApp, thread: &str, as_aid: &str) -> String {
    app.url(&format!("/#/thread/{thread}/as/{as_aid}"))
}

#[tokio::test]
async fn signing_in_shows_the_seeded_threads_with_the_right_unread_counts() {
    let app = spawn_app().await;
    let (started, theirs) = seed_threads(&app).await;
    run("signing_in_shows_the_seeded_threads", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.watch_csp().await;
        // The stylesheet applied (the CSP lets 'self' styles through).
        assert_eq!(
            b.js("return getComputedStyle(document.querySelector('.top')).display")
                .await,
            "flex"
        );
        // Alice is the account's first agent, so the list is hers.
        let row = |id: &str| format!("tr[data-thread-id='{id}']");
        b.wait_for(&row(&started)).await;
        assert_eq!(b.count("#threads-body tr").await, 2);
        // The newest activity first: bob's thread was created last.
        let first = b
            .find("#threads-body tr")
            .await
            .attr("data-thread-id")
            .await
            .unwrap();
        assert_eq!(first.as_deref(), Some(theirs.as_str()));
        let unread = |id: &str| format!("{} td.unread", row(id));
        assert_eq!(b.text(&unread(&started)).await, "2", "bob's two answers");
        assert_eq!(b.text(&unread(&theirs)).await, "1", "bob's opening message");
        // The same figures the API gives.
        let (_, list) = json_of(
            app.list_threads(&app.key, &format!("aid={}", app.alice.aid))
                .await,
        )
        .await;
        for t in list["threads"].as_array().unwrap() {
            let id = t["id"].as_str().unwrap();
            assert_eq!(b.text(&unread(id)).await, t["unread_count"].to_string());
        }
        assert!(b.text(&row(&started)).await.contains("Q4 analysis"));

        // Search filters the loaded page by subject.
        b.find("#threads-search")
            .await
            .send_keys("lunch")
            .await
            .unwrap();
        b.wait_until(
            "one row is left",
            "return document.querySelectorAll('#threads-body tr').length === 1",
        )
        .await;
        assert_eq!(b.count(&row(&theirs)).await, 1);

        // A new message updates the list live (through alice's inbox socket).
        b.find("#threads-search").await.clear().await.unwrap();
        b.wait_until(
            "both rows are back",
            "return document.querySelectorAll('#threads-body tr').length === 2",
        )
        .await;
        b.wait_for("#threads-live[data-state='live']").await;
        app.say(&app.bob, &started, "one more").await;
        b.wait_for(&format!("{} td.unread[data-unread='3']", row(&started)))
            .await;

        // The key is in this tab's session storage only: not in the URL, not a cookie.
        let url = b.client.current_url().await.unwrap().to_string();
        assert!(!url.contains(&app.key), "key in the URL {url}");
        assert_eq!(b.js("return document.cookie").await, "");
        assert_eq!(
            b.js("return sessionStorage.getItem('threadline.key')")
                .await,
            app.key.as_str()
        );

        // The agents view: names and AIDs, with copy buttons.
        b.find("#nav a[data-view='agents']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for(&format!("#agents-body tr[data-aid='{}']", app.bob.aid))
            .await;
        let names = b.text("#agents-body").await;
        assert!(names.contains("alice") && names.contains("bob"), "{names}");
        assert!(names.contains(&app.alice.aid), "{names}");
        assert_eq!(b.count("#agents-body button").await, 2);

        // Signing out forgets the key and shows the sign-in form again.
        b.assert_no_csp_violation().await;
        b.find("#sign-out").await.click().await.unwrap();
        b.wait_for("#view-signin:not([hidden])").await;
        assert_eq!(
            b.js("return sessionStorage.getItem('threadline.key')")
                .await,
            Value::Null
        );
    })
    .await;
}

#[tokio::test]
async fn the_thread_list_pages_by_twenty_and_filters_by_status() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 1000).await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(create(&app, &app.alice, &app.bob, &format!("topic {i}"), "hello").await);
    }
    let closed = ids[0].clone();
    let res = app
        .set_status(
            &app.key,
            json!({"aid": app.alice.aid, "thread_id": closed, "status": "closed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    run("the_thread_list_pages", |b| async move {
        b.sign_in(&app, &app.key).await;
        // 22 active threads: 20, then 2.
        b.wait_until(
            "the first page",
            "return document.querySelectorAll('#threads-body tr').length === 20",
        )
        .await;
        assert_eq!(b.text("#threads-range").await, "1–20 of 22");
        assert!(b
            .find("#threads-prev")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some());
        b.find("#threads-next").await.click().await.unwrap();
        b.wait_until(
            "the second page",
            "return document.querySelectorAll('#threads-body tr').length === 2",
        )
        .await;
        assert_eq!(b.text("#threads-range").await, "21–22 of 22");
        assert!(b
            .find("#threads-next")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some());
        // The status filter: only the closed one.
        b.find("#threads-status")
            .await
            .select_by_value("closed")
            .await
            .unwrap();
        b.wait_for(&format!("#threads-body tr[data-thread-id='{closed}']"))
            .await;
        assert_eq!(b.count("#threads-body tr").await, 1);
        assert_eq!(b.text("#threads-range").await, "1–1 of 1");
    })
    .await;
}

/// Chromium's switch for a system that prefers dark colours.
pub(crate) const DARK: &str = "--blink-settings=preferredColorScheme=0";

#[tokio::test]
async fn the_page_follows_the_systems_light_or_dark_preference() {
    let app = spawn_app().await;
    let background = "return getComputedStyle(document.body).backgroundColor";
    let url = app.url("/");
    run("the_page_is_light", |b| async move {
        b.goto(&url).await;
        b.wait_for("#signin-key").await;
        assert_eq!(b.js(background).await, "rgb(247, 247, 245)");
    })
    .await;
    let url = app.url("/");
    run_with("the_page_is_dark", 1200, 900, &[DARK], |b| async move {
        b.goto(&url).await;
        b.wait_for("#signin-key").await;
        assert_eq!(
            b.js("return matchMedia('(prefers-color-scheme: dark)').matches")
                .await,
            true
        );
        assert_eq!(b.js(background).await, "rgb(21, 23, 27)");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_key_shows_an_error_not_a_blank_page() {
    let app = spawn_app().await;
    run("a_wrong_key_shows_an_error", |b| async move {
        b.goto(&app.url("/inspect")).await;
        // Typed and submitted from the keyboard alone.
        let enter = char::from(fantoccini::key::Key::Enter).to_string();
        let input = b.wait_for("#signin-key").await;
        input.send_keys("nk_this_is_not_a_key").await.unwrap();
        input.send_keys(&enter).await.unwrap();
        let error = b.wait_for("#signin-error:not([hidden])").await;
        let text = error.text().await.unwrap();
        assert!(text.contains("not accepted"), "{text}");
        assert!(b.find("#view-signin").await.is_displayed().await.unwrap());
        assert!(!b.find("#view-threads").await.is_displayed().await.unwrap());
        assert_eq!(
            b.js("return sessionStorage.getItem('threadline.key')")
                .await,
            Value::Null
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_posted_over_the_api_appears_live_and_a_dropped_socket_resumes_without_gaps() {
    let app = spawn_app().await;
    let (thread, _) = seed_threads(&app).await;
    run("a_message_posted_over_the_api_appears_live", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("li.msg[data-seq='3']").await;
        b.wait_for("#thread-live[data-state='live']").await;
        // Reading the page as alice marked bob's answers read.
        let (_, list) = json_of(app.list_threads(&app.key, &format!("aid={}", app.alice.aid)).await).await;
        let row = list["threads"].as_array().unwrap().iter().find(|t| t["id"] == thread.as_str()).unwrap().clone();
        assert_eq!(row["unread_count"], 0, "{row}");

        // A marker that a reload would wipe.
        b.js("window.__noReload = true; return true").await;
        let posted = Instant::now();
        app.say(&app.bob, &thread, "live from the API").await;
        let li = b.wait_for_within("li.msg[data-seq='4']", Duration::from_secs(1)).await;
        let took = posted.elapsed();
        assert!(li.text().await.unwrap().contains("live from the API"));
        assert_eq!(b.js("return window.__noReload === true").await, true, "the page reloaded");
        println!("a posted message appeared in the page after {took:?}");

        // Drop the socket; post while it is down; the page resumes with
        // `after` and shows each message exactly once.
        b.js("window.threadlineInspector.dropSockets(); return true").await;
        app.say(&app.bob, &thread, "while the socket was down").await;
        app.say(&app.alice, &thread, "and another").await;
        b.wait_for("li.msg[data-seq='6']").await;
        b.wait_for("#thread-live[data-state='live']").await;
        app.say(&app.bob, &thread, "after the resume").await;
        b.wait_for("li.msg[data-seq='7']").await;
        let seqs = b
            .js("return Array.from(document.querySelectorAll('#messages li.msg')).map(li => Number(li.dataset.seq))")
            .await;
        assert_eq!(seqs, json!([1, 2, 3, 4, 5, 6, 7]), "every message once, in order");
        assert_eq!(b.js("return window.__noReload === true").await, true);
    })
    .await;
}

#[tokio::test]
async fn older_history_loads_backwards_with_after() {
    let app = spawn_app_with(|c| c.rate_limit_per_minute = 1000).await;
    let thread = app.thread_between(&app.alice, &app.bob).await;
    for i in 1..=70 {
        app.say(&app.bob, &thread, &format!("message {i}")).await;
    }
    run("older_history_loads_backwards", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        // The newest page first: seqs 21..70.
        b.wait_for("li.msg[data-seq='70']").await;
        assert_eq!(b.count("li.msg").await, 50);
        assert_eq!(b.count("li.msg[data-seq='20']").await, 0);
        // Scrolling to the top loads the 20 before, above the rest.
        b.js("document.getElementById('history').scrollTop = 0; return true").await;
        b.wait_for("li.msg[data-seq='1']").await;
        let seqs = b
            .js("return Array.from(document.querySelectorAll('#messages li.msg')).map(li => Number(li.dataset.seq))")
            .await;
        let want: Vec<i64> = (1..=70).collect();
        assert_eq!(seqs, json!(want));
        b.wait_until("nothing older is offered", "return document.getElementById('load-older').hidden").await;
    })
    .await;
}

#[tokio::test]
async fn a_message_posted_from_the_page_is_readable_over_the_api() {
    let app = spawn_app().await;
    let (thread, _) = seed_threads(&app).await;
    run("a_message_posted_from_the_page", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("#thread-live[data-state='live']").await;
        // Post as the other participant, which the account also owns.
        b.find("#post-as")
            .await
            .select_by_value(&app.bob.aid)
            .await
            .unwrap();
        b.find("#post-content")
            .await
            .send_keys("typed in the inspector")
            .await
            .unwrap();
        b.find("#post-send").await.click().await.unwrap();
        b.wait_for("li.msg[data-seq='4']").await;
        let (_, page) = json_of(
            app.get_thread(&app.key, &thread, &format!("aid={}&after=3", app.alice.aid))
                .await,
        )
        .await;
        let msgs = page["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 1, "{page}");
        assert_eq!(msgs[0]["content"], "typed in the inspector");
        assert_eq!(msgs[0]["sender_aid"], app.bob.aid.as_str());
        assert_eq!(
            b.count("li.msg[data-seq='4']").await,
            1,
            "shown once (response and live event)"
        );
    })
    .await;
}

#[tokio::test]
async fn closing_from_the_page_makes_a_post_over_the_api_answer_409() {
    let app = spawn_app().await;
    let (thread, _) = seed_threads(&app).await;
    run("closing_from_the_page", |b| async move {
        // A link to the thread asks for the key first, then opens the thread.
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("#signin-key")
            .await
            .send_keys(&app.key)
            .await
            .unwrap();
        b.find("#signin-submit").await.click().await.unwrap();
        b.wait_for("#thread-live[data-state='live']").await;
        b.find("#thread-actions button[data-status='closed']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#thread-status[data-status='closed']").await;
        let res = app
            .post_message(
                &app.key,
                json!({"aid": app.bob.aid, "thread_id": thread, "content": "too late"}),
            )
            .await;
        assert_error(res, 409, "THREAD_NOT_ACTIVE").await;
        assert_eq!(
            app.db_count("SELECT COUNT(*) FROM messages WHERE content = 'too late'"),
            0
        );
        let send = b.find("#post-send").await;
        assert!(
            send.attr("disabled").await.unwrap().is_some(),
            "Send stays enabled"
        );

        // Reopening from the page lets posts through again.
        b.find("#thread-actions button[data-status='active']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#thread-status[data-status='active']").await;
        app.say(&app.bob, &thread, "open again").await;
        b.wait_for("li.msg[data-seq='4']").await;
    })
    .await;
}

/// Opens a turn-taking thread over the API and returns its id.
async fn turn_thread(app: &TestApp) -> String {
    let (status, body) = json_of(app.open_thread(&app.key, json!({})).await).await;
    assert_eq!(status, 200, "{body}");
    body["thread"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_turn_taking_replys_parts_appear_at_their_times() {
    let app = spawn_app_with(|c| c.pace_scale = 0.05).await;
    let thread = turn_thread(&app).await;
    run("a_turn_taking_replys_parts_appear", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&app.url(&format!("/#/thread/{thread}"))).await;
        b.watch_csp().await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.wait_for("#turn-panel:not([hidden])").await;

        // An inbound message from the page: its batch and decision are shown.
        b.find("#post-sender").await.clear().await.unwrap();
        b.find("#post-sender").await.send_keys("dana").await.unwrap();
        b.find("#post-content").await.send_keys("How did Q1 go?").await.unwrap();
        b.find("#post-send").await.click().await.unwrap();
        b.wait_for("#batches li.batch[data-epoch='1'][data-decision='speak']").await;
        b.wait_for("li.msg[data-seq='1']").await;

        // The agent replies over the API; its parts arrive live.
        let reply = "Q1 went well overall, better than the plan. Revenue grew four percent. \
                     Costs stayed flat while we hired two engineers.";
        let (status, body) = json_of(
            app.post_json(
                "/v1/turn-taking/actions/respond",
                &app.key,
                &json!({"thread_id": thread, "turn_epoch": 1, "content": reply}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let scheduled = body["scheduled"].as_array().unwrap().clone();
        assert!(scheduled.len() >= 2, "{body}");
        for (i, part) in scheduled.iter().enumerate() {
            let css = format!("#timeline li.part[data-index='{i}'][data-state='delivered']");
            let (at, text) = b.part(&css).await;
            assert_eq!(at.as_deref(), part["deliver_at"].as_str());
            assert!(text.contains(part["content"].as_str().unwrap()), "{text}");
        }
        // Each part is also in the history, once, in order.
        let contents = b
            .js("return Array.from(document.querySelectorAll('#messages li.msg .body')).map(n => n.textContent)")
            .await;
        let mut want = vec![json!("How did Q1 go?")];
        want.extend(scheduled.iter().map(|p| p["content"].clone()));
        assert_eq!(contents, Value::Array(want));
        b.wait_until("typing stops", "return document.getElementById('typing').hidden").await;
        // The timeline's bars are sized through the CSSOM, which the CSP allows.
        b.assert_no_csp_violation().await;
    })
    .await;
}

#[tokio::test]
async fn a_newer_turn_shows_the_undelivered_parts_as_cancelled() {
    // Real pacing: each part types for about two seconds.
    let app = spawn_app_with(|c| c.pace_scale = 1.0).await;
    let thread = turn_thread(&app).await;
    run("a_newer_turn_shows_cancelled_parts", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&app.url(&format!("/#/thread/{thread}"))).await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.find("#post-content").await.send_keys("Tell me everything").await.unwrap();
        b.find("#post-send").await.click().await.unwrap();
        b.wait_for("#batches li.batch[data-epoch='1']").await;
        b.wait_until("the epoch is filled in", "return document.getElementById('respond-epoch').value === '1'").await;

        // The agent replies from the page: three long parts, scheduled.
        let reply = "This is the first part of a long answer, typed slowly. \
                     Here is the second part, which takes a while to type as well. \
                     And the third part closes the answer after even more typing.";
        b.find("#respond-content").await.send_keys(reply).await.unwrap();
        b.find("#respond-send").await.click().await.unwrap();
        b.wait_for("#timeline li.part[data-index='2'][data-state='scheduled']").await;

        // A new inbound message starts turn 2 before the last part is due.
        let (status, body) = json_of(
            app.post_json(
                "/v1/turn-taking/actions/submit_messages",
                &app.key,
                &json!({"thread_id": thread, "messages": [{"sender": "dana", "content": "wait, stop"}]}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        b.wait_for("#timeline li.part[data-index='2'][data-state='cancelled']").await;
        // Whatever the page shows as cancelled never reaches the history.
        let cancelled = b
            .js("return Array.from(document.querySelectorAll('#timeline li.part[data-state=\"cancelled\"] .part-content')).map(n => n.textContent)")
            .await;
        let (_, page) = json_of(app.get_thread(&app.key, &thread, "limit=200").await).await;
        for c in cancelled.as_array().unwrap() {
            assert!(
                !page["messages"].as_array().unwrap().iter().any(|m| m["content"] == *c),
                "cancelled part {c} was delivered: {page}"
            );
        }
    })
    .await;
}

/// A batch from another client: plain HTTP with the account's key, not the page.
async fn submit_over_api(app: &TestApp, thread: &str, messages: Value) -> Value {
    let res = app
        .post_json(
            "/v1/turn-taking/actions/submit_messages",
            &app.key,
            &json!({"thread_id": thread, "messages": messages}),
        )
        .await;
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn batches_and_replies_another_client_submits_appear_with_their_decisions() {
    // Slow pacing: the reply's parts stay scheduled until a newer turn cancels them.
    let app = spawn_app_with(|c| c.pace_scale = 100.0).await;
    let (status, body) = json_of(
        app.open_thread(&app.key, json!({"integrations": {"social_signals": {}}}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let thread = body["thread"]["id"].as_str().unwrap().to_owned();
    run("batches_from_another_client", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.goto(&app.url(&format!("/#/thread/{thread}"))).await;
        b.watch_csp().await;
        b.wait_for("#thread-live[data-state='live']").await;

        let burst = submit_over_api(&app, &thread, json!([
            {"sender": "dana", "content": "How did Q1 go?"},
            {"sender": "eli", "content": "And Q2?"},
            {"sender": "eli", "content": "Numbers, please."}
        ]))
        .await;
        assert_eq!(burst["decision"], "speak");
        let li = b
            .wait_for("#batches li.batch[data-epoch='1'][data-decision='speak']")
            .await;
        let tags = li.attr("data-tags").await.unwrap().unwrap_or_default();
        assert_eq!(
            tags,
            burst["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>().join(" ")
        );
        assert!(tags.contains("burst"), "{tags}");
        let text = li.text().await.unwrap();
        assert!(text.contains("dana: How did Q1 go?") && text.contains("eli: Numbers, please."), "{text}");

        let silent = submit_over_api(&app, &thread, json!([{"sender": "dana", "content": "ok"}, {"sender": "dana", "content": "thanks!"}])).await;
        assert_eq!(silent["decision"], "stay_silent");
        b.wait_for("#batches li.batch[data-epoch='2'][data-decision='stay_silent']").await;
        b.wait_until("the epoch is filled in", "return document.getElementById('respond-epoch').value === '2'").await;

        // The agent's reply, scheduled by another client: its parts show as
        // scheduled with their deliver_at, then cancelled by the next batch.
        let (status, reply) = json_of(
            app.post_json(
                "/v1/turn-taking/actions/respond",
                &app.key,
                &json!({"thread_id": thread, "turn_epoch": 2,
                        "content": "Glad to help. Q1 grew four percent on the plan, and Q2 is tracking the same way."}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        let first = &reply["scheduled"][0];
        let (at, text) = b
            .part("#timeline li.part[data-epoch='2'][data-index='0'][data-state='scheduled']")
            .await;
        assert_eq!(at.as_deref(), first["deliver_at"].as_str());
        assert!(text.contains(first["content"].as_str().unwrap()), "{text}");

        submit_over_api(&app, &thread, json!([{"sender": "dana", "content": "Wait, one more thing?"}])).await;
        b.wait_for("#batches li.batch[data-epoch='3'][data-decision='speak']").await;
        b.wait_for("#timeline li.part[data-epoch='2'][data-index='0'][data-state='cancelled']").await;
        let summary = b.text("#batches li.batch[data-epoch='2']").await;
        assert!(summary.contains("cancelled"), "{summary}");
        b.assert_no_csp_violation().await;
    })
    .await;
}

#[tokio::test]
async fn the_webhooks_view_shows_an_endpoint_made_over_the_api_with_its_delivered_attempts() {
    use crate::webhooks::{Receiver, Reply};
    let app = spawn_app_with(|c| {
        c.allow_private_webhooks = true;
        c.rate_limit_per_minute = 0;
    })
    .await;
    let mut receiver = Receiver::start(&[], Reply::Status(200)).await;
    let (status, body) = json_of(
        app.post_json(
            "/api/acsp/webhooks",
            &app.key,
            &json!({"url": receiver.url, "events": ["thread.message"], "description": "the test bot"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["webhook"]["id"].as_str().unwrap().to_owned();
    let thread = create(&app, &app.alice, &app.bob, "Hooks", "First message").await;
    assert_eq!(receiver.next().await.json["type"], "thread.message");
    // The attempt is recorded once the receiver has answered.
    let attempts = || async {
        let res = app
            .get(&format!("/api/acsp/webhooks/{id}/attempts"), &app.key)
            .await;
        json_of(res).await.1["attempts"].as_array().unwrap().len()
    };
    let deadline = Instant::now() + WAIT;
    while attempts().await == 0 {
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(POLL).await;
    }

    run("the_webhooks_view", |b| async move {
        b.sign_in(&app, &app.key).await;
        b.find("#nav a[data-view='webhooks']")
            .await
            .click()
            .await
            .unwrap();
        let card = format!("#webhooks-list article.webhook[data-id='{id}']");
        let row = b
            .wait_for(&format!(
                "{card} tr.attempt[data-status='200'][data-ok='true']"
            ))
            .await;
        assert!(row.text().await.unwrap().contains(" ms"));
        assert_eq!(b.text(&format!("{card} .webhook-url")).await, receiver.url);
        assert_eq!(
            b.text(&format!("{card} .webhook-events")).await,
            "thread.message"
        );
        assert!(b
            .text(&format!("{card} .webhook-description"))
            .await
            .contains("the test bot"));
        assert_eq!(b.text(&format!("{card} .webhook-status")).await, "active");

        // A new delivery shows up without a reload (the view refreshes itself).
        app.say(&app.bob, &thread, "Second message").await;
        receiver.next().await;
        b.wait_until(
            "the second attempt is listed",
            &format!("return document.querySelectorAll(\"{card} tr.attempt\").length === 2"),
        )
        .await;

        // Pausing from the page pauses it for the API too.
        b.find(&format!("{card} button[data-action='pause']"))
            .await
            .click()
            .await
            .unwrap();
        b.wait_for(&format!(
            "#webhooks-list article.webhook[data-id='{id}'][data-status='paused']"
        ))
        .await;
        let (_, list) = json_of(app.get("/api/acsp/webhooks", &app.key).await).await;
        assert_eq!(list["webhooks"][0]["status"], "paused", "{list}");

        // Adding one from the page: the API lists it, the secret is shown once.
        b.find("#webhook-url")
            .await
            .send_keys(&receiver.url)
            .await
            .unwrap();
        for event in ["thread.created", "thread.message"] {
            let css = format!("input[name='webhook-event'][value='{event}']");
            b.find(&css).await.click().await.unwrap();
        }
        b.find("#webhook-description")
            .await
            .send_keys("from the page")
            .await
            .unwrap();
        b.find("#webhook-form button[type='submit']")
            .await
            .click()
            .await
            .unwrap();
        let secret = b.wait_for("#webhook-secret:not([hidden]) code").await;
        assert!(secret.text().await.unwrap().starts_with("whsec_"));
        b.wait_until(
            "two endpoints are listed",
            "return document.querySelectorAll('#webhooks-list article.webhook').length === 2",
        )
        .await;
        let (_, list) = json_of(app.get("/api/acsp/webhooks", &app.key).await).await;
        let added = list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] != id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{list}"));
        assert_eq!(
            added["events"],
            json!(["thread.status", "thread.deleted"]),
            "{list}"
        );
        assert_eq!(added["description"], "from the page", "{list}");
    })
    .await;
}

/// Not a check: writes a screenshot of each view into the directory named by
/// `THREADLINE_INSPECTOR_SCREENSHOTS` (the README's pictures come from here).
#[tokio::test]
async fn screenshots_of_each_view() {
    let Ok(dir) = std::env::var("THREADLINE_INSPECTOR_SCREENSHOTS") else {
        println!("screenshots_of_each_view: skipped: THREADLINE_INSPECTOR_SCREENSHOTS not set");
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let app = spawn_app_with(|c| {
        c.pace_scale = 0.3;
        c.allow_private_webhooks = true;
    })
    .await;
    // A webhook endpoint with delivered attempts, and one that fails.
    let mut receiver =
        crate::webhooks::Receiver::start(&[], crate::webhooks::Reply::Status(204)).await;
    for (url, events, description) in [
        (
            receiver.url.clone(),
            json!(["thread.created", "thread.message"]),
            "the support bot",
        ),
        (
            "http://127.0.0.1:9/hook".to_owned(),
            json!(["thread.message"]),
            "an old receiver",
        ),
    ] {
        let body = json!({"url": url, "events": events, "description": description});
        let (status, body) =
            json_of(app.post_json("/api/acsp/webhooks", &app.key, &body).await).await;
        assert_eq!(status, 201, "{body}");
    }
    let (thread, _) = seed_threads(&app).await;
    app.say(&app.alice, &thread, "Thanks, I'll read them tonight.")
        .await;
    for _ in 0..3 {
        receiver.next().await;
    }
    let (status, body) = json_of(
        app.open_thread(&app.key, json!({"integrations": {"social_signals": {}}}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let turn = body["thread"]["id"].as_str().unwrap().to_owned();
    // Batches from another client, one of them silent.
    submit_over_api(
        &app,
        &turn,
        json!([{"sender": "dana", "content": "hi team"}]),
    )
    .await;
    submit_over_api(
        &app,
        &turn,
        json!([{"sender": "eli", "content": "ok"}, {"sender": "eli", "content": "thanks!"}]),
    )
    .await;
    let shot = |b: &Browser, name: &str| {
        let path = dir.join(name);
        let client = b.client.clone();
        async move {
            client
                .execute(
                    "window.scrollTo(0, 0); document.activeElement.blur()",
                    vec![],
                )
                .await
                .expect("scroll to the top");
            let png = client.screenshot().await.expect("screenshot");
            std::fs::write(&path, png).expect("write screenshot");
        }
    };
    let dark_dir = dir.clone();
    let dark_app_url = thread_url(&app, &thread, &app.alice.aid);
    let dark_turn_url = app.url(&format!("/#/thread/{turn}"));
    let dark_hooks_url = app.url("/#/webhooks");
    let key = app.key.clone();
    let base = app.url("/");
    run_with("screenshots_of_each_view", 1100, 860, &[], |b| async move {
        b.goto(&app.url("/")).await;
        b.wait_for("#signin-key").await;
        shot(&b, "signin.png").await;
        b.sign_in(&app, &app.key).await;
        b.wait_for("#threads-body tr").await;
        shot(&b, "threads.png").await;
        b.find("#nav a[data-view='agents']").await.click().await.unwrap();
        b.wait_for("#agents-body tr").await;
        shot(&b, "agents.png").await;
        b.goto(&thread_url(&app, &thread, &app.alice.aid)).await;
        b.wait_for("#thread-live[data-state='live']").await;
        shot(&b, "thread.png").await;
        b.goto(&app.url(&format!("/#/thread/{turn}"))).await;
        b.wait_for("#thread-live[data-state='live']").await;
        b.find("#post-content").await.send_keys("How did Q1 go?").await.unwrap();
        b.find("#post-send").await.click().await.unwrap();
        b.wait_until("the epoch is filled in", "return document.getElementById('respond-epoch').value === '3'").await;
        b.find("#respond-content")
            .await
            .send_keys("Q1 went well overall, better than the plan. Revenue grew four percent. Costs stayed flat while we hired.")
            .await
            .unwrap();
        b.find("#respond-send").await.click().await.unwrap();
        b.wait_for("#timeline li.part[data-index='0'][data-state='delivered']").await;
        b.wait_for("#batches li.batch[data-epoch='1']").await;
        // Tall enough for the batches under the reply parts.
        b.client.set_window_size(1100, 1500).await.unwrap();
        shot(&b, "turn-taking.png").await;
        b.find("#nav a[data-view='webhooks']").await.click().await.unwrap();
        b.wait_for("#webhooks-list tr.attempt").await;
        shot(&b, "webhooks.png").await;
        b.client.set_window_size(1100, 860).await.unwrap();
        b.find("#nav a[data-view='server']").await.click().await.unwrap();
        b.wait_until("health is shown", "return document.getElementById('srv-version').textContent !== '…'").await;
        shot(&b, "server.png").await;
        b.client.set_window_size(400, 800).await.unwrap();
        b.find("#nav a[data-view='threads']").await.click().await.unwrap();
        b.wait_for("#threads-body tr").await;
        shot(&b, "threads-narrow.png").await;
        b.find("#nav a[data-view='webhooks']").await.click().await.unwrap();
        b.wait_for("#webhooks-list tr.attempt").await;
        shot(&b, "webhooks-narrow.png").await;
    })
    .await;
    run_with("screenshots_dark", 1100, 860, &[DARK], |b| async move {
        b.goto(&base).await;
        b.wait_for("#signin-key")
            .await
            .send_keys(&key)
            .await
            .unwrap();
        b.find("#signin-submit").await.click().await.unwrap();
        b.wait_for("#view-threads:not([hidden])").await;
        b.goto(&dark_app_url).await;
        b.wait_for("#thread-live[data-state='live']").await;
        let png = b.client.screenshot().await.expect("screenshot");
        std::fs::write(dark_dir.join("thread-dark.png"), png).expect("write screenshot");
        b.client.set_window_size(1100, 1500).await.unwrap();
        b.goto(&dark_turn_url).await;
        b.wait_for("#batches li.batch[data-epoch='3']").await;
        b.wait_for("#timeline li.part").await;
        let png = b.client.screenshot().await.expect("screenshot");
        std::fs::write(dark_dir.join("turn-taking-dark.png"), png).expect("write screenshot");
        b.goto(&dark_hooks_url).await;
        b.wait_for("#webhooks-list tr.attempt").await;
        let png = b.client.screenshot().await.expect("screenshot");
        std::fs::write(dark_dir.join("webhooks-dark.png"), png).expect("write screenshot");
    })
    .await;
}
