//! Pruning: by the elected worker's maintenance pass, with the retention of its settings and a
//! bound per pass, and by the operator's `producer queue prune`.

use std::process::Stdio;
use std::time::Duration;

use linkpulse_queue::RetryPolicy;
use linkpulse_queue::maintenance::{self, MAINTENANCE_LOCK_KEY};
use sqlx::PgPool;
use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{WorkerProcess, count_state, url_of};

/// Inserts `n` jobs in `state`, finished `age` ago (plus `i` seconds for the i-th, so the
/// first is the youngest), created long before; returns their ids in insertion order.
async fn finished(pool: &PgPool, state: &str, age: &str, n: i64) -> Vec<i64> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO queue_jobs (kind, payload, state, attempts, max_attempts, created_at, finished_at)
         SELECT 'test', '{}', $1, 1, 1, now() - interval '30 days', now() - $2::interval - make_interval(secs => i)
         FROM generate_series(1, $3) AS i ORDER BY i
         RETURNING id",
    )
    .bind(state)
    .bind(age)
    .bind(n)
    .fetch_all(pool)
    .await
    .expect("insert finished jobs");
    let mut ids: Vec<i64> = rows.into_iter().map(|(id,)| id).collect();
    ids.sort_unstable();
    ids
}

/// A queued job created a month ago, due tomorrow (so no worker claims it).
async fn old_scheduled(pool: &PgPool) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO queue_jobs (kind, payload, max_attempts, created_at, run_at)
         VALUES ('test', '{}', 1, now() - interval '30 days', now() + interval '1 day') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("insert scheduled job");
    id
}

/// A running job created a month ago, leased by `owner`.
async fn old_running(pool: &PgPool, owner: Uuid) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO queue_jobs (kind, payload, state, attempts, max_attempts, lease_owner, created_at, started_at)
         VALUES ('test', '{}', 'running', 1, 3, $1, now() - interval '30 days', now() - interval '30 days')
         RETURNING id",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
    .expect("insert running job");
    id
}

async fn job_ids(pool: &PgPool) -> Vec<i64> {
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT id FROM queue_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("ids");
    rows.into_iter().map(|(id,)| id).collect()
}

const RETAIN_HOUR: Duration = Duration::from_secs(3600);
const RESCUE_AFTER: Duration = Duration::from_secs(30);

/// Pruning is the producer's `prune` schedule (one pruner), with the retention of its settings;
/// a worker's maintenance, configured from the same environment, only rescues.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_prune_schedule_prunes_finished_jobs_past_their_retention_and_workers_do_not(pool: PgPool) {
    integration_tests::create_test_runs(&pool).await.expect("test_runs");
    // Retention 1 h for done, 1 d for failed. Each kept row would go under the other state's
    // retention, and the 20-hour-old done job would stay under the default (1 d).
    let done_2h = finished(&pool, "done", "2 hours", 1).await;
    let done_20h = finished(&pool, "done", "20 hours", 1).await;
    let done_10m = finished(&pool, "done", "10 minutes", 1).await;
    let failed_2d = finished(&pool, "failed", "2 days", 1).await;
    let failed_2h = finished(&pool, "failed", "2 hours", 1).await;
    let scheduled = old_scheduled(&pool).await;
    let retention = [
        ("LINKPULSE_RETAIN_DONE", "1h".into()),
        ("LINKPULSE_RETAIN_FAILED", "1d".into()),
        ("LINKPULSE_RESCUE_AFTER", "1s".into()),
        ("LINKPULSE_HEARTBEAT_INTERVAL", "200ms".into()),
    ];
    let worker = WorkerProcess::spawn(&pool, &retention).await;
    // Several maintenance passes (one per rescue_after / 3, at least 200 ms) go by.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_ids(&pool).await.len(), 6, "a worker's maintenance does not prune");
    drop(worker);

    let url = url_of(&pool).await;
    let env: Vec<(&str, &str)> = retention
        .iter()
        .map(|(k, v): &(&str, String)| (*k, v.as_str()))
        .collect();
    let output = crate::producer_loop::producer_command(&url, &["cycle", "prune", "--json"], &env)
        .output()
        .await
        .expect("producer cycle prune");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).expect("run JSON");
    assert_eq!(run["details"]["deleted_jobs"], 3, "{run}");
    assert_eq!(
        job_ids(&pool).await,
        vec![done_10m[0], failed_2h[0], scheduled],
        "only finished jobs past their state's retention are pruned"
    );
    let _ = (done_2h, done_20h, failed_2d);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn only_the_elected_worker_rescues_and_prunes(pool: PgPool) {
    let old = finished(&pool, "done", "2 hours", 3).await;
    let lost = old_running(&pool, Uuid::new_v4()).await;
    let policy = RetryPolicy::default();

    // Another worker's pass holds the maintenance lock.
    let mut other_pass = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK_KEY)
        .execute(&mut *other_pass)
        .await
        .expect("lock");
    let outcome = maintenance::run_once(&pool, RESCUE_AFTER, &policy, Some((RETAIN_HOUR, RETAIN_HOUR)))
        .await
        .expect("run_once");
    assert_eq!(outcome, None, "not elected while another pass runs");
    let mut all = old.clone();
    all.push(lost);
    assert_eq!(job_ids(&pool).await, all, "nothing pruned");
    assert_eq!(count_state(&pool, "running").await, 1, "nothing rescued");

    other_pass.rollback().await.expect("end the other pass");
    let outcome = maintenance::run_once(&pool, RESCUE_AFTER, &policy, Some((RETAIN_HOUR, RETAIN_HOUR)))
        .await
        .expect("run_once");
    assert_eq!(
        outcome,
        Some((1, 3)),
        "elected: rescued the lost job, pruned the old ones"
    );
    assert_eq!(job_ids(&pool).await, vec![lost]);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_maintenance_pass_prunes_at_most_ten_batches_of_a_thousand_per_state(pool: PgPool) {
    finished(&pool, "done", "2 hours", 10_500).await;
    finished(&pool, "failed", "2 hours", 1_005).await;
    let policy = RetryPolicy::default();

    let outcome = maintenance::run_once(&pool, RESCUE_AFTER, &policy, Some((RETAIN_HOUR, RETAIN_HOUR)))
        .await
        .expect("run_once");
    assert_eq!(
        outcome,
        Some((0, 10_000 + 1_005)),
        "10,000 done (the bound), every failed job (its own bound)"
    );
    assert_eq!(count_state(&pool, "done").await, 500);
    assert_eq!(count_state(&pool, "failed").await, 0);
    // Oldest first: the 500 left are the youngest (finished 2 h + 1..500 s ago).
    let (oldest_left,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM now() - min(finished_at))::float8 FROM queue_jobs WHERE state = 'done'",
    )
    .fetch_one(&pool)
    .await
    .expect("oldest left");
    assert!(
        oldest_left < 7200.0 + 501.0,
        "the oldest left finished {oldest_left}s ago"
    );

    let outcome = maintenance::run_once(&pool, RESCUE_AFTER, &policy, Some((RETAIN_HOUR, RETAIN_HOUR)))
        .await
        .expect("run_once");
    assert_eq!(outcome, Some((0, 500)), "the next pass takes the rest");
    assert_eq!(job_ids(&pool).await, Vec::<i64>::new());
}

