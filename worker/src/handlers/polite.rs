//! Politeness around a handler's fetches: respect a host's cool-down before fetching, and start
//! one when the host says 429 or sends `Retry-After`.

use std::time::Duration;

use linkpulse_shared::check::{CheckResult, MAX_RETRY_AFTER};
use linkpulse_shared::politeness::DEFAULT_COOLDOWN;
use linkpulse_shared::queue::{JobError, JobLease};

use super::{AppState, db_error};

/// Snoozes the job (no attempt spent) while `host` is cooling down: the host asked every one of
/// its jobs to wait, not only the one that got the 429.
///
/// # Errors
///
/// [`JobError::Snooze`] while the host cools down; [`JobError::Retry`] if the lookup fails.
pub async fn respect_cooldown(state: &AppState, host: &str) -> Result<(), JobError> {
    match state
        .cooldowns
        .remaining(host)
        .await
        .map_err(|e| db_error("reading host cool-down", e))?
    {
        Some((wait, reason)) => Err(JobError::Snooze {
            delay: wait.max(Duration::from_millis(100)),
            reason: format!("host {host} cooling down: {reason}"),
        }),
        None => Ok(()),
    }
}

/// After a response: a 429, or a 503 with `Retry-After`, puts the host on cool-down and — if
/// attempts remain — asks for this job to be retried after the server's delay. Returns `None`
/// when the result should be recorded as it is.
///
/// # Errors
///
/// [`JobError::Retry`] if the cool-down cannot be written.
pub async fn rate_limited(
    state: &AppState,
    host: &str,
    result: &CheckResult,
    lease: &JobLease,
) -> Result<Option<JobError>, JobError> {
    let limited = result.status_code == Some(429) || (result.status_code == Some(503) && result.retry_after.is_some());
    if !limited {
        return Ok(None);
    }
    let delay = result
        .retry_after
        .unwrap_or(DEFAULT_COOLDOWN)
        .clamp(Duration::from_secs(1), MAX_RETRY_AFTER);
    state
        .cooldowns
        .start(host, delay, &result.reason)
        .await
        .map_err(|e| db_error("writing host cool-down", e))?;
    tracing::warn!(host, delay = ?delay, status = result.status_code, "host asked us to back off");
    if lease.is_last_attempt() {
        return Ok(None);
    }
    Ok(Some(JobError::RetryAfter {
        delay,
        reason: result.reason.clone(),
    }))
}
