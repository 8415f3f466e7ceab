//! What an operator's console shows of one job and of the pool: a job with every attempt's error
//! and its lease, and the workers with the jobs each holds.
//!
//! Both read by primary key or small tables (`queue_workers`, the running partial index), so they
//! cost the same whatever the retained history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::QueueError;

/// One failed, retried, snoozed or lost attempt, as the queue recorded it in `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AttemptError {
    /// The attempt's number (1 for the first).
    pub attempt: i64,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub error: String,
    /// What the queue did about it: `retry`, `fail`, `snooze` or `lost`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// One job with its whole recorded history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    /// What listings show of it.
    #[serde(flatten)]
    pub summary: crate::inspect::JobSummary,
    /// Lower runs first.
    pub priority: i16,
    /// Every attempt that did not end well, oldest first.
    pub errors: Vec<AttemptError>,
    /// The lease while it runs: the worker holding it.
    pub lease: Option<Lease>,
}

/// Who holds a running job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    /// The worker's id (`queue_workers.id`).
    pub owner: Uuid,
    /// Its name, host name and last heartbeat, while it is registered.
    pub worker: Option<WorkerSummary>,
}

/// One registered worker process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerSummary {
    /// Its id.
    pub id: Uuid,
    /// Its name (unique per process start).
    pub name: String,
    /// The machine or pod it runs on.
    pub hostname: String,
    /// Its process id there.
    pub pid: i32,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat; a worker silent for the rescue threshold is lost.
    pub heartbeat_at: DateTime<Utc>,
    /// Whether it is shutting down (claims nothing more).
    pub draining: bool,
    /// Jobs it holds (running under its lease).
    pub jobs_held: i64,
}

/// The job `id` with its errors and lease, or `None` when there is no such job (pruned or
/// never).
///
/// # Errors
///
/// [`QueueError::Database`] if a query fails.
pub async fn job(pool: &PgPool, id: i64) -> Result<Option<JobDetail>, QueueError> {
    let filter = crate::inspect::JobFilter {
        id: Some(id),
        ..crate::inspect::JobFilter::default()
    };
    let Some(summary) = crate::inspect::list(pool, &filter, 1).await?.into_iter().next() else {
        return Ok(None);
    };
    let row = sqlx::query!(
        r#"SELECT priority, errors, lease_owner FROM queue_jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // A malformed entry (written by hand) is shown as what it is rather than hiding the others.
    let errors = match row.errors {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_value(item.clone()).unwrap_or_else(|_| AttemptError {
                    attempt: i64::try_from(i + 1).unwrap_or(i64::MAX),
                    at: summary.created_at,
                    error: item.to_string(),
                    kind: None,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let lease = match row.lease_owner {
        Some(owner) => Some(Lease {
            owner,
            worker: workers(pool).await?.into_iter().find(|w| w.id == owner),
        }),
        None => None,
    };
    Ok(Some(JobDetail {
        summary,
        priority: row.priority,
        errors,
        lease,
    }))
}

/// Every registered worker, newest first, with the jobs each holds.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn workers(pool: &PgPool) -> Result<Vec<WorkerSummary>, QueueError> {
    Ok(sqlx::query_as!(
        WorkerSummary,
        r#"
SELECT w.id, w.name, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.draining,
       coalesce(h.n, 0) AS "jobs_held!"
FROM queue_workers w
LEFT JOIN (SELECT lease_owner, count(*) AS n FROM queue_jobs WHERE state = 'running' GROUP BY lease_owner) h
       ON h.lease_owner = w.id
ORDER BY w.started_at DESC, w.name
"#
    )
    .fetch_all(pool)
    .await?)
}

/// Jobs in the finished `state` matching `filter` (its kind, dedupe key, result class and group):
/// what a bulk requeue of that filter would consider, for its confirmation. Failed jobs are read
/// along their partial index.
///
/// # Errors
///
/// [`QueueError::NotFinished`] for `queued`/`running`; [`QueueError::Database`] if the query
/// fails.
pub async fn count_finished(
    pool: &PgPool,
    state: crate::JobState,
    filter: &crate::inspect::JobFilter,
) -> Result<i64, QueueError> {
    if !matches!(state, crate::JobState::Failed | crate::JobState::Done) {
        return Err(QueueError::NotFinished(state));
    }
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM queue_jobs
           WHERE state = $1
             AND ($2::text IS NULL OR kind = $2)
             AND ($3::text IS NULL OR dedupe_key = $3)
             AND ($4::text IS NULL OR result_class = $4)
             AND ($5::text IS NULL OR group_key = $5)"#,
        state.as_str(),
        filter.kind.as_deref(),
        filter.dedupe_key.as_deref(),
        filter.result_class.as_deref(),
        filter.group_key.as_deref(),
    )
    .fetch_one(pool)
    .await?)
}
