//! Schedules as data: misfire grace and coalescing, exactly-once occurrences across producers,
//! failed and abandoned runs, run-now through the API (token, 409, dedupe), the prune schedule,
//! and toggles through the CLI and the API on a running leader, across a restart.

use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use linkpulse_shared::config::ExposeSecret;
use producer::schedules::{runner, store};

use crate::admin::{TOKEN, admin, http, http_with};
use crate::app::TestApp;
use crate::helpers::wait_for;
use crate::producer_loop::{ProducerRun, producer_command};

/// Seeds the rows and returns the app.
async fn seeded(pool: PgPool) -> TestApp {
    let app = TestApp::spawn(pool).await;
    store::seed(&app.pool, &app.settings).await.expect("seed");
    app
}

async fn runs_of(pool: &PgPool, schedule: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT trigger, status, error FROM schedule_runs WHERE schedule = $1 ORDER BY id")
        .bind(schedule)
        .fetch_all(pool)
        .await
        .expect("runs")
}

async fn queued_checks(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE kind = 'check' AND state = 'queued'")
        .fetch_one(pool)
        .await
        .expect("count");
    n
}

/// Puts `schedule`'s next occurrence `ago` in the past, with the given grace.
async fn due_since(pool: &PgPool, schedule: &str, ago: Duration, grace: Duration) {
    sqlx::query(
        "UPDATE schedules SET next_run_at = now() - make_interval(secs => $2), misfire_grace_ms = $3 \
         WHERE name = $1",
    )
    .bind(schedule)
    .bind(ago.as_secs_f64())
    .bind(i64::try_from(grace.as_millis()).expect("ms"))
    .execute(pool)
    .await
    .expect("make due");
}

async fn only_check(pool: &PgPool) {
    sqlx::query("UPDATE schedules SET enabled = (name = 'check'), next_run_at = CASE WHEN name = 'check' THEN now() + interval '1 hour' END")
        .execute(pool)
        .await
        .expect("only check");
}

/// A week of downtime leaves one `missed` row, not ten thousand; the schedule jumps to its next
/// occurrence after now and nothing is enqueued for the missed one. Within its grace, a late
/// occurrence runs once, late; the pass right after runs nothing (coalesced).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn misfires_past_the_grace_are_recorded_once_and_late_runs_within_it_run_once(pool: PgPool) {
    let app = seeded(pool).await;
    app.add_links(&[app.url("/a")]).await;
    only_check(&app.pool).await;
    due_since(
        &app.pool,
        "check",
        Duration::from_secs(7 * 24 * 3600),
        Duration::from_secs(30),
    )
    .await;
    let runs = runner::run_due(&app.pool, &app.settings, Utc::now())
        .await
        .expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs_of(&app.pool, "check").await.len(), 1);
    let (trigger, status, error) = runs_of(&app.pool, "check").await.remove(0);
    assert_eq!((trigger.as_str(), status.as_str()), ("missed", "missed"));
    assert!(error.unwrap_or_default().contains("misfire grace"));
    assert_eq!(queued_checks(&app.pool).await, 0, "a missed run enqueues nothing");
    let schedule = store::get(&app.pool, "check").await.expect("get").expect("check");
    assert!(
        schedule.next_run_at.expect("next") > Utc::now(),
        "jumped to the next occurrence"
    );
    assert_eq!(schedule.last_status.as_deref(), Some("missed"));

    due_since(&app.pool, "check", Duration::from_secs(10), Duration::from_secs(30)).await;
    let runs = runner::run_due(&app.pool, &app.settings, Utc::now())
        .await
        .expect("pass");
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].trigger.as_str(), runs[0].status.as_str()), ("schedule", "ok"));
    assert_eq!(runs[0].enqueued, Some(1));
    assert_eq!(queued_checks(&app.pool).await, 1);
    let again = runner::run_due(&app.pool, &app.settings, Utc::now())
        .await
        .expect("pass");
    assert!(again.is_empty(), "coalesced: nothing more is due: {again:?}");
    assert_eq!(runs_of(&app.pool, "check").await.len(), 2);
}

