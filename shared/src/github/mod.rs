//! GitHub repository metadata through the REST API.
//!
//! A saved link that points at a repository page (`https://github.com/{owner}/{repo}/...`) gets its
//! metadata from `GET /repos/{owner}/{repo}` rather than from scraping the HTML page: the API is
//! stable, cheap, and supports conditional requests, so refreshing an unchanged repository costs
//! nothing under GitHub's rate limit.
//!
//! The client stands on [`crate::fetch`]'s plumbing: its redirects are followed with
//! [`crate::fetch::Redirects`] (confined to the API's origin), its bodies read with
//! [`crate::fetch::read_capped`], and `Retry-After` parsed by [`crate::fetch::parse_retry_after`].
//! What is GitHub's own — which answers mean renamed, gone or rate limited — is here.
//!
//! # Layout
//!
//! - [`repo_url`]: [`parse_repo_url`] recognises repository page URLs and gives their [`RepoRef`].
//! - [`client`]: [`GithubClient::repo`] asks the API, follows the redirects of renamed or
//!   transferred repositories, and classifies the answer as a [`RepoLookup`] or a [`GithubError`].
//! - `response`: reading the repository object and error bodies.
//! - `rate_limit`: how long a primary or secondary rate limit asks us to wait.

pub mod client;
mod rate_limit;
pub mod repo_url;
mod response;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use client::GithubClient;
pub use repo_url::{RepoRef, parse_repo_url};

/// Repository metadata from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// `owner/repo` as GitHub spells it now.
    pub full_name: String,
    pub description: Option<String>,
    /// `stargazers_count`, saturated at `i32::MAX`.
    pub stars: i32,
    pub archived: bool,
    pub pushed_at: Option<DateTime<Utc>>,
    pub html_url: Option<String>,
}

/// What the API said about a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLookup {
    /// 200: fields and the response ETag. If the API's `full_name` differs from the asked
    /// owner/repo (a rename or transfer), `renamed_to` carries the new [`RepoRef`]. A difference in
    /// letter case only is not a rename (GitHub names are case-insensitive).
    Found {
        info: RepoInfo,
        etag: Option<String>,
        renamed_to: Option<RepoRef>,
    },
    /// 304 for our ETag: nothing changed (free under GitHub's rate limit).
    NotModified,
    /// 404, 410 or 451: the repository is gone, private, or blocked.
    NotFound,
    /// Primary or secondary rate limit: wait this long before asking again (at least 1 s, at
    /// most 1 h).
    RateLimited { retry_after: Duration },
}

/// A lookup that did not get an answer we can use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// Network error, timeout or 5xx: transient, the job retries.
    #[error("GitHub API unavailable: {0}")]
    Transient(String),
    /// Anything else unexpected (malformed JSON, other 4xx, a refused redirect): permanent for this
    /// attempt. `status` is 0 when the problem is not an HTTP answer.
    #[error("unexpected GitHub API answer (HTTP {status}): {message}")]
    Unexpected { status: u16, message: String },
}

impl GithubError {
    fn unexpected(status: u16, message: impl Into<String>) -> Self {
        Self::Unexpected {
            status,
            message: message.into(),
        }
    }
}
