//! Rescue of lost jobs and pruning of finished ones, run by one elected worker at a time.

use std::time::Duration;

use sqlx::PgPool;

use super::{QueueError, RetryPolicy};

/// Advisory lock key electing the worker that runs maintenance ("lpmaint" in ASCII).
pub const MAINTENANCE_LOCK_KEY: i64 = 0x006c_706d_6169_6e74;

/// Longest the maintenance lock's transaction may sit idle before the server ends its session
/// (`idle_in_transaction_session_timeout`). The pass's statements run in that transaction, so it
/// is idle only between them; the timeout bounds how long the lock outlives a holder whose node
/// vanished mid-pass behind something that keeps its TCP connection up, where keepalives see
/// nothing: another worker's pass runs at most this plus one period later.
pub const MAINTENANCE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the per-minute history of finished jobs (`queue_finished_minutes`) is kept: the last
/// 24 hours' figures need a day, the second day is slack for a prune schedule that did not run.
pub const MINUTES_KEPT: Duration = Duration::from_secs(2 * 24 * 3600);

/// Ceilings passed to `job_rescue_lost`: attempt 31 and later reuse the last one (the policy
/// caps its exponent at 30 too).
const RESCUE_CEILINGS: i32 = 31;

/// Rescues jobs of workers silent for longer than `rescue_after`, each queued again after
/// `policy`'s backoff for its attempt; returns how many.
///
/// One statement, `job_rescue_lost`: deletes the rows of workers silent for longer than `$1`
/// seconds, then takes back every running job whose owner is one of them or has no row at all (a
/// worker that was deregistered while holding leases). The attempt stays counted: a job that keeps
/// killing its worker ends `failed` instead of looping, and it waits out the retry policy's backoff
/// like any failed attempt, so it does not take down the next worker at once. `$2` holds the
/// policy's ceilings for attempts 1, 2, …, the last one repeating (computed in Rust by
/// [`RetryPolicy::ceiling`], so the formula lives in one place); half of the ceiling is jittered
/// here. The audit columns say what the lost attempt found: nothing (`error`), with the same reason
/// as its `lost` error. Locks the dead workers' rows and the rescued job rows; the slot-release
/// trigger frees their group slots. Jobs it fails are added to the finished-job counters in the
/// same statement. `$2` is cast to `float8[]` where it is first subscripted: the
/// compile-time check prepares the statement without values, and nothing else tells PostgreSQL its
/// type.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails.
pub async fn rescue_lost<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    rescue_after: Duration,
    policy: &RetryPolicy,
) -> Result<u64, QueueError> {
    let ceilings: Vec<f64> = (1..=RESCUE_CEILINGS)
        .map(|attempt| policy.ceiling(attempt).min(super::ack::MAX_SNOOZE).as_secs_f64())
        .collect();
    let rescued = sqlx::query_scalar!(
        r#"
WITH dead AS (
    DELETE FROM queue_workers WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING id
),
rescued AS (
UPDATE queue_jobs j
SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
    run_at = CASE WHEN j.attempts >= j.max_attempts THEN j.run_at
                  ELSE now() + make_interval(secs =>
                      ($2::float8[])[least(greatest(j.attempts, 1), array_length($2, 1))] * (0.5 + random() / 2))
             END,
    lease_owner = NULL,
    lease_token = NULL,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempts, 'at', now(), 'kind', 'lost',
        'error', 'worker ' || j.lease_owner::text || ' stopped heartbeating')),
    result_class = 'error',
    status_code = NULL,
    result_detail = 'worker ' || j.lease_owner::text || ' stopped heartbeating',
    duration_ms = NULL
WHERE j.state = 'running'
  AND (j.lease_owner IN (SELECT id FROM dead)
       OR NOT EXISTS (SELECT 1 FROM queue_workers w WHERE w.id = j.lease_owner))
RETURNING j.kind, j.state
),
counted AS (
    SELECT queue_count_finished(array_agg(kind), array_agg(state), array_agg(n), NULL, NULL, now())
    FROM (SELECT kind, state, count(*) AS n FROM rescued WHERE state = 'failed' GROUP BY kind, state) f
)
SELECT (SELECT count(*) FROM rescued) AS "rescued!" FROM counted
"#,
        rescue_after.as_secs_f64(),
        &ceilings,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(rescued).unwrap_or(0))
}

