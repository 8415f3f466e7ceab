//! The finished-job counters behind `queue stats`: every transition of the queue crate moves them
//! in step with the job table, `queue recount` corrects writes from outside it, and a recount
//! racing acknowledgements loses none of them.

use std::time::Duration;

use linkpulse_queue::maintenance::{prune_finished, rescue_lost};
use linkpulse_queue::{
    CancelSelection, Completion, JobFilter, JobState, Outcome, RetryPolicy, ack, claim, control, counts, inspect,
    registry,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::lease_of;

/// Inserts `n` queued jobs of `kind` with `max_attempts`, due now.
async fn queued(pool: &PgPool, kind: &str, n: i64, max_attempts: i32) {
    sqlx::query(
        "INSERT INTO queue_jobs (kind, dedupe_key, payload, max_attempts)
         SELECT $1, $1 || ':' || i, '{}', $3 FROM generate_series(1, $2) i",
    )
    .bind(kind)
    .bind(n)
    .bind(max_attempts)
    .execute(pool)
    .await
    .expect("insert queued jobs");
}

/// The table's own count of each kind in each state: (queued, running, done, failed).
async fn table_counts(pool: &PgPool, kind: &str) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'running'),
                count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed')
         FROM queue_jobs WHERE kind = $1",
    )
    .bind(kind)
    .fetch_one(pool)
    .await
    .expect("count")
}

