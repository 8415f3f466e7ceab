//! The client: one `GET /repos/{owner}/{repo}`, its redirects, and what its status means.

use std::fmt;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH, LOCATION};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::repo_url::is_valid_name;
use super::response::{error_message, forbidden_or_limited, found};
use super::{GithubError, RepoLookup, RepoRef};
use crate::fetch::{RedirectError, Redirects, is_redirect};

/// Most redirects followed for one lookup (a rename answers with one; a chain of three is already
/// suspicious).
const MAX_REDIRECTS: u32 = 3;

/// The REST API version we were written against.
const API_VERSION: &str = "2022-11-28";
const API_VERSION_HEADER: HeaderName = HeaderName::from_static("x-github-api-version");
const GITHUB_JSON: &str = "application/vnd.github+json";

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
    /// followed here by the fetcher's hop rule ([`Redirects`]), at most 3, and only on the API's
    /// own scheme, host and port: the fetch client does not follow redirects, and if it did, a
    /// redirect elsewhere would still be refused after the fact.
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

        // Renames answer 301 to `/repositories/{id}` on the same origin; nothing else is followed.
        let mut redirects = Redirects::new(&url, MAX_REDIRECTS).within(self.api_base.origin());
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
            let status = response.status();
            if !is_redirect(status) {
                break response;
            }
            url = redirects
                .next(response.url(), response.headers().get(LOCATION))
                .map_err(|e| GithubError::unexpected(status.as_u16(), redirect_refused(&e)))?;
            tracing::debug!(status = status.as_u16(), location = %url, "following GitHub API redirect");
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
}

/// Why a redirect was not followed, in the API's words.
fn redirect_refused(error: &RedirectError) -> String {
    match error {
        RedirectError::OffOrigin { target, .. } => format!("refused redirect away from the GitHub API to {target}"),
        RedirectError::TooMany(_) => "too many redirects".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use tokio::net::TcpListener;

    use crate::github::RepoInfo;
    use crate::github::response::MAX_BODY_BYTES;

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
        RepoRef::new(owner, name)
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
}