/// Deletes `done` jobs finished before `retain_done` ago and `failed` ones before
/// `retain_failed` ago, in batches of `batch`, at most `max_batches` per state. Returns how many.
///
/// Each batch is one statement, `job_prune_finished`: one bounded batch of finished jobs of one
/// state past retention, oldest first. `SKIP LOCKED` keeps it out of the way of an operator
/// requeueing the same rows. The same statement takes the deleted jobs off the finished-job
/// counters. Then the per-minute history older than [`MINUTES_KEPT`] goes.
///
/// # Errors
///
/// [`QueueError::Database`] if a statement fails; batches already deleted stay deleted.
pub async fn prune_finished(
    conn: &mut sqlx::PgConnection,
    retain_done: Duration,
    retain_failed: Duration,
    batch: i64,
    max_batches: usize,
) -> Result<u64, QueueError> {
    let mut total = 0;
    for (state, retain) in [("done", retain_done), ("failed", retain_failed)] {
        for _ in 0..max_batches {
            let deleted = sqlx::query_scalar!(
                r#"
WITH pruned AS (
    DELETE FROM queue_jobs
    WHERE id IN (
        SELECT id FROM queue_jobs
        WHERE state = $1 AND finished_at < now() - make_interval(secs => $2)
        ORDER BY finished_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING kind, state
),
counted AS (
    SELECT queue_count_finished(array_agg(kind), array_agg(state), array_agg(-n), NULL, NULL, NULL)
    FROM (SELECT kind, state, count(*) AS n FROM pruned GROUP BY kind, state) f
)
SELECT (SELECT count(*) FROM pruned) AS "deleted!" FROM counted
"#,
                state,
                retain.as_secs_f64(),
                batch,
            )
            .fetch_one(&mut *conn)
            .await?;
            let deleted = u64::try_from(deleted).unwrap_or(0);
            total += deleted;
            if deleted < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
    }
    sqlx::query!(
        "DELETE FROM queue_finished_minutes WHERE minute < now() - make_interval(secs => $1)",
        MINUTES_KEPT.as_secs_f64()
    )
    .execute(&mut *conn)
    .await?;
    Ok(total)
}

/// One maintenance pass, if this process wins the election: rescue, then prune (when `retain`
/// gives the retention of `done` and `failed` jobs; `None` leaves pruning to another pruner).
/// Returns `None` when another worker holds the maintenance lock.
///
/// The lock is a transaction-level advisory lock taken with `pg_try_advisory_xact_lock` on a
/// connection held for the pass, so it can never outlive a crashed worker, nor (through
/// [`MAINTENANCE_IDLE_TIMEOUT`]) a worker whose node vanished mid-pass.
///
/// The election is `maintenance_lock_try`, which bounds this transaction's idle time (`SET LOCAL`,
/// `$2`), then tries the transaction-level maintenance lock `$1` without waiting.
///
/// # Errors
///
/// [`QueueError::Database`] if a statement fails.
pub async fn run_once(
    pool: &PgPool,
    rescue_after: Duration,
    policy: &RetryPolicy,
    retain: Option<(Duration, Duration)>,
) -> Result<Option<(u64, u64)>, QueueError> {
    let mut tx = pool.begin().await?;
    let elected = sqlx::query!(
        r#"SELECT set_config('idle_in_transaction_session_timeout', $2, true), pg_try_advisory_xact_lock($1) AS "elected!""#,
        MAINTENANCE_LOCK_KEY,
        format!("{}ms", MAINTENANCE_IDLE_TIMEOUT.as_millis()),
    )
    .fetch_one(&mut *tx)
    .await?
    .elected;
    if !elected {
        return Ok(None);
    }
    // The statements run inside the lock's transaction, on its one connection: a worker's engine
    // has a single connection (the footprint rule of docs/queue.md), and a second one just for
    // maintenance would cost every replica a connection. The price is that the pass's row locks
    // (a rescue, at most 20 prune batches of 1,000) are held until it commits. The prune runs in a
    // savepoint: a failed prune must not take the rescue, the part that matters, down with it.
    let rescued = rescue_lost(&mut *tx, rescue_after, policy).await?;
    let Some((retain_done, retain_failed)) = retain else {
        tx.commit().await?;
        return Ok(Some((rescued, 0)));
    };
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
    let pruned = match prune_finished(&mut savepoint, retain_done, retain_failed, 1000, 10).await {
        Ok(pruned) => {
            savepoint.commit().await?;
            pruned
        }
        Err(error) => {
            tracing::warn!(%error, rescued, "pruning failed; the rescue is kept");
            savepoint.rollback().await?;
            0
        }
    };
    tx.commit().await?;
    Ok(Some((rescued, pruned)))
}
