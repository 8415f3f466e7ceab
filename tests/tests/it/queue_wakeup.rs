//! Wake-ups: notifications start idle workers at once; lost ones are covered by the poll.

use std::time::{Duration, Instant};

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::engine::LISTENER_APPLICATION_NAME;
use linkpulse_queue::{JobArgs, NOTIFY_CHANNEL, NewJob, Queue};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::helpers::{WorkerProcess, enqueue, job, wait_for};

async fn wait_done(pool: &PgPool, id: i64, deadline: Duration) -> Duration {
    wait_done_as(pool, id, deadline, "the job to finish").await
}

async fn wait_done_as(pool: &PgPool, id: i64, deadline: Duration, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(deadline, what, || async {
        (job(pool, id).await.0 == "done").then_some(())
    })
    .await;
    start.elapsed()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_notification_starts_an_idle_worker_long_before_its_poll(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let app = "lp-notified";
    let _worker = WorkerProcess::spawn(
        &pool,
        &[
            ("LINKPULSE_POLL_INTERVAL", "30s".into()),
            ("TEST_APPLICATION_NAME", app.into()),
        ],
    )
    .await;
    wait_armed_and_idle(&pool, app, &[]).await;
    let queue = Queue::new(pool.clone());
    queue
        .enqueue(&[NewJob::new(TEST_KIND, TestJob::default().encode().expect("encode"), 1)])
        .await
        .expect("enqueue");
    let (id,): (i64,) = sqlx::query_as("SELECT max(id) FROM queue_jobs")
        .fetch_one(&pool)
        .await
        .expect("id");
    let took = wait_done(&pool, id, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the worker waited for its 30 s poll"
    );
}

/// The listener connection that has run `LISTEN` on the jobs channel, other than `old`: its pid
/// and when it went idle after that `LISTEN` (seconds since the epoch, database clock).
async fn armed_listener(pool: &PgPool, old: &[i32]) -> Option<(i32, f64)> {
    sqlx::query_as(
        "SELECT pid, extract(epoch FROM state_change)::float8 FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 AND NOT pid = ANY($2) \
           AND state = 'idle' AND query = 'LISTEN \"' || $3 || '\"'",
    )
    .bind(LISTENER_APPLICATION_NAME)
    .bind(old)
    .bind(NOTIFY_CHANNEL)
    .fetch_optional(pool)
    .await
    .expect("pg_stat_activity")
}

/// Whether the worker whose connections are named `app` finished a claim after `since` and
/// its claim connection now sits idle (the fetcher waits for a wake-up or its poll). The claim is
/// recognised by its opening lines: `pg_stat_activity` keeps only the first
/// `track_activity_query_size` bytes (1 kB) of a statement.
async fn claimed_since(pool: &PgPool, app: &str, since: f64) -> bool {
    let (idle,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
           AND application_name = $1 AND state = 'idle' AND query LIKE '%WITH used AS (%FROM queue_group_slots GROUP BY group_key%' \
           AND extract(epoch FROM state_change)::float8 > $2)",
    )
    .bind(app)
    .bind(since)
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity");
    idle
}

/// Waits until a listener other than `old` is armed and the fetcher has gone idle after the
/// claim that arming triggers; returns the listener's pid.
async fn wait_armed_and_idle(pool: &PgPool, app: &str, old: &[i32]) -> i32 {
    let (pid, armed_at) = wait_for(Duration::from_secs(10), "an armed listener", || {
        armed_listener(pool, old)
    })
    .await;
    wait_for(Duration::from_secs(10), "the claim after LISTEN", || async {
        claimed_since(pool, app, armed_at).await.then_some(())
    })
    .await;
    pid
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_killed_listener_connection_loses_no_job(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    // A poll far beyond every deadline below: only the listener, and the claims its
    // reconnects make, can start these jobs in time.
    let app = "lp-killed-listener";
    let _worker = WorkerProcess::spawn(
        &pool,
        &[
            ("LINKPULSE_POLL_INTERVAL", "60s".into()),
            ("TEST_APPLICATION_NAME", app.into()),
            // The engine's one connection shows its last statement: no heartbeat or maintenance
            // pass may replace the claim there before `claimed_since` sees it.
            ("LINKPULSE_HEARTBEAT_INTERVAL", "10s".into()),
            ("LINKPULSE_RESCUE_AFTER", "30s".into()),
        ],
    )
    .await;
    let first = wait_armed_and_idle(&pool, app, &[]).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&pool)
        .await
        .expect("terminate listener");
    // Enqueued while the listener is down or coming back: its NOTIFY may reach nobody, and the
    // claim every reconnect makes finds it.
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let took = wait_done_as(
        &pool,
        ids[0],
        Duration::from_secs(10),
        "the job enqueued around the kill to finish",
    )
    .await;
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: found only by the 60 s poll"
    );

    // The new connection listens again: a job enqueued once the worker is idle starts at its
    // NOTIFY, long before the poll.
    let second = wait_armed_and_idle(&pool, app, &[first]).await;
    assert_ne!(second, first, "premise: a new listener connection");
    let more = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let took = wait_done_as(
        &pool,
        more[0],
        Duration::from_secs(10),
        "the job enqueued after the reconnect to finish",
    )
    .await;
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: the reconnected listener did not wake the worker"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_poll_alone_starts_a_job_no_notification_announced(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let app = "lp-poll-only";
    let poll = Duration::from_secs(1);
    let _worker = WorkerProcess::spawn(
        &pool,
        &[
            ("LINKPULSE_POLL_INTERVAL", "1s".into()),
            ("TEST_APPLICATION_NAME", app.into()),
            ("LINKPULSE_HEARTBEAT_INTERVAL", "10s".into()),
            ("LINKPULSE_RESCUE_AFTER", "30s".into()),
        ],
    )
    .await;
    wait_armed_and_idle(&pool, app, &[]).await;
    let mut spy = PgListener::connect_with(&pool).await.expect("spy listener");
    spy.listen(NOTIFY_CHANNEL).await.expect("LISTEN");
    // A plain INSERT: no NOTIFY, so no wake-up; the fetcher sleeps on its poll.
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO queue_jobs (kind, payload, max_attempts) VALUES ($1, $2, 1) RETURNING id")
            .bind(TEST_KIND)
            .bind(TestJob::default().encode().expect("encode"))
            .fetch_one(&pool)
            .await
            .expect("insert");
    let took = wait_done(&pool, id, Duration::from_secs(15)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), spy.try_recv())
            .await
            .is_err(),
        "premise: no notification announced the job"
    );
    assert!(took < poll * 3, "took {took:?} with a {poll:?} poll");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_scheduled_job_starts_on_time(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let _worker = WorkerProcess::spawn(&pool, &[("LINKPULSE_POLL_INTERVAL", "500ms".into())]).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    linkpulse_queue::insert_many(
        &pool,
        &[NewJob::new(TEST_KIND, TestJob::default().encode().expect("encode"), 1).run_at(at)],
    )
    .await
    .expect("insert");
    let (id,): (i64,) = sqlx::query_as("SELECT max(id) FROM queue_jobs")
        .fetch_one(&pool)
        .await
        .expect("id");
    wait_done(&pool, id, Duration::from_secs(10)).await;
    let (late_by,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM min(r.at) - j.run_at)::float8 FROM test_runs r JOIN queue_jobs j ON j.id = r.job_id WHERE j.id = $1 GROUP BY j.run_at",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("start time");
    assert!((0.0..=1.0).contains(&late_by), "started {late_by}s after its run_at");
}