/// Asserts that `queue stats` says what the table holds, for every kind given; `step` names the
/// transition just made.
async fn assert_stats_match_table(pool: &PgPool, kinds: &[&str], step: &str) {
    let stats = inspect::stats(pool, kinds).await.expect("stats");
    for kind in kinds {
        let k = &stats.kinds[*kind];
        assert_eq!(
            (k.queued, k.running, k.done, k.failed),
            table_counts(pool, kind).await,
            "after {step}: kind {kind}"
        );
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn counters_follow_every_transition_of_the_queue(pool: PgPool) {
    let kinds = ["a", "b"];
    queued(&pool, "a", 10, 2).await;
    queued(&pool, "b", 4, 3).await;
    let owner = Uuid::new_v4();
    registry::register(&pool, owner, "counts-test").await.expect("register");
    let policy = RetryPolicy::default();

    // Acknowledgements: three done, two failed, one retried (queued again), two left running.
    let claimed = claim::claim_batch(&pool, owner, &["a"], 8, 8).await.expect("claim");
    assert_eq!(claimed.len(), 8, "premise");
    let fail = |c: &linkpulse_queue::ClaimedJob| Completion::new(lease_of(c), Outcome::Fail { error: "poison".into() });
    let mut done: Vec<Completion> = claimed[..3]
        .iter()
        .map(|c| {
            let mut completion = Completion::new(lease_of(c), Outcome::Done);
            completion.duration = Some(Duration::from_millis(100));
            completion
        })
        .collect();
    done.extend(claimed[3..5].iter().map(fail));
    done.push(Completion::new(
        lease_of(&claimed[5]),
        Outcome::Retry { error: "again".into() },
    ));
    assert_eq!(ack::complete_many(&pool, &done, &policy).await.expect("ack"), 6);
    assert_stats_match_table(&pool, &kinds, "acknowledgements").await;
    let stats = inspect::stats(&pool, &kinds).await.expect("stats");
    let a = &stats.kinds["a"];
    assert_eq!((a.done, a.failed, a.running), (3, 2, 2), "premise: {a:?}");
    assert_eq!((a.done_24h, a.failed_24h), (3, 2), "{a:?}");
    // Three timed attempts of 100 ms; the failures carried no duration.
    assert_eq!(a.mean_duration_ms_24h, Some(100.0), "{a:?}");
    // A replayed acknowledgement (same lease) changes nothing and counts nothing.
    assert_eq!(ack::complete_many(&pool, &done[..3], &policy).await.expect("replay"), 0);
    assert_stats_match_table(&pool, &kinds, "a replayed acknowledgement").await;

    // A cancel makes queued jobs failed.
    let selection = CancelSelection {
        kind: Some("b".into()),
        ..CancelSelection::default()
    };
    assert_eq!(
        control::cancel(&pool, &selection, None, "test").await.expect("cancel"),
        4
    );
    assert_stats_match_table(&pool, &kinds, "cancel").await;

    // A rescue of a dead worker's jobs: one out of attempts (failed), one queued again.
    sqlx::query("UPDATE queue_jobs SET max_attempts = 1 WHERE id = $1")
        .bind(claimed[6].id)
        .execute(&pool)
        .await
        .expect("last attempt");
    sqlx::query("UPDATE queue_workers SET heartbeat_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .expect("silence the worker");
    assert_eq!(
        rescue_lost(&pool, Duration::from_secs(60), &policy)
            .await
            .expect("rescue"),
        2
    );
    assert_eq!(table_counts(&pool, "a").await.3, 3, "premise: the rescue failed one");
    assert_stats_match_table(&pool, &kinds, "rescue").await;

    // A requeue takes failed jobs off the total, not off the minute they failed in.
    let filter = JobFilter {
        kind: Some("b".into()),
        ..JobFilter::default()
    };
    let report = inspect::requeue(&pool, JobState::Failed, &filter)
        .await
        .expect("requeue");
    assert_eq!(report.requeued, 4);
    assert_stats_match_table(&pool, &kinds, "requeue").await;
    let b = &inspect::stats(&pool, &kinds).await.expect("stats").kinds["b"];
    assert_eq!((b.failed, b.failed_24h), (0, 4), "{b:?}");

    // Pruning removes retained jobs from the totals; the last 24 hours still show they finished.
    sqlx::query("UPDATE queue_jobs SET finished_at = now() - interval '3 days' WHERE state = 'done'")
        .execute(&pool)
        .await
        .expect("age the done jobs");
    let mut conn = pool.acquire().await.expect("connection");
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(prune_finished(&mut conn, day, day * 30, 2, 10).await.expect("prune"), 3);
    drop(conn);
    assert_stats_match_table(&pool, &kinds, "prune").await;
    let a = &inspect::stats(&pool, &kinds).await.expect("stats").kinds["a"];
    assert_eq!((a.done, a.done_24h), (0, 3), "{a:?}");

    // Every step was counted in step: nothing for a recount to correct.
    assert_eq!(counts::recount(&pool).await.expect("recount"), Vec::new());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn recount_corrects_writes_from_outside_the_queue(pool: PgPool) {
    // What the previous release's workers (or SQL by hand) do: finish jobs without the counters.
    sqlx::query(
        "INSERT INTO queue_jobs (kind, payload, state, attempts, max_attempts, finished_at)
         SELECT 'a', '{}', CASE WHEN i <= 5 THEN 'done' ELSE 'failed' END, 1, 1, now()
         FROM generate_series(1, 7) i",
    )
    .execute(&pool)
    .await
    .expect("finished jobs");
    let a = &inspect::stats(&pool, &["a"]).await.expect("stats").kinds["a"];
    assert_eq!((a.done, a.failed), (0, 0), "premise: nothing counted them");

    let mut out = Vec::new();
    producer::commands::queue::recount(&pool, true, &mut out)
        .await
        .expect("recount");
    let printed: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(
        printed,
        serde_json::json!({"corrections": [
            {"kind": "a", "state": "done", "delta": 5},
            {"kind": "a", "state": "failed", "delta": 2},
        ]})
    );
    assert_stats_match_table(&pool, &["a"], "recount").await;

    // A delete by hand is corrected downwards.
    sqlx::query("DELETE FROM queue_jobs WHERE state = 'failed'")
        .execute(&pool)
        .await
        .expect("delete");
    let corrections = counts::recount(&pool).await.expect("recount");
    assert_eq!(corrections.len(), 1);
    assert_eq!((corrections[0].state.as_str(), corrections[0].delta), ("failed", -2));
    assert_stats_match_table(&pool, &["a"], "second recount").await;
    assert!(
        counts::recount(&pool).await.expect("recount").is_empty(),
        "nothing left to correct"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_recount_racing_acknowledgements_loses_none_of_them(pool: PgPool) {
    const JOBS: i64 = 3_000;
    queued(&pool, "a", JOBS, 3).await;
    // Drift for the recounts to correct while the acknowledgements run: jobs finished by hand.
    sqlx::query(
        "INSERT INTO queue_jobs (kind, payload, state, attempts, max_attempts, finished_at)
         SELECT 'a', '{}', 'done', 1, 1, now() FROM generate_series(1, 100)",
    )
    .execute(&pool)
    .await
    .expect("drift");
    let policy = RetryPolicy::default();
    let mut ackers = Vec::new();
    for i in 0..6 {
        let pool = pool.clone();
        ackers.push(tokio::spawn(async move {
            let owner = Uuid::new_v4();
            registry::register(&pool, owner, &format!("acker-{i}"))
                .await
                .expect("register");
            loop {
                let claimed = claim::claim_batch(&pool, owner, &["a"], 20, 100).await.expect("claim");
                if claimed.is_empty() {
                    return;
                }
                let done: Vec<Completion> = claimed
                    .iter()
                    .map(|c| Completion::new(lease_of(c), Outcome::Done))
                    .collect();
                ack::complete_many(&pool, &done, &policy).await.expect("ack");
            }
        }));
    }
    // Recounts while the acknowledgements commit: each must add only the drift of its snapshot
    // (the hundred jobs by hand, once), never overwrite what acknowledgements added meanwhile.
    let mut recounts = 0;
    let mut corrected = 0;
    while ackers.iter().any(|a| !a.is_finished()) {
        let corrections = counts::recount(&pool).await.expect("recount");
        corrected += corrections.iter().map(|c| c.delta).sum::<i64>();
        recounts += 1;
    }
    assert_eq!(corrected, 100, "only the jobs finished by hand were drift");
    for acker in ackers {
        acker.await.expect("acker");
    }
    assert!(recounts >= 2, "premise: the recounts overlapped the acknowledgements");
    let a = &inspect::stats(&pool, &["a"]).await.expect("stats").kinds["a"];
    assert_eq!(
        (a.done, a.done_24h, a.queued, a.running),
        (JOBS + 100, JOBS, 0, 0),
        "{a:?}"
    );
    assert!(counts::recount(&pool).await.expect("recount").is_empty());
}
