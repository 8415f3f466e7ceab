//! Wake-ups: notifications start idle workers at once; lost ones are covered by the poll.

use std::time::{Duration, Instant};

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_shared::queue::engine::LISTENER_APPLICATION_NAME;
use linkpulse_shared::queue::{JobArgs, NewJob, Queue};
use sqlx::PgPool;

use crate::helpers::{WorkerProcess, enqueue, job, wait_for};

async fn listener_pids(pool: &PgPool) -> Vec<i32> {
    let rows: Vec<(i32,)> =
        sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1")
            .bind(LISTENER_APPLICATION_NAME)
            .fetch_all(pool)
            .await
            .expect("pg_stat_activity");
    rows.into_iter().map(|(pid,)| pid).collect()
}

async fn wait_done(pool: &PgPool, id: i64, deadline: Duration) -> Duration {
    let start = Instant::now();
    wait_for(deadline, "the job to finish", || async {
        (job(pool, id).await.0 == "done").then_some(())
    })
    .await;
    start.elapsed()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_notification_starts_an_idle_worker_long_before_its_poll(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let _worker = WorkerProcess::spawn(&pool, &[("LINKPULSE_POLL_INTERVAL", "30s".into())]).await;
    wait_for(Duration::from_secs(10), "the listener", || async {
        (!listener_pids(&pool).await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the worker go idle
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

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_killed_listener_connection_loses_no_job(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let poll = Duration::from_millis(500);
    let _worker = WorkerProcess::spawn(&pool, &[("LINKPULSE_POLL_INTERVAL", "500ms".into())]).await;
    let pids = wait_for(Duration::from_secs(10), "the listener", || async {
        let pids = listener_pids(&pool).await;
        (!pids.is_empty()).then_some(pids)
    })
    .await;
    for pid in pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .expect("terminate listener");
    }
    // Inserted without any NOTIFY while the listener is down: only the poll can find it.
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let took = wait_done(&pool, ids[0], Duration::from_secs(10)).await;
    assert!(took < poll * 4, "took {took:?}, poll interval {poll:?}");

    // The listener comes back: later jobs are announced again.
    wait_for(Duration::from_secs(10), "the listener to reconnect", || async {
        (!listener_pids(&pool).await.is_empty()).then_some(())
    })
    .await;
    let more = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    wait_done(&pool, more[0], Duration::from_secs(10)).await;
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_scheduled_job_starts_on_time(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    let _worker = WorkerProcess::spawn(&pool, &[("LINKPULSE_POLL_INTERVAL", "500ms".into())]).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    linkpulse_shared::queue::insert_many(
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
