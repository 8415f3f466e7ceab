//! `refresh`: re-read a link's metadata (and GitHub facts for repository links), fill-only.

use reqwest::header::{
    ACCEPT, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{Method, StatusCode};
use url::Url;

use linkpulse_shared::check::{Verdict, classify};
use linkpulse_shared::db::links::{self, CacheState, GithubRecord, RefreshRecord};
use linkpulse_shared::fetch::FetchRequest;
use linkpulse_shared::github::{GithubError, RepoLookup, RepoRef, parse_repo_url};
use linkpulse_shared::jobs::RefreshLink;
use linkpulse_shared::metadata::{self, MAX_HEAD_BYTES};
use linkpulse_shared::queue::{JobError, JobLease, JobReport, ReportSlot};

use super::{AppState, db_error, polite, report_verdict};

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
    let is_repo = cache.github_owner.is_some() || parse_repo_url(&url).is_some();
    if is_repo {
        // Before the page: a rate-limited API would refuse this job's lookup anyway.
        polite::respect_github_cooldown(state).await?;
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
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"),
    );
    if let Some(etag) = cache.http_etag.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(IF_NONE_MATCH, etag);
    }
    if let Some(modified) = cache
        .http_last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(IF_MODIFIED_SINCE, modified);
    }
    let request = FetchRequest {
        method: Method::GET,
        url: url.clone(),
        headers,
        max_body: MAX_HEAD_BYTES,
        stop_at: Some(metadata::head_stop),
    };
    let host = url.host_str().unwrap_or_default();
    polite::respect_cooldown(state, host).await?;
    state.pacer.wait(host).await;
    let fetched = state.fetcher.fetch(request).await;
    let verdict = classify(&fetched);
    report_verdict(report, &verdict);
    let unanswered = (verdict.verdict == Verdict::Transient || polite::is_rate_limited(&verdict))
        .then(|| format!("refresh: {}", verdict.reason));
    if let Some(retry) = polite::rate_limited(state, host, &verdict, lease).await? {
        return Err(retry);
    }
    let response = match fetched {
        Ok(response) if response.status.is_success() => response,
        Ok(response) if response.status == StatusCode::NOT_MODIFIED => {
            report.set(JobReport {
                result: Some("not_modified".into()),
                status_code: Some(304),
                detail: None,
            });
            return Ok((RefreshRecord::default(), None));
        }
        _ if verdict.verdict == Verdict::Transient && !lease.is_last_attempt() => {
            return Err(JobError::Retry(verdict.reason));
        }
        _ => {
            let record = RefreshRecord {
                error: Some(format!("refresh: {}", verdict.reason)),
                ..RefreshRecord::default()
            };
            return Ok((record, unanswered));
        }
    };
    let header = |name| {
        response
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let html = metadata::decode_html(&response.body, header(CONTENT_TYPE).as_deref());
    let mut record = RefreshRecord {
        http_etag: header(ETAG),
        http_last_modified: header(LAST_MODIFIED),
        ..RefreshRecord::default()
    };
    if verdict.verdict == Verdict::Blocked || metadata::is_challenge_page(&html) {
        // A challenge page's title ("Just a moment...") must never replace the real one.
        report.set(JobReport {
            result: Some("blocked".into()),
            status_code: Some(i32::from(response.status.as_u16())),
            detail: Some("bot challenge page".into()),
        });
        record.error = Some("refresh: bot challenge page, metadata kept".into());
        return Ok((record, None));
    }
    let meta = metadata::extract(&html, &response.url);
    record.title = meta.title;
    record.description = meta.description;
    record.favicon_url = meta.favicon_url;
    record.image_url = meta.image_url;
    record.site_name = meta.site_name;
    Ok((record, None))
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
    // A renamed repository is asked for under the name stored at the last refresh.
    let repo = match (&cache.github_owner, &cache.github_repo) {
        (Some(owner), Some(repo)) => RepoRef {
            owner: owner.clone(),
            repo: repo.clone(),
        },
        _ => match parse_repo_url(url) {
            Some(repo) => repo,
            None => return Ok(None),
        },
    };
    match state.github.repo(&repo, cache.github_etag.as_deref()).await {
        Ok(RepoLookup::Found { info, etag, renamed_to }) => {
            let current = renamed_to.unwrap_or(repo);
            record.github = Some(GithubRecord {
                owner: current.owner,
                repo: current.repo,
                stars: info.stars,
                description: info.description,
                archived: info.archived,
                pushed_at: info.pushed_at,
                etag,
            });
        }
        Ok(RepoLookup::NotModified) => {}
        Ok(RepoLookup::NotFound) => record.repo_missing = true,
        Ok(RepoLookup::RateLimited { retry_after }) => {
            return Err(polite::github_rate_limited(state, retry_after).await?);
        }
        Err(GithubError::Transient(reason)) if !lease.is_last_attempt() => {
            return Err(JobError::Retry(format!("GitHub API: {reason}")));
        }
        Err(GithubError::Transient(reason)) => {
            let reason = format!("GitHub API: {reason}");
            record.error = Some(reason.clone());
            return Ok(Some(reason));
        }
        Err(error) => record.error = Some(format!("GitHub API: {error}")),
    }
    Ok(None)
}
