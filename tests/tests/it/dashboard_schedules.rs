//! The dashboard's schedules page: the toggle and run-now (with its confirmation step) clicked in
//! a real headless Chromium, and over plain HTTP the forms' session check, the confirmation, the
//! busy page and the toggle's idempotence.

use sqlx::PgPool;

use crate::app::TestApp;
use crate::console_security::{post_form, sign_in_http};
use crate::dashboard::{Browser, TOKEN, browser, click, serve_console, sign_in, wait_text, wait_url};

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
    sqlx::query_scalar("SELECT count(*) FROM schedule_runs WHERE schedule = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
        .expect("count runs")
}

async fn enabled_and_by(pool: &PgPool, schedule: &str) -> (bool, String) {
    sqlx::query_as("SELECT enabled, updated_by FROM schedules WHERE name = $1")
        .bind(schedule)
        .fetch_one(pool)
        .await
        .expect("schedule row")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_toggles_a_schedule_and_runs_it_now_after_confirmation_in_the_browser(pool: PgPool) {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let app = seeded(pool).await;
    let (addr, stop) = serve_console(&app, |_| {}).await;
    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;
    let base = format!("http://{addr}");

    // Signed out: the page, no buttons.
    client.goto(&format!("{base}/schedules")).await.expect("schedules");
    wait_text(client, "#schedule-check td.enabled", |t| t == "yes").await;
    assert!(client.find(fantoccini::Locator::Id("toggle-check")).await.is_err());

    client
        .goto(&format!("{base}/signin?next=/schedules"))
        .await
        .expect("sign-in page");
    sign_in(client, TOKEN).await;
    wait_url(client, "the schedules", |u| u.path() == "/schedules").await;
    let row = wait_text(client, "#schedule-check", |_| true).await;
    let description = producer::schedules::store::get(&app.pool, "check")
        .await
        .expect("read")
        .expect("check")
        .description;
    assert!(
        row.contains("every ") && row.contains(&description) && row.contains("UTC"),
        "{row}"
    );

    // Disable: the row says so, and so does the table, with the dashboard as the actor.
    click(client, "toggle-check").await;
    wait_text(client, "#schedule-check td.enabled", |t| t == "no").await;
    wait_text(client, "#toggle-check", |t| t == "Enable").await;
    assert_eq!(
        enabled_and_by(&app.pool, "check").await,
        (false, "dashboard".to_owned())
    );
    wait_text(client, "#schedule-check td.next", |t| t == "-").await;

    // And enable again.
    click(client, "toggle-check").await;
    wait_text(client, "#schedule-check td.enabled", |t| t == "yes").await;
    wait_text(client, "#toggle-check", |t| t == "Disable").await;
    assert_eq!(enabled_and_by(&app.pool, "check").await, (true, "dashboard".to_owned()));

    // "Run now" only asks; Cancel goes back without running.
    click(client, "run-check").await;
    wait_text(client, "h1", |t| t == "Run schedule check now?").await;
    assert_eq!(runs_of(&app.pool, "check").await, 0, "the first post runs nothing");
    click(client, "cancel").await;
    wait_url(client, "the schedules", |u| u.path() == "/schedules").await;
    wait_text(client, "h1", |t| t == "Schedules").await;
    assert_eq!(runs_of(&app.pool, "check").await, 0, "cancelled");

    // Confirm runs it: one manual run by the dashboard, shown in the recent runs.
    click(client, "run-check").await;
    wait_text(client, "h1", |t| t == "Run schedule check now?").await;
    assert_eq!(runs_of(&app.pool, "check").await, 0);
    click(client, "confirm-run").await;
    wait_text(client, "h1", |t| t == "Schedules").await;
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
    assert_eq!(
        (url.path(), url.fragment()),
        ("/schedules", Some(format!("run-{run_id}").as_str()))
    );
    wait_text(client, &format!("#run-{run_id} td.status"), |t| t == "ok").await;
    wait_text(client, &format!("#run-{run_id} td.trigger"), |t| {
        t == "manual (dashboard)"
    })
    .await;
    wait_text(client, "#schedule-check td.last .badge", |t| t == "ok").await;

    browser.close().await;
    stop.cancel();
}

/// The forms without a browser: no session, no change; no `confirm=yes`, no run; a schedule
/// already running answers a page saying so (409) and starts nothing; the toggle sets what the
/// button showed.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_schedule_forms_need_a_session_and_the_confirmation_and_say_when_busy(pool: PgPool) {
    let app = seeded(pool).await;
    let (addr, _stop) = serve_console(&app, |_| {}).await;
    let session = sign_in_http(addr, TOKEN).await;
    let cookie = Some(session.cookie.as_str());
    let csrf = format!("csrf={}", session.csrf);

    for cookie in [None, Some("linkpulse_session=forged")] {
        let reply = post_form(
            addr,
            "/schedules/check/toggle",
            cookie,
            &format!("{csrf}&enabled=false"),
        )
        .await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = post_form(addr, "/schedules/check/run", cookie, &format!("{csrf}&confirm=yes")).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    assert_eq!(enabled_and_by(&app.pool, "check").await, (true, "seed".to_owned()));
    assert_eq!(runs_of(&app.pool, "check").await, 0);

    for extra in ["", "&confirm=no", "&confirm=YES"] {
        let reply = post_form(addr, "/schedules/check/run", cookie, &format!("{csrf}{extra}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("Run schedule check now?"), "{}", reply.body);
        assert!(reply.body.contains("name=\"confirm\" value=\"yes\""), "{}", reply.body);
        assert!(reply.body.contains("id=\"confirm-run\""), "{}", reply.body);
    }
    assert_eq!(runs_of(&app.pool, "check").await, 0, "nothing ran without confirm=yes");
    let reply = post_form(addr, "/schedules/nope/run", cookie, &csrf).await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // Busy: another holder of the schedule's run lock.
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext('check'))")
        .bind(SCHEDULE_LOCK_CLASS)
        .execute(&mut *holder)
        .await
        .expect("take the run lock");
    let reply = post_form(addr, "/schedules/check/run", cookie, &format!("{csrf}&confirm=yes")).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("running already"), "{}", reply.body);
    assert!(reply.body.contains("id=\"error\""), "{}", reply.body);
    assert!(
        reply.body.contains("<a id=\"back\" href=\"/schedules\">"),
        "a link back: {}",
        reply.body
    );
    assert!(!reply.body.contains("{\"error\""), "a page, not JSON: {}", reply.body);
    assert_eq!(runs_of(&app.pool, "check").await, 0);
    holder.rollback().await.expect("release");

    let reply = post_form(addr, "/schedules/check/run", cookie, &format!("{csrf}&confirm=yes")).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(reply.header("location").starts_with("/schedules#run-"), "{reply:?}");
    assert_eq!(runs_of(&app.pool, "check").await, 1);

    // The toggle sets what the button showed, so a second click of a stale page changes nothing.
    for _ in 0..2 {
        let reply = post_form(
            addr,
            "/schedules/check/toggle",
            cookie,
            &format!("{csrf}&enabled=false"),
        )
        .await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        assert_eq!(
            enabled_and_by(&app.pool, "check").await,
            (false, "dashboard".to_owned())
        );
    }
    let reply = post_form(
        addr,
        "/schedules/check/toggle",
        cookie,
        &format!("{csrf}&enabled=maybe"),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = post_form(addr, "/schedules/nope/toggle", cookie, &format!("{csrf}&enabled=true")).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}
