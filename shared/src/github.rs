//! GitHub repository metadata through the REST API.
//!
//! A saved link that points at a repository page (`https://github.com/{owner}/{repo}/...`) gets its
//! metadata from `GET /repos/{owner}/{repo}` rather than from scraping the HTML page: the API is
//! stable, cheap, and supports conditional requests, so refreshing an unchanged repository costs
//! nothing under GitHub's rate limit.
//!
//! - [`parse_repo_url`] recognises repository page URLs and gives their [`RepoRef`].
//! - [`GithubClient::repo`] asks the API, follows the redirects of renamed or transferred
//!   repositories itself (the fetch client does not follow redirects), and classifies the answer
//!   as a [`RepoLookup`] or a [`GithubError`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, DATE, ETAG, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH, LOCATION, RETRY_AFTER,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// Most bytes of a response body we read. A repository object is a few kilobytes; anything near
/// this is not what we asked for.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most redirects followed for one lookup (a rename answers with one; a chain of three is already
/// suspicious).
const MAX_REDIRECTS: usize = 3;

/// Wait when GitHub says "secondary rate limit" (or answers 429) without telling us how long:
/// their documentation asks for at least one minute.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Bounds of a rate-limit wait: never spin, never park a link for longer than an hour.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60 * 60);

/// Longest message we keep from an error body.
const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// The REST API version we were written against.
const API_VERSION: &str = "2022-11-28";
const API_VERSION_HEADER: HeaderName = HeaderName::from_static("x-github-api-version");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const GITHUB_JSON: &str = "application/vnd.github+json";

/// First path segments of github.com that are site pages, not users or organisations.
const RESERVED_OWNERS: &[&str] = &[
    "about",
    "account",
    "apps",
    "codespaces",
    "collections",
    "customer-stories",
    "dashboard",
    "enterprise",
    "explore",
    "features",
    "issues",
    "join",
    "login",
    "logout",
    "marketplace",
    "new",
    "notifications",
    "organizations",
    "orgs",
    "pricing",
    "pulls",
    "readme",
    "search",
    "security",
    "sessions",
    "settings",
    "signup",
    "site",
    "sponsors",
    "topics",
    "trending",
    "users",
];

/// A repository, as `owner/repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub repo: String,
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)
    }
}

/// owner/repo of a GitHub repository page URL: `https://github.com/{owner}/{repo}[/anything]`.
///
/// The host is `github.com` or `www.github.com` (case-insensitive), on the default port; the
/// scheme is `https` or `http`. A trailing `.git` on the repository is stripped. Site pages
/// (`/orgs/...`, `/settings/...`, `/topics/...`, ...) and URLs without both segments are not
/// repositories, and neither are names outside GitHub's allowed characters `[A-Za-z0-9-_.]`.
pub fn parse_repo_url(url: &Url) -> Option<RepoRef> {
    if !matches!(url.scheme(), "https" | "http") || url.port().is_some() {
        return None;
    }
    let host = url.host_str()?;
    if !host.eq_ignore_ascii_case("github.com") && !host.eq_ignore_ascii_case("www.github.com") {
        return None;
    }
    let mut segments = url.path_segments()?;
    let owner = segments.next()?;
    let repo = segments.next()?;
    let repo = strip_suffix_ignore_case(repo, ".git").unwrap_or(repo);
    if !is_valid_name(owner) || !is_valid_name(repo) {
        return None;
    }
    if RESERVED_OWNERS
        .iter()
        .any(|reserved| owner.eq_ignore_ascii_case(reserved))
    {
        return None;
    }
    Some(RepoRef {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
    })
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// GitHub's owner and repository names: ASCII letters, digits, `-`, `_` and `.`, and not the path
/// segments `.` or `..` (which would change the API path we build).
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

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

/// Client for the GitHub REST API.
#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    api_base: Url,
    token: Option<SecretString>,
}

