//! Several worker processes: crashes, drains, dropped connections, the per-group cap.

use std::time::Duration;

use integration_tests::TestJob;
use linkpulse_queue::engine::LISTENER_APPLICATION_NAME;
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

/// Jobs with a `lost` error: taken back by a rescue instead of handed back by their worker.
async fn lost_jobs(pool: &PgPool) -> i64 {
    let (lost,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE errors @> '[{\"kind\": \"lost\"}]'")
        .fetch_one(pool)
        .await
        .expect("lost");
    lost
}

/// Jobs whose attempt count is not `attempts`.
async fn jobs_without_attempts(pool: &PgPool, attempts: i32) -> Vec<(i64, i32)> {
    sqlx::query_as("SELECT id, attempts FROM queue_jobs WHERE attempts <> $1 ORDER BY id")
        .bind(attempts)
        .fetch_all(pool)
        .await
        .expect("attempts")
}

/// When `pid` first recorded `event`, as seconds since the epoch (database clock).
async fn first_event_by(pool: &PgPool, pid: i32, event: &str) -> Option<f64> {
    let (at,): (Option<f64>,) =
        sqlx::query_as("SELECT extract(epoch FROM min(at))::float8 FROM test_runs WHERE pid = $1 AND event = $2")
            .bind(pid)
            .bind(event)
            .fetch_one(pool)
            .await
            .expect("first event");
    at
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn sigterm_drains_in_flight_jobs_once_and_hands_back_the_rest(pool: PgPool) {
    // The first four jobs (claimed and started first) run 8 s: far longer than the rescue window
    // (3 s, plus a maintenance period of 1 s), so a draining worker that stopped heartbeating
    // would have them rescued and run a second time. The rest are short.
    let n = 24;
    let in_flight = 4;
    let jobs: Vec<_> = (0..n)
        .map(|i| (sleeping(if i < in_flight { 8000 } else { 300 }), None))
        .collect();
    let ids = enqueue(&pool, &jobs, 5).await;
    let rescue_after = ("LINKPULSE_RESCUE_AFTER", "3s".to_owned());
    let draining = WorkerProcess::spawn(
        &pool,
        &[("TEST_CONCURRENCY", in_flight.to_string()), rescue_after.clone()],
    )
    .await;
    wait_for(Duration::from_secs(10), "jobs in flight", || async {
        (started_by(&pool, draining.pid).await >= in_flight as i64).then_some(())
    })
    .await;
    let (held,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'running'")
        .fetch_one(&pool)
        .await
        .expect("held");
    assert_eq!(
        held, n as i64,
        "premise: the draining worker holds every job, most of them unstarted in its buffer"
    );
    let (long_started,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM test_runs WHERE event = 'start' AND job_id = ANY($1)")
            .bind(&ids[..in_flight])
            .fetch_one(&pool)
            .await
            .expect("long starts");
    assert_eq!(
        long_started, in_flight as i64,
        "premise: the long jobs are the ones in flight"
    );
    draining.signal(Signal::SIGTERM);
    let draining_pid = draining.pid;
    let other = WorkerProcess::spawn(&pool, &[("TEST_CONCURRENCY", "8".into()), rescue_after]).await;
    assert_eq!(
        draining.wait(Duration::from_secs(30)).await,
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
    assert_eq!(
        lost_jobs(&pool).await,
        0,
        "no job was rescued: the draining worker kept heartbeating"
    );
    assert_eq!(
        jobs_without_attempts(&pool, 1).await,
        Vec::<(i64, i32)>::new(),
        "every job ran on one attempt: handed-back jobs got theirs refunded"
    );
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
    assert_eq!(
        started_by(&pool, other.pid).await,
        (n - in_flight) as i64,
        "the rest ran on the other worker"
    );
    // Handed back at once, not when the drain ended: the other worker ran them while the
    // draining worker's long jobs were still running.
    let handed_back_started = first_event_by(&pool, other.pid, "start").await.expect("other started");
    let drain_first_finished = first_event_by(&pool, draining_pid, "finish")
        .await
        .expect("drained finished");
    assert!(
        handed_back_started < drain_first_finished,
        "the other worker started at {handed_back_started}, after the in-flight jobs finished at {drain_first_finished}"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn killed_database_connections_lose_nothing(pool: PgPool) {
    let n = 300;
    let ids = enqueue(&pool, &(0..n).map(|_| (sleeping(20), None)).collect::<Vec<_>>(), 5).await;
    let app_name = "lp-killed-connections";
    let worker = WorkerProcess::spawn(
        &pool,
        &[
            ("TEST_CONCURRENCY", "8".into()),
            ("TEST_APPLICATION_NAME", app_name.into()),
        ],
    )
    .await;
    // Kill every connection of the worker (pools, claims, listener) a few times while it works;
    // the count of jobs still to do is read in the same statement.
    let mut killed_while_busy = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (killed, busy): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND application_name = ANY($1) AND pg_terminate_backend(pid)), \
                    (SELECT count(*) FROM queue_jobs WHERE state IN ('queued', 'running'))",
        )
        .bind(vec![app_name, LISTENER_APPLICATION_NAME])
        .fetch_one(&pool)
        .await
        .expect("terminate");
        if busy > 0 {
            killed_while_busy += killed;
        }
    }
    assert!(
        killed_while_busy > 0,
        "premise: worker connections were terminated while jobs were queued or running"
    );
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
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    // A rescue window far beyond the test: a worker starved of CPU for a moment on a busy
    // machine is not judged dead, so every overlap measured below is the cap's doing.
    let env = [
        ("TEST_CONCURRENCY", "8".to_owned()),
        ("LINKPULSE_HOST_CONCURRENCY", "2".to_owned()),
        ("LINKPULSE_HEARTBEAT_INTERVAL", "1s".to_owned()),
        ("LINKPULSE_RESCUE_AFTER", "60s".to_owned()),
    ];
    // Workers first, all idle and listening, so no single process claims the backlog alone.
    let workers = [
        WorkerProcess::spawn(&pool, &env).await,
        WorkerProcess::spawn(&pool, &env).await,
        WorkerProcess::spawn(&pool, &env).await,
    ];
    let groups = ["a.example", "b.example", "c.example"];
    // Uneven lengths: the two slots of a group free up at different times, so a freed slot is
    // often taken by another process while the group's other job still runs.
    let jobs: Vec<_> = (0..45)
        .map(|i| (sleeping(300 + (i as u64 % 4) * 150), Some(groups[i % 3])))
        .collect();
    enqueue(&pool, &jobs, 5).await;
    wait_all_done(&pool, 45, Duration::from_secs(90)).await;
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
    // Runs of one group in different processes that overlapped in time: the cap was shared.
    let shared: Vec<(String, i64)> = sqlx::query_as(
        "WITH runs AS (
            SELECT s.group_key, s.pid, s.at AS started, f.at AS finished
            FROM test_runs s JOIN test_runs f ON f.job_id = s.job_id AND f.attempt = s.attempt AND f.event = 'finish'
            WHERE s.event = 'start')
         SELECT a.group_key, count(*) FROM runs a JOIN runs b
           ON b.group_key = a.group_key AND a.pid < b.pid AND a.started < b.finished AND b.started < a.finished
         GROUP BY a.group_key ORDER BY a.group_key",
    )
    .fetch_all(&pool)
    .await
    .expect("overlaps");
    let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
    let (processes_per_group,): (i64,) = sqlx::query_as(
        "SELECT max(n) FROM (SELECT count(DISTINCT pid) AS n FROM test_runs WHERE pid = ANY($1) GROUP BY group_key) g",
    )
    .bind(&pids)
    .fetch_one(&pool)
    .await
    .expect("processes per group");
    assert!(
        processes_per_group >= 2,
        "premise: a group's jobs ran in several processes ({processes_per_group})"
    );
    assert!(
        !shared.is_empty(),
        "premise: jobs of one group ran at the same time in two processes"
    );
    // A rescued job's old run overlaps its new one (at-least-once): say so if it happened.
    let lost = lost_jobs(&pool).await;
    for (group, peak) in &peaks {
        assert!(
            *peak <= 2,
            "group {group} ran {peak} jobs at once ({lost} jobs rescued)"
        );
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
