//! The job handlers: what a `check` and a `refresh` do, and where their results go.

pub mod check;
pub mod polite;
pub mod refresh;

use std::sync::Arc;

use apalis::prelude::Data;
use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::fetch::Fetcher;
use linkpulse_shared::github::GithubClient;
use linkpulse_shared::jobs::LinkJob;
use linkpulse_shared::queue::{JobError, JobLease};

/// What every handler needs; built once per worker process.
#[derive(Debug)]
pub struct AppState {
    /// Database pool.
    pub pool: PgPool,
    /// Guarded HTTP fetcher.
    pub fetcher: Fetcher,
    /// GitHub API client (shares the fetcher's HTTP client).
    pub github: GithubClient,
    /// Minimum gap between requests to one host from this process.
    pub pacer: linkpulse_shared::politeness::HostPacer,
    /// Settings in force.
    pub settings: Settings,
}

/// Runs one job of either kind.
///
/// # Errors
///
/// [`JobError`] to retry, snooze or fail the job; a dead link is a result, not an error.
pub async fn run_link_job(job: LinkJob, lease: JobLease, state: Data<Arc<AppState>>) -> Result<(), JobError> {
    let state: Arc<AppState> = (*state).clone();
    // Each job on its own task: apalis polls every in-flight handler from the worker's single task,
    // so HTML parsing of one page would otherwise stall all the others. (apalis' `parallelize`
    // layer does the same but its generic executor type defeats `Send` inference when the worker
    // itself is spawned.) A panic surfaces as a `JoinError` and fails the attempt.
    let task = AbortOnDrop(tokio::spawn(async move {
        match job {
            LinkJob::Check(check) => check::check_link(&state, &check, &lease).await,
            LinkJob::Refresh(refresh) => refresh::refresh_link(&state, &refresh, &lease).await,
        }
    }));
    match (&mut { task }.0).await {
        Ok(result) => result,
        Err(join) => Err(JobError::Retry(format!("handler panicked: {join}"))),
    }
}

/// A database failure during write-back: retried (the write-back is idempotent per job).
fn db_error(context: &str, error: sqlx::Error) -> JobError {
    JobError::Retry(format!(
        "{context}: {}",
        linkpulse_shared::queue::backend::error_chain(&error)
    ))
}

/// Aborts the job's task when the handler future is dropped (the timeout layer gave up on it, or
/// the worker was stopped after its grace period), so no orphan keeps running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
