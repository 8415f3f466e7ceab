//! `/links`: the saved links with a status filter (active only by default, as people expect from
//! a link manager; `all` shows every one), text search, host and keyset paging, status badges
//! (inaccessible in red with the URL struck through); `/links/{id}`: one link with its metadata,
//! GitHub facts, recent verdicts and events, trace link, "mark active" and "check now".

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use linkpulse_shared::db::links::{self, Link, LinkRef, ListFilter};
use linkpulse_shared::link_jobs::CHECK;

use super::layout::{self, Page, badge, csrf, trace_link, web_url, when};
use super::session::{CsrfForm, NoFields};
use super::{PageError, Viewer, respond, see_other};
use crate::admin::{AdminState, ApiError, links_api};

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;
/// The statuses the filter offers; `all` means no filter.
const STATUSES: [&str; 6] = [
    "active",
    "inaccessible",
    "repo_unavailable",
    "archived",
    "paused",
    "all",
];

/// The list's filters, as query parameters.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct LinksQuery {
    /// A status, or `all`; absent = `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// URL or title contains (any case).
    #[serde(default)]
    pub q: String,
    /// Exact host.
    #[serde(default)]
    pub host: String,
    /// Keyset cursor: only ids above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
}

impl LinksQuery {
    /// The status filtered on (`None` for all).
    fn status(&self) -> Result<Option<String>, PageError> {
        match self.status.as_deref().map(str::trim) {
            None | Some("") => Ok(Some("active".to_owned())),
            Some("all") => Ok(None),
            Some(s) if STATUSES.contains(&s) => Ok(Some(s.to_owned())),
            Some(other) => Err(PageError::bad_request(format!("Unknown status {other:?}.")).back_to("/links")),
        }
    }

    /// This query as a URL query string, with `after` replaced.
    fn with_after(&self, after: Option<i64>) -> String {
        let query = Self { after, ..self.clone() };
        serde_urlencoded::to_string(&query).unwrap_or_default()
    }
}

/// `GET /links`.
pub async fn list(
    viewer: Viewer,
    State(state): State<AdminState>,
    Query(query): Query<LinksQuery>,
) -> Result<Response, PageError> {
    let status = query.status()?;
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = ListFilter {
        status: status.clone(),
        host: text(&query.host),
        text: text(&query.q),
        after_id: query.after,
        ..ListFilter::default()
    };
    let rows = links::list_page(&state.readers, &filter, PAGE_SIZE).await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == PAGE_SIZE)
        .then(|| rows.last().map(|l| l.id))
        .flatten();
    let chosen = status.as_deref().unwrap_or("all");
    let body = html! {
        form.filters #filters method="get" action="/links" {
            label { "Status"
                select #filter-status name="status" {
                    @for s in STATUSES { option value=(s) selected[s == chosen] { (s) } }
                }
            }
            label { "Search (URL or title)" input #filter-q type="search" name="q" value=(query.q); }
            label { "Host" input #filter-host type="text" name="host" value=(query.host); }
            button type="submit" #apply-filters { "Filter" }
            a href="/links" { "Clear" }
        }
        @if rows.is_empty() {
            p.muted #no-links { "No link matches." }
        } @else {
            table #links {
                tr { th.n { "id" } th { "status" } th { "URL" } th { "title" } th.n { "failures" } th { "last check" } th.n { "code" } }
                @for link in &rows {
                    tr id={ "link-" (link.id) } data-status=(link.status) {
                        td.n { a href={ "/links/" (link.id) } { (link.id) } }
                        td { (status_badges(link)) }
                        td.url { (url_cell(link)) }
                        td { (link.title.as_deref().unwrap_or("")) }
                        td.n { (link.consecutive_failures) }
                        td { (when(link.last_checked_at)) }
                        td.n { (link.last_status_code.map_or_else(|| "-".to_owned(), |c| c.to_string())) }
                    }
                }
            }
        }
        div.pager {
            @if query.after.is_some() { a #first-page href={ "/links?" (query.with_after(None)) } { "« First" } }
            @if let Some(after) = next { a #next-page href={ "/links?" (query.with_after(Some(after))) } { "Next »" } }
        }
    };
    let page = Page {
        title: "Links".to_owned(),
        nav: "/links",
        ..Page::default()
    };
    Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)))
}

/// The status badge, plus "archived" for an archived GitHub repository that is otherwise fine.
fn status_badges(link: &Link) -> Markup {
    let archived_repo = link.github.as_ref().is_some_and(|g| g.archived == Some(true)) && link.status != "archived";
    html! {
        (badge(Some(&link.status)))
        @if archived_repo { " " (badge(Some("archived"))) }
    }
}

/// The URL linking to the link's page; struck through and red when the link is inaccessible.
fn url_cell(link: &Link) -> Markup {
    html! {
        a href={ "/links/" (link.id) } class=[(link.status == "inaccessible").then_some("dead-url")] { (link.url) }
    }
}

/// `GET /links/{id}`.
pub async fn show(
    viewer: Viewer,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    link_page(&viewer, &state, &id, None, None).await
}

