//! What operators do to the flow of jobs: pause and resume a kind, cancel queued jobs.
//!
//! A pause is a row of `queue_paused_kinds` (see its migration): the claim passes over the kind
//! while the row exists, so queued jobs wait and running ones finish. A cancel is the one
//! transition out of `queued` that ends a job: `failed`, with the result class
//! [`CANCELLED_CLASS`] and the operator's reason as its last error.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use linkpulse_util::text::storable;

use super::{NOTIFY_CHANNEL, QueueError};

/// `result_class` of a cancelled job: what `queue list` and the dashboard show, and what tells it
/// from a job that failed by itself.
pub const CANCELLED_CLASS: &str = "cancelled";

/// One paused kind, as `queue stats` and `GET /api/queue/paused` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PausedKind {
    /// The kind no worker claims.
    pub kind: String,
    /// Since when.
    pub paused_at: DateTime<Utc>,
    /// Who paused it (`cli:<user>`, `api`).
    pub paused_by: String,
    /// Why, if they said.
    pub reason: Option<String>,
}

/// Pauses `kind`: from the next claim on (at most one poll interval away for a busy worker, at
/// once for the others' next claim), no worker leases its jobs. Jobs already running finish;
/// queued ones keep their place. Returns whether the kind was running before: pausing a paused
/// kind changes nothing, and the first pause's time, author and reason stay.
///
/// The queue does not know which kinds exist (any string names one); callers validate them.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails (an empty kind breaks the table's CHECK).
pub async fn pause<'e>(
    executor: impl PgExecutor<'e>,
    kind: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<bool, QueueError> {
    let inserted = sqlx::query_scalar!(
        r#"
INSERT INTO queue_paused_kinds (kind, paused_by, reason)
VALUES ($1, $2, $3)
ON CONFLICT (kind) DO NOTHING
RETURNING 1 AS "one!"
"#,
        kind,
        storable(by),
        reason.map(storable),
    )
    .fetch_optional(executor)
    .await?;
    Ok(inserted.is_some())
}

/// Resumes `kind`; returns whether it was paused.
///
/// The statement also sends the queue's `NOTIFY` (delivered at commit) when it removed a pause:
/// an idle worker sleeps until a notification or its poll, and without one it would leave the
/// waiting backlog alone for up to a poll interval.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails.
pub async fn resume<'e>(executor: impl PgExecutor<'e>, kind: &str) -> Result<bool, QueueError> {
    let resumed = sqlx::query_scalar!(
        r#"
WITH deleted AS (
    DELETE FROM queue_paused_kinds WHERE kind = $1 RETURNING kind
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM deleted) THEN pg_notify($2, '') IS NOT NULL ELSE false END AS "resumed!"
"#,
        kind,
        NOTIFY_CHANNEL,
    )
    .fetch_one(executor)
    .await?;
    Ok(resumed)
}

/// The paused kinds, by name.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn paused<'e>(executor: impl PgExecutor<'e>) -> Result<Vec<PausedKind>, QueueError> {
    let rows = sqlx::query_as!(
        PausedKind,
        "SELECT kind, paused_at, paused_by, reason FROM queue_paused_kinds ORDER BY kind"
    )
    .fetch_all(executor)
    .await?;
    Ok(rows)
}

/// Which queued jobs [`cancel`] discards: one job, or every queued job of a kind and/or a dedupe
/// key. All given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelSelection {
    /// Only the job with this id.
    pub id: Option<i64>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs with this dedupe key (the application's `link:<id>`).
    pub dedupe_key: Option<String>,
}

impl CancelSelection {
    /// Whether no filter is given, which would mean every queued job of every kind.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.kind.is_none() && self.dedupe_key.is_none()
    }
}

/// Cancels the `queued` jobs of `selection`: each becomes `failed` now, with the result class
/// [`CANCELLED_CLASS`] and `reason` (default "cancelled by `by`") as its latest error, appended to
/// `errors` as `{"attempt", "at", "kind": "cancel", "error", "by"}`. Running, done and failed jobs
/// are left alone. Returns how many jobs were cancelled.
///
/// A cancelled job no longer holds its `(kind, dedupe_key)` (the dedupe index covers unfinished
/// jobs only), so the next cycle may enqueue its link again; a failed job can also be requeued.
///
/// One statement, `job_cancel_queued`, which also counts the cancelled jobs as failed. It locks the matching queued rows in id order (two cancels
/// over overlapping jobs wait on each other in one order, never in a cycle), and re-checks each
/// row's state after any wait: a job a claim leased meanwhile is running and stays so. Claims skip
/// the rows it holds (`SKIP LOCKED`) and no statement waits on a cancel while holding something
/// the cancel needs, so it cannot deadlock. It touches no group slot (a queued job has none).
///
/// # Errors
///
/// [`QueueError::EmptySelection`] when `selection` names no filter at all (cancelling the whole
/// queue is never what an operator meant); [`QueueError::Database`] if the statement fails.
pub async fn cancel<'e>(
    executor: impl PgExecutor<'e>,
    selection: &CancelSelection,
    reason: Option<&str>,
    by: &str,
) -> Result<u64, QueueError> {
    if selection.is_empty() {
        return Err(QueueError::EmptySelection);
    }
    let by = storable(by);
    let reason = match reason {
        Some(reason) => storable(reason),
        None => format!("cancelled by {by}"),
    };
    let cancelled = sqlx::query_scalar!(
        r#"
WITH picked AS (
    SELECT id FROM queue_jobs
    WHERE state = 'queued'
      AND ($1::int8 IS NULL OR id = $1)
      AND ($2::text IS NULL OR kind = $2)
      AND ($3::text IS NULL OR dedupe_key = $3)
    ORDER BY id
    FOR UPDATE
),
cancelled AS (
UPDATE queue_jobs j
SET state = 'failed',
    finished_at = now(),
    result_class = $4,
    result_detail = $5,
    status_code = NULL,
    duration_ms = NULL,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempts, 'at', now(), 'kind', 'cancel', 'error', $5::text, 'by', $6::text))
WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
  AND j.state = 'queued'
RETURNING j.kind
),
counted AS (
    SELECT queue_count_finished(array_agg(kind), array_agg('failed'::text), array_agg(n), NULL, NULL, now())
    FROM (SELECT kind, count(*) AS n FROM cancelled GROUP BY kind) f
)
SELECT (SELECT count(*) FROM cancelled) AS "cancelled!" FROM counted
"#,
        selection.id,
        selection.kind.as_deref(),
        selection.dedupe_key.as_deref(),
        CANCELLED_CLASS,
        reason,
        by,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(cancelled).unwrap_or(0))
}
