//! The dashboard at `/`: one server-rendered page (no JavaScript, no build step) with queue depth,
//! the oldest queued age and the last 24 hours, recent failed jobs with a requeue button each, the
//! audit trail of recently finished jobs, and links that are not active with a "mark active"
//! button.
//!
//! Buttons are plain `<form method=post>`s, so they need the admin token without a way to send a
//! header: `POST /dashboard/login` takes the token from a form field once and sets it as an
//! `HttpOnly`, `SameSite=Strict` cookie. Strict same-site cookies are not sent with requests that
//! another site starts, which is what keeps a cookie-authenticated form safe from cross-site
//! request forgery; the token itself is still checked in constant time on every post.

use std::fmt::Write as _;

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use linkpulse_queue::JobState;
use linkpulse_queue::inspect::{self, JobFilter, JobSummary};
use linkpulse_shared::db::links::{self, LinkRef};
use linkpulse_shared::link_jobs::KINDS;

use super::{AdminState, ApiError, auth};

/// Name of the cookie that carries the admin token.
const COOKIE_NAME: &str = "linkpulse_admin_token";
/// Failed jobs shown.
const FAILED_SHOWN: i64 = 50;
/// Finished jobs shown in the audit trail.
const FINISHED_SHOWN: i64 = 50;
/// Links per non-active status shown.
const LINKS_SHOWN: i64 = 50;

/// The dashboard's routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(page))
        .route("/dashboard/login", post(login))
        .route("/dashboard/requeue/{job_id}", post(requeue))
        .route("/dashboard/links/{id}/activate", post(activate))
        .merge(super::dashboard_schedules::routes())
}

/// The token from our cookie, if the browser sent one.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// Text as HTML (element content or a quoted attribute value).
pub(super) use linkpulse_util::text::html_escape as escape;

pub(super) fn back_to_page() -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response()
}

