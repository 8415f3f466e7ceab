//! `/jobs`: the job list with filters (state, kind, result class, host, link) and keyset paging,
//! each row with its link's URL; `/jobs/{id}`: one job with its payload, every attempt's error,
//! timings, lease and trace, and requeue; bulk requeue of the filtered failed jobs after a
//! confirmation page that says how many.
//!
//! Listings go newest first by id; the next page starts below the last id shown (`before=`), so a
//! page costs the same wherever it is and new jobs never shift rows onto the next page.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use linkpulse_queue::inspect::{self, JobFilter, JobSummary};
use linkpulse_queue::{JobState, detail};
use linkpulse_shared::db::links::{self, LinkRef};
use linkpulse_shared::link_jobs::{KINDS, dedupe_key};

use super::layout::{self, Page, badge, csrf, trace_link, web_url, when};
use super::session::{CsrfForm, NoFields};
use super::{PageError, Viewer, respond, see_other};
use crate::admin::AdminState;

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;
/// Result classes the filter offers (what the queue records of an attempt).
const RESULT_CLASSES: [&str; 8] = [
    "ok",
    "dead",
    "transient",
    "blocked",
    "not_modified",
    "snoozed",
    "error",
    "cancelled",
];

/// The list's filters, as query parameters (empty = any).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct JobsQuery {
    /// `queued`, `running`, `done` or `failed`.
    #[serde(default)]
    pub state: String,
    /// A kind.
    #[serde(default)]
    pub kind: String,
    /// A result class.
    #[serde(default)]
    pub result: String,
    /// A host (concurrency group).
    #[serde(default)]
    pub host: String,
    /// A link's id or URL.
    #[serde(default)]
    pub link: String,
    /// Keyset cursor: only ids below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

impl JobsQuery {
    /// The filter, with the link resolved to its jobs' dedupe key.
    async fn filter(&self, state: &AdminState) -> Result<JobFilter, PageError> {
        let job_state = match self.state.trim() {
            "" => None,
            s => Some(
                s.parse::<JobState>()
                    .map_err(|e| PageError::bad_request(e).back_to("/jobs"))?,
            ),
        };
        let dedupe = match self.link.trim() {
            "" => None,
            input => {
                let reference = LinkRef::parse(input)
                    .map_err(|e| PageError::bad_request(format!("Link {input:?}: {e}.")).back_to("/jobs"))?;
                let link = links::find(&state.readers, &reference)
                    .await?
                    .ok_or_else(|| PageError::not_found(format!("There is no link {input:?}.")).back_to("/jobs"))?;
                Some(dedupe_key(link.id))
            }
        };
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(JobFilter {
            state: job_state,
            kind: text(&self.kind),
            dedupe_key: dedupe,
            result_class: text(&self.result),
            group_key: text(&self.host).map(|h| h.to_ascii_lowercase()),
            before_id: self.before,
            ..JobFilter::default()
        })
    }

    /// This query as a URL query string, with `before` replaced.
    fn with_before(&self, before: Option<i64>) -> String {
        let query = Self { before, ..self.clone() };
        serde_urlencoded::to_string(&query).unwrap_or_default()
    }
}

/// `GET /jobs`.
pub async fn list(
    viewer: Viewer,
    State(state): State<AdminState>,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    let filter = query.filter(&state).await?;
    let jobs = inspect::list(&state.readers, &filter, PAGE_SIZE).await?;
    let next = (i64::try_from(jobs.len()).unwrap_or(0) == PAGE_SIZE)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    let body = html! {
        (filters_form(&query))
        @if viewer.is_admin() && filter.state == Some(JobState::Failed) {
            form #bulk-requeue method="post" action="/jobs/requeue" {
                (csrf(&viewer))
                (hidden_filters(&query))
                button type="submit" #bulk-requeue-button { "Requeue every failed job matching these filters…" }
            }
        }
        (jobs_table(&jobs))
        (pager(&query, next))
    };
    let page = Page {
        title: "Jobs".to_owned(),
        nav: "/jobs",
        ..Page::default()
    };
    Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)))
}

