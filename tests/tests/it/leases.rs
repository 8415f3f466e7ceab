//! Leases you can trust: a token per claim fences every completion and write-back, a worker whose
//! registration vanished abandons its old identity's leases, a requeued job writes its new result,
//! and a job whose attempts found no answer ends `failed`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::{
    Completion, Engine, EngineConfig, JobFilter, JobLease, JobState, Outcome, RetryPolicy, ack, claim, inspect,
    registry,
};
use linkpulse_shared::config::QueueSettings;
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::TestApp;
use crate::helpers::{enqueue, job, lease_of, wait_for};

const KINDS: &[&str] = &[TEST_KIND];

async fn claim_one(pool: &PgPool, owner: Uuid) -> JobLease {
    let claimed = claim::claim_batch(pool, owner, KINDS, 1, 2).await.expect("claim");
    lease_of(claimed.first().expect("a job to claim"))
}

async fn lease_token(pool: &PgPool, id: i64) -> Option<Uuid> {
    let (token,): (Option<Uuid>,) = sqlx::query_as("SELECT lease_token FROM queue_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("token");
    token
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_replayed_ack_after_a_snooze_and_a_reclaim_by_the_same_worker_changes_nothing(pool: PgPool) {
    let policy = RetryPolicy::default();
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 3).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "replay-test").await.expect("register");

    let first = claim_one(&pool, owner).await;
    let snooze = Completion::new(
        first.clone(),
        Outcome::Snooze {
            delay: Duration::ZERO,
            reason: "rate limited".into(),
        },
    );
    assert_eq!(
        ack::complete_many(&pool, std::slice::from_ref(&snooze), &policy)
            .await
            .expect("ack"),
        1
    );
    // The snooze refunded the attempt: the same worker's next claim has the same (owner, attempt).
    let second = claim_one(&pool, owner).await;
    assert_eq!(
        (second.job_id, second.owner, second.attempt),
        (first.job_id, first.owner, first.attempt),
        "premise: owner and attempt repeat"
    );
    assert_ne!(second.token, first.token, "each claim mints its own token");

    // The first acknowledgement is sent again (its reply was lost): it must not touch the new lease.
    assert_eq!(ack::complete_many(&pool, &[snooze], &policy).await.expect("replay"), 0);
    let (state, attempts, _) = job(&pool, ids[0]).await;
    assert_eq!((state.as_str(), attempts), ("running", 1));
    assert_eq!(lease_token(&pool, ids[0]).await, Some(second.token));

    // The current lease completes normally, and the token is gone with it.
    let done = Completion::new(second, Outcome::Done);
    assert_eq!(ack::complete_many(&pool, &[done], &policy).await.expect("ack"), 1);
    assert_eq!(job(&pool, ids[0]).await.0, "done");
    assert_eq!(lease_token(&pool, ids[0]).await, None);
}