/// `GET /`.
async fn page(State(state): State<AdminState>, headers: HeaderMap) -> Result<Html<String>, ApiError> {
    let stats = inspect::stats(&state.readers, &KINDS).await?;
    let failed = inspect::list(
        &state.readers,
        &JobFilter {
            state: Some(JobState::Failed),
            ..JobFilter::default()
        },
        FAILED_SHOWN,
    )
    .await?;
    let finished = inspect::recently_finished(&state.readers, FINISHED_SHOWN).await?;
    let logged_in = auth::check(state.settings.admin_token.as_ref(), cookie_token(&headers)).is_ok();

    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>linkpulse</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}td.n{text-align:right}</style>\
         </head><body><h1>linkpulse</h1>",
    );
    if logged_in {
        html.push_str("<p id=session>Signed in: buttons are enabled.</p>");
    } else {
        html.push_str(
            "<form id=login method=post action=/dashboard/login><label>Admin token \
             <input type=password name=token id=token></label> <button type=submit>Sign in</button></form>",
        );
    }

    html.push_str("<h2>Queue</h2><table id=queue><tr><th>kind</th><th>queued</th><th>running</th><th>done</th><th>failed</th><th>oldest queued</th>\
         <th>done 24h</th><th>failed 24h</th><th>mean duration 24h</th></tr>");
    for (kind, s) in &stats.kinds {
        let age = s
            .oldest_queued_age_seconds
            .map_or_else(|| "-".to_owned(), |a| format!("{a:.1}s"));
        let mean = s
            .mean_duration_ms_24h
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
        let _ = write!(
            html,
            "<tr id=\"queue-{k}\"><td>{k}</td><td class=n data-state=queued>{}</td><td class=n data-state=running>{}</td>\
             <td class=n data-state=done>{}</td><td class=n data-state=failed>{}</td><td class=n>{age}</td>\
             <td class=n data-stat=done_24h>{}</td><td class=n data-stat=failed_24h>{}</td><td class=n>{mean}</td></tr>",
            s.queued,
            s.running,
            s.done,
            s.failed,
            s.done_24h,
            s.failed_24h,
            k = escape(kind),
        );
    }
    html.push_str("</table>");
    html.push_str(&super::dashboard_schedules::section(&state.readers).await?);
    html.push_str(&super::webhooks::dashboard_section(&state.readers).await?);

    html.push_str("<h2>Recent failed jobs</h2><table id=failed><tr><th>id</th><th>kind</th><th>link</th><th>attempts</th><th>result</th><th>code</th><th>duration</th><th>finished</th><th>error</th><th></th></tr>");
    for job in &failed {
        let link = job.dedupe_key.clone().unwrap_or_default();
        let _ = write!(
            html,
            "<tr id=\"job-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td class=n>{}/{}</td>{}<td>{}</td><td>{}</td>\
             <td><form method=post action=\"/dashboard/requeue/{id}\"><button type=submit id=\"requeue-{id}\">requeue</button></form></td></tr>",
            escape(&job.kind),
            escape(&link),
            job.attempts,
            job.max_attempts,
            audit_cells(job),
            job.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            escape(job.problem().unwrap_or("")),
            id = job.id,
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Recently finished jobs</h2><table id=finished><tr><th>id</th><th>kind</th><th>state</th><th>link</th><th>attempts</th><th>result</th><th>code</th><th>duration</th><th>finished</th><th>error / reason</th></tr>");
    for job in &finished {
        let _ = write!(
            html,
            "<tr id=\"finished-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}/{}</td>{}<td>{}</td><td>{}</td></tr>",
            escape(&job.kind),
            escape(&job.state),
            escape(job.dedupe_key.as_deref().unwrap_or("")),
            job.attempts,
            job.max_attempts,
            audit_cells(job),
            job.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            escape(job.problem().unwrap_or("")),
            id = job.id,
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Links not active</h2><table id=links><tr><th>id</th><th>status</th><th>failures</th><th>url</th><th></th></tr>");
    for status in ["inaccessible", "repo_unavailable", "archived"] {
        for link in links::list(&state.readers, Some(status), LINKS_SHOWN).await? {
            let _ = write!(
                html,
                "<tr id=\"link-{id}\"><td>{id}</td><td>{}</td><td class=n>{}</td><td>{}</td>\
                 <td><form method=post action=\"/dashboard/links/{id}/activate\"><button type=submit id=\"activate-{id}\">mark active</button></form></td></tr>",
                escape(&link.status),
                link.consecutive_failures,
                escape(&link.url),
                id = link.id,
            );
        }
    }
    html.push_str("</table></body></html>");
    Ok(Html(html))
}

/// The result, status code and duration cells of a job row.
fn audit_cells(job: &JobSummary) -> String {
    format!(
        "<td class=result>{}</td><td class=n>{}</td><td class=n>{}</td>",
        escape(job.result_class.as_deref().unwrap_or("-")),
        job.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        job.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
    )
}

/// The login form's body.
#[derive(Debug, Deserialize)]
struct Login {
    token: String,
}

/// `POST /dashboard/login`: a right token becomes the cookie; a wrong one is refused.
async fn login(State(state): State<AdminState>, Form(form): Form<Login>) -> Result<Response, ApiError> {
    auth::check(state.settings.admin_token.as_ref(), Some(form.token.as_str()))?;
    let cookie = format!("{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict", form.token);
    let value =
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::BadRequest("token is not a valid cookie value".into()))?;
    let mut response = back_to_page();
    response.headers_mut().insert(SET_COOKIE, value);
    Ok(response)
}

/// `POST /dashboard/requeue/{job_id}`: requeues exactly the clicked failed job. Refused (400) when
/// it is no longer failed or its link already has a queued or running job of the same kind.
async fn requeue(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(job_id): Path<i64>,
) -> Result<Response, ApiError> {
    auth::check(state.settings.admin_token.as_ref(), cookie_token(&headers))?;
    let filter = JobFilter {
        state: Some(JobState::Failed),
        id: Some(job_id),
        ..JobFilter::default()
    };
    let report = inspect::requeue(&state.pool, JobState::Failed, &filter).await?;
    if report.requeued == 0 {
        let why = if report.skipped > 0 {
            "its link already has a queued or running job of that kind"
        } else {
            "it is not a failed job (already requeued, pruned or unknown)"
        };
        return Err(ApiError::BadRequest(format!("job {job_id} was not requeued: {why}")));
    }
    Ok(back_to_page())
}

/// `POST /dashboard/links/{id}/activate`.
async fn activate(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    auth::check(state.settings.admin_token.as_ref(), cookie_token(&headers))?;
    links::activate(&state.pool, &LinkRef::Id(id), "dashboard")
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no link {id}")))?;
    Ok(back_to_page())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_token_finds_our_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; linkpulse_admin_token=abc; b=2"));
        assert_eq!(cookie_token(&headers), Some("abc"));
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