/// The filters as a `GET` form.
fn filters_form(query: &JobsQuery) -> Markup {
    let states = JobState::ALL.map(JobState::as_str);
    html! {
        form.filters #filters method="get" action="/jobs" {
            (select("state", "State", &states, &query.state))
            (select("kind", "Kind", &KINDS, &query.kind))
            (select("result", "Result", &RESULT_CLASSES, &query.result))
            label { "Host" input #filter-host type="text" name="host" value=(query.host) placeholder="example.org"; }
            label { "Link (id or URL)" input #filter-link type="text" name="link" value=(query.link); }
            button type="submit" #apply-filters { "Filter" }
            a href="/jobs" { "Clear" }
        }
    }
}

/// A `<select>` with an "any" option.
fn select(name: &str, label: &str, options: &[&str], chosen: &str) -> Markup {
    html! {
        label {
            (label)
            select id={ "filter-" (name) } name=(name) {
                option value="" { "any" }
                @for option in options {
                    option value=(option) selected[*option == chosen] { (option) }
                }
            }
        }
    }
}

/// The current filters as hidden fields (the bulk requeue posts exactly what is shown).
fn hidden_filters(query: &JobsQuery) -> Markup {
    html! {
        input type="hidden" name="kind" value=(query.kind);
        input type="hidden" name="result" value=(query.result);
        input type="hidden" name="host" value=(query.host);
        input type="hidden" name="link" value=(query.link);
    }
}

/// The jobs as a table, each row with its link's URL.
fn jobs_table(jobs: &[JobSummary]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.muted #no-jobs { "No job matches." }
        } @else {
            table #jobs {
                tr {
                    th.n { "id" } th { "kind" } th { "state" } th { "URL" } th { "host" } th.n { "attempts" }
                    th { "result" } th.n { "code" } th.n { "duration" } th { "created" } th { "finished" } th { "error / reason" }
                }
                @for job in jobs {
                    tr id={ "job-" (job.id) } data-state=(job.state) {
                        td.n { a href={ "/jobs/" (job.id) } { (job.id) } }
                        td { (job.kind) }
                        td { (badge(Some(&job.state))) }
                        td.url { (payload_link(job)) }
                        td { (job.group_key.as_deref().unwrap_or("")) }
                        td.n { (job.attempts) "/" (job.max_attempts) }
                        td.result { (badge(job.result_class.as_deref())) }
                        td.n { (job.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string())) }
                        td.n { (job.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))) }
                        td { (when(Some(job.created_at))) }
                        td { (when(job.finished_at)) }
                        td.problem { (job.problem().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The job's URL (from its payload) linking to its link's page when it is a link job.
fn payload_link(job: &JobSummary) -> Markup {
    let url = job.payload.get("url").and_then(|u| u.as_str()).unwrap_or("");
    match job.payload.get("link_id").and_then(serde_json::Value::as_i64) {
        Some(id) => html! { a href={ "/links/" (id) } { (url) } },
        None => html! { (url) },
    }
}

/// "Newest" and "Older" links.
fn pager(query: &JobsQuery, next: Option<i64>) -> Markup {
    html! {
        div.pager {
            @if query.before.is_some() {
                a #first-page href={ "/jobs?" (query.with_before(None)) } { "« Newest" }
            }
            @if let Some(before) = next {
                a #next-page href={ "/jobs?" (query.with_before(Some(before))) } { "Older »" }
            }
        }
    }
}

/// `GET /jobs/{id}`.
pub async fn show(viewer: Viewer, State(state): State<AdminState>, Path(id): Path<i64>) -> Result<Response, PageError> {
    job_page(&viewer, &state, id, None).await
}

/// A job's page, with `error` when a form on it could not be applied.
async fn job_page(viewer: &Viewer, state: &AdminState, id: i64, error: Option<String>) -> Result<Response, PageError> {
    let job = detail::job(&state.readers, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no job {id} (pruned, or never).")).back_to("/jobs"))?;
    let s = &job.summary;
    let trace = crate::admin::trace_url(&state.settings, s.trace_id.as_deref());
    let payload = serde_json::to_string_pretty(&s.payload).unwrap_or_default();
    let body = html! {
        dl.facts #job {
            dt { "kind" } dd { (s.kind) }
            dt { "state" } dd #job-state { (badge(Some(&s.state))) }
            dt { "URL" } dd { (payload_link(s)) }
            dt { "host" } dd { (s.group_key.as_deref().unwrap_or("-")) }
            dt { "dedupe key" } dd { (s.dedupe_key.as_deref().unwrap_or("-")) }
            dt { "attempts" } dd { (s.attempts) " of " (s.max_attempts) }
            dt { "priority" } dd { (job.priority) }
            dt { "result" } dd { (badge(s.result_class.as_deref())) " " (s.status_code.map(|c| format!("HTTP {c}")).unwrap_or_default()) }
            dt { "error / reason" } dd #job-problem { (s.problem().unwrap_or("-")) }
            dt { "created" } dd { (when(Some(s.created_at))) }
            dt { "run at" } dd { (when(Some(s.run_at))) }
            dt { "started" } dd { (when(s.started_at)) }
            dt { "finished" } dd { (when(s.finished_at)) }
            dt { "duration" } dd { (s.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))) }
            dt { "lease" } dd #job-lease {
                @match &job.lease {
                    None => { span.muted { "none (not running)" } }
                    Some(lease) => {
                        @match &lease.worker {
                            Some(w) => { (w.name) " on " (w.hostname) " (pid " (w.pid) "), last heartbeat " (when(Some(w.heartbeat_at))) }
                            None => { "worker " code { (lease.owner.to_string()) } " (no longer registered: the lease will be rescued)" }
                        }
                    }
                }
            }
            dt { "trace" } dd { (trace_link(trace.as_deref(), s.trace_id.as_deref(), "Open in Jaeger")) }
        }
        @if viewer.is_admin() && matches!(s.state.as_str(), "failed" | "done") {
            form #requeue method="post" action={ "/jobs/" (s.id) "/requeue" } {
                (csrf(viewer))
                button type="submit" #requeue-button { "Requeue" }
            }
        }
        h2 { "Attempts that went wrong" }
        @if job.errors.is_empty() {
            p.muted #no-errors { "None." }
        } @else {
            table #errors {
                tr { th.n { "attempt" } th { "at" } th { "what then" } th { "error" } }
                @for e in &job.errors {
                    tr { td.n { (e.attempt) } td { (when(Some(e.at))) } td { (e.kind.as_deref().unwrap_or("-")) } td { (e.error) } }
                }
            }
        }
        h2 { "Payload" }
        pre #payload { (payload) }
        @if let Some(url) = web_url(s.payload.get("url").and_then(|u| u.as_str())) {
            p.muted { "The URL itself: " a href=(url) rel="noreferrer noopener" { (url) } }
        }
    };
    let page = Page {
        title: format!("Job {id}"),
        nav: "/jobs",
        error,
        ..Page::default()
    };
    Ok(respond(page.status(), layout::page(viewer, &page, &body)))
}