/// Two producers' schedulers racing for a fast schedule (no leader lock: the data alone decides)
/// run each occurrence exactly once between them.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn two_producers_run_each_occurrence_exactly_once(pool: PgPool) {
    let app = seeded(pool).await;
    only_check(&app.pool).await;
    sqlx::query(
        "UPDATE schedules SET every_ms = 200, misfire_grace_ms = 10000, next_run_at = now() WHERE name = 'check'",
    )
    .execute(&app.pool)
    .await
    .expect("fast schedule");
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let race = |app: &TestApp| {
        let (pool, settings) = (app.pool.clone(), app.settings.clone());
        tokio::spawn(async move {
            let mut ran = 0;
            while tokio::time::Instant::now() < until {
                ran += runner::run_due(&pool, &settings, Utc::now()).await.expect("pass").len();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ran
        })
    };
    let (a, b) = (race(&app), race(&app));
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    let (runs, occurrences): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT scheduled_for) FROM schedule_runs WHERE schedule = 'check'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(runs, occurrences, "one run per occurrence");
    assert_eq!(i64::try_from(a + b).expect("fits"), runs, "every run was counted once");
    assert!(runs >= 10, "about 15 occurrences in 3 s at 200 ms: {runs}");
}

/// A run whose work fails (inserts refused by the database) is recorded `failed` with the error;
/// the schedule has moved on, and the next occurrence runs and succeeds.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_failed_run_is_recorded_and_the_next_one_runs(pool: PgPool) {
    let app = seeded(pool).await;
    app.add_links(&[app.url("/a")]).await;
    only_check(&app.pool).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'the test refuses new jobs'; END$$; \
         CREATE TRIGGER refuse_jobs BEFORE INSERT ON queue_jobs \
         FOR EACH STATEMENT EXECUTE FUNCTION refuse_jobs()",
    )
    .execute(&app.pool)
    .await
    .expect("refuse inserts");
    due_since(&app.pool, "check", Duration::ZERO, Duration::from_secs(30)).await;
    let runs = runner::run_due(&app.pool, &app.settings, Utc::now())
        .await
        .expect("pass");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "failed");
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("the test refuses new jobs"),
        "{:?}",
        runs[0]
    );
    let schedule = store::get(&app.pool, "check").await.expect("get").expect("check");
    assert_eq!(schedule.last_status.as_deref(), Some("failed"));
    assert!(schedule.next_run_at.expect("next") > Utc::now());

    sqlx::raw_sql("DROP TRIGGER refuse_jobs ON queue_jobs")
        .execute(&app.pool)
        .await
        .expect("accept inserts");
    due_since(&app.pool, "check", Duration::ZERO, Duration::from_secs(30)).await;
    let runs = runner::run_due(&app.pool, &app.settings, Utc::now())
        .await
        .expect("pass");
    assert_eq!(runs[0].status, "ok", "{runs:?}");
    assert_eq!(queued_checks(&app.pool).await, 1);
}