fn engine_config(name: &str) -> EngineConfig {
    EngineConfig {
        // A kind nobody enqueues: this engine only heartbeats; the test claims on its behalf.
        kinds: vec!["nothing"],
        concurrency: 1,
        name: name.to_owned(),
        queue: QueueSettings {
            heartbeat_interval: Duration::from_millis(200),
            rescue_after: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            ..QueueSettings::default()
        },
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn jobs_leased_to_a_registration_a_rescue_deleted_are_released_and_the_worker_comes_back_under_a_new_id(
    pool: PgPool,
) {
    let ids = enqueue(&pool, &[(TestJob::default(), None), (TestJob::default(), None)], 3).await;
    let engine = Engine::start(pool.clone(), engine_config("raced"))
        .await
        .expect("engine");
    let old = engine.id();

    // The race, made deterministic: a rescue deletes the worker's row but has not committed when
    // a claim for that worker runs; the claim's snapshot still sees the row and leases jobs to it.
    let mut rescue = pool.begin().await.expect("begin");
    sqlx::query("DELETE FROM queue_workers WHERE id = $1")
        .bind(old)
        .execute(&mut *rescue)
        .await
        .expect("delete the worker's row");
    let claimed = claim::claim_batch(&pool, old, KINDS, 10, 2).await.expect("claim");
    assert_eq!(claimed.len(), 2, "premise: the claim saw the row and leased both jobs");
    rescue.commit().await.expect("the rescue commits");

    // The next heartbeat finds no row: the old identity's leases are released, a new one registers.
    wait_for(Duration::from_secs(10), "the raced jobs to be released", || async {
        let (running,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'running'")
            .fetch_one(&pool)
            .await
            .expect("count");
        (running == 0).then_some(())
    })
    .await;
    for id in &ids {
        let (state, attempts, _) = job(&pool, *id).await;
        assert_eq!(
            (state.as_str(), attempts),
            ("queued", 0),
            "job {id} released, attempt refunded"
        );
    }
    let new = engine.id();
    assert_ne!(new, old, "the worker registered under a new id");
    // The registration follows the release: wait for it, then it is the only row of this worker.
    let rows = wait_for(Duration::from_secs(10), "the worker to register again", || async {
        let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM queue_workers WHERE name = 'raced'")
            .fetch_all(&pool)
            .await
            .expect("workers");
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows, vec![(new,)]);
    // A completion of the retired identity's lease is refused.
    let stale = Completion::new(lease_of(&claimed[0]), Outcome::Done);
    assert_eq!(
        ack::complete_many(&pool, &[stale], &RetryPolicy::default())
            .await
            .expect("ack"),
        0
    );
    engine.shutdown().await;
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_requeued_done_check_writes_its_new_verdict(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.site.toggle.store(404, Ordering::SeqCst);
    let ids = app.add_links(&[app.url("/toggle")]).await;
    app.cycle_and_work().await;
    let dead = app.link(ids[0]).await;
    assert_eq!(
        (dead.last_status_code, dead.consecutive_failures),
        (Some(404), 1),
        "premise: the first check found it dead"
    );
    let (job_id,): (i64,) = sqlx::query_as("SELECT id FROM queue_jobs WHERE kind = 'check' AND state = 'done'")
        .fetch_one(&app.pool)
        .await
        .expect("the done check");

    app.site.toggle.store(200, Ordering::SeqCst);
    let filter = JobFilter {
        state: Some(JobState::Done),
        id: Some(job_id),
        ..JobFilter::default()
    };
    let report = inspect::requeue(&app.pool, JobState::Done, &filter)
        .await
        .expect("requeue");
    assert_eq!(report.requeued, 1);
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;

    let now = app.link(ids[0]).await;
    assert_eq!(
        (now.last_status_code, now.consecutive_failures, now.status.as_str()),
        (Some(200), 0, "active"),
        "the requeued job's verdict was written"
    );
    let (state, result_class): (String, Option<String>) =
        sqlx::query_as("SELECT state, result_class FROM queue_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!((state.as_str(), result_class.as_deref()), ("done", Some("ok")));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn checks_whose_attempts_found_no_answer_end_failed_and_count_once(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.queue.max_attempts = 1;
    app.site.toggle.store(500, Ordering::SeqCst);
    let urls: Vec<String> = (0..5).map(|i| app.url(&format!("/toggle?{i}"))).collect();
    let ids = app.add_links(&urls).await;
    app.cycle_and_work().await;

    let rows: Vec<(String, Option<String>, Option<i32>)> =
        sqlx::query_as("SELECT state, result_class, status_code FROM queue_jobs WHERE kind = 'check' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    assert_eq!(rows.len(), 5);
    for row in &rows {
        assert_eq!(
            (row.0.as_str(), row.1.as_deref(), row.2),
            ("failed", Some("transient"), Some(500)),
            "attempts spent on 5xx end failed"
        );
    }
    for id in &ids {
        assert_eq!(app.link(*id).await.consecutive_failures, 1, "the check counts once");
    }

    // Rate-limited to the last attempt: failed too, as blocked, and never counted.
    app.site.toggle.store(429, Ordering::SeqCst);
    let (job_id,): (i64,) = sqlx::query_as("SELECT min(id) FROM queue_jobs WHERE kind = 'check'")
        .fetch_one(&app.pool)
        .await
        .expect("job");
    let filter = JobFilter {
        state: Some(JobState::Failed),
        id: Some(job_id),
        ..JobFilter::default()
    };
    assert_eq!(
        inspect::requeue(&app.pool, JobState::Failed, &filter)
            .await
            .expect("requeue")
            .requeued,
        1
    );
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;
    let (state, result_class, status): (String, Option<String>, Option<i32>) =
        sqlx::query_as("SELECT state, result_class, status_code FROM queue_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!(
        (state.as_str(), result_class.as_deref(), status),
        ("failed", Some("blocked"), Some(429))
    );
    assert_eq!(
        app.link(ids[0]).await.consecutive_failures,
        1,
        "a rate limit is no evidence of death"
    );
}

/// The completion API takes the caller's transaction: an application that must store a job's
/// effect and its completion atomically does both in one transaction, with no SQL of its own on
/// `queue_jobs`.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_completion_commits_or_rolls_back_with_the_callers_own_write(pool: PgPool) {
    let policy = RetryPolicy::default();
    let ids = enqueue(&pool, &[(TestJob::default(), None)], 3).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "tx-test").await.expect("register");
    let lease = claim_one(&pool, owner).await;
    sqlx::query("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("effects table");

    for commit in [false, true] {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO effects VALUES ($1)")
            .bind(lease.job_id)
            .execute(&mut *tx)
            .await
            .expect("the caller's write");
        let done = Completion::new(lease.clone(), Outcome::Done);
        assert_eq!(
            ack::complete_many(&mut *tx, std::slice::from_ref(&done), &policy)
                .await
                .expect("ack"),
            1
        );
        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        let (effects,): (i64,) = sqlx::query_as("SELECT count(*) FROM effects")
            .fetch_one(&pool)
            .await
            .expect("effects");
        let (state, _, _) = job(&pool, ids[0]).await;
        if commit {
            assert_eq!((effects, state.as_str()), (1, "done"));
        } else {
            assert_eq!((effects, state.as_str()), (0, "running"), "neither applied");
        }
    }
}
