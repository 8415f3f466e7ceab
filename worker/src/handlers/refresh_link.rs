//! `refresh`: re-read a link's metadata (and GitHub facts for repository links), fill-only.
//!
//! What the answers mean is [`linkpulse_shared::refresh`]'s; this handler wires it to the queue:
//! the host's and the API's cool-downs, the job's report, the write-back, and [`JobError`].

use url::Url;

use linkpulse_queue::{JobError, JobLease, JobReport, ReportSlot};
use linkpulse_shared::check::Verdict;
use linkpulse_shared::db::links::{self, CacheState, RefreshRecord};
use linkpulse_shared::link_jobs::RefreshLink;
use linkpulse_shared::refresh::{self, PageOutcome, RepoOutcome};

use super::{AppState, db_error, gates, report_verdict};

/// Refreshes one link's metadata.
///
/// Runs inside the attempt's `job.run` span; its children are the page's `http.fetch`, the
/// `github.api` lookup and the `db.write_back`.
///
/// # Errors
///
/// [`JobError::Retry`] for transient failures with attempts left; [`JobError::Snooze`] when the
/// GitHub API rate-limits us (not the link's fault, no attempt spent).
pub async fn refresh_link(
    state: &AppState,
    job: &RefreshLink,
    lease: &JobLease,
    report: &ReportSlot,
) -> Result<(), JobError> {
    let url = Url::parse(&job.url).map_err(|e| JobError::Fail(format!("stored URL {:?} is invalid: {e}", job.url)))?;
    let Some(cache) = links::cache_state(&state.pool, job.link_id)
        .await
        .map_err(|e| db_error("reading the link", e))?
    else {
        tracing::info!("link was deleted; nothing to refresh");
        return Ok(());
    };
    if refresh::is_repository(&url, &cache) {
        // Before the page: a rate-limited API would refuse this job's lookup anyway.
        gates::respect_github_cooldown(state).await?;
    }
    let (mut record, page_unanswered) = page_metadata(state, &url, &cache, lease, report).await?;
    let api_unanswered = github_metadata(state, &url, &cache, lease, &mut record).await?;
    links::record_refresh(&state.pool, job.link_id, lease.into(), &record)
        .await
        .map_err(|e| db_error("writing the refresh result", e))?;
    // The last attempt found no answer (a transient failure or a rate limit to the end): what
    // could be kept is written, and the job ends failed so it can be seen and requeued.
    match page_unanswered.or(api_unanswered) {
        Some(reason) => Err(JobError::Fail(reason)),
        None => Ok(()),
    }
}

/// The page's metadata, and — when this last attempt got no answer from the page (transient, or
/// still rate-limited) — why.
async fn page_metadata(
    state: &AppState,
    url: &Url,
    cache: &CacheState,
    lease: &JobLease,
    report: &ReportSlot,
) -> Result<(RefreshRecord, Option<String>), JobError> {
    let host = url.host_str().unwrap_or_default();
    gates::respect_cooldown(state, host).await?;
    let page = refresh::fetch_page(&state.fetcher, &state.pacer, url, cache).await;
    let verdict = &page.verdict;
    report_verdict(report, verdict);
    let unanswered = (verdict.verdict == Verdict::Transient || gates::is_rate_limited(verdict))
        .then(|| format!("refresh: {}", verdict.reason));
    if let Some(retry) = gates::rate_limited(state, host, verdict, lease).await? {
        return Err(retry);
    }
    match page.read() {
        PageOutcome::NotModified => {
            report.set(JobReport {
                result: Some("not_modified".into()),
                status_code: Some(304),
                detail: None,
            });
            Ok((RefreshRecord::default(), None))
        }
        PageOutcome::NoPage { transient: true, .. } if !lease.is_last_attempt() => {
            Err(JobError::Retry(page.verdict.reason))
        }
        PageOutcome::NoPage { record, .. } => Ok((record, unanswered)),
        PageOutcome::Challenge { record, status } => {
            report.set(JobReport {
                result: Some("blocked".into()),
                status_code: Some(i32::from(status)),
                detail: Some("bot challenge page".into()),
            });
            Ok((record, None))
        }
        PageOutcome::Read(record) => Ok((record, None)),
    }
}

/// GitHub facts of a repository link into `record`; returns why, when this last attempt got no
/// answer from the API (a transient failure).
async fn github_metadata(
    state: &AppState,
    url: &Url,
    cache: &CacheState,
    lease: &JobLease,
    record: &mut RefreshRecord,
) -> Result<Option<String>, JobError> {
    let Some(outcome) = refresh::lookup_repo(&state.github, url, cache).await else {
        return Ok(None);
    };
    let unanswered = match outcome {
        RepoOutcome::RateLimited { retry_after } => {
            return Err(gates::github_rate_limited(state, retry_after).await?);
        }
        RepoOutcome::Transient(reason) if !lease.is_last_attempt() => return Err(JobError::Retry(reason)),
        RepoOutcome::Transient(ref reason) => Some(reason.clone()),
        _ => None,
    };
    outcome.record_into(record);
    Ok(unanswered)
}
