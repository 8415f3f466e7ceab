//! The job handlers: what a `check` and a `refresh` do, and where their results go.

pub mod check;
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
    /// Settings in force.
    pub settings: Settings,
}

/// Runs one job of either kind.
///
/// # Errors
///
/// [`JobError`] to retry, snooze or fail the job; a dead link is a result, not an error.
pub async fn run_link_job(job: LinkJob, lease: JobLease, state: Data<Arc<AppState>>) -> Result<(), JobError> {
    match job {
        LinkJob::Check(check) => check::check_link(&state, &check, &lease).await,
        LinkJob::Refresh(refresh) => refresh::refresh_link(&state, &refresh, &lease).await,
    }
}

/// A database failure during write-back: retried (the write-back is idempotent per job).
fn db_error(context: &str, error: sqlx::Error) -> JobError {
    JobError::Retry(format!("{context}: {}", linkpulse_shared::queue::backend::error_chain(&error)))
}
