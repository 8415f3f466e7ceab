//! The job handlers: what a `check`, a `refresh` and a `deliver` do, and where their results go.

pub mod check_link;
pub mod deliver;
pub mod gates;
pub mod refresh_link;

use std::sync::Arc;

use apalis::prelude::Data;
use sqlx::PgPool;
use tracing::Instrument;

use linkpulse_queue::{JobError, JobLease, JobReport, ReportSlot};
use linkpulse_shared::check::{CheckResult, Verdict};
use linkpulse_shared::config::Settings;
use linkpulse_shared::fetch::Fetcher;
use linkpulse_shared::github::GithubClient;
use linkpulse_shared::link_jobs::LinkJob;
use linkpulse_shared::telemetry;

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
    /// Batched write-back of check results.
    pub checks: linkpulse_shared::db::check_writer::CheckWriter,
    /// The pool's host cool-downs, as this worker last read them.
    pub cooldowns: linkpulse_shared::politeness::Cooldowns,
    /// Settings in force.
    pub settings: Settings,
}

/// Runs one job of any kind.
///
/// Each attempt is one `job.run` span, a child of the enqueuer's span (the trace context stored
/// with the job), so Jaeger shows the producer's cycle, the queue wait and every attempt in one
/// trace.
///
/// # Errors
///
/// [`JobError`] to retry, snooze or fail the job; a dead link is a result, not an error.
pub async fn run_link_job(
    job: LinkJob,
    lease: JobLease,
    report: ReportSlot,
    state: Data<Arc<AppState>>,
) -> Result<(), JobError> {
    let state: Arc<AppState> = (*state).clone();
    let span = job_span(&job, &lease);
    let last_attempt = lease.is_last_attempt();
    // Each job on its own task: apalis polls every in-flight handler from the worker's single task,
    // so HTML parsing of one page would otherwise stall all the others. (apalis' `parallelize`
    // layer does the same but its generic executor type defeats `Send` inference when the worker
    // itself is spawned.) A panic surfaces as a `JoinError` and fails the attempt.
    let task = AbortOnDrop(tokio::spawn(
        async move {
            match job {
                LinkJob::Check(check) => check_link::check_link(&state, &check, &lease, &report).await,
                LinkJob::Refresh(refresh) => refresh_link::refresh_link(&state, &refresh, &lease, &report).await,
                LinkJob::Deliver(deliver) => deliver::deliver_events(&state, &deliver, &lease, &report).await,
            }
        }
        .instrument(span.clone()),
    ));
    let result = match (&mut { task }.0).await {
        Ok(result) => result,
        Err(join) => Err(JobError::Retry(format!("handler panicked: {join}"))),
    };
    record_outcome(&span, &result, last_attempt);
    result
}

/// The `job.run` span of one attempt, parented on the trace context stored with the job. The
/// queue wait (due → started) is an attribute and, drawn as its own `queue.wait` span, the gap
/// between the enqueue and the attempt.
fn job_span(job: &LinkJob, lease: &JobLease) -> tracing::Span {
    let host = url::Url::parse(job.url())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let started = chrono::Utc::now();
    let waited_ms = (started - lease.run_at).num_milliseconds().max(0);
    // `parent: None`: whatever span the worker's own task is in, an attempt belongs to the job's
    // trace, not to the worker's.
    let span = tracing::info_span!(
        parent: None,
        "job.run",
        otel.kind = "consumer",
        job.id = lease.job_id,
        job.kind = %lease.kind,
        job.attempt = lease.attempt,
        job.max_attempts = lease.max_attempts,
        link.id = job.link_id(),
        url.host = %host,
        queue.wait_ms = waited_ms,
        verdict = tracing::field::Empty,
        job.outcome = tracing::field::Empty,
    );
    if let Some(context) = &lease.trace_context
        && telemetry::set_parent(&span, context)
    {
        telemetry::record_queue_wait(
            context,
            lease.run_at.into(),
            started.into(),
            vec![("job.id", lease.job_id), ("job.attempt", i64::from(lease.attempt))],
        );
    }
    span
}

/// `job.outcome` (`done`, `retry`, `snoozed`, `failed`) and, for a retry or a failure, an error
/// status with the reason. A snooze is not an error: the host or API asked us to wait. A retry
/// asked for on the last attempt is the job's failure.
fn record_outcome(span: &tracing::Span, result: &Result<(), JobError>, last_attempt: bool) {
    let outcome = match result {
        Ok(()) => "done",
        Err(JobError::Snooze { .. }) => "snoozed",
        Err(JobError::Fail(_)) => "failed",
        Err(_) if last_attempt => "failed",
        Err(_) => "retry",
    };
    span.record("job.outcome", outcome);
    if let Err(error) = result
        && !matches!(error, JobError::Snooze { .. })
    {
        telemetry::set_error(span, &error.to_string());
    }
}

/// Leaves a fetch's verdict and status code in the attempt's audit trail.
fn report_verdict(slot: &ReportSlot, result: &CheckResult) {
    slot.set(JobReport {
        result: Some(result.verdict.as_str().to_owned()),
        status_code: result.status_code.map(i32::from),
        detail: (result.verdict != Verdict::Ok).then(|| result.reason.clone()),
    });
}

/// A database failure during write-back: retried (the write-back is idempotent per job).
fn db_error(context: &str, error: sqlx::Error) -> JobError {
    JobError::Retry(format!("{context}: {}", linkpulse_util::errors::error_chain(&error)))
}

/// Aborts the job's task when the handler future is dropped (the timeout layer gave up on it, or
/// the worker was stopped after its grace period), so no orphan keeps running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