/// Runs the real `producer` binary with `args` and extra `env`; returns its JSON output.
async fn producer_json(pool: &PgPool, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"))
        .args(args)
        .env("DATABASE_URL", url_of(pool).await)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("LINKPULSE_RETAIN_DONE")
        .env_remove("LINKPULSE_RETAIN_FAILED")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run producer");
    assert!(
        output.status.success(),
        "producer {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn queue_prune_older_than_deletes_finished_jobs_of_both_states_past_that_age(pool: PgPool) {
    let done_3h = finished(&pool, "done", "3 hours", 1).await;
    let done_1h = finished(&pool, "done", "1 hour", 1).await;
    // Under the configured retention (14 d by default) this one would stay.
    let failed_3h = finished(&pool, "failed", "3 hours", 1).await;
    let failed_1h = finished(&pool, "failed", "1 hour", 1).await;
    let scheduled = old_scheduled(&pool).await;
    let running = old_running(&pool, Uuid::new_v4()).await;

    let reply = producer_json(&pool, &["queue", "prune", "--older-than", "2h", "--json"], &[]).await;
    assert_eq!(reply, serde_json::json!({ "pruned": 2 }));
    let left = job_ids(&pool).await;
    assert!(
        !left.contains(&done_3h[0]) && !left.contains(&failed_3h[0]),
        "finished jobs older than 2 h are gone: {left:?}"
    );
    assert_eq!(
        left,
        vec![done_1h[0], failed_1h[0], scheduled, running],
        "younger finished jobs and unfinished ones of any age stay"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn queue_prune_without_an_age_uses_the_configured_retention_of_each_state(pool: PgPool) {
    let done_1h = finished(&pool, "done", "1 hour", 1).await;
    let done_10m = finished(&pool, "done", "10 minutes", 1).await;
    let failed_3h = finished(&pool, "failed", "3 hours", 1).await;
    let failed_1h = finished(&pool, "failed", "1 hour", 1).await;

    let reply = producer_json(
        &pool,
        &["queue", "prune", "--json"],
        &[("LINKPULSE_RETAIN_DONE", "30m"), ("LINKPULSE_RETAIN_FAILED", "2h")],
    )
    .await;
    assert_eq!(reply, serde_json::json!({ "pruned": 2 }));
    let left = job_ids(&pool).await;
    assert!(!left.contains(&done_1h[0]) && !left.contains(&failed_3h[0]), "{left:?}");
    assert_eq!(left, vec![done_10m[0], failed_1h[0]]);
}
