//! `worker --until-empty`: the production worker binary runs until nothing of its kinds is due
//! and it holds no job, then drains as on SIGTERM and exits 0. Jobs scheduled for later, jobs of
//! paused kinds, jobs of other kinds and jobs other workers hold do not keep it running; a job in
//! flight does.

use std::process::Stdio;
use std::time::Duration;

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::{claim, registry};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::app::TestApp;
use crate::helpers::{count_state, enqueue, url_of};

/// The worker's poll interval in these tests: also the spacing of its two idle checks.
const POLL: Duration = Duration::from_millis(200);

/// A `worker --until-empty` child process whose log lines (JSON, one object a line) arrive on
/// `lines` as they are written.
struct UntilEmpty {
    child: Child,
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
}

impl UntilEmpty {
    /// Starts the production worker on the test's database with `--until-empty`.
    async fn spawn(app: &TestApp) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
            .args(["--until-empty", "--concurrency", "2"])
            .env("DATABASE_URL", url_of(&app.pool).await)
            .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
            .env("LINKPULSE_HTTP_TIMEOUT", "20s")
            .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
            .env("LINKPULSE_SHUTDOWN_GRACE", "30s")
            .env("LINKPULSE_HOST_CONCURRENCY", "8")
            .env("LINKPULSE_HOST_INTERVAL", "0s")
            .env("LINKPULSE_HEARTBEAT_INTERVAL", "200ms")
            .env("LINKPULSE_POLL_INTERVAL", format!("{}ms", POLL.as_millis()))
            .env("LINKPULSE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[worker] {line}");
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for the line whose message starts with `prefix` and returns it.
    async fn line_starting(&mut self, prefix: &str, deadline: Duration) -> serde_json::Value {
        let found = tokio::time::timeout(deadline, async {
            while let Some(line) = self.lines.recv().await {
                if message(&line).starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the worker exited without logging {prefix:?}"),
            Err(_) => panic!("no {prefix:?} line within {deadline:?}"),
        }
    }

    /// Waits for the process to exit by itself and returns its exit code.
    async fn exit_code(&mut self, deadline: Duration) -> Option<i32> {
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker did not exit by itself within {deadline:?}"))
            .expect("wait");
        status.code()
    }

    /// The process has not exited yet.
    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

fn message(line: &serde_json::Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

/// The stop decision's log line.
const STOP_LINE: &str = "until-empty: nothing due";

/// Jobs not finished yet.
async fn unfinished(pool: &PgPool) -> i64 {
    count_state(pool, "queued").await + count_state(pool, "running").await
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn until_empty_runs_every_due_check_then_exits_zero(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let n = 30;
    let ids = app
        .add_links(&(0..n).map(|i| app.url(&format!("/p/{i}"))).collect::<Vec<_>>())
        .await;
    assert_eq!(
        app.run_cycle().await.check.enqueued,
        n as i64,
        "premise: {n} checks due"
    );

    let mut worker = UntilEmpty::spawn(&app).await;
    let stop = worker.line_starting(STOP_LINE, Duration::from_secs(60)).await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));

    assert_eq!(unfinished(&app.pool).await, 0, "none left queued or running");
    assert_eq!(count_state(&app.pool, "done").await, n as i64, "every check done");
    for id in ids {
        assert_eq!(app.link(id).await.last_outcome.as_deref(), Some("ok"));
    }
    assert!(
        stop.get("scheduled_later").is_none(),
        "nothing scheduled later, so the line does not say so: {stop}"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn until_empty_on_an_empty_queue_exits_zero_promptly(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(unfinished(&app.pool).await, 0, "premise: no job at all");

    let started = tokio::time::Instant::now();
    let mut worker = UntilEmpty::spawn(&app).await;
    worker.line_starting(STOP_LINE, Duration::from_secs(20)).await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0));
    // Start-up plus two idle checks one poll interval apart plus the drain: well under this.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (workers,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
        .fetch_one(&app.pool)
        .await
        .expect("workers");
    assert_eq!(workers, 0, "it deregistered on the way out, as after a SIGTERM");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_check_scheduled_for_later_does_not_keep_until_empty_running_and_stays_queued(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/ok")]).await;
    assert_eq!(app.run_cycle().await.check.enqueued, 1);
    sqlx::query("UPDATE queue_jobs SET run_at = now() + interval '1 hour'")
        .execute(&app.pool)
        .await
        .expect("schedule for later");

    let mut worker = UntilEmpty::spawn(&app).await;
    let stop = worker.line_starting(STOP_LINE, Duration::from_secs(20)).await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0));

    assert_eq!(stop["scheduled_later"], 1, "the line says what was left: {stop}");
    assert!(stop["next_at"].is_string(), "and when it is next due: {stop}");
    let (state, attempts): (String, i32) = sqlx::query_as("SELECT state, attempts FROM queue_jobs")
        .fetch_one(&app.pool)
        .await
        .expect("job");
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 0),
        "the scheduled check is untouched"
    );
    assert_eq!(app.site.hits("/ok"), 0, "and was never fetched");
}

