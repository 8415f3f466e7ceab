//! The dashboard: server-rendered pages (maud, escaped by default, no JavaScript) for what an
//! operator watches and does.
//!
//! # Layout
//!
//! - [`layout`]: the page shell, navigation and formatting helpers.
//! - [`session`]: sign-in sessions (signed, expiring cookie) and the CSRF-checked form extractor.
//! - [`signin`]: the sign-in page, sign-in and sign-out.
//! - [`overview`] (with [`chart`]): queue depth, throughput, workers, leader, schedules, webhooks.
//! - [`jobs`]: the filtered, paged job list, a job's page, requeue and bulk requeue.
//! - [`links`]: the filtered, paged link list, a link's page, mark active and check now.
//! - [`schedules`]: schedules and recent runs, toggle and run-now.
//!
//! # Who sees what
//!
//! Pages follow the API's read rule: open while the admin server listens on a loopback address,
//! no read token and no public URL are set; otherwise for a signed-in session (or a request with a
//! bearer token that may read the API); others are sent to sign in.
//! Buttons need a session signed in with the admin token, and every post carries the session's
//! CSRF value ([`session::CsrfForm`]).

pub mod chart;
pub mod jobs;
pub mod layout;
pub mod links;
pub mod overview;
pub mod schedules;
pub mod session;
pub mod signin;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, REFERRER_POLICY, X_FRAME_OPTIONS};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::{AdminState, ApiError};
use layout::Page;
use session::Session;

/// Every dashboard route.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/signin", get(signin::form).post(signin::sign_in))
        .route("/signout", post(signin::sign_out))
        .route("/jobs", get(jobs::list))
        .route("/jobs/requeue", post(jobs::bulk_requeue))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/requeue", post(jobs::requeue))
        .route("/links", get(links::list))
        .route("/links/{id}", get(links::show))
        .route("/links/{id}/activate", post(links::activate))
        .route("/links/{id}/check", post(links::check_now))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{name}/toggle", post(schedules::toggle))
        .route("/schedules/{name}/run", post(schedules::run))
}

/// Headers of every dashboard page: no scripts at all, no framing, referrers only to ourselves (a
/// job's URL never leaks to the sites its links point to; `no-referrer` would also make the
/// browser's own form posts say `Origin: null`, which the origin check refuses), no caching of
/// operator data.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML page as a response with `status` and the dashboard's headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A `303 See Other` to `location` (after a post: the browser then loads it with `GET`).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(LOCATION, HeaderValue::from_static("/"))]).into_response(),
    }
}

/// Who is looking at a page: their session, if any. Extracting it enforces the read rule: a
/// request that may not read is sent to the sign-in page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The signed-in session.
    pub session: Option<Session>,
}

impl Viewer {
    /// Whether the viewer may press buttons (the forms are rendered only then).
    pub fn is_admin(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_admin)
    }
}

impl FromRequestParts<AdminState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Response> {
        let session = session::current(parts, state).await;
        let settings = &state.settings;
        let open = crate::admin::auth::reads_open(settings);
        // A bearer token that may read the API may read the pages too (scripts, monitoring).
        let bearer_reads = || {
            crate::admin::auth::check_read(
                settings.read_token.as_ref(),
                settings.admin_token.as_ref(),
                false,
                crate::admin::auth::bearer(parts),
            )
            .is_ok()
        };
        if session.is_none() && !open && !bearer_reads() {
            let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            return Err(see_other(&format!("/signin?next={next}")));
        }
        Ok(Self { session })
    }
}

/// A dashboard failure as an HTML page in the dashboard's look, with the right status.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
    /// Where "back" goes.
    back: String,
}

impl PageError {
    /// With `status` and a sentence for the operator.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            back: "/".to_owned(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 (no or expired session).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The same error with "back" going to `path`.
    #[must_use]
    pub fn back_to(mut self, path: impl Into<String>) -> Self {
        self.back = path.into();
        self
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        if let ApiError::Internal(cause) = &error {
            tracing::error!(error = format!("{cause:#}"), "dashboard page failed");
        }
        Self::new(status, error.to_string())
    }
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl From<linkpulse_queue::QueueError> for PageError {
    fn from(error: linkpulse_queue::QueueError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::UNAUTHORIZED => "Sign in required",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Not done",
            s if s.is_server_error() => "Something went wrong",
            _ => "Not done",
        };
        let body = html! {
            p.error #error role="alert" { (self.message) }
            p {
                a #back href=(self.back) { "Back" }
                @if self.status == StatusCode::UNAUTHORIZED { " · " a href="/signin" #signin-again { "Sign in" } }
            }
        };
        // The error page has no session at hand: it shows the navigation without the sign-out.
        let viewer = Viewer { session: None };
        let page = Page {
            title: title.to_owned(),
            ..Page::default()
        };
        respond(self.status, layout::page(&viewer, &page, &body))
    }
}

/// An unknown dashboard path: a page, not an empty 404.
pub async fn not_found() -> PageError {
    PageError::not_found("There is no page at this address.")
}

/// A path for a redirect or "back" link taken from a form or query: only our own absolute paths
/// (a leading single `/`), never another site.
pub fn local_path(candidate: Option<&str>) -> String {
    match candidate {
        // Browsers drop tabs and newlines from a `Location` before resolving it (`/\t/evil` becomes
        // `//evil`, another site): only printable ASCII, as a query string percent-encodes it.
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && path.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/jobs?state=failed")), "/jobs?state=failed");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n/evil.example")), "/");
        assert_eq!(local_path(Some("/ /evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
