//! Claims: disjoint under concurrency, fenced by lease, rescued from dead workers.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::{Completion, Outcome, RetryPolicy, ack, claim, maintenance, registry};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{enqueue, job, lease_of};

const KINDS: &[&str] = &[TEST_KIND];

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn concurrent_claimers_never_get_the_same_job(pool: PgPool) {
    let total = 3000;
    let jobs: Vec<_> = (0..total).map(|_| (TestJob::default(), None)).collect();
    enqueue(&pool, &jobs, 3).await;

    let mut claimers = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        claimers.push(tokio::spawn(async move {
            let owner = Uuid::new_v4();
            registry::register(&pool, owner, "claimer").await.expect("register");
            let mut mine = Vec::new();
            loop {
                let batch = claim::claim_batch(&pool, owner, KINDS, 37, 2).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claimed = 0;
    let mut claimers_with_work = 0;
    for claimer in claimers {
        let mine = claimer.await.expect("claimer");
        claimers_with_work += usize::from(!mine.is_empty());
        claimed += mine.len();
        for id in mine {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(claimed, total, "every job claimed exactly once");
    assert!(claimers_with_work > 1, "premise: the claims really ran concurrently");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn completion_of_a_rescued_attempt_is_refused(pool: PgPool) {
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 5).await;
    let old_owner = Uuid::new_v4();
    registry::register(&pool, old_owner, "old").await.expect("register");
    let first = claim::claim_batch(&pool, old_owner, KINDS, 10, 2).await.expect("claim");
    assert_eq!(first.len(), 1);

    // What an earlier attempt found stays on the row until an attempt ends.
    sqlx::query("UPDATE queue_jobs SET result_class = 'transient', status_code = 503, result_detail = 'HTTP 503', duration_ms = 40 WHERE id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await
        .expect("an earlier attempt's audit");
    // The old worker goes silent: its row ages past the rescue threshold.
    sqlx::query("UPDATE queue_workers SET heartbeat_at = now() - interval '1 hour' WHERE id = $1")
        .bind(old_owner)
        .execute(&pool)
        .await
        .expect("age worker");
    let rescued = maintenance::rescue_lost(&pool, Duration::from_secs(30), &RetryPolicy::default())
        .await
        .expect("rescue");
    assert_eq!(rescued, 1);
    let (state, attempts, errors) = job(&pool, ids[0]).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 1),
        "rescue keeps the attempt counted"
    );
    assert_eq!(errors[0]["kind"], "lost");
    // The audit trail says the lost attempt found nothing, not what the one before it found.
    let (class, code, detail, duration): (Option<String>, Option<i32>, Option<String>, Option<i32>) =
        sqlx::query_as("SELECT result_class, status_code, result_detail, duration_ms FROM queue_jobs WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .expect("audit");
    assert_eq!((class.as_deref(), code, duration), (Some("error"), None, None));
    assert_eq!(
        detail.as_deref(),
        errors[0]["error"].as_str(),
        "the same reason as the error"
    );
    // Like any failed attempt it waits out the backoff (1 s after attempt 1, half of it
    // jittered), so a job that kills its worker does not take down the next one at once.
    let wait = wait_after_rescue(&pool, ids[0]).await;
    assert!((0.5..=1.0).contains(&wait), "rescued job due {wait} s after the rescue");
    // (A live worker's claim: the old owner's row is gone, so its claims find nothing anyway.)
    let new_owner = Uuid::new_v4();
    registry::register(&pool, new_owner, "new").await.expect("register");
    assert!(
        claim::claim_batch(&pool, new_owner, KINDS, 10, 2)
            .await
            .expect("claim")
            .is_empty(),
        "not claimable during its backoff"
    );
    sqlx::query("UPDATE queue_jobs SET run_at = now() WHERE id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await
        .expect("skip the backoff");

    let second = claim::claim_batch(&pool, new_owner, KINDS, 10, 2).await.expect("claim");
    assert_eq!(second.len(), 1);

    let policy = RetryPolicy::default();
    let late = Completion::new(lease_of(&first[0]), Outcome::Done);
    assert_eq!(
        ack::complete_many(&pool, &[late], &policy).await.expect("ack"),
        0,
        "late completion refused"
    );
    assert_eq!(job(&pool, ids[0]).await.0, "running", "the new attempt is untouched");

    let current = Completion::new(lease_of(&second[0]), Outcome::Done);
    assert_eq!(ack::complete_many(&pool, &[current], &policy).await.expect("ack"), 1);
    assert_eq!(job(&pool, ids[0]).await.0, "done");
}

/// Seconds from a job's first rescue (its first error) to the time it is due again.
async fn wait_after_rescue(pool: &PgPool, id: i64) -> f64 {
    let (wait,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM run_at - (errors -> 0 ->> 'at')::timestamptz)::float8 FROM queue_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("run_at");
    wait
}

/// A rescued job's wait follows the retry policy for its attempt: doubling, then capped.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn rescue_backoff_doubles_with_the_attempt_and_stops_at_the_cap(pool: PgPool) {
    let ids = enqueue(&pool, &[(TestJob::default(), None), (TestJob::default(), None)], 50).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "lost").await.expect("register");
    assert_eq!(
        claim::claim_batch(&pool, owner, KINDS, 10, 2)
            .await
            .expect("claim")
            .len(),
        2
    );
    // The third attempt and the fortieth were running when the worker went silent.
    for (id, attempts) in [(ids[0], 3), (ids[1], 40)] {
        sqlx::query("UPDATE queue_jobs SET attempts = $2 WHERE id = $1")
            .bind(id)
            .bind(attempts)
            .execute(&pool)
            .await
            .expect("set attempts");
    }
    sqlx::query("UPDATE queue_workers SET heartbeat_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .expect("age worker");
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };
    assert_eq!(
        maintenance::rescue_lost(&pool, Duration::from_secs(30), &policy)
            .await
            .expect("rescue"),
        2
    );
    // Attempt 3: 1 s × 2² = 4 s, half of it jittered.
    let third = wait_after_rescue(&pool, ids[0]).await;
    assert!((2.0..=4.0).contains(&third), "attempt 3 waits {third} s");
    // Attempt 40: far past the cap, so 10 s, half of it jittered.
    let fortieth = wait_after_rescue(&pool, ids[1]).await;
    assert!((5.0..=10.0).contains(&fortieth), "attempt 40 waits {fortieth} s");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn rescue_of_the_last_attempt_fails_the_job(pool: PgPool) {
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 1).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "vanishing").await.expect("register");
    let claimed = claim::claim_batch(&pool, owner, KINDS, 10, 2).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    // The owner vanished without deregistering cleanly: no worker row at all.
    sqlx::query("DELETE FROM queue_workers")
        .execute(&pool)
        .await
        .expect("delete worker");
    assert!(
        claim::claim_batch(&pool, owner, KINDS, 10, 2)
            .await
            .expect("claim")
            .is_empty(),
        "unregistered owners claim nothing"
    );
    assert_eq!(
        maintenance::rescue_lost(&pool, Duration::from_secs(30), &RetryPolicy::default())
            .await
            .expect("rescue"),
        1
    );
    let (state, attempts, _) = job(&pool, ids[0]).await;
    assert_eq!((state.as_str(), attempts), ("failed", 1));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn claim_respects_priority_then_run_at(pool: PgPool) {
    use linkpulse_queue::{JobArgs, NewJob, insert_many};
    let payload = TestJob::default().encode().expect("encode");
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    let future = chrono::Utc::now() + chrono::Duration::minutes(5);
    insert_many(
        &pool,
        &[
            NewJob::new(TEST_KIND, payload.clone(), 1).priority(5).dedupe_key("low"),
            NewJob::new(TEST_KIND, payload.clone(), 1)
                .priority(0)
                .run_at(past)
                .dedupe_key("high-old"),
            NewJob::new(TEST_KIND, payload.clone(), 1)
                .priority(0)
                .dedupe_key("high-new"),
            NewJob::new(TEST_KIND, payload, 1)
                .priority(0)
                .run_at(future)
                .dedupe_key("scheduled"),
        ],
    )
    .await
    .expect("insert");
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "ordered").await.expect("register");
    let mut order = Vec::new();
    for _ in 0..4 {
        for job in claim::claim_batch(&pool, owner, KINDS, 1, 2).await.expect("claim") {
            let (key,): (String,) = sqlx::query_as("SELECT dedupe_key FROM queue_jobs WHERE id = $1")
                .bind(job.id)
                .fetch_one(&pool)
                .await
                .expect("key");
            order.push(key);
        }
    }
    assert_eq!(
        order,
        ["high-old", "high-new", "low"],
        "scheduled job not claimed before its run_at"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_group_cap_fills_the_free_slot_numbers_left_by_finished_jobs(pool: PgPool) {
    // Cap 3 on one host; five jobs queued. The first claim takes slots 1–3.
    let ids = enqueue(&pool, &vec![(TestJob::default(), Some("one.example")); 5], 3).await;
    assert_eq!(ids.len(), 5, "premise: five jobs queued");
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "claimer").await.expect("register");
    let first = claim::claim_batch(&pool, owner, KINDS, 10, 3).await.expect("claim");
    assert_eq!(first.len(), 3, "the cap binds");
    assert!(
        claim::claim_batch(&pool, owner, KINDS, 10, 3)
            .await
            .expect("claim")
            .is_empty()
    );

    // Slots 1 and 3 are freed (their jobs finish); slot 2 stays taken: the free numbers have a gap.
    let slot_of = |job: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i32,)>("SELECT slot FROM queue_group_slots WHERE job_id = $1")
                .bind(job)
                .fetch_one(&pool)
                .await
                .expect("slot")
                .0
        }
    };
    let mut by_slot = Vec::new();
    for job in &first {
        by_slot.push((slot_of(job.id).await, job.clone()));
    }
    by_slot.sort_by_key(|(slot, _)| *slot);
    assert_eq!(by_slot.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    let done: Vec<Completion> = [&by_slot[0].1, &by_slot[2].1]
        .into_iter()
        .map(|j| Completion::new(lease_of(j), Outcome::Done))
        .collect();
    assert_eq!(
        ack::complete_many(&pool, &done, &RetryPolicy::default())
            .await
            .expect("ack"),
        2
    );

    // The next claim gets exactly the two free numbers, 1 and 3, and never a fourth job.
    let second = claim::claim_batch(&pool, owner, KINDS, 10, 3).await.expect("claim");
    assert_eq!(second.len(), 2);
    let mut slots = Vec::new();
    for job in &second {
        slots.push(slot_of(job.id).await);
    }
    slots.sort_unstable();
    assert_eq!(slots, [1, 3]);
    let (running,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'running'")
        .fetch_one(&pool)
        .await
        .expect("running");
    assert_eq!(running, 3);
}
