//! `producer queue requeue`: a requeued job starts over with a fresh set of attempts and no
//! previous result (its errors stay as history); of several finished jobs of one link and kind
//! only the newest moves; `--older-than` filters by when a job finished.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use linkpulse_queue::{NewJob, insert_many};
use linkpulse_shared::config::ExposeSecret;
use linkpulse_shared::link_jobs::{REFRESH, dedupe_key};

use crate::app::TestApp;
use crate::producer_loop::producer_command;

/// Runs `producer queue requeue ARGS --json` (the binary: its parser and dispatch); returns its
/// JSON.
async fn requeue(app: &TestApp, args: &[&str]) -> Value {
    let argv: Vec<&str> = ["queue", "requeue", "--json"].iter().chain(args).copied().collect();
    let output = producer_command(app.settings.database_url.expose_secret(), &argv, &[])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("run producer");
    assert!(output.status.success(), "producer {argv:?}: {:?}", output.status);
    serde_json::from_slice(&output.stdout).expect("requeue JSON")
}

/// One job's row, as far as requeue touches it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    state: String,
    attempts: i32,
    run_at_passed: bool,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    result_class: Option<String>,
    status_code: Option<i32>,
    result_detail: Option<String>,
    duration_ms: Option<i32>,
    errors: i64,
}

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, state, attempts, run_at <= now() AS run_at_passed, finished_at, result_class, \
         status_code, result_detail, duration_ms, jsonb_array_length(errors)::int8 AS errors \
         FROM queue_jobs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("rows")
}

/// Marks every unfinished job failed, as if its attempts ran out, with a result to clear.
async fn fail_all(pool: &PgPool) {
    sqlx::query(
        "UPDATE queue_jobs SET state = 'failed', finished_at = now(), attempts = max_attempts, \
         result_class = 'transient', status_code = 503, result_detail = 'HTTP 503', duration_ms = 7, \
         errors = errors || '[{\"error\":\"boom\"}]'::jsonb WHERE state IN ('queued', 'running')",
    )
    .execute(pool)
    .await
    .expect("fail jobs");
}

