//! The end of a worker's leases: a drain whose grace runs out, and a worker judged dead while
//! it was only stalled.

use std::time::{Duration, Instant};

use integration_tests::TestJob;
use linkpulse_queue::{RetryPolicy, maintenance};
use nix::sys::signal::Signal;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{WorkerProcess, count_state, enqueue, job, wait_for};

fn sleeping(ms: u64) -> TestJob {
    TestJob {
        sleep_ms: ms,
        ..TestJob::default()
    }
}

/// Job ids `pid` has started.
async fn started_by(pool: &PgPool, pid: i32) -> Vec<i64> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT DISTINCT job_id FROM test_runs WHERE event = 'start' AND pid = $1 ORDER BY job_id")
            .bind(pid)
            .fetch_all(pool)
            .await
            .expect("starts");
    rows.into_iter().map(|(id,)| id).collect()
}

/// The worker id registered by process `pid`, if it has a row.
async fn worker_id_of(pool: &PgPool, pid: i32) -> Option<Uuid> {
    sqlx::query_as("SELECT id FROM queue_workers WHERE pid = $1")
        .bind(pid)
        .fetch_optional(pool)
        .await
        .expect("worker row")
        .map(|(id,)| id)
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_expired_grace_releases_the_still_running_jobs_with_the_attempt_refunded(pool: PgPool) {
    // Both in flight at SIGTERM: one finishes within the 3 s grace, one would need a minute.
    let ids = enqueue(&pool, &[(sleeping(1000), None), (sleeping(60_000), None)], 1).await;
    let (short, long) = (ids[0], ids[1]);
    let worker = WorkerProcess::spawn(
        &pool,
        &[
            ("TEST_CONCURRENCY", "2".into()),
            ("TEST_SHUTDOWN_GRACE_MS", "3000".into()),
        ],
    )
    .await;
    wait_for(Duration::from_secs(10), "both jobs in flight", || async {
        (started_by(&pool, worker.pid).await == ids).then_some(())
    })
    .await;
    let (long_state, long_attempts, _) = job(&pool, long).await;
    assert_eq!(
        (long_state.as_str(), long_attempts),
        ("running", 1),
        "premise: the long job runs its only attempt"
    );
    worker.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    assert_eq!(
        worker.wait(Duration::from_secs(30)).await,
        Some(0),
        "a worker whose grace ran out still exits 0"
    );
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "exited after {took:?}: did not wait out the grace"
    );

    let (state, attempts, errors) = job(&pool, short).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("done", 1),
        "the short job finished in the grace"
    );
    assert_eq!(errors, serde_json::json!([]));
    // Nothing else runs: only the exiting worker itself can have handed the long job back.
    let (state, attempts, errors) = job(&pool, long).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 0),
        "released with its attempt refunded, so its one allowed attempt is still there"
    );
    assert_eq!(errors, serde_json::json!([]), "released, not rescued: no lost attempt");
    let (owner, due_now): (Option<Uuid>, bool) =
        sqlx::query_as("SELECT lease_owner, run_at <= now() FROM queue_jobs WHERE id = $1")
            .bind(long)
            .fetch_one(&pool)
            .await
            .expect("lease");
    assert_eq!(owner, None);
    assert!(due_now, "ready for another worker at once");
    let (workers,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
        .fetch_one(&pool)
        .await
        .expect("workers");
    assert_eq!(workers, 0, "the worker deregistered");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_worker_rescued_away_drops_its_buffer_and_registers_again(pool: PgPool) {
    // One job at a time: the first runs 8 s, the other seven wait in the worker's buffer.
    let mut jobs = vec![(sleeping(8000), None)];
    jobs.extend((0..7).map(|_| (sleeping(50), None)));
    let ids = enqueue(&pool, &jobs, 5).await;
    let worker = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "1".into())]).await;
    wait_for(Duration::from_secs(10), "the first job to start", || async {
        (started_by(&pool, worker.pid).await == ids[..1]).then_some(())
    })
    .await;
    let id = worker_id_of(&pool, worker.pid).await.expect("registered");
    let (held,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'running' AND lease_owner = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("held");
    assert_eq!(held, 8, "premise: one job running, seven claimed into the buffer");

    // The worker stalls past the rescue window (1.5 s) and a rescue takes every job it held.
    worker.signal(Signal::SIGSTOP);
    wait_for(Duration::from_secs(10), "the worker to look dead", || async {
        let (silent,): (bool,) = sqlx::query_as(
            "SELECT heartbeat_at < now() - interval '1600 milliseconds' FROM queue_workers WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("heartbeat");
        silent.then_some(())
    })
    .await;
    let policy = RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let rescued = maintenance::rescue_lost(&pool, Duration::from_millis(1500), &policy)
        .await
        .expect("rescue");
    assert_eq!(rescued, 8, "premise: the running job and the whole buffer were rescued");
    assert_eq!(worker_id_of(&pool, worker.pid).await, None, "premise: its row is gone");
    worker.signal(Signal::SIGCONT);

    // Its next heartbeat finds the row gone: it registers again and goes on.
    wait_for(Duration::from_secs(10), "the worker to register again", || {
        worker_id_of(&pool, worker.pid)
    })
    .await;
    wait_for(Duration::from_secs(60), "every job to be done", || async {
        (count_state(&pool, "done").await == 8).then_some(())
    })
    .await;
    // The buffered jobs never ran from the dropped buffer (attempt 1): only once claimed again.
    let (stale,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM test_runs WHERE event = 'start' AND attempt = 1 AND job_id = ANY($1)")
            .bind(&ids[1..])
            .fetch_one(&pool)
            .await
            .expect("stale starts");
    assert_eq!(stale, 0, "a job of the dropped buffer ran on its rescued lease");
    for id in &ids {
        let (state, attempts, errors) = job(&pool, *id).await;
        assert_eq!((state.as_str(), attempts), ("done", 2), "job {id}");
        let kinds: Vec<&str> = errors
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["lost"], "job {id}: one lost attempt");
    }
    let (by_worker,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT job_id) FROM test_runs WHERE event = 'start' AND attempt = 2 AND pid = $1",
    )
    .bind(worker.pid)
    .fetch_one(&pool)
    .await
    .expect("second attempts");
    assert_eq!(by_worker, 8, "the re-registered worker ran them all again");
    let mut worker = worker;
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "the worker is still alive"
    );
}
