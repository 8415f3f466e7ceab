//! The pipeline end to end: producer cycle → queue → workers → write-back.

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::routing::any;
use sqlx::PgPool;
use tokio::time::Instant;

use linkpulse_queue::{NewJob, RetryPolicy, insert_many};
use linkpulse_shared::link_jobs::CHECK;

use crate::app::TestApp;
use crate::helpers::count_state;

/// An index a migration builds concurrently, left invalid by a failed build (which its `IF NOT
/// EXISTS` would skip ever after) or missing, is rebuilt valid by the next `migrate`.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn migrate_rebuilds_an_index_a_failed_concurrent_build_left_invalid(pool: PgPool) {
    let valid = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Option<bool>>(
            "SELECT (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('queue_jobs_failed_id_idx'))",
        )
        .fetch_one(&pool)
        .await
        .expect("index state")
    };
    assert_eq!(valid(pool.clone()).await, Some(true));
    // What a build interrupted half-way leaves: the index, marked invalid.
    sqlx::query("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'queue_jobs_failed_id_idx'::regclass")
        .execute(&pool)
        .await
        .expect("invalidate");
    assert_eq!(valid(pool.clone()).await, Some(false));
    linkpulse_shared::db::migrate(&pool).await.expect("migrate");
    assert_eq!(valid(pool.clone()).await, Some(true), "rebuilt valid");
    sqlx::query("DROP INDEX queue_jobs_failed_id_idx")
        .execute(&pool)
        .await
        .expect("drop");
    linkpulse_shared::db::migrate(&pool).await.expect("migrate");
    assert_eq!(valid(pool.clone()).await, Some(true), "rebuilt when missing");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn migrate_twice_is_a_no_op(pool: PgPool) {
    let (before,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    linkpulse_shared::db::migrate(&pool).await.expect("second migrate");
    linkpulse_shared::db::migrate(&pool).await.expect("third migrate");
    let (after,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(before, after);
    assert!(before >= 2, "premise: the migrations were applied");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn links_import_rejects_bad_lines_with_reasons_and_reports_duplicates(pool: PgPool) {
    let input = "https://example.com/a\n\n# a comment\nftp://example.com/x\nnot a url\nhttps://user:pw@example.com/\nHTTPS://EXAMPLE.com/a#frag\nhttps://example.com/b\n";
    let mut out = Vec::new();
    producer::commands::links::import(&pool, &mut Cursor::new(input), true, &mut out)
        .await
        .expect("import");
    let report: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["duplicates"], 1, "the same URL after normalisation");
    let rejected = report["rejected"].as_array().expect("rejected");
    let lines: Vec<i64> = rejected.iter().map(|r| r["line"].as_i64().expect("line")).collect();
    assert_eq!(lines, [4, 5, 6]);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("scheme \"ftp\"")
    );
    assert!(rejected[1]["reason"].as_str().expect("reason").starts_with("not a URL"));
    assert!(
        rejected[2]["reason"]
            .as_str()
            .expect("reason")
            .contains("user name or password")
    );

    let mut again = Vec::new();
    producer::commands::links::import(&pool, &mut Cursor::new("https://example.com/b\n"), true, &mut again)
        .await
        .expect("import again");
    let report: serde_json::Value = serde_json::from_slice(&again).expect("json");
    assert_eq!(
        (report["accepted"].as_i64(), report["duplicates"].as_i64()),
        (Some(0), Some(1))
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_cycle_enqueues_exactly_the_due_links_oldest_first_within_the_limit(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let ids = app
        .add_links(&(0..6).map(|i| app.url(&format!("/p/{i}"))).collect::<Vec<_>>())
        .await;
    // Links 0 and 1 were checked a minute ago (not due with a 1 h period), 2 a day ago, 3 two days
    // ago, 4 and 5 never.
    for (id, ago) in [
        (ids[0], "1 minute"),
        (ids[1], "1 minute"),
        (ids[2], "1 day"),
        (ids[3], "2 days"),
    ] {
        sqlx::query("UPDATE links SET last_checked_at = now() - $2::interval WHERE id = $1")
            .bind(id)
            .bind(ago)
            .execute(&app.pool)
            .await
            .expect("age");
    }
    app.settings.check_after = Duration::from_secs(3600);
    app.settings.cycle_limit = 3;
    let report = app.run_cycle().await;
    assert_eq!((report.check.due, report.check.enqueued), (3, 3));
    let queued: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT payload FROM queue_jobs WHERE kind = 'check' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    let mut queued: Vec<i64> = queued
        .iter()
        .map(|(p,)| p["link_id"].as_i64().expect("link_id"))
        .collect();
    queued.sort_unstable();
    assert_eq!(
        queued,
        vec![ids[3], ids[4], ids[5]],
        "never-checked first, then the oldest"
    );
    let (group,): (String,) = sqlx::query_as("SELECT group_key FROM queue_jobs LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("group");
    assert_eq!(group, "127.0.0.1", "the link's host is the concurrency group");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn repeated_and_concurrent_cycles_add_no_duplicate_jobs(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&(0..500).map(|i| app.url(&format!("/p/{i}"))).collect::<Vec<_>>())
        .await;
    let (a, b) = tokio::join!(app.run_cycle(), app.run_cycle());
    assert_eq!(
        a.check.enqueued + b.check.enqueued,
        500,
        "concurrent cycles enqueue each link once"
    );
    // A link that already has an unfinished job is not selected at all (the fair producer's
    // skip), so the next cycle finds nothing to do.
    let again = app.run_cycle().await;
    assert_eq!((again.check.due, again.check.enqueued, again.check.skipped), (0, 0, 0));
    // Even while running, a job blocks a second one for its link.
    sqlx::query("UPDATE queue_jobs SET state = 'running', lease_owner = gen_random_uuid() WHERE id IN (SELECT id FROM queue_jobs LIMIT 100)")
        .execute(&app.pool)
        .await
        .expect("mark running");
    assert_eq!(app.run_cycle().await.check.enqueued, 0);
    assert_eq!(
        count_state(&app.pool, "queued").await + count_state(&app.pool, "running").await,
        500
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn two_workers_run_a_thousand_checks_exactly_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let n = 1000;
    let ids = app
        .add_links(&(0..n).map(|i| app.url(&format!("/p/{i}"))).collect::<Vec<_>>())
        .await;
    assert_eq!(app.run_cycle().await.check.enqueued, n as i64);
    app.run_until_idle(2, 8, Duration::from_secs(120)).await;
    for i in 0..n {
        assert_eq!(
            app.site.hits(&format!("/p/{i}")),
            1,
            "link {i} was fetched more or less than once"
        );
    }
    let (written,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM links WHERE last_checked_at IS NOT NULL AND last_outcome = 'ok' AND last_status_code = 200")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(written, n as i64, "every link written back");
    assert_eq!(count_state(&app.pool, "done").await, n as i64);
    assert_eq!(app.link(ids[0]).await.consecutive_failures, 0);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn three_404s_in_a_row_make_a_link_inaccessible_and_a_200_restores_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/toggle")]).await[0];
    app.site.toggle.store(404, Ordering::SeqCst);
    for cycle in 1..=3 {
        app.cycle_and_work().await;
        let link = app.link(id).await;
        assert_eq!(link.consecutive_failures, cycle);
        assert_eq!(link.last_status_code, Some(404));
        assert_eq!(link.last_outcome.as_deref(), Some("dead"));
        let expected = if cycle < 3 { "active" } else { "inaccessible" };
        assert_eq!(link.status, expected, "after cycle {cycle}");
    }
    app.site.toggle.store(200, Ordering::SeqCst);
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!((link.status.as_str(), link.consecutive_failures), ("active", 0));
    assert_eq!(link.last_error, None);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn head_405_with_get_200_is_reachable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/head-405")]).await[0];
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (link.last_outcome.as_deref(), link.last_status_code),
        (Some("ok"), Some(200))
    );
    let requests = app.site.requests.lock().expect("lock").clone();
    assert_eq!(requests.get(&("HEAD".into(), "/head-405".into())), Some(&1));
    assert_eq!(requests.get(&("GET".into(), "/head-405".into())), Some(&1));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_500_that_recovers_on_the_second_attempt_counts_no_failure(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/flaky")]).await[0];
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (link.last_outcome.as_deref(), link.consecutive_failures),
        (Some("ok"), 0)
    );
    let (attempts, errors): (i32, serde_json::Value) =
        sqlx::query_as("SELECT attempts, errors FROM queue_jobs WHERE kind = 'check'")
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!(attempts, 2, "the first attempt failed and was retried");
    assert!(
        errors[0]["error"].as_str().expect("error").contains("HTTP 500"),
        "{errors}"
    );
}

/// Requests a site received: method and arrival time.
type Arrivals = Arc<Mutex<Vec<(Method, Instant)>>>;

/// A site that answers nothing within any test's timeout, and notes when each request arrived.
async fn silent_site() -> (String, Arrivals) {
    let arrivals = Arrivals::default();
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/silent",
        any(move |method: Method| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push((method, Instant::now()));
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/silent"), arrivals)
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_timeout_is_retried_with_growing_delays_then_counts_once(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let (url, arrivals) = silent_site().await;
    let timeout = Duration::from_millis(300);
    app.settings.fetch.timeout = timeout;
    app.settings.queue.max_attempts = 3;
    // Delays of 1–2 s after the first attempt and 2–4 s after the second: wide enough that the
    // jitter of picking a job up again (a 50 ms poll) cannot reorder them.
    let policy = RetryPolicy {
        base: Duration::from_secs(2),
        max: Duration::from_secs(10),
    };
    app.settings.queue.retry = policy;
    app.settings.queue.poll_interval = Duration::from_millis(50);
    let id = app.add_links(&[url]).await[0];
    app.cycle_and_work().await;
    let (state, attempts, errors): (String, i32, serde_json::Value) =
        sqlx::query_as("SELECT state, attempts, errors FROM queue_jobs WHERE kind = 'check'")
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!(
        (state.as_str(), attempts),
        ("failed", 3),
        "attempts spent without an answer"
    );
    let kinds: Vec<&str> = errors
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["retry", "retry", "fail"], "{errors}");
    assert!(
        errors
            .as_array()
            .expect("errors")
            .iter()
            .all(|e| e["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "{errors}"
    );
    let link = app.link(id).await;
    assert_eq!(
        link.consecutive_failures, 1,
        "a check's failure counts once, when its attempts are spent"
    );
    assert_eq!(link.last_outcome.as_deref(), Some("transient"));

    let arrivals = arrivals.lock().expect("lock").clone();
    let methods: Vec<&str> = arrivals.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        methods,
        ["HEAD", "GET", "HEAD", "GET", "HEAD", "GET"],
        "premise: every attempt timed out on HEAD, then on GET"
    );
    // The wait after attempt k: from its GET arriving (which times out `timeout` after it was
    // sent) to the next attempt's HEAD. The policy's delay after attempt k lies in
    // [ceiling/2, ceiling]; the job is picked up again within a poll or so of that.
    let pickup = Duration::from_secs(1);
    let waits: Vec<Duration> = [1, 3].iter().map(|&i| arrivals[i + 1].1 - arrivals[i].1).collect();
    for (attempt, wait) in (1u32..).zip(&waits) {
        // Written out rather than asked of the policy: base × 2^(attempt − 1), below the max.
        let ceiling = policy.base * 2u32.pow(attempt - 1);
        let least = timeout + ceiling / 2 - Duration::from_millis(50);
        let most = timeout + ceiling + pickup;
        assert!(
            (least..=most).contains(wait),
            "wait after attempt {attempt}: {wait:?}, the policy allows {least:?}..={most:?}"
        );
    }
    assert!(waits[1] > waits[0], "the delay did not grow: {waits:?}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_writes_title_description_favicon_and_og_image_from_the_page(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    let id = app.add_links(&[app.url("/page")]).await[0];
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(link.title.as_deref(), Some("Fixture & Friends"));
    assert_eq!(link.description.as_deref(), Some("A page for testing"));
    assert_eq!(link.image_url, Some(app.url("/img/card.png")));
    assert_eq!(link.favicon_url, Some(app.url("/static/fav.ico")));
    assert_eq!(link.site_name.as_deref(), Some("Fixture Site"));
    assert!(link.refreshed_at.is_some());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_malformed_job_payload_ends_failed_with_its_reason_and_the_worker_goes_on(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    insert_many(&app.pool, &[NewJob::new(CHECK, serde_json::json!({"link": "oops"}), 5)])
        .await
        .expect("insert poison");
    let id = app.add_links(&[app.url("/ok")]).await[0];
    app.cycle_and_work().await;
    let (state, errors): (String, serde_json::Value) =
        sqlx::query_as("SELECT state, errors FROM queue_jobs WHERE payload ? 'link'")
            .fetch_one(&app.pool)
            .await
            .expect("poison");
    assert_eq!(state, "failed");
    assert!(
        errors[0]["error"]
            .as_str()
            .expect("error")
            .contains("malformed check payload"),
        "{errors}"
    );
    assert_eq!(app.link(id).await.last_outcome.as_deref(), Some("ok"));
}