/// By hand so the token never reaches a log line.
impl fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubClient")
            .field("http", &self.http)
            .field("api_base", &self.api_base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

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

impl GithubClient {
    /// `http` is built by the caller (our fetch client: user agent, timeouts, SSRF guard).
    /// `api_base` is e.g. `https://api.github.com` (or `https://ghe.example/api/v3`; tests pass a
    /// local server's URL). `token` is optional: without it GitHub allows 60 requests an hour.
    pub fn new(http: reqwest::Client, api_base: Url, token: Option<SecretString>) -> Self {
        Self { http, api_base, token }
    }

    /// The key of this API's pool-wide cool-down in the host cool-down table: a rate limit is the
    /// API's (per token), not one repository's, so every refresh of a repository link waits it
    /// out. Contains a space, so it can never be a real host's key.
    pub fn cooldown_key(&self) -> String {
        format!("github-api {}", self.api_base.host_str().unwrap_or_default())
    }

    /// `GET {api_base}/repos/{owner}/{repo}`, conditional on `etag` when given.
    ///
    /// Redirects (renamed or transferred repositories answer 301 to `/repositories/{id}`) are
    /// followed here, at most 3, and only on the API's own scheme, host and port: the fetch
    /// client does not follow redirects, and if it did, a redirect elsewhere would still be
    /// refused after the fact.
    ///
    /// Traced as a `github.api` client span with the repository, the final status and the
    /// outcome (`found`, `not_modified`, `not_found`, `rate_limited`, or an error status): the
    /// arguments are skipped so neither the client (and its token) nor the ETag end up in spans.
    #[tracing::instrument(
        name = "github.api",
        skip_all,
        fields(
            otel.kind = "client",
            github.repo = %format!("{}/{}", repo.owner, repo.repo),
            http.response.status_code = tracing::field::Empty,
            outcome.class = tracing::field::Empty,
        )
    )]
    pub async fn repo(&self, repo: &RepoRef, etag: Option<&str>) -> Result<RepoLookup, GithubError> {
        let result = self.lookup(repo, etag).await;
        let span = tracing::Span::current();
        let class = match &result {
            Ok(RepoLookup::Found { .. }) => "found",
            Ok(RepoLookup::NotModified) => "not_modified",
            Ok(RepoLookup::NotFound) => "not_found",
            Ok(RepoLookup::RateLimited { .. }) => "rate_limited",
            Err(GithubError::Transient(_)) => "transient",
            Err(GithubError::Unexpected { .. }) => "unexpected",
        };
        span.record("outcome.class", class);
        if let Err(error) = &result {
            crate::telemetry::set_error(&span, &error.to_string());
        }
        result
    }

    /// [`GithubClient::repo`] without its span bookkeeping.
    async fn lookup(&self, repo: &RepoRef, etag: Option<&str>) -> Result<RepoLookup, GithubError> {
        if !is_valid_name(&repo.owner) || !is_valid_name(&repo.repo) {
            return Err(GithubError::unexpected(0, "invalid repository owner or name"));
        }
        let mut url = self.api_base.clone();
        url.path_segments_mut()
            .map_err(|()| GithubError::unexpected(0, "the GitHub API base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["repos", repo.owner.as_str(), repo.repo.as_str()]);
        let headers = self.headers(etag)?;

        let mut redirects = 0;
        let response = loop {
            let response = self
                .http
                .get(url.clone())
                .headers(headers.clone())
                .send()
                .await
                .map_err(|e| GithubError::Transient(e.to_string()))?;
            if response.url().origin() != self.api_base.origin() {
                // Only possible when the caller's client follows redirects itself.
                return Err(GithubError::unexpected(
                    response.status().as_u16(),
                    "redirected away from the GitHub API",
                ));
            }
            if !is_redirect(response.status()) {
                break response;
            }
            if redirects == MAX_REDIRECTS {
                return Err(GithubError::unexpected(
                    response.status().as_u16(),
                    "too many redirects",
                ));
            }
            redirects += 1;
            url = self.redirect_target(&response)?;
            tracing::debug!(status = response.status().as_u16(), location = %url, "following GitHub API redirect");
        };

        let status = response.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        match status {
            StatusCode::OK => found(response, repo).await,
            StatusCode::NOT_MODIFIED => {
                tracing::debug!("GitHub repository not modified");
                Ok(RepoLookup::NotModified)
            }
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => {
                tracing::debug!(status = status.as_u16(), "GitHub repository not found");
                Ok(RepoLookup::NotFound)
            }
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => forbidden_or_limited(response).await,
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                let message = error_message(response).await;
                tracing::debug!(status = s.as_u16(), %message, "GitHub API unavailable");
                Err(GithubError::Transient(format!("HTTP {}: {message}", s.as_u16())))
            }
            s => Err(GithubError::unexpected(s.as_u16(), error_message(response).await)),
        }
    }

    /// The request headers, the same on every hop: redirects stay on the API's origin, so the
    /// token may follow them, and the ETag is the final resource's.
    fn headers(&self, etag: Option<&str>) -> Result<HeaderMap, GithubError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(GITHUB_JSON));
        headers.insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
        if let Some(token) = &self.token {
            // The error must not echo the token.
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| GithubError::unexpected(0, "the GitHub token is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(etag) = etag {
            match HeaderValue::from_str(etag) {
                Ok(value) => {
                    headers.insert(IF_NONE_MATCH, value);
                }
                // A stored ETag we cannot send only costs an unconditional request.
                Err(_) => tracing::debug!("stored ETag is not a valid header value; asking unconditionally"),
            }
        }
        Ok(headers)
    }

    /// Where a redirect points, if it stays on the API's scheme, host and port.
    fn redirect_target(&self, response: &reqwest::Response) -> Result<Url, GithubError> {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| GithubError::unexpected(status, "redirect without a usable Location"))?;
        let target = response
            .url()
            .join(location)
            .map_err(|e| GithubError::unexpected(status, format!("redirect to an invalid Location: {e}")))?;
        if target.origin() != self.api_base.origin() {
            return Err(GithubError::unexpected(
                status,
                format!(
                    "refused redirect away from the GitHub API to {}",
                    target.origin().ascii_serialization()
                ),
            ));
        }
        Ok(target)
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// A 200: the repository object.
async fn found(mut response: reqwest::Response, asked: &RepoRef) -> Result<RepoLookup, GithubError> {
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(&mut response)
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
            .and_then(|d| crate::metadata::clean_text(d, crate::metadata::MAX_DESCRIPTION_CHARS)),
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
async fn forbidden_or_limited(response: reqwest::Response) -> Result<RepoLookup, GithubError> {
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

/// The wait the rate-limit headers ask for, if any: until `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0, and `retry-after` (seconds or an HTTP date); the longer of the two
/// when both are present. Times are measured against the response's `Date` when it has one, so
/// our clock's skew does not matter.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let server_now = header(&DATE)
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);

    let primary = (header(&RATELIMIT_REMAINING) == Some("0")).then(|| {
        header(&RATELIMIT_RESET)
            .and_then(|r| r.parse::<u64>().ok())
            .and_then(|r| UNIX_EPOCH.checked_add(Duration::from_secs(r)))
            .map_or(DEFAULT_RATE_LIMIT_WAIT, |reset| {
                reset.duration_since(server_now).unwrap_or(Duration::ZERO)
            })
    });
    let retry_after = header(&RETRY_AFTER).and_then(|v| match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v)
            .ok()
            .map(|at| at.duration_since(server_now).unwrap_or(Duration::ZERO)),
    });
    let wait = match (primary, retry_after) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b)?,
    };
    Some(wait.clamp(MIN_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAIT))
}

