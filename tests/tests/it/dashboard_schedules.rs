//! The dashboard's schedules section: the toggle and run-now (with its confirmation step) clicked
//! in a real headless Chromium, the forms' cookie check and busy page, and escaping of what runs
//! stored.

use std::time::Duration;

use fantoccini::{Client, Locator};
use sqlx::PgPool;

use crate::admin::{TOKEN, admin, http_with};
use crate::app::TestApp;
use crate::dashboard::{Browser, browser, sign_in};

/// The advisory lock a run of a schedule holds (`SCHEDULE_LOCK_CLASS` in
/// `producer/src/schedules/runner.rs`, "ls"): holding it here makes the schedule busy.
const SCHEDULE_LOCK_CLASS: i32 = 0x6c73;

async fn seeded(pool: PgPool) -> TestApp {
    let app = TestApp::spawn(pool).await;
    producer::schedules::store::seed(&app.pool, &app.settings)
        .await
        .expect("seed schedules");
    app
}

async fn runs_of(pool: &PgPool, schedule: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM schedule_runs WHERE schedule = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
        .expect("count runs");
    n
}

async fn enabled_and_by(pool: &PgPool, schedule: &str) -> (bool, String) {
    sqlx::query_as("SELECT enabled, updated_by FROM schedules WHERE name = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
        .expect("schedule row")
}

/// Waits until the element at `css` on the current page has exactly `expected` as its text (the
/// page a click leads to can have the same elements as the one before, so wait for the value).
async fn wait_text(client: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        if text.as_deref() == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never read {expected:?} (last: {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_toggles_a_schedule_and_runs_it_now_after_confirmation_in_the_browser(pool: PgPool) {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let app = seeded(pool).await;
    let (addr, stop) = admin(&app, Some(TOKEN)).await;
    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;

    client.goto(&format!("http://{addr}/")).await.expect("load dashboard");
    sign_in(client, TOKEN).await;
    let row = client
        .find(Locator::Id("schedule-check"))
        .await
        .expect("the check schedule's row")
        .text()
        .await
        .expect("text");
    let description = producer::schedules::store::get(&app.pool, "check")
        .await
        .expect("read")
        .expect("check")
        .description;
    assert!(
        row.contains("every ") && row.contains(&description) && row.contains("UTC"),
        "{row}"
    );
    wait_text(client, "#schedule-check td.enabled", "yes").await;

    // Disable: the row says so, and so does the table, with the dashboard as the actor.
    click(client, "toggle-check").await;
    wait_text(client, "#schedule-check td.enabled", "no").await;
    wait_text(client, "#toggle-check", "Enable").await;
    assert_eq!(
        enabled_and_by(&app.pool, "check").await,
        (false, "dashboard".to_owned())
    );
    wait_text(client, "#schedule-check td.next", "-").await;

    // And enable again.
    click(client, "toggle-check").await;
    wait_text(client, "#schedule-check td.enabled", "yes").await;
    wait_text(client, "#toggle-check", "Disable").await;
    assert_eq!(enabled_and_by(&app.pool, "check").await, (true, "dashboard".to_owned()));

    // "Run now" only asks; Cancel goes back without running.
    click(client, "run-check").await;
    wait_text(client, "h1", "Run schedule check now?").await;
    assert_eq!(runs_of(&app.pool, "check").await, 0, "the first post runs nothing");
    click(client, "cancel").await;
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("schedules"))
        .await
        .expect("back on the dashboard");
    assert_eq!(runs_of(&app.pool, "check").await, 0, "cancelled");

    // Confirm runs it: one manual run by the dashboard, shown in the recent runs.
    click(client, "run-check").await;
    wait_text(client, "h1", "Run schedule check now?").await;
    assert_eq!(runs_of(&app.pool, "check").await, 0);
    click(client, "confirm-run").await;
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("runs"))
        .await
        .expect("back on the dashboard");
    let runs: Vec<(i64, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, trigger, requested_by, status FROM schedule_runs WHERE schedule = 'check'")
            .fetch_all(&app.pool)
            .await
            .expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (run_id, trigger, requested_by, status) = runs.into_iter().next().expect("one run");
    assert_eq!(
        (trigger.as_str(), requested_by.as_deref(), status.as_str()),
        ("manual", Some("dashboard"), "ok")
    );
    let url = client.current_url().await.expect("url");
    assert_eq!(url.path(), "/", "{url}");
    wait_text(client, &format!("#run-{run_id} td.status"), "ok").await;
    wait_text(client, &format!("#run-{run_id} td.trigger"), "manual (dashboard)").await;
    wait_text(client, "#schedule-check td.last .badge", "ok").await;

    browser.close().await;
    stop.cancel();
}

/// The forms without a browser: no cookie, no change; no `confirm=yes`, no run; a schedule
/// already running answers a page saying so (409) and starts nothing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_schedule_forms_need_the_cookie_and_the_confirmation_and_say_when_busy(pool: PgPool) {
    let app = seeded(pool).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;
    let cookie = format!("linkpulse_admin_token={TOKEN}");
    let post = |path: &'static str, cookie: Option<String>, body: &'static str| async move {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        http_with(addr, "POST", path, &headers, Some(body)).await
    };

    for cookie in [None, Some("linkpulse_admin_token=wrong".to_owned())] {
        let reply = post("/dashboard/schedules/check/toggle", cookie.clone(), "enabled=false").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = post("/dashboard/schedules/check/run", cookie, "confirm=yes").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    assert_eq!(enabled_and_by(&app.pool, "check").await, (true, "seed".to_owned()));
    assert_eq!(runs_of(&app.pool, "check").await, 0);

    for body in ["", "confirm=no", "confirm=YES"] {
        let reply = post("/dashboard/schedules/check/run", Some(cookie.clone()), body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("Run schedule check now?"), "{}", reply.body);
        assert!(reply.body.contains("name=confirm value=yes"), "{}", reply.body);
    }
    assert_eq!(runs_of(&app.pool, "check").await, 0, "nothing ran without confirm=yes");
    let reply = post("/dashboard/schedules/nope/run", Some(cookie.clone()), "").await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // Busy: another holder of the schedule's run lock.
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext('check'))")
        .bind(SCHEDULE_LOCK_CLASS)
        .execute(&mut *holder)
        .await
        .expect("take the run lock");
    let reply = post("/dashboard/schedules/check/run", Some(cookie.clone()), "confirm=yes").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("running already"), "{}", reply.body);
    assert!(reply.body.contains("<a href=\"/\""), "a link back: {}", reply.body);
    assert!(!reply.body.contains("{\"error\""), "a page, not JSON: {}", reply.body);
    assert_eq!(runs_of(&app.pool, "check").await, 0);
    holder.rollback().await.expect("release");

    let reply = post("/dashboard/schedules/check/run", Some(cookie.clone()), "confirm=yes").await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(runs_of(&app.pool, "check").await, 1);

    // The toggle sets what the button showed, so a second click of a stale page changes nothing.
    for _ in 0..2 {
        let reply = post(
            "/dashboard/schedules/check/toggle",
            Some(cookie.clone()),
            "enabled=false",
        )
        .await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        assert_eq!(
            enabled_and_by(&app.pool, "check").await,
            (false, "dashboard".to_owned())
        );
    }
    let reply = post("/dashboard/schedules/nope/toggle", Some(cookie), "enabled=true").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_escapes_a_schedule_run_error(pool: PgPool) {
    let app = seeded(pool).await;
    let error = "boom <script>alert(1)</script> and \"'><img src=x onerror=alert(1)>";
    sqlx::query(
        "INSERT INTO schedule_runs (schedule, trigger, requested_by, started_at, finished_at, duration_ms, status, error, producer)
         VALUES ('check', 'manual', $1, now(), now(), 5, 'failed', $2, 'test:1')",
    )
    .bind("<b>someone</b>")
    .bind(error)
    .execute(&app.pool)
    .await
    .expect("insert run");
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    let reply = http_with(addr, "GET", "/", &[], None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = &reply.body;
    for raw in [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "\"'><img",
        "<b>someone</b>",
    ] {
        assert!(!body.contains(raw), "raw {raw:?} in the page: {body}");
    }
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{body}");
    assert!(
        body.contains("&quot;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{body}"
    );
    assert!(body.contains("<span class=\"badge failed\">failed</span>"), "{body}");
}