/// Two jobs that really failed: a check answered 503 at both of its two attempts (failed, with
/// the transient finding) and a refresh of a URL that does not parse (failed at once). Each
/// requeue starts its job over: queued, due now, no attempt spent, no result, errors kept; the
/// next run spends the first attempt of the fresh set.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn requeue_starts_a_job_over_with_fresh_attempts_and_no_previous_result(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.queue.max_attempts = 2;
    app.site.toggle.store(503, Ordering::SeqCst);
    let link = app.add_links(&[app.url("/toggle")]).await[0];
    app.run_cycle().await;
    let poison = NewJob::new(REFRESH, json!({"link_id": link, "url": "not a url"}), 2);
    insert_many(&app.pool, &[poison])
        .await
        .expect("enqueue a refresh that fails");
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;
    let ran = rows(&app.pool).await;
    let (check, refresh) = (&ran[0], &ran[1]);
    assert_eq!(
        (check.state.as_str(), check.attempts, check.errors),
        ("failed", 2, 2),
        "premise: the check spent both attempts: {check:?}"
    );
    assert_eq!(
        (check.result_class.as_deref(), check.status_code),
        (Some("transient"), Some(503)),
        "{check:?}"
    );
    assert!(
        check.duration_ms.is_some() && check.result_detail.is_some(),
        "{check:?}"
    );
    assert_eq!(
        (refresh.state.as_str(), refresh.attempts, refresh.errors),
        ("failed", 1, 1),
        "premise: the refresh failed: {refresh:?}"
    );
    assert!(
        refresh.result_class.is_some(),
        "premise: a result to clear: {refresh:?}"
    );

    assert_eq!(requeue(&app, &["--kind", "check"]).await, json!({"requeued": 1}));
    assert_eq!(requeue(&app, &["--kind", "refresh"]).await, json!({"requeued": 1}));
    for (job, errors) in rows(&app.pool).await.iter().zip([2, 1]) {
        assert_eq!((job.state.as_str(), job.attempts), ("queued", 0), "{job:?}");
        assert!(job.run_at_passed, "due at once: {job:?}");
        assert_eq!(job.finished_at, None, "{job:?}");
        assert_eq!(
            (&job.result_class, job.status_code, &job.result_detail, job.duration_ms),
            (&None, None, &None, None),
            "the previous result is cleared: {job:?}"
        );
        assert_eq!(job.errors, errors, "earlier errors stay as history: {job:?}");
    }

    // Each runs again on the first of a fresh set of attempts, and records its new result.
    app.site.toggle.store(200, Ordering::SeqCst);
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;
    let again = rows(&app.pool).await;
    let (check, refresh) = (&again[0], &again[1]);
    assert_eq!((check.state.as_str(), check.attempts), ("done", 1), "{check:?}");
    assert_eq!(
        (check.result_class.as_deref(), check.status_code),
        (Some("ok"), Some(200)),
        "{check:?}"
    );
    assert_eq!(
        (refresh.state.as_str(), refresh.attempts, refresh.errors),
        ("failed", 1, 2),
        "{refresh:?}"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn only_the_newest_finished_job_per_link_and_kind_is_requeued(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    // Two rounds: each link has two failed checks and two failed refreshes.
    app.run_cycle().await;
    fail_all(&app.pool).await;
    app.run_cycle().await;
    fail_all(&app.pool).await;
    let jobs: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, kind, dedupe_key FROM queue_jobs WHERE state = 'failed' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    assert_eq!(jobs.len(), 8, "premise: two failed jobs per link and kind");
    let newest = |kind: &str, link: i64| {
        jobs.iter()
            .filter(|(_, k, key)| k == kind && *key == dedupe_key(link))
            .map(|(id, _, _)| *id)
            .max()
            .expect("a job")
    };
    let mut expected: Vec<i64> = ["check", "refresh"]
        .iter()
        .flat_map(|kind| ids.iter().map(move |link| (kind, *link)))
        .map(|(kind, link)| newest(kind, link))
        .collect();
    expected.sort_unstable();

    assert_eq!(requeue(&app, &[]).await, json!({"requeued": 4}));
    let queued: Vec<i64> = rows(&app.pool)
        .await
        .into_iter()
        .filter(|r| r.state == "queued")
        .map(|r| r.id)
        .collect();
    assert_eq!(queued, expected, "the newest job of each link and kind, and only it");

    // The older ones stay failed while their link has a queued job of that kind.
    assert_eq!(requeue(&app, &[]).await, json!({"requeued": 0}));
    assert_eq!(crate::helpers::count_state(&app.pool, "failed").await, 4);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn requeue_older_than_moves_only_jobs_that_finished_before_then(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b"), app.url("/c")]).await;
    app.run_cycle().await;
    fail_all(&app.pool).await;
    // Finished 3 h, 30 min and 2 h ago.
    for (link, ago) in [(ids[0], "3 hours"), (ids[1], "30 minutes"), (ids[2], "2 hours")] {
        sqlx::query("UPDATE queue_jobs SET finished_at = now() - $2::interval WHERE dedupe_key = $1")
            .bind(dedupe_key(link))
            .bind(ago)
            .execute(&app.pool)
            .await
            .expect("backdate");
    }
    let state_of = |link: i64| {
        let pool = app.pool.clone();
        async move {
            let (state,): (String,) = sqlx::query_as("SELECT state FROM queue_jobs WHERE dedupe_key = $1")
                .bind(dedupe_key(link))
                .fetch_one(&pool)
                .await
                .expect("state");
            state
        }
    };

    assert_eq!(
        requeue(&app, &["--older-than", "4h"]).await,
        json!({"requeued": 0}),
        "none finished that long ago"
    );
    assert_eq!(requeue(&app, &["--older-than", "1h"]).await, json!({"requeued": 2}));
    assert_eq!(state_of(ids[0]).await, "queued");
    assert_eq!(state_of(ids[1]).await, "failed", "finished only 30 minutes ago");
    assert_eq!(state_of(ids[2]).await, "queued");
    assert_eq!(requeue(&app, &["--older-than", "10m"]).await, json!({"requeued": 1}));
    assert_eq!(state_of(ids[1]).await, "queued");
}