/// A short message from an error response: GitHub's JSON `message`, or the start of the body.
async fn error_message(mut response: reqwest::Response) -> String {
    let body = match read_body(&mut response).await {
        Ok(body) => body.bytes,
        Err(e) => return format!("(unreadable body: {e})"),
    };
    let text = match serde_json::from_slice::<ApiError>(&body) {
        Ok(err) => err.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
    };
    let mut message = crate::metadata::clean_text(&text, MAX_ERROR_MESSAGE_CHARS).unwrap_or_default();
    if text.chars().count() > MAX_ERROR_MESSAGE_CHARS {
        message.push('…');
    }
    if message.is_empty() {
        message = response.status().canonical_reason().unwrap_or("no message").to_owned();
    }
    message
}

struct Body {
    bytes: Vec<u8>,
    /// The body went past [`MAX_BODY_BYTES`]; `bytes` holds its start.
    truncated: bool,
}

/// Reads at most [`MAX_BODY_BYTES`] (after decompression) whatever Content-Length says.
async fn read_body(response: &mut reqwest::Response) -> Result<Body, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok(Body { bytes, truncated: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use tokio::net::TcpListener;

    type Seen = Arc<Mutex<Vec<AxumHeaders>>>;

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("test client")
    }

    async fn bind() -> (TcpListener, Url) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = Url::parse(&format!("http://{}", listener.local_addr().expect("local address"))).expect("base URL");
        (listener, base)
    }

    fn spawn(listener: TcpListener, router: Router) {
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    /// A server with `router`, and a client for it.
    async fn serve(router: Router, token: Option<&str>) -> GithubClient {
        let (listener, base) = bind().await;
        spawn(listener, router);
        GithubClient::new(http(), base, token.map(|t| SecretString::from(t.to_owned())))
    }

    fn repo(owner: &str, name: &str) -> RepoRef {
        RepoRef {
            owner: owner.into(),
            repo: name.into(),
        }
    }

    fn repo_json(full_name: &str) -> String {
        serde_json::json!({
            "id": 123,
            "full_name": full_name,
            "description": "A thing",
            "stargazers_count": 4242,
            "archived": true,
            "pushed_at": "2024-05-06T07:08:09Z",
            "html_url": format!("https://github.com/{full_name}"),
        })
        .to_string()
    }

    fn json_response(status: AxumStatus, body: String) -> Response {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    fn seen(seen: &Seen) -> Vec<AxumHeaders> {
        seen.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn github_etag_then_not_modified() {
        let log: Seen = Seen::default();
        let router = Router::new()
            .route(
                "/repos/{owner}/{repo}",
                get(
                    |State(log): State<Seen>, Path((owner, name)): Path<(String, String)>, headers: AxumHeaders| async move {
                        log.lock().expect("lock").push(headers.clone());
                        if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some("\"abc\"") {
                            return AxumStatus::NOT_MODIFIED.into_response();
                        }
                        let mut response = json_response(AxumStatus::OK, repo_json(&format!("{owner}/{name}")));
                        response.headers_mut().insert(header::ETAG, "\"abc\"".parse().expect("valid value"));
                        response
                    },
                ),
            )
            .with_state(log.clone());
        let client = serve(router, None).await;

        let first = client.repo(&repo("octo", "thing"), None).await.expect("lookup");
        let RepoLookup::Found { info, etag, renamed_to } = first else {
            panic!("expected Found, got {first:?}");
        };
        assert_eq!(etag.as_deref(), Some("\"abc\""));
        assert_eq!(renamed_to, None);
        assert_eq!(
            info,
            RepoInfo {
                full_name: "octo/thing".into(),
                description: Some("A thing".into()),
                stars: 4242,
                archived: true,
                pushed_at: Some("2024-05-06T07:08:09Z".parse().expect("valid value")),
                html_url: Some("https://github.com/octo/thing".into()),
            }
        );

        let second = client
            .repo(&repo("octo", "thing"), etag.as_deref())
            .await
            .expect("lookup");
        assert_eq!(second, RepoLookup::NotModified);

        let requests = seen(&log);
        assert_eq!(requests.len(), 2);
        assert!(requests[0].get(header::IF_NONE_MATCH).is_none());
        assert_eq!(requests[1].get(header::IF_NONE_MATCH).expect("header sent"), "\"abc\"");
        for request in &requests {
            assert_eq!(
                request.get(header::ACCEPT).expect("header sent"),
                "application/vnd.github+json"
            );
            assert_eq!(request.get("x-github-api-version").expect("header sent"), "2022-11-28");
        }
    }

    #[tokio::test]
    async fn github_not_found_and_blocked() {
        let router = Router::new()
            .route(
                "/repos/octo/gone",
                get(|| async { json_response(AxumStatus::NOT_FOUND, r#"{"message":"Not Found"}"#.into()) }),
            )
            .route(
                "/repos/octo/blocked",
                get(|| async { json_response(AxumStatus::UNAVAILABLE_FOR_LEGAL_REASONS, "{}".into()) }),
            );
        let client = serve(router, None).await;
        assert_eq!(
            client.repo(&repo("octo", "gone"), None).await.expect("lookup"),
            RepoLookup::NotFound
        );
        assert_eq!(
            client.repo(&repo("octo", "blocked"), None).await.expect("lookup"),
            RepoLookup::NotFound
        );
    }

    #[tokio::test]
    async fn github_follows_rename_redirect() {
        let (listener, base) = bind().await;
        let location = base.join("/repositories/123").expect("join").to_string();
        let router = Router::new()
            .route(
                "/repos/old-owner/old-name",
                get(move || async move {
                    let body = r#"{"message":"Moved Permanently","url":"…"}"#.to_owned();
                    let mut response = json_response(AxumStatus::MOVED_PERMANENTLY, body);
                    response
                        .headers_mut()
                        .insert(header::LOCATION, location.parse().expect("valid value"));
                    response
                }),
            )
            .route(
                "/repositories/123",
                get(|| async { json_response(AxumStatus::OK, repo_json("new-owner/new-name")) }),
            );
        spawn(listener, router);
        let client = GithubClient::new(http(), base, None);

        let lookup = client.repo(&repo("old-owner", "old-name"), None).await.expect("lookup");
        let RepoLookup::Found { info, renamed_to, .. } = lookup else {
            panic!("expected Found, got {lookup:?}");
        };
        assert_eq!(info.full_name, "new-owner/new-name");
        assert_eq!(renamed_to, Some(repo("new-owner", "new-name")));
    }

    #[tokio::test]
    async fn github_case_only_difference_is_not_a_rename() {
        let router = Router::new().route(
            "/repos/octo/thing",
            get(|| async { json_response(AxumStatus::OK, repo_json("Octo/Thing")) }),
        );
        let client = serve(router, None).await;
        let lookup = client.repo(&repo("octo", "thing"), None).await.expect("lookup");
        let RepoLookup::Found { info, renamed_to, .. } = lookup else {
            panic!("expected Found, got {lookup:?}");
        };
        assert_eq!(info.full_name, "Octo/Thing");
        assert_eq!(renamed_to, None);
    }

    #[tokio::test]
    async fn github_refuses_redirect_off_the_api_origin() {
        let router = Router::new().route(
            "/repos/octo/thing",
            get(|| async {
                // Same host, another port: another origin.
                (
                    AxumStatus::MOVED_PERMANENTLY,
                    [(header::LOCATION, "http://127.0.0.1:1/repositories/1")],
                )
            }),
        );
        let client = serve(router, None).await;
        let err = client.repo(&repo("octo", "thing"), None).await.expect_err("an error");
        assert!(matches!(err, GithubError::Unexpected { status: 301, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn github_stops_after_three_redirects() {
        let hits = Arc::new(Mutex::new(0_u32));
        let router = Router::new()
            .route(
                "/repos/octo/thing",
                get(|| async { (AxumStatus::FOUND, [(header::LOCATION, "/hop/1")]) }),
            )
            .route(
                "/hop/{n}",
                get(|State(hits): State<Arc<Mutex<u32>>>, Path(n): Path<u32>| async move {
                    *hits.lock().expect("lock") += 1;
                    (
                        AxumStatus::TEMPORARY_REDIRECT,
                        [(header::LOCATION, format!("/hop/{}", n + 1))],
                    )
                }),
            )
            .with_state(hits.clone());
        let client = serve(router, None).await;
        let err = client.repo(&repo("octo", "thing"), None).await.expect_err("an error");
        assert!(matches!(err, GithubError::Unexpected { status: 307, .. }), "{err:?}");
        assert_eq!(*hits.lock().expect("lock"), 3);
    }

    #[tokio::test]
    async fn github_primary_rate_limit_waits_until_reset() {
        let router = Router::new().route(
            "/repos/octo/thing",
            get(|| async {
                let reset = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs()
                    + 30;
                (
                    AxumStatus::FORBIDDEN,
                    [
                        ("x-ratelimit-remaining", "0".to_owned()),
                        ("x-ratelimit-reset", reset.to_string()),
                    ],
                    r#"{"message":"API rate limit exceeded for 127.0.0.1."}"#,
                )
            }),
        );
        let client = serve(router, None).await;
        let lookup = client.repo(&repo("octo", "thing"), None).await.expect("lookup");
        let RepoLookup::RateLimited { retry_after } = lookup else {
            panic!("expected RateLimited, got {lookup:?}");
        };
        assert!(
            (Duration::from_secs(28)..=Duration::from_secs(31)).contains(&retry_after),
            "{retry_after:?}"
        );
    }

    #[tokio::test]
    async fn github_retry_after_and_secondary_limits() {
        let router = Router::new()
            .route(
                "/repos/octo/retry",
                get(|| async { (AxumStatus::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "5")]) }),
            )
            .route(
                "/repos/octo/secondary",
                get(|| async {
                    json_response(
                        AxumStatus::FORBIDDEN,
                        r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes."}"#.into(),
                    )
                }),
            )
            .route(
                "/repos/octo/forbidden",
                get(|| async {
                    json_response(AxumStatus::FORBIDDEN, r#"{"message":"Resource not accessible"}"#.into())
                }),
            );
        let client = serve(router, None).await;
        assert_eq!(
            client.repo(&repo("octo", "retry"), None).await.expect("lookup"),
            RepoLookup::RateLimited {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(
            client.repo(&repo("octo", "secondary"), None).await.expect("lookup"),
            RepoLookup::RateLimited {
                retry_after: Duration::from_secs(60)
            }
        );
        let err = client
            .repo(&repo("octo", "forbidden"), None)
            .await
            .expect_err("an error");
        let GithubError::Unexpected { status, message } = err else {
            panic!("expected Unexpected, got {err:?}");
        };
        assert_eq!((status, message.as_str()), (403, "Resource not accessible"));
    }

    #[test]
    fn github_rate_limit_wait_is_bounded() {
        let now = SystemTime::now();
        let epoch = |d: Duration| {
            (now + d)
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
                .to_string()
        };
        let headers = |pairs: &[(&'static str, String)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().expect("valid value"));
            }
            map
        };
        let far = headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", epoch(Duration::from_secs(7200))),
        ]);
        assert_eq!(rate_limit_wait(&far, now), Some(MAX_RATE_LIMIT_WAIT));
        let past = headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", "1".into())]);
        assert_eq!(rate_limit_wait(&past, now), Some(MIN_RATE_LIMIT_WAIT));
        let zero = headers(&[("retry-after", "0".into())]);
        assert_eq!(rate_limit_wait(&zero, now), Some(MIN_RATE_LIMIT_WAIT));
        let remaining = headers(&[
            ("x-ratelimit-remaining", "12".into()),
            ("x-ratelimit-reset", epoch(Duration::from_secs(100))),
        ]);
        assert_eq!(rate_limit_wait(&remaining, now), None);
        let date = headers(&[("retry-after", httpdate::fmt_http_date(now + Duration::from_secs(90)))]);
        let wait = rate_limit_wait(&date, now).expect("a wait");
        assert!(
            (Duration::from_secs(89)..=Duration::from_secs(90)).contains(&wait),
            "{wait:?}"
        );
    }

    #[tokio::test]
    async fn github_server_errors_are_transient() {
        let router = Router::new().route(
            "/repos/octo/thing",
            get(|| async { (AxumStatus::INTERNAL_SERVER_ERROR, "boom") }),
        );
        let client = serve(router, None).await;
        let err = client.repo(&repo("octo", "thing"), None).await.expect_err("an error");
        assert!(matches!(err, GithubError::Transient(_)), "{err:?}");

        // Nothing listening: a network error.
        let (listener, base) = bind().await;
        drop(listener);
        let client = GithubClient::new(http(), base, None);
        let err = client.repo(&repo("octo", "thing"), None).await.expect_err("an error");
        assert!(matches!(err, GithubError::Transient(_)), "{err:?}");
    }

    #[tokio::test]
    async fn github_malformed_and_oversized_bodies_are_unexpected() {
        let router = Router::new()
            .route(
                "/repos/octo/malformed",
                get(|| async { json_response(AxumStatus::OK, "{\"full_name\": 42".into()) }),
            )
            .route(
                "/repos/octo/huge",
                get(|| async {
                    let padding = "x".repeat(2 * MAX_BODY_BYTES);
                    json_response(
                        AxumStatus::OK,
                        format!(r#"{{"full_name":"octo/huge","description":"{padding}"}}"#),
                    )
                }),
            );
        let client = serve(router, None).await;
        for name in ["malformed", "huge"] {
            let err = client.repo(&repo("octo", name), None).await.expect_err("an error");
            assert!(
                matches!(err, GithubError::Unexpected { status: 200, .. }),
                "{name}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn github_token_sent_as_bearer_only_when_set() {
        let log: Seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v3/repos/octo/thing",
                get(|State(log): State<Seen>, headers: AxumHeaders| async move {
                    log.lock().expect("lock").push(headers);
                    json_response(AxumStatus::OK, repo_json("octo/thing"))
                }),
            )
            .with_state(log.clone());
        let (listener, base) = bind().await;
        spawn(listener, router);
        // A GitHub Enterprise style base with a path.
        let api_base = base.join("/api/v3").expect("join");

        let with_token = GithubClient::new(http(), api_base.clone(), Some(SecretString::from("s3cret-token")));
        let without = GithubClient::new(http(), api_base, None);
        assert!(matches!(
            with_token.repo(&repo("octo", "thing"), None).await.expect("lookup"),
            RepoLookup::Found { .. }
        ));
        assert!(matches!(
            without.repo(&repo("octo", "thing"), None).await.expect("lookup"),
            RepoLookup::Found { .. }
        ));

        let requests = seen(&log);
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].get(header::AUTHORIZATION).expect("header sent"),
            "Bearer s3cret-token"
        );
        assert!(requests[1].get(header::AUTHORIZATION).is_none());

        let debug = format!("{with_token:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(format!("{without:?}").contains("token: None"));
    }

    #[tokio::test]
    async fn github_rejects_invalid_repo_refs_without_a_request() {
        let client = GithubClient::new(http(), Url::parse("http://127.0.0.1:1").expect("valid URL"), None);
        for bad in [repo("..", "x"), repo("octo", "a/b"), repo("", "x"), repo("octo", "a?b")] {
            let err = client.repo(&bad, None).await.expect_err("an error");
            assert!(
                matches!(err, GithubError::Unexpected { status: 0, .. }),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn github_parse_repo_url() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("https://github.com/rust-lang/rust", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust/", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust.git", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust.GIT", Some(("rust-lang", "rust"))),
            ("https://www.github.com/tokio-rs/tokio", Some(("tokio-rs", "tokio"))),
            ("https://WWW.GitHub.COM/tokio-rs/tokio", Some(("tokio-rs", "tokio"))),
            ("http://github.com/a/b", Some(("a", "b"))),
            (
                "https://github.com/serde-rs/serde/blob/master/README.md#usage",
                Some(("serde-rs", "serde")),
            ),
            ("https://github.com/owner/repo/issues/1?x=1", Some(("owner", "repo"))),
            (
                "https://github.com/some_user/dotted.name.rs",
                Some(("some_user", "dotted.name.rs")),
            ),
            ("https://github.com/Owner/Repo", Some(("Owner", "Repo"))),
            // Reserved first segments.
            ("https://github.com/orgs/rust-lang/people", None),
            ("https://github.com/settings/profile", None),
            ("https://github.com/features/actions", None),
            ("https://github.com/topics/rust", None),
            ("https://github.com/marketplace/actions", None),
            ("https://github.com/sponsors/someone", None),
            ("https://github.com/apps/dependabot", None),
            ("https://github.com/login/oauth", None),
            ("https://github.com/about/careers", None),
            ("https://github.com/pricing/plans", None),
            ("https://github.com/explore/repos", None),
            ("https://github.com/notifications/beta", None),
            ("https://github.com/search/advanced", None),
            ("https://github.com/collections/x", None),
            ("https://github.com/trending/rust", None),
            ("https://github.com/enterprise/startups", None),
            ("https://github.com/customer-stories/x", None),
            ("https://github.com/security/advanced", None),
            ("https://github.com/site/terms", None),
            ("https://github.com/readme/guides", None),
            ("https://github.com/Settings/profile", None),
            // Other hosts, schemes and ports.
            ("https://gitlab.com/a/b", None),
            ("https://gist.github.com/a/b", None),
            ("https://api.github.com/repos/a", None),
            ("https://github.com.evil.example/a/b", None),
            ("https://github.com:8443/a/b", None),
            ("ftp://github.com/a/b", None),
            // Missing or invalid segments.
            ("https://github.com/", None),
            ("https://github.com/rust-lang", None),
            ("https://github.com/rust-lang/", None),
            ("https://github.com//rust", None),
            ("https://github.com/a/.git", None),
            ("https://github.com/a%20b/c", None),
            ("https://github.com/a/b%2Fc", None),
            ("https://github.com/caf%C3%A9/b", None),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).expect("valid URL");
            let expected = expected.map(|(owner, name)| repo(owner, name));
            assert_eq!(parse_repo_url(&url), expected, "{input}");
        }
    }
}
