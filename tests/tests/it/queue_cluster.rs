//! Several worker processes: crashes, drains, dropped connections, the per-group cap.

use std::time::Duration;

use integration_tests::TestJob;
use nix::sys::signal::Signal;
use sqlx::PgPool;

use crate::helpers::{WorkerProcess, count_state, enqueue, events_per_job, wait_for};

fn sleeping(ms: u64) -> TestJob {
    TestJob {
        sleep_ms: ms,
        ..TestJob::default()
    }
}

async fn wait_all_done(pool: &PgPool, n: usize, deadline: Duration) {
    wait_for(deadline, "every job to be done", || async {
        (count_state(pool, "done").await == n as i64).then_some(())
    })
    .await;
}

async fn started_by(pool: &PgPool, pid: i32) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM test_runs WHERE event = 'start' AND pid = $1")
        .bind(pid)
        .fetch_one(pool)
        .await
        .expect("starts");
    n
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn jobs_of_a_sigkilled_worker_are_rescued_and_complete_exactly_once(pool: PgPool) {
    let n = 16;
    let ids = enqueue(&pool, &(0..n).map(|_| (sleeping(1500), None)).collect::<Vec<_>>(), 5).await;
    let doomed = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "4".into())]).await;
    wait_for(Duration::from_secs(10), "the doomed worker to start jobs", || async {
        (started_by(&pool, doomed.pid).await >= 4).then_some(())
    })
    .await;
    doomed.signal(Signal::SIGKILL);
    let doomed_pid = doomed.pid;
    doomed.wait(Duration::from_secs(5)).await;

    let _rescuer = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "8".into())]).await;
    wait_all_done(&pool, n, Duration::from_secs(60)).await;
    let finishes = events_per_job(&pool, "finish").await;
    for id in &ids {
        assert_eq!(
            finishes.get(id),
            Some(&1),
            "job {id} finished {:?} times",
            finishes.get(id)
        );
    }
    let (interrupted,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT job_id) FROM test_runs r WHERE pid = $1 AND event = 'start' \
         AND NOT EXISTS (SELECT 1 FROM test_runs f WHERE f.job_id = r.job_id AND f.event = 'finish' AND f.pid = $1)",
    )
    .bind(doomed_pid)
    .fetch_one(&pool)
    .await
    .expect("interrupted");
    assert!(
        interrupted >= 4,
        "premise: the kill interrupted running jobs ({interrupted})"
    );
    let (lost,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE errors @> '[{\"kind\": \"lost\"}]'")
        .fetch_one(&pool)
        .await
        .expect("lost");
    // Jobs the dead worker had claimed ahead (buffered, not started) are rescued too.
    assert!(
        lost >= interrupted,
        "each interrupted job records the lost attempt ({lost} < {interrupted})"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn sigterm_drains_in_flight_jobs_once_and_hands_back_the_rest(pool: PgPool) {
    let n = 24;
    let ids = enqueue(&pool, &(0..n).map(|_| (sleeping(1000), None)).collect::<Vec<_>>(), 5).await;
    let draining = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "4".into())]).await;
    wait_for(Duration::from_secs(10), "jobs in flight", || async {
        (started_by(&pool, draining.pid).await >= 4).then_some(())
    })
    .await;
    draining.signal(Signal::SIGTERM);
    let draining_pid = draining.pid;
    let other = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "8".into())]).await;
    assert_eq!(
        draining.wait(Duration::from_secs(20)).await,
        Some(0),
        "a drained worker exits 0"
    );
    wait_all_done(&pool, n, Duration::from_secs(60)).await;

    let starts = events_per_job(&pool, "start").await;
    let finishes = events_per_job(&pool, "finish").await;
    for id in &ids {
        assert_eq!(starts.get(id), Some(&1), "job {id} started {:?} times", starts.get(id));
        assert_eq!(
            finishes.get(id),
            Some(&1),
            "job {id} finished {:?} times",
            finishes.get(id)
        );
    }
    let (finished_by_drained,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM test_runs WHERE event = 'finish' AND pid = $1")
            .bind(draining_pid)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        finished_by_drained,
        started_by(&pool, draining_pid).await,
        "in-flight jobs finished where they started"
    );
    assert!(
        started_by(&pool, other.pid).await > 0,
        "the rest ran on the other worker"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn killed_database_connections_lose_nothing(pool: PgPool) {
    let n = 300;
    let ids = enqueue(&pool, &(0..n).map(|_| (sleeping(10), None)).collect::<Vec<_>>(), 5).await;
    let worker = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "8".into())]).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&pool)
        .await
        .expect("terminate");
    }
    wait_all_done(&pool, n, Duration::from_secs(60)).await;
    let finishes = events_per_job(&pool, "finish").await;
    for id in &ids {
        assert!(finishes.get(id).is_some_and(|&c| c >= 1), "job {id} never finished");
    }
    let mut worker = worker;
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "the worker survived the killed connections"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_group_cap_holds_across_three_worker_processes(pool: PgPool) {
    let groups = ["a.example", "b.example", "c.example"];
    let jobs: Vec<_> = (0..45).map(|i| (sleeping(150), Some(groups[i % 3]))).collect();
    enqueue(&pool, &jobs, 5).await;
    let env = [
        ("TEST_CONCURRENCY", "8".to_owned()),
        ("LINKPULSE_HOST_CONCURRENCY", "2".to_owned()),
    ];
    let _workers = [
        WorkerProcess::spawn(&pool, &env).await,
        WorkerProcess::spawn(&pool, &env).await,
        WorkerProcess::spawn(&pool, &env).await,
    ];
    wait_all_done(&pool, 45, Duration::from_secs(60)).await;
    // Peak overlap per group from the recorded intervals.
    let peaks: Vec<(String, i64)> = sqlx::query_as(
        "WITH runs AS (
            SELECT s.group_key, s.at AS started, f.at AS finished
            FROM test_runs s JOIN test_runs f ON f.job_id = s.job_id AND f.attempt = s.attempt AND f.event = 'finish'
            WHERE s.event = 'start')
         SELECT a.group_key, max((SELECT count(*) FROM runs b WHERE b.group_key = a.group_key
                                  AND b.started <= a.started AND b.finished > a.started))
         FROM runs a GROUP BY a.group_key ORDER BY a.group_key",
    )
    .fetch_all(&pool)
    .await
    .expect("peaks");
    assert_eq!(peaks.len(), 3);
    for (group, peak) in &peaks {
        assert!(*peak <= 2, "group {group} ran {peak} jobs at once");
    }
    assert!(
        peaks.iter().any(|(_, peak)| *peak == 2),
        "premise: the cap was reached ({peaks:?})"
    );
    assert_eq!(count_state(&pool, "done").await, 45);
    let (slots,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_group_slots")
        .fetch_one(&pool)
        .await
        .expect("slots");
    assert_eq!(slots, 0, "every slot released");
}