/// A run left `running` by a producer that died (its lock died with its connection) is closed as
/// `abandoned` by whoever takes the schedule next; a run still held is not.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn runs_left_by_a_dead_producer_are_closed_as_abandoned(pool: PgPool) {
    let app = seeded(pool).await;
    sqlx::query(
        "INSERT INTO schedule_runs (schedule, trigger, status, producer) VALUES ('check', 'schedule', 'running', 'gone:1')",
    )
    .execute(&app.pool)
    .await
    .expect("orphan");
    // `refresh` is held by a live run: its lock is taken here.
    let mut holder = PgConnection::connect(app.settings.database_url.expose_secret())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; SELECT pg_advisory_xact_lock(27763, hashtext('refresh'))")
        .execute(&mut holder)
        .await
        .expect("hold refresh");
    sqlx::query(
        "INSERT INTO schedule_runs (schedule, trigger, status, producer) VALUES ('refresh', 'manual', 'running', 'alive:1')",
    )
    .execute(&app.pool)
    .await
    .expect("live run");
    assert_eq!(runner::close_abandoned(&app.pool).await.expect("close"), 1);
    assert_eq!(runs_of(&app.pool, "check").await[0].1, "abandoned");
    assert_eq!(
        runs_of(&app.pool, "refresh").await[0].1,
        "running",
        "a held run is not abandoned"
    );
    let busy = runner::run_now(&app.pool, &app.settings, "refresh", "test").await;
    assert!(matches!(busy, Err(runner::RunError::Busy(_))), "{busy:?}");
}

/// `POST /api/schedules/check/run`: refused without the token, recorded `manual` with the token,
/// deduplicated like every enqueue (a second run finds the job pending and enqueues nothing), and
/// 409 while the schedule is running elsewhere.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn run_now_needs_the_token_records_manual_honours_dedupe_and_answers_409_when_busy(pool: PgPool) {
    let app = seeded(pool).await;
    app.add_links(&[app.url("/a"), app.url("/b")]).await;
    only_check(&app.pool).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;
    assert_eq!(
        http(addr, "POST", "/api/schedules/check/run", None, None).await.status,
        401
    );
    assert_eq!(
        http(addr, "POST", "/api/schedules/check/run", Some("wrong"), None)
            .await
            .status,
        401
    );
    assert!(
        runs_of(&app.pool, "check").await.is_empty(),
        "nothing ran without the token"
    );

    let reply = http(addr, "POST", "/api/schedules/check/run", Some(TOKEN), None).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let run = reply.json();
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["requested_by"], "api");
    assert_eq!(run["status"], "ok");
    assert_eq!(run["enqueued"], 2);
    let again = http(addr, "POST", "/api/schedules/check/run", Some(TOKEN), None)
        .await
        .json();
    assert_eq!(again["enqueued"], 0, "dedupe: the jobs are pending: {again}");
    assert_eq!(queued_checks(&app.pool).await, 2);
    let schedule = store::get(&app.pool, "check").await.expect("get").expect("check");
    assert!(
        schedule.next_run_at.expect("next") > Utc::now() + chrono::Duration::minutes(30),
        "a manual run leaves the plan alone"
    );

    let mut holder = PgConnection::connect(app.settings.database_url.expose_secret())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; SELECT pg_advisory_xact_lock(27763, hashtext('check'))")
        .execute(&mut holder)
        .await
        .expect("hold check");
    let busy = http(addr, "POST", "/api/schedules/check/run", Some(TOKEN), None).await;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(
        http(addr, "POST", "/api/schedules/nope/run", Some(TOKEN), None)
            .await
            .status,
        404
    );

    let listed = http(addr, "GET", "/api/runs?schedule=check", None, None).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let stats = http(addr, "GET", "/api/schedules/stats", None, None).await.json();
    assert_eq!(stats["total"], 3, "{stats}");
    assert_eq!(stats["enabled"], 1, "{stats}");
    assert_eq!(stats["runs"], 2, "{stats}");
    assert_eq!(stats["succeeded"], 2, "{stats}");
    assert_eq!(stats["last_24h"]["runs"], 2, "{stats}");
    assert_eq!(stats["schedules"][0]["name"], "check", "{stats}");
    assert_eq!(stats["schedules"][0]["last_status"], "ok", "{stats}");
}

