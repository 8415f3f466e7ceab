//! `check`: is the link reachable? HEAD, GET fallback, verdict, write-back.

use url::Url;

use linkpulse_queue::{JobError, JobLease, ReportSlot};
use linkpulse_shared::check::{Verdict, check_url};
use linkpulse_shared::db::links::CheckRecord;
use linkpulse_shared::link_jobs::CheckLink;

use super::{AppState, gates, report_verdict};

/// Checks one link. Transient failures are retried through the queue's persisted backoff; only
/// when the last attempt also fails does the check count as one failure — and then the job ends
/// `failed` (class `transient`), like a rate-limited check whose attempts ran out (class
/// `blocked`, never counted): `failed` is what "requeue failed jobs" and the failure alerts are
/// for. A check that reached an answer (ok, dead, blocked by a challenge) ends `done`.
///
/// Runs inside the attempt's `job.run` span (no span of its own: [`super::run_link_job`] already
/// carries the job's fields) and records the `verdict` on it.
///
/// # Errors
///
/// [`JobError::Retry`] for a transient failure with attempts left or a failed write-back;
/// [`JobError::Fail`] for a stored URL that no longer parses, and after the result of a last
/// attempt that found no answer (transient, or still rate-limited) has been written back.
pub async fn check_link(
    state: &AppState,
    job: &CheckLink,
    lease: &JobLease,
    report: &ReportSlot,
) -> Result<(), JobError> {
    let url = Url::parse(&job.url).map_err(|e| JobError::Fail(format!("stored URL {:?} is invalid: {e}", job.url)))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    gates::respect_cooldown(state, &host).await?;
    // The check's wall time, kept in the link's verdict history (it includes the wait for the
    // host's slot between HEAD and GET, which a slow answer's retry-by-GET also costs a user).
    let started = std::time::Instant::now();
    let result = check_url(&state.fetcher, &state.pacer, &state.settings.rules, &url).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::Span::current().record("verdict", result.verdict.as_str());
    report_verdict(report, &result);
    let limited = gates::is_rate_limited(&result);
    if let Some(retry) = gates::rate_limited(state, &host, &result, lease).await? {
        return Err(retry);
    }
    if result.verdict == Verdict::Transient && !lease.is_last_attempt() {
        return Err(JobError::Retry(result.reason));
    }
    let record = CheckRecord {
        outcome: result.verdict.as_str(),
        status_code: result.status_code,
        error: (result.verdict != Verdict::Ok).then(|| result.reason.clone()),
        counts_as_failure: matches!(result.verdict, Verdict::Dead | Verdict::Transient),
        duration_ms: Some(duration_ms),
    };
    state
        .checks
        .record(job.link_id, lease.into(), record)
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    if result.verdict == Verdict::Transient || limited {
        // Attempts are spent without an answer: recorded above (counted once if transient), and
        // the job itself ends failed.
        return Err(JobError::Fail(result.reason));
    }
    Ok(())
}
