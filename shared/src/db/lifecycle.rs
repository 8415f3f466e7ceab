//! A link's life outside the schedules: added (with its first check and refresh at once),
//! checked or refreshed on demand ahead of the schedules' work, and removed with its queued jobs.
//!
//! The jobs go through the queue crate (`linkpulse_queue::insert_many`, `control::cancel`), in the
//! same transaction as the link rows they belong to, so a link is never saved without its first
//! jobs and never deleted with jobs left waiting for it. The statements on `links` are in
//! [`super::links`].

use sqlx::PgPool;

use linkpulse_queue::{CancelSelection, NewJob, QueueError, control};

use super::import::{ImportLink, save_batch};
use super::links::{self, Inserted, LinkRef, NewLink};
use crate::link_jobs::{CheckLink, dedupe_key};
use crate::rules::Rules;

/// Priority of the jobs an operator asks for (check-now, refresh-now) and of a new link's first
/// jobs: lower runs first and the schedules enqueue at 0, so these are claimed ahead of a
/// scheduled backlog (within the per-host limits) and a new link's title shows within seconds.
pub const PRIORITY_NOW: i16 = -10;

/// Why a lifecycle step failed; nothing of it was written then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// A statement on the links failed.
    #[error("links database error")]
    Database(#[from] sqlx::Error),
    /// The queue refused the jobs' insert or cancel.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The link's unfinished job kept finishing between the insert and the read of its id.
    #[error("{0}")]
    Contended(String),
}

/// The job of `kind` (`check` or `refresh`) for one link at [`PRIORITY_NOW`], with the
/// schedules' dedupe key (one unfinished job per link and kind, whoever enqueued it) and the
/// host as its concurrency group.
pub fn job_now(kind: &str, link_id: i64, url: &str, host: &str, max_attempts: i32) -> NewJob {
    // `CheckLink` and `RefreshLink` have the same fields: one payload shape for both kinds.
    let payload = serde_json::json!(CheckLink {
        link_id,
        url: url.to_owned(),
    });
    NewJob::new(kind, payload, max_attempts)
        .dedupe_key(dedupe_key(link_id))
        .group_key(host)
        .priority(PRIORITY_NOW)
        .trace_context(crate::telemetry::current_trace_context())
}

/// Saves `new` links (their URLs distinct) and enqueues a check and a refresh of each one that
/// was new in one set-based insert, all in one transaction ([`super::import::save_batch`], the
/// same write as `links import`). A link an exclude pattern of `rules` matches is saved `paused`
/// with the rule as its reason and gets no job. Returns the new rows; the other links were saved
/// already (and keep their jobs as they are).
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails; nothing is saved or enqueued then.
pub async fn add(
    pool: &PgPool,
    new: &[NewLink],
    rules: &Rules,
    max_attempts: i32,
) -> Result<Vec<Inserted>, LifecycleError> {
    let batch: Vec<ImportLink> = new
        .iter()
        .map(|link| ImportLink {
            excluded: rules.exclusion_reason(link.link.url.as_str()),
            link: link.clone(),
            title: None,
        })
        .collect();
    Ok(save_batch(pool, &batch, Some(max_attempts)).await?.inserted)
}

/// What an on-demand enqueue found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Enqueued {
    /// Whether a new job was enqueued (`false`: the link already had one queued or running,
    /// which is the answer).
    pub enqueued: bool,
    /// The new job, or the one already waiting or running.
    pub job_id: i64,
}

/// How often [`enqueue_now`] tries again when the unfinished job it collided with finished
/// before it could be read (then its own insert finds no conflict the next time).
const ENQUEUE_NOW_TRIES: usize = 3;

/// Enqueues a job of `kind` for link `link_id` now, ahead of scheduled work ([`PRIORITY_NOW`]),
/// deduplicated like every other job: when the link already has an unfinished job of that kind,
/// nothing is added and that job is the answer.
///
/// The insert and the read of the job's id share a transaction; the read sees the conflicting
/// job too, since the insert waits for its enqueuer to commit before it skips.
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails.
#[tracing::instrument(name = "job.enqueue", skip_all, fields(job.kind = kind, link.id = link_id))]
pub async fn enqueue_now(
    pool: &PgPool,
    kind: &str,
    link_id: i64,
    url: &str,
    host: &str,
    max_attempts: i32,
) -> Result<Enqueued, LifecycleError> {
    let key = dedupe_key(link_id);
    for _ in 0..ENQUEUE_NOW_TRIES {
        let mut tx = pool.begin().await?;
        let job = job_now(kind, link_id, url, host, max_attempts);
        let report = linkpulse_queue::insert_many(&mut *tx, std::slice::from_ref(&job)).await?;
        let found = sqlx::query_scalar!(
            "SELECT id FROM queue_jobs
             WHERE kind = $1 AND dedupe_key = $2 AND state IN ('queued', 'running')
             ORDER BY id DESC LIMIT 1",
            kind,
            key,
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(job_id) = found {
            return Ok(Enqueued {
                enqueued: report.inserted > 0,
                job_id,
            });
        }
    }
    Err(LifecycleError::Contended(format!(
        "no unfinished {kind} job of link {link_id} after {ENQUEUE_NOW_TRIES} tries"
    )))
}

/// A removed link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// Its id.
    pub id: i64,
    /// Its URL.
    pub url: String,
    /// Always `true` (the answer names what happened).
    pub removed: bool,
    /// Its queued jobs, cancelled with it (they end `failed` with class `cancelled`); a running
    /// one finishes and its write-back finds no row.
    pub cancelled_jobs: u64,
}

/// Deletes a link and cancels its queued jobs in one transaction (recorded as cancelled by
/// `actor`). Returns `None` if there is no such link.
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails; nothing is deleted then.
#[tracing::instrument(name = "links.remove", skip_all)]
pub async fn remove(pool: &PgPool, link: &LinkRef, actor: &str) -> Result<Option<Removed>, LifecycleError> {
    let mut tx = pool.begin().await?;
    let Some((id, url)) = links::delete(&mut *tx, link).await? else {
        return Ok(None);
    };
    let selection = CancelSelection {
        dedupe_key: Some(dedupe_key(id)),
        ..CancelSelection::default()
    };
    let reason = format!("link {id} removed by {actor}");
    let cancelled_jobs = control::cancel(&mut *tx, &selection, Some(&reason), actor).await?;
    tx.commit().await?;
    Ok(Some(Removed {
        id,
        url,
        removed: true,
        cancelled_jobs,
    }))
}
