//! Reading the API's answers: the repository object of a 200, the message of an error.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::ETAG;
use serde::Deserialize;

use super::rate_limit::{DEFAULT_RATE_LIMIT_WAIT, rate_limit_wait};
use super::repo_url::is_valid_name;
use super::{GithubError, RepoInfo, RepoLookup, RepoRef};
use crate::fetch::read_capped;

/// Most bytes of a response body we read. A repository object is a few kilobytes; anything near
/// this is not what we asked for.
pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest message we keep from an error body.
const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// The part of the API's repository object we use.
#[derive(Deserialize)]
struct ApiRepo {
    full_name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    stargazers_count: Option<i64>,
    #[serde(default)]
    archived: Option<bool>,
    /// Parsed leniently: a timestamp we cannot read is no reason to drop the rest.
    #[serde(default)]
    pushed_at: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

/// GitHub's error bodies: `{"message": "...", "documentation_url": "..."}`.
#[derive(Deserialize)]
struct ApiError {
    message: String,
}

/// A 200: the repository object.
pub(super) async fn found(response: reqwest::Response, asked: &RepoRef) -> Result<RepoLookup, GithubError> {
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(response)
        .await
        .map_err(|e| GithubError::Transient(format!("reading the GitHub API response: {e}")))?;
    if body.truncated {
        return Err(GithubError::unexpected(200, "response body larger than 1 MiB"));
    }
    let api: ApiRepo = serde_json::from_slice(&body.bytes)
        .map_err(|e| GithubError::unexpected(200, format!("malformed repository JSON: {e}")))?;
    let (owner, name) = api
        .full_name
        .split_once('/')
        .filter(|(owner, name)| is_valid_name(owner) && is_valid_name(name))
        .ok_or_else(|| GithubError::unexpected(200, format!("malformed full_name {:?}", api.full_name)))?;
    let renamed_to =
        (!owner.eq_ignore_ascii_case(&asked.owner) || !name.eq_ignore_ascii_case(&asked.repo)).then(|| RepoRef {
            owner: owner.to_owned(),
            repo: name.to_owned(),
        });
    if let Some(new) = &renamed_to {
        tracing::debug!(renamed_to = %new, "GitHub repository renamed or transferred");
    }
    let info = RepoInfo {
        // NUL bytes, control characters and megabytes of text stop here, as for page metadata.
        description: api
            .description
            .as_deref()
            .and_then(|d| crate::scrape::clean_text(d, crate::scrape::MAX_DESCRIPTION_CHARS)),
        stars: api
            .stargazers_count
            .map_or(0, |n| i32::try_from(n.max(0)).unwrap_or(i32::MAX)),
        archived: api.archived.unwrap_or(false),
        pushed_at: api
            .pushed_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
        html_url: api.html_url,
        full_name: api.full_name,
    };
    Ok(RepoLookup::Found { info, etag, renamed_to })
}

/// A 403 or 429: a rate limit if GitHub says so, otherwise a permanent refusal.
pub(super) async fn forbidden_or_limited(response: reqwest::Response) -> Result<RepoLookup, GithubError> {
    let status = response.status();
    if let Some(wait) = rate_limit_wait(response.headers(), SystemTime::now()) {
        tracing::warn!(retry_after_secs = wait.as_secs(), "GitHub API rate limit");
        return Ok(RepoLookup::RateLimited { retry_after: wait });
    }
    let message = error_message(response).await;
    if status == StatusCode::TOO_MANY_REQUESTS || message.to_ascii_lowercase().contains("secondary rate limit") {
        tracing::warn!(
            retry_after_secs = DEFAULT_RATE_LIMIT_WAIT.as_secs(),
            %message,
            "GitHub API secondary rate limit"
        );
        return Ok(RepoLookup::RateLimited {
            retry_after: DEFAULT_RATE_LIMIT_WAIT,
        });
    }
    Err(GithubError::unexpected(status.as_u16(), message))
}

/// A short message from an error response: GitHub's JSON `message`, or the start of the body.
pub(super) async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = match read_body(response).await {
        Ok(body) => body.bytes,
        Err(e) => return format!("(unreadable body: {e})"),
    };
    let text = match serde_json::from_slice::<ApiError>(&body) {
        Ok(err) => err.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
    };
    let mut message = crate::scrape::clean_text(&text, MAX_ERROR_MESSAGE_CHARS).unwrap_or_default();
    if text.chars().count() > MAX_ERROR_MESSAGE_CHARS {
        message.push('…');
    }
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("no message").to_owned();
    }
    message
}

struct Body {
    /// At most [`MAX_BODY_BYTES`].
    bytes: Vec<u8>,
    /// The body went past [`MAX_BODY_BYTES`]; `bytes` holds its start.
    truncated: bool,
}

/// Reads at most [`MAX_BODY_BYTES`] (after decompression) whatever Content-Length says, with the
/// fetcher's capped reader: one byte more is read to tell a body of exactly the cap from a
/// larger one.
async fn read_body(response: reqwest::Response) -> Result<Body, reqwest::Error> {
    let (mut bytes, _) = read_capped(response.bytes_stream(), MAX_BODY_BYTES + 1, None).await?;
    let truncated = bytes.len() > MAX_BODY_BYTES;
    bytes.truncate(MAX_BODY_BYTES);
    Ok(Body { bytes, truncated })
}
