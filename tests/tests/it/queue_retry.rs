//! Outcomes: persisted backoff, snooze, terminal failure, panics, poison payloads, pruning.

use std::time::Duration;

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::{
    Completion, JobLease, NewJob, Outcome, RetryPolicy, ack, claim, insert_many, maintenance, registry,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{WorkerProcess, enqueue, job, wait_for};

const KINDS: &[&str] = &[TEST_KIND];

async fn claim_one(pool: &PgPool, owner: Uuid) -> Option<JobLease> {
    let mut jobs = claim::claim_batch(pool, owner, KINDS, 1, 2).await.expect("claim");
    jobs.pop().map(|j| JobLease {
        job_id: j.id,
        owner,
        token: j.lease_token,
        run: j.run_id,
        attempt: j.attempts,
        max_attempts: j.max_attempts,
        kind: j.kind,
        group_key: j.group_key,
        trace_context: None,
        run_at: j.run_at,
    })
}

/// Seconds from now until the job's run_at, by the database clock.
async fn due_in(pool: &PgPool, id: i64) -> f64 {
    let (secs,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM run_at - now())::float8 FROM queue_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("run_at");
    secs
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn failed_attempts_wait_out_a_growing_backoff_then_end_failed(pool: PgPool) {
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 3).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "t").await.expect("register");
    let policy = RetryPolicy {
        base: Duration::from_millis(400),
        max: Duration::from_secs(5),
    };
    for attempt in 1..=3 {
        let lease = wait_for(Duration::from_secs(5), "the job to become due", || {
            claim_one(&pool, owner)
        })
        .await;
        assert_eq!(lease.attempt, attempt);
        let outcome = Outcome::Retry {
            error: format!("boom {attempt}"),
        };
        ack::complete_many(&pool, &[Completion::new(lease, outcome)], &policy)
            .await
            .expect("ack");
        if attempt < 3 {
            // Persisted, not in memory: the row itself says when it may run again, and a claim
            // right now does not get it.
            let ceiling = policy.ceiling(attempt).as_secs_f64();
            let wait = due_in(&pool, ids[0]).await;
            assert!(
                wait > ceiling / 2.0 - 0.1 && wait <= ceiling + 0.05,
                "attempt {attempt}: due in {wait}s, ceiling {ceiling}s"
            );
            assert!(
                claim_one(&pool, owner).await.is_none(),
                "re-claimed before its backoff ended"
            );
        }
    }
    let (state, attempts, errors) = job(&pool, ids[0]).await;
    assert_eq!((state.as_str(), attempts), ("failed", 3));
    let messages: Vec<&str> = errors
        .as_array()
        .expect("errors array")
        .iter()
        .filter_map(|e| e["error"].as_str())
        .collect();
    assert_eq!(
        messages,
        ["boom 1", "boom 2", "boom 3"],
        "every attempt's error is kept"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn snooze_delays_the_job_without_consuming_an_attempt(pool: PgPool) {
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "t").await.expect("register");
    let lease = claim_one(&pool, owner).await.expect("claimed");
    assert_eq!(lease.attempt, 1, "premise: this is the only attempt allowed");
    let outcome = Outcome::Snooze {
        delay: Duration::from_secs(2),
        reason: "Retry-After: 2".into(),
    };
    ack::complete_many(&pool, &[Completion::new(lease, outcome)], &RetryPolicy::default())
        .await
        .expect("ack");
    let (state, attempts, errors) = job(&pool, ids[0]).await;
    assert_eq!((state.as_str(), attempts), ("queued", 0), "snooze refunds the attempt");
    assert_eq!(errors[0]["kind"], "snooze");
    let wait = due_in(&pool, ids[0]).await;
    assert!((1.5..=2.05).contains(&wait), "due in {wait}s");
    assert!(claim_one(&pool, owner).await.is_none());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_goes_on(pool: PgPool) {
    let panicking = TestJob {
        panic: true,
        ..TestJob::default()
    };
    let ids = enqueue(&pool, &[(panicking, None)], 2).await;
    let worker = WorkerProcess::spawn(&pool, &[]).await;
    let (state, attempts, errors) = wait_for(Duration::from_secs(20), "the panicking job to fail", || async {
        let row = job(&pool, ids[0]).await;
        (row.0 == "failed").then_some(row)
    })
    .await;
    assert_eq!(
        (state.as_str(), attempts),
        ("failed", 2),
        "each panic consumed one attempt"
    );
    let errors = errors.as_array().expect("errors array");
    assert_eq!(errors.len(), 2, "one error per panicked attempt: {errors:?}");
    let kinds: Vec<&str> = errors.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["retry", "fail"], "retried once, then failed");
    for error in errors {
        assert!(
            error["error"].as_str().unwrap_or_default().contains("panicked"),
            "{error}"
        );
    }
    let after = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    wait_for(
        Duration::from_secs(10),
        "a later job to run on the same worker",
        || async { (job(&pool, after[0]).await.0 == "done").then_some(()) },
    )
    .await;
    drop(worker);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_poison_payload_fails_with_its_reason_and_the_worker_goes_on(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    insert_many(
        &pool,
        &[NewJob::new(TEST_KIND, serde_json::json!({"sleep_ms": "soon"}), 5)],
    )
    .await
    .expect("insert");
    let good = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let _worker = WorkerProcess::spawn(&pool, &[]).await;
    wait_for(Duration::from_secs(10), "the good job to run", || async {
        (job(&pool, good[0]).await.0 == "done").then_some(())
    })
    .await;
    let (state, attempts, errors): (String, i32, serde_json::Value) =
        sqlx::query_as("SELECT state, attempts, errors FROM queue_jobs WHERE payload->>'sleep_ms' = 'soon'")
            .fetch_one(&pool)
            .await
            .expect("poison row");
    assert_eq!((state.as_str(), attempts), ("failed", 1), "failed at once, not retried");
    let reason = errors[0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("malformed test payload"), "{reason}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn pruning_deletes_only_finished_jobs_past_retention(pool: PgPool) {
    let ids = enqueue(
        &pool,
        &(0..6).map(|_| (TestJob::default(), None)).collect::<Vec<_>>(),
        1,
    )
    .await;
    // done 2 h ago, done 10 min ago, failed 2 days ago, failed 2 h ago, queued long ago, running
    let rows = [
        ("done", "2 hours"),
        ("done", "10 minutes"),
        ("failed", "2 days"),
        ("failed", "2 hours"),
    ];
    for (id, (state, age)) in ids.iter().zip(rows) {
        sqlx::query(
            "UPDATE queue_jobs SET state = $2, finished_at = now() - $3::interval, created_at = now() - interval '3 days' WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(age)
        .execute(&pool)
        .await
        .expect("age job");
    }
    sqlx::query("UPDATE queue_jobs SET created_at = now() - interval '30 days' WHERE id = $1")
        .bind(ids[4])
        .execute(&pool)
        .await
        .expect("old queued");
    sqlx::query("UPDATE queue_jobs SET state = 'running', lease_owner = gen_random_uuid() WHERE id = $1")
        .bind(ids[5])
        .execute(&pool)
        .await
        .expect("running");

    let mut conn = pool.acquire().await.expect("connection");
    let pruned = maintenance::prune_finished(
        &mut conn,
        Duration::from_secs(3600),
        Duration::from_secs(24 * 3600),
        1,
        100,
    )
    .await
    .expect("prune");
    assert_eq!(pruned, 2);
    let left: Vec<(i64,)> = sqlx::query_as("SELECT id FROM queue_jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("left");
    let left: Vec<i64> = left.into_iter().map(|(id,)| id).collect();
    assert_eq!(left, vec![ids[1], ids[3], ids[4], ids[5]]);
}