/// Jobs another worker holds, jobs of a paused kind and jobs of a kind this worker does not run
/// are all out of its reach: none of them keeps it running, and it touches none of them.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn jobs_held_elsewhere_paused_or_of_other_kinds_do_not_keep_until_empty_running(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    app.add_links(&[app.url("/p/1")]).await;
    let cycle = app.run_cycle().await;
    assert_eq!((cycle.check.enqueued, cycle.refresh.enqueued), (1, 1), "premise");
    // The check: held by another live worker.
    let other = uuid::Uuid::new_v4();
    registry::register(&app.pool, other, "other").await.expect("register");
    let held = claim::claim_batch(&app.pool, other, &["check"], 10, 8)
        .await
        .expect("claim");
    assert_eq!(held.len(), 1, "premise: the other worker holds the check");
    // The refresh: due, but its kind is paused.
    sqlx::query("INSERT INTO queue_paused_kinds (kind, paused_by) VALUES ('refresh', 'test')")
        .execute(&app.pool)
        .await
        .expect("pause refresh");
    // And a due job of a kind the worker does not run.
    enqueue(&app.pool, &[(TestJob::default(), None)], 3).await;

    let mut worker = UntilEmpty::spawn(&app).await;
    let stop = worker.line_starting(STOP_LINE, Duration::from_secs(20)).await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0));

    assert_eq!(stop["paused_kinds_queued"], 1, "the line says what was left: {stop}");
    let rows: Vec<(String, String, Option<uuid::Uuid>, i32)> =
        sqlx::query_as("SELECT kind, state, lease_owner, attempts FROM queue_jobs ORDER BY kind")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    assert_eq!(
        rows,
        [
            ("check".to_owned(), "running".to_owned(), Some(other), 1),
            ("refresh".to_owned(), "queued".to_owned(), None, 0),
            (TEST_KIND.to_owned(), "queued".to_owned(), None, 0),
        ],
        "every job as it was"
    );
    assert_eq!(app.site.hits("/p/1"), 0, "nothing was fetched");
}

/// The local site's `/slow` answers after 3 s: the worker stays up, not draining, until the check
/// is done, and decides to stop only then.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn until_empty_waits_for_the_job_in_flight_before_deciding_to_stop(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/slow")]).await;
    assert_eq!(app.run_cycle().await.check.enqueued, 1);

    let mut worker = UntilEmpty::spawn(&app).await;
    crate::helpers::wait_for(Duration::from_secs(20), "the slow check to start", || async {
        (app.site.hits("/slow") >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        POLL * 2 < Duration::from_secs(1),
        "premise: two idle checks fit in the wait"
    );
    assert!(worker.is_running(), "still running while the check is in flight");
    let (state,): (String,) = sqlx::query_as("SELECT state FROM queue_jobs")
        .fetch_one(&app.pool)
        .await
        .expect("job");
    assert_eq!(state, "running", "premise: the check is still in flight");

    // Read at the moment the worker logs its decision: a stop decided while the check was in
    // flight would find it still running (the drain would then wait for it, hiding the mistake
    // from the exit code).
    worker.line_starting(STOP_LINE, Duration::from_secs(30)).await;
    let (state, attempts): (String, i32) = sqlx::query_as("SELECT state, attempts FROM queue_jobs")
        .fetch_one(&app.pool)
        .await
        .expect("job");
    assert_eq!(
        (state.as_str(), attempts),
        ("done", 1),
        "the stop was decided only after the check was done"
    );
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    assert_eq!(app.site.hits("/slow"), 1, "fetched once");
}
