//! Counters of finished jobs: what `queue stats` and the throughput chart read instead of
//! counting retained jobs.
//!
//! Counting `done` jobs grows with retention (0.84–0.94 s per stats call at 2,000,000 retained
//! jobs, on every dashboard view and `/metrics` scrape). So every statement of this crate that
//! finishes, requeues or prunes jobs also moves two small tables in the same statement, through
//! the SQL function `queue_count_finished` (migration `…12_create_queue_counts`):
//!
//! - `queue_counts`: finished jobs retained per kind and state, spread over four shards (the
//!   writer's backend pid modulo 4) so that workers acknowledging at once do not queue on one row.
//! - `queue_finished_minutes`: jobs finished per minute, with their summed durations, kept two
//!   days (the prune deletes older minutes).
//!
//! A write that bypasses this crate (SQL by hand, or the previous release's workers during a
//! rolling upgrade) leaves the totals off; [`recount`] corrects them from the job table, and the
//! prune schedule runs it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::QueueError;

/// One correction [`recount`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    /// Kind name.
    pub kind: String,
    /// `done` or `failed`.
    pub state: String,
    /// What was added to the counter (negative: it counted jobs that are gone).
    pub delta: i64,
}

/// Sets the finished-job totals to what the job table holds; returns the corrections (empty when
/// the counters were right).
///
/// The table and the counters are read in one `REPEATABLE READ` snapshot: every statement that
/// finishes a job moves the counters in the same transaction, so within one snapshot "jobs in the
/// table minus counted" is exactly the drift. The drift is then added, not assigned, so jobs
/// finished after the snapshot (counted by their own statements) stay counted. The count visits
/// every finished job: seconds at ten million, which is why it runs with the prune, not with each
/// stats read.
///
/// # Errors
///
/// [`QueueError::Database`] if a statement fails.
pub async fn recount(pool: &PgPool) -> Result<Vec<Correction>, QueueError> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let drift = sqlx::query_as!(
        Correction,
        r#"
WITH actual AS (
    SELECT kind, state, count(*) AS n FROM queue_jobs WHERE state IN ('done', 'failed') GROUP BY kind, state
),
counted AS (
    SELECT kind, state, sum(n)::int8 AS n FROM queue_counts GROUP BY kind, state
)
SELECT kind AS "kind!", state AS "state!", (coalesce(a.n, 0) - coalesce(c.n, 0))::int8 AS "delta!"
FROM actual a FULL JOIN counted c USING (kind, state)
WHERE coalesce(a.n, 0) <> coalesce(c.n, 0)
ORDER BY kind, state
"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if drift.is_empty() {
        return Ok(drift);
    }
    let kinds: Vec<&str> = drift.iter().map(|c| c.kind.as_str()).collect();
    let states: Vec<&str> = drift.iter().map(|c| c.state.as_str()).collect();
    let deltas: Vec<i64> = drift.iter().map(|c| c.delta).collect();
    sqlx::query_scalar!(
        "SELECT queue_count_finished($1::text[], $2::text[], $3::int8[], NULL, NULL, NULL)",
        &kinds as &[&str],
        &states as &[&str],
        &deltas,
    )
    .fetch_one(pool)
    .await?;
    for correction in &drift {
        tracing::info!(
            kind = %correction.kind,
            state = %correction.state,
            delta = correction.delta,
            "finished-job counter corrected from the job table"
        );
    }
    Ok(drift)
}

/// Finished jobs of one kind in one minute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Kind name.
    pub kind: String,
    /// Jobs that finished `done` in it.
    pub done: i64,
    /// Jobs that finished `failed` in it.
    pub failed: i64,
}

/// Jobs finished per minute and kind since `since` (minutes with none are absent), oldest first:
/// the throughput chart's data, from the counters, whatever the retention.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn finished_per_minute(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<MinuteCount>, QueueError> {
    Ok(sqlx::query_as!(
        MinuteCount,
        r#"
SELECT minute, kind,
       coalesce(sum(n) FILTER (WHERE state = 'done'), 0)::int8 AS "done!",
       coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS "failed!"
FROM queue_finished_minutes
WHERE minute >= date_trunc('minute', $1::timestamptz)
GROUP BY minute, kind
ORDER BY minute, kind
"#,
        since,
    )
    .fetch_all(pool)
    .await?)
}