/// PATCH validates its input (400 with the reason), needs the token, and recomputes the next run.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn patch_validates_and_changes_a_schedule(pool: PgPool) {
    let app = seeded(pool).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;
    let patch = |body: &'static str, token: Option<&'static str>| async move {
        let length = body.len().to_string();
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", length.as_str()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        http_with(addr, "PATCH", "/api/schedules/check", &headers, Some(body)).await
    };
    assert_eq!(patch(r#"{"enabled":false}"#, None).await.status, 401);
    let bad = patch(r#"{"cron":"61 * * * *"}"#, Some(TOKEN)).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("invalid cron expression"), "{}", bad.body);
    let bad = patch(r#"{"cron":"0 3 * * *","timezone":"Mars/Olympus"}"#, Some(TOKEN)).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(patch(r#"{"limit":0}"#, Some(TOKEN)).await.status, 400);
    assert_eq!(patch(r#"{"colour":"red"}"#, Some(TOKEN)).await.status, 400);

    let changed = patch(
        r#"{"cron":"30 2 * * *","timezone":"Europe/Berlin","limit":500}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let changed = changed.json();
    assert_eq!(changed["cron"], "30 2 * * *");
    assert_eq!(changed["every"], Value::Null);
    assert_eq!(changed["limit"], 500);
    assert_eq!(changed["misfire_grace"], "1m", "cron's default grace");
    assert_eq!(changed["updated_by"], "api");
    let next: chrono::DateTime<Utc> = serde_json::from_value(changed["next_run_at"].clone()).expect("next");
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(local.format("%H:%M").to_string(), "02:30", "{local}");
}

/// The prune schedule deletes runs older than `LINKPULSE_RETAIN_RUNS` and finished jobs past
/// their retention, keeps the rest, and records the counts in its own run.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn prune_deletes_only_what_is_past_retention_and_records_the_counts(pool: PgPool) {
    let mut app = seeded(pool).await;
    app.settings.retain_runs = Duration::from_secs(60 * 24 * 3600);
    sqlx::raw_sql(
        "INSERT INTO schedule_runs (schedule, trigger, status, started_at, finished_at, producer) \
         SELECT 'check', 'schedule', 'ok', now() - interval '61 days' - n * interval '1 minute', \
                now() - interval '61 days', 'old' FROM generate_series(1, 5) n; \
         INSERT INTO schedule_runs (schedule, trigger, status, started_at, finished_at, producer) \
         SELECT 'check', 'manual', 'ok', now() - interval '59 days' - n * interval '1 minute', \
                now() - interval '59 days', 'kept' FROM generate_series(1, 3) n; \
         INSERT INTO queue_jobs (kind, payload, state, max_attempts, finished_at) \
         SELECT 'check', '{}', 'done', 5, now() - interval '2 days' FROM generate_series(1, 4); \
         INSERT INTO queue_jobs (kind, payload, state, max_attempts, finished_at) \
         SELECT 'check', '{}', 'done', 5, now() FROM generate_series(1, 2)",
    )
    .execute(&app.pool)
    .await
    .expect("history");
    let run = runner::run_now(&app.pool, &app.settings, "prune", "test")
        .await
        .expect("prune");
    assert_eq!(run.status, "ok", "{run:?}");
    let details = run.details.expect("details");
    assert_eq!(details["deleted_runs"], 5, "{details}");
    assert_eq!(details["deleted_jobs"], 4, "{details}");
    let (old, kept): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE producer = 'old'), count(*) FILTER (WHERE producer = 'kept') FROM schedule_runs",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!((old, kept), (0, 3));
    assert_eq!(crate::helpers::count_state(&app.pool, "done").await, 2);
}

/// The CLI and the API toggle a schedule of a running leader within 2 s; the toggle survives a
/// restart (the table, not the environment, is the truth), and a disabled schedule enqueues
/// nothing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn toggles_reach_the_running_leader_within_two_seconds_and_survive_a_restart(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let env = [
        ("LINKPULSE_CYCLE_INTERVAL", "300ms"),
        ("LINKPULSE_CHECK_AFTER", "0s"),
        ("LINKPULSE_REFRESH_ENABLED", "false"),
        ("LINKPULSE_ADMIN_TOKEN", TOKEN),
    ];
    let producer = ProducerRun::spawn(&url, &env).await;
    let check_runs = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM schedule_runs WHERE schedule = 'check' AND trigger = 'schedule'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        n
    };
    wait_for(Duration::from_secs(30), "scheduled check runs", || async {
        (check_runs().await >= 2).then_some(())
    })
    .await;

    // CLI: disable.
    let output = producer_command(&url, &["schedules", "disable", "check", "--json"], &env)
        .output()
        .await
        .expect("producer schedules disable");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let shown: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(shown["enabled"], false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = check_runs().await;
    sqlx::query("UPDATE queue_jobs SET state = 'done', finished_at = now() WHERE state = 'queued'")
        .execute(&app.pool)
        .await
        .expect("finish jobs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(check_runs().await, settled, "no run once disabled");
    assert_eq!(
        queued_checks(&app.pool).await,
        0,
        "a disabled schedule enqueues nothing"
    );

    // Restart: still disabled, although the environment says checks are enabled.
    assert_eq!(producer.stop(Signal::SIGTERM).await, Some(0));
    let producer = ProducerRun::spawn(&url, &env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(check_runs().await, settled, "the toggle survived the restart");
    let listed = http(producer.admin, "GET", "/api/schedules/check", None, None)
        .await
        .json();
    assert_eq!(listed["enabled"], false, "{listed}");
    assert_eq!(
        listed["updated_by"].as_str().map(|s| s.starts_with("cli")),
        Some(true),
        "{listed}"
    );

    // API: enable; the leader runs it within 2 s.
    let body = r#"{"enabled":true}"#;
    let length = body.len().to_string();
    let bearer = format!("Bearer {TOKEN}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", length.as_str()),
        ("Authorization", bearer.as_str()),
    ];
    let reply = http_with(producer.admin, "PATCH", "/api/schedules/check", &headers, Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let enabled_at = tokio::time::Instant::now();
    wait_for(Duration::from_secs(2), "a run after enabling", || async {
        (check_runs().await > settled).then_some(())
    })
    .await;
    assert!(enabled_at.elapsed() <= Duration::from_millis(2500));
    assert_eq!(queued_checks(&app.pool).await, 1);
    let page = http(producer.admin, "GET", "/metrics", None, None).await.body;
    assert!(
        page.contains("linkpulse_schedule_last_success_timestamp_seconds{schedule=\"check\"}"),
        "{page}"
    );
    assert_eq!(producer.stop(Signal::SIGTERM).await, Some(0));
}

/// `producer serve` answers the API and runs no schedule (cron mode); `producer cycle check` runs
/// the one schedule, recorded as a manual run.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn serve_runs_no_schedule_and_cycle_name_runs_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let env = [("LINKPULSE_CYCLE_INTERVAL", "200ms"), ("LINKPULSE_CHECK_AFTER", "0s")];
    let mut serve = producer_command(&url, &["serve"], &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("producer serve");
    wait_for(Duration::from_secs(30), "the schedules seeded by serve", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM schedules")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        (n == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(runs_of(&app.pool, "check").await.is_empty(), "serve runs no schedule");
    assert_eq!(queued_checks(&app.pool).await, 0);

    let output = producer_command(&url, &["cycle", "check", "--json"], &env)
        .output()
        .await
        .expect("producer cycle check");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let run: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(run["schedule"], "check");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["requested_by"], "producer cycle");
    assert_eq!(run["enqueued"], 1);
    assert_eq!(queued_checks(&app.pool).await, 1);
    let listed = producer_command(&url, &["runs", "list", "--schedule", "check", "--json"], &env)
        .output()
        .await
        .expect("runs list");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let unknown = producer_command(&url, &["schedules", "show", "nope"], &env)
        .output()
        .await
        .expect("show");
    assert_eq!(unknown.status.code(), Some(1));
    let _ = serve.kill().await;
}
