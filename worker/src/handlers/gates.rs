//! Politeness around a handler's fetches: respect a host's cool-down before fetching, and start
//! one when the host says 429 or sends `Retry-After`.

use std::time::Duration;

use linkpulse_queue::{JobError, JobLease};
use linkpulse_shared::check::CheckResult;
use linkpulse_shared::fetch::MAX_RETRY_AFTER;
use linkpulse_shared::politeness::{DEFAULT_COOLDOWN, spread};

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

/// Snoozes a repository link's refresh while the GitHub API is rate-limited for the whole pool,
/// before its page is fetched: without this, every refresh of a repository would fetch its page,
/// call the API, be refused and snooze in turn. The delay is spread ([`spread`]) so that the
/// snoozed jobs do not all wake at the reset and spend the new quota at once.
///
/// # Errors
///
/// [`JobError::Snooze`] while the API cools down; [`JobError::Retry`] if the lookup fails.
pub async fn respect_github_cooldown(state: &AppState) -> Result<(), JobError> {
    let key = state.github.cooldown_key();
    match state
        .cooldowns
        .remaining(&key)
        .await
        .map_err(|e| db_error("reading the GitHub API cool-down", e))?
    {
        Some((wait, reason)) => Err(JobError::Snooze {
            delay: spread(wait.max(Duration::from_millis(100))),
            reason: format!("GitHub API cooling down: {reason}"),
        }),
        None => Ok(()),
    }
}

/// The GitHub API said its rate limit is spent until `retry_after` from now: starts the
/// pool-wide cool-down and snoozes this job past it (spread).
///
/// # Errors
///
/// [`JobError::Retry`] if the cool-down cannot be written; otherwise the snooze to return.
pub async fn github_rate_limited(state: &AppState, retry_after: Duration) -> Result<JobError, JobError> {
    let key = state.github.cooldown_key();
    state
        .cooldowns
        .start(&key, retry_after, "GitHub API rate limit")
        .await
        .map_err(|e| db_error("writing the GitHub API cool-down", e))?;
    tracing::warn!(delay = ?retry_after, "GitHub API rate limit reached; repository refreshes wait");
    Ok(JobError::Snooze {
        delay: spread(retry_after),
        reason: "GitHub API rate limit".into(),
    })
}

/// A 429, or a 503 with `Retry-After`: the host asked us to come back later.
pub fn is_rate_limited(result: &CheckResult) -> bool {
    result.status_code == Some(429) || (result.status_code == Some(503) && result.retry_after.is_some())
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
    if !is_rate_limited(result) {
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
