//! `deliver`: post a link's undelivered events to one webhook, in order.
//!
//! The job carries no events: it reads, when it runs, what the endpoint is owed for the link
//! (after its cursor), posts them one by one in `seq` order and moves the cursor after each 2xx.
//! The first failure ends the attempt: the queue retries the job with its persisted backoff (or
//! after the receiver's `Retry-After` for a 429/503), and the next attempt starts again at the
//! event that failed, so a later event never overtakes an earlier one. An event that arrives
//! while the job is queued (or backing off) is delivered by it; one that arrives while it runs is
//! re-checked before the job ends, and the dispatcher holds it back until the job is finished
//! anyway (see `linkpulse_shared::webhooks::dispatch`).

use std::time::Instant;

use linkpulse_queue::{JobError, JobLease, JobReport, ReportSlot};
use linkpulse_shared::link_jobs::DeliverEvents;
use linkpulse_shared::webhooks::send::{Verdict, send};
use linkpulse_shared::webhooks::{Delivery, WebhookError, store};

use super::AppState;

/// Events read per query.
const EVENTS_PER_READ: i64 = 50;
/// Events posted per attempt at most; past it (or past the time budget) the job snoozes and
/// continues where it stopped, without spending an attempt, so one link with a long backlog
/// never runs into the job timeout.
const EVENTS_PER_ATTEMPT: usize = 200;

/// Delivers what `job`'s endpoint is owed for `job`'s link.
///
/// # Errors
///
/// [`JobError::Retry`] / [`JobError::RetryAfter`] when the receiver did not take an event (or a
/// database step failed); [`JobError::Snooze`] when the attempt's budget ran out with events left;
/// [`JobError::Fail`] when the endpoint is disabled (now or by this failure) or the network guard
/// refuses its URL (retrying cannot help until an operator acts; the job is requeueable).
pub async fn deliver_events(
    state: &AppState,
    job: &DeliverEvents,
    lease: &JobLease,
    report: &ReportSlot,
) -> Result<(), JobError> {
    let pool = &state.pool;
    let Some(mut target) = current_target(state, job).await? else {
        report.set(removed(job));
        return Ok(());
    };
    // The budget: a new post starts only within one HTTP timeout of the start, so the attempt
    // (at most one more post and two short statements) ends well inside the job timeout.
    let budget = state.settings.fetch.timeout;
    let started = Instant::now();
    let mut delivered = 0_usize;
    let mut last_status = None;
    loop {
        let events = store::pending_events(pool, &target, job.link_id, EVENTS_PER_READ)
            .await
            .map_err(db_error)?;
        if events.is_empty() {
            break;
        }
        for event in events {
            if delivered >= EVENTS_PER_ATTEMPT || started.elapsed() >= budget {
                return Err(JobError::Snooze {
                    delay: std::time::Duration::from_millis(10),
                    reason: format!("{delivered} events delivered in this attempt; more are owed"),
                });
            }
            // Read again before every post: a rotation, a grace period that ended or a disable
            // made while this job runs applies to its next post, not to its next job.
            target = match current_target(state, job).await? {
                Some(fresh) => fresh,
                None => {
                    report.set(removed(job));
                    return Ok(());
                }
            };
            let delivery = Delivery::of_event(&event);
            let verdict = send(&state.fetcher, &target, &delivery)
                .await
                .map_err(|e| JobError::Fail(format!("cannot encode event {}: {e}", event.id)))?;
            last_status = verdict.status().map(i32::from);
            if let Some(reason) = verdict.failure() {
                let reason = format!("event {} (seq {}): {reason}", event.id, event.seq);
                report.set(JobReport {
                    result: Some("failed".into()),
                    status_code: last_status,
                    detail: Some(reason.clone()),
                });
                return Err(failed(state, &target, &verdict, reason, lease).await);
            }
            store::delivered(pool, target.id, event.link_id, event.seq)
                .await
                .map_err(db_error)?;
            tracing::debug!(
                webhook.id = target.id,
                event.id = event.id,
                event.seq = event.seq,
                "event delivered"
            );
            delivered += 1;
        }
    }
    report.set(JobReport {
        result: Some("delivered".into()),
        status_code: last_status,
        detail: Some(format!("{delivered} events")),
    });
    Ok(())
}

/// The endpoint as it is now; `None` if it was removed.
///
/// # Errors
///
/// [`JobError::Fail`] if it is disabled; [`JobError::Retry`] if it cannot be read.
async fn current_target(state: &AppState, job: &DeliverEvents) -> Result<Option<store::Target>, JobError> {
    let target = store::target(&state.pool, job.webhook_id).await.map_err(db_error)?;
    if let Some(target) = &target
        && !target.enabled
    {
        let reason = target.disabled_reason.as_deref().unwrap_or("disabled by an operator");
        return Err(JobError::Fail(format!("webhook {} is disabled: {reason}", target.id)));
    }
    Ok(target)
}

/// A job whose endpoint was removed ends `done` without posting: nobody wants its events.
fn removed(job: &DeliverEvents) -> JobReport {
    JobReport {
        result: Some("skipped".into()),
        status_code: None,
        detail: Some(format!("webhook {} was removed", job.webhook_id)),
    }
}

/// Records a failed delivery on the endpoint, applies the disable rule to it, and says what the
/// job does next.
async fn failed(
    state: &AppState,
    target: &store::Target,
    verdict: &Verdict,
    reason: String,
    lease: &JobLease,
) -> JobError {
    if let Err(error) = store::failed(&state.pool, target.id, &reason).await {
        return db_error(error);
    }
    match store::disable_failing(&state.pool, state.settings.webhook_disable_after, Some(target.id)).await {
        Ok(disabled) if !disabled.is_empty() => {
            return JobError::Fail(format!("webhook {} disabled: {reason}", target.id));
        }
        Ok(_) => {}
        Err(error) => return db_error(error),
    }
    match verdict {
        Verdict::Refused(_) => JobError::Fail(reason),
        Verdict::Rejected {
            retry_after: Some(delay),
            ..
        } if !lease.is_last_attempt() => JobError::RetryAfter {
            delay: (*delay).max(std::time::Duration::from_secs(1)),
            reason,
        },
        _ => JobError::Retry(reason),
    }
}

/// A database step failed: retried (a delivery already made is re-sent at worst, with the same
/// idempotency key).
fn db_error(error: WebhookError) -> JobError {
    JobError::Retry(linkpulse_util::errors::error_chain(&error))
}