/// A link's page, with a notice or an error from a form on it.
async fn link_page(
    viewer: &Viewer,
    state: &AdminState,
    id: &str,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let detail = links_api::show(State(state.clone()), Path(id.to_owned()))
        .await
        .map_err(|e| PageError::from(e).back_to("/links"))?
        .0;
    let link = &detail.link;
    let body = html! {
        p.url-line {
            @if let Some(icon) = web_url(link.favicon_url.as_deref()) {
                img.favicon src=(icon) alt="" referrerpolicy="no-referrer";
                " "
            }
            @match web_url(Some(&link.url)) {
                Some(url) => { a #link-url href=(url) rel="noreferrer noopener" class=[(link.status == "inaccessible").then_some("dead-url")] { (link.url) } }
                None => { span #link-url { (link.url) } }
            }
            " " (status_badges(link))
        }
        @if viewer.is_admin() {
            p {
                @if link.status != "active" {
                    form.inline #activate method="post" action={ "/links/" (link.id) "/activate" } {
                        (csrf(viewer)) button type="submit" #activate-button { "Mark active" }
                    }
                    " "
                }
                form.inline #check method="post" action={ "/links/" (link.id) "/check" } {
                    (csrf(viewer)) button type="submit" #check-button { "Check now" }
                }
            }
        }
        dl.facts #link {
            dt { "title" } dd #link-title { (link.title.as_deref().unwrap_or("-")) }
            dt { "description" } dd #link-description { (link.description.as_deref().unwrap_or("-")) }
            dt { "site" } dd { (link.site_name.as_deref().unwrap_or("-")) }
            dt { "status reason" } dd { (link.status_reason.as_deref().unwrap_or("-")) }
            dt { "failures in a row" } dd { (link.consecutive_failures) }
            dt { "last check" } dd { (when(link.last_checked_at)) " " (badge(link.last_outcome.as_deref())) " "
                (link.last_status_code.map(|c| format!("HTTP {c}")).unwrap_or_default()) }
            dt { "last error" } dd #link-error { (link.last_error.as_deref().unwrap_or("-")) }
            dt { "dead since" } dd { (when(detail.history.dead_since)) }
            dt { "last ok" } dd { (when(detail.history.last_ok_at)) }
            dt { "ok share" } dd { (detail.history.ok_share.map_or_else(|| "-".to_owned(), |s| format!("{:.0} %", s * 100.0))) }
            dt { "refreshed" } dd { (when(link.refreshed_at)) }
            dt { "saved" } dd { (when(Some(link.created_at))) }
            @if let Some(github) = &link.github {
                dt { "GitHub" } dd #link-github {
                    (github.owner) "/" (github.repo) " · ★ " (github.stars.map_or_else(|| "-".to_owned(), |s| s.to_string()))
                    @if github.archived == Some(true) { " · " (badge(Some("archived"))) }
                }
            }
            dt { "trace" } dd {
                (trace_link(detail.trace_url.as_deref(), link.last_trace_id.as_deref(), "Open the latest job's trace in Jaeger"))
            }
            @if let Some(about) = link.github.as_ref().and_then(|g| g.description.as_deref()) {
                dt { "repository" } dd { (about) }
            }
            dt { "jobs" } dd { a href={ "/jobs?link=" (link.id) } { "This link's jobs" } }
        }
        @if let Some(image) = web_url(link.image_url.as_deref()) {
            h2 { "Preview image" }
            img.preview src=(image) alt="" referrerpolicy="no-referrer";
        }
        h2 { "Recent verdicts" }
        @if detail.history.verdicts.is_empty() {
            p.muted { "None kept." }
        } @else {
            table #verdicts {
                tr { th { "checked" } th { "outcome" } th.n { "code" } th.n { "duration" } th { "error" } }
                @for v in &detail.history.verdicts {
                    tr {
                        td { (when(Some(v.checked_at))) } td { (badge(Some(&v.outcome))) }
                        td.n { (v.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string())) }
                        td.n { (v.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))) }
                        td { (v.error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        h2 { "Status changes" }
        @if detail.history.events.is_empty() {
            p.muted { "None kept." }
        } @else {
            table #events {
                tr { th { "at" } th { "event" } th { "from → to" } th { "reason" } th { "by" } }
                @for e in &detail.history.events {
                    tr {
                        td { (when(Some(e.at))) } td { (e.kind) } td { (e.from) " → " (e.to) }
                        td { (e.reason.as_deref().unwrap_or("")) }
                        td { @if let Some(job) = e.job_id { a href={ "/jobs/" (job) } { "job " (job) } } @else { (e.actor.as_deref().unwrap_or("")) } }
                    }
                }
            }
        }
    };
    let page = Page {
        title: format!("Link {}", link.id),
        nav: "/links",
        notice,
        error,
        ..Page::default()
    };
    Ok(respond(page.status(), layout::page(viewer, &page, &body)))
}

/// `POST /links/{id}/activate`: manual override, status active and failures reset.
pub async fn activate(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    _form: CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    links::activate(&state.pool, &LinkRef::Id(id), "dashboard")
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no link {id}.")).back_to("/links"))?;
    Ok(see_other(&format!("/links/{id}")))
}

/// `POST /links/{id}/check`: a check now, ahead of scheduled work; the page says whether a new
/// job was enqueued or one was already waiting, or why not (a paused link).
pub async fn check_now(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    let viewer = Viewer {
        session: Some(form.session),
    };
    let id_text = id.to_string();
    match links_api::enqueue(&state, &id_text, CHECK).await {
        Ok((_, answer)) => {
            let job = answer.0.job_id;
            let notice = if answer.0.enqueued {
                format!("Check enqueued as job {job}.")
            } else {
                format!("A check of this link is already queued or running (job {job}).")
            };
            link_page(&viewer, &state, &id_text, Some(notice), None).await
        }
        Err(ApiError::Conflict(why)) => link_page(&viewer, &state, &id_text, None, Some(why)).await,
        Err(other) => Err(PageError::from(other).back_to(format!("/links/{id}"))),
    }
}