/// `POST /jobs/{id}/requeue`: requeues exactly this job. When it cannot (no longer finished, or
/// its link has a queued or running job of that kind), the job's page says why (409).
pub async fn requeue(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    let viewer = Viewer {
        session: Some(form.session),
    };
    let current = detail::job(&state.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no job {id}.")).back_to("/jobs"))?;
    let job_state: JobState = current.summary.state.parse().map_err(PageError::bad_request)?;
    if !matches!(job_state, JobState::Failed | JobState::Done) {
        return job_page(
            &viewer,
            &state,
            id,
            Some(format!(
                "Job {id} was not requeued: it is {} (only finished jobs are).",
                current.summary.state
            )),
        )
        .await;
    }
    let filter = JobFilter {
        id: Some(id),
        ..JobFilter::default()
    };
    let report = inspect::requeue(&state.pool, job_state, &filter).await?;
    if report.requeued == 0 {
        let why = if report.skipped > 0 {
            "its link already has a queued or running job of that kind"
        } else {
            "it is no longer finished (requeued or pruned meanwhile)"
        };
        return job_page(&viewer, &state, id, Some(format!("Job {id} was not requeued: {why}."))).await;
    }
    Ok(see_other(&format!("/jobs/{id}")))
}

/// The bulk requeue's form: the list's filters, and `confirm=yes` on the second post.
#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(flatten)]
    query: JobsQuery,
    confirm: Option<String>,
}

/// `POST /jobs/requeue`: the first post shows how many failed jobs match the filters and asks;
/// the second (`confirm=yes`) requeues them and shows what it did.
pub async fn bulk_requeue(
    State(state): State<AdminState>,
    CsrfForm { form, session }: CsrfForm<BulkForm>,
) -> Result<Response, PageError> {
    let viewer = Viewer { session: Some(session) };
    let query = JobsQuery {
        state: "failed".to_owned(),
        before: None,
        ..form.query
    };
    let filter = query.filter(&state).await?;
    let back = format!("/jobs?{}", query.with_before(None));
    if form.confirm.as_deref() != Some("yes") {
        let matching = count_failed(&state, &filter).await?;
        let body = html! {
            p #bulk-count { (matching) " failed job(s) match these filters. Each gets a fresh set of attempts; skipped are a job whose link already has a queued or running job of its kind, and older failed jobs of a link whose newest one is requeued." }
            form #confirm method="post" action="/jobs/requeue" {
                (csrf(&viewer))
                (hidden_filters(&query))
                input type="hidden" name="confirm" value="yes";
                button type="submit" #confirm-requeue { "Requeue " (matching) " job(s)" }
            }
            " " a #cancel href=(back) { "Cancel" }
        };
        let page = Page {
            title: "Requeue failed jobs?".to_owned(),
            nav: "/jobs",
            ..Page::default()
        };
        return Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)));
    }
    let report = inspect::requeue(&state.pool, JobState::Failed, &filter).await?;
    let body = html! {
        p #bulk-done { "Requeued " (report.requeued) " job(s); skipped " (report.skipped) " (their link already had a queued or running job of their kind, or a newer failed one was requeued)." }
        p { a #back href=(back) { "Back to the failed jobs" } " · " a href="/jobs?state=queued" { "See the queued jobs" } }
    };
    let page = Page {
        title: "Requeued".to_owned(),
        nav: "/jobs",
        notice: Some(format!("{} job(s) requeued.", report.requeued)),
        ..Page::default()
    };
    Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)))
}

/// Failed jobs matching `filter` (the confirmation's figure).
async fn count_failed(state: &AdminState, filter: &JobFilter) -> Result<i64, PageError> {
    Ok(detail::count_finished(&state.readers, JobState::Failed, filter).await?)
}
