//! `/schedules`: every schedule (its trigger as written and in words, time zone, next and last
//! run, limit) with an enable/disable toggle and a "run now" button, and the recent runs.
//!
//! "Run now" starts real work, so its first post only renders a confirmation page; the run happens
//! on the second post, which carries `confirm=yes`. The toggle posts the state the button showed
//! rather than "flip", so a double click or a stale second tab cannot undo the first click.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use crate::admin::AdminState;
use crate::schedules::runner::{self, RunError};
use crate::schedules::store::{self, Change, ChangeError, RunFilter, Schedule};

use super::layout::{self, Page, badge, csrf, when};
use super::session::CsrfForm;
use super::{PageError, Viewer, respond, see_other};

/// Who dashboard changes and runs are recorded as (`schedules.updated_by`,
/// `schedule_runs.requested_by`).
const ACTOR: &str = "dashboard";
/// Runs shown in the "Recent runs" table.
const RUNS_SHOWN: i64 = 20;

/// A schedule's trigger as written: its cron expression or `every <interval>`.
pub fn trigger(schedule: &Schedule) -> String {
    match (&schedule.every, &schedule.cron) {
        (_, Some(cron)) => cron.clone(),
        (Some(every), None) => format!("every {every}"),
        (None, None) => String::new(),
    }
}

/// `GET /schedules`.
pub async fn page(viewer: Viewer, State(state): State<AdminState>) -> Result<Response, PageError> {
    let schedules = store::list(&state.readers).await?;
    let filter = RunFilter {
        limit: Some(RUNS_SHOWN),
        ..RunFilter::default()
    };
    let runs = store::runs(&state.readers, &filter).await?;
    let admin = viewer.is_admin();
    let body = html! {
        table #schedules {
            tr {
                th { "name" } th { "trigger" } th { "in words" } th { "time zone" } th { "enabled" }
                th { "next run" } th { "last run" } th.n { "limit" } @if admin { th {} }
            }
            @for s in &schedules {
                tr id={ "schedule-" (s.name) } data-enabled=(s.enabled) {
                    td { (s.name) }
                    td { code { (trigger(s)) } }
                    td { (s.description) }
                    td { (s.timezone) }
                    td.enabled { (if s.enabled { "yes" } else { "no" }) }
                    td.next { (when(s.next_run_at)) }
                    td.last { (when(s.last_run_at)) " " (badge(s.last_status.as_deref())) }
                    td.n { (s.limit) }
                    @if admin { td { (buttons(&viewer, s)) } }
                }
            }
        }
        h2 { "Recent runs" }
        table #runs {
            tr {
                th.n { "id" } th { "schedule" } th { "trigger" } th { "status" } th { "started" }
                th.n { "duration" } th.n { "enqueued" } th.n { "skipped" } th { "error" }
            }
            @for run in &runs {
                tr id={ "run-" (run.id) } {
                    td.n { (run.id) }
                    td { (run.schedule) }
                    td.trigger { (run.trigger) @if let Some(by) = &run.requested_by { " (" (by) ")" } }
                    td.status { (badge(Some(&run.status))) }
                    td { (when(Some(run.started_at))) }
                    td.n { (run.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))) }
                    td.n { (run.enqueued.map_or_else(|| "-".to_owned(), |n| n.to_string())) }
                    td.n { (run.skipped.map_or_else(|| "-".to_owned(), |n| n.to_string())) }
                    td.error { (run.error.as_deref().unwrap_or("")) }
                }
            }
        }
    };
    let page = Page {
        title: "Schedules".to_owned(),
        nav: "/schedules",
        ..Page::default()
    };
    Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)))
}

/// A schedule's toggle and run-now forms.
fn buttons(viewer: &Viewer, schedule: &Schedule) -> Markup {
    let (label, target) = if schedule.enabled {
        ("Disable", "false")
    } else {
        ("Enable", "true")
    };
    html! {
        form.inline method="post" action={ "/schedules/" (schedule.name) "/toggle" } {
            (csrf(viewer))
            input type="hidden" name="enabled" value=(target);
            button type="submit" id={ "toggle-" (schedule.name) } { (label) }
        }
        " "
        form.inline method="post" action={ "/schedules/" (schedule.name) "/run" } {
            (csrf(viewer))
            button type="submit" id={ "run-" (schedule.name) } { "Run now" }
        }
    }
}

/// The toggle's form.
#[derive(Debug, Deserialize)]
pub struct ToggleForm {
    enabled: Option<String>,
}

/// `POST /schedules/{name}/toggle`: sets `enabled` to the form's value (what the button showed),
/// or flips it when the form has none.
pub async fn toggle(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    CsrfForm { form, .. }: CsrfForm<ToggleForm>,
) -> Result<Response, PageError> {
    let back = |e: PageError| e.back_to("/schedules");
    let enabled = match form.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(back(PageError::bad_request(format!(
                "enabled must be true or false, not {other:?}."
            ))));
        }
        None => {
            let current = store::get(&state.pool, &name)
                .await?
                .ok_or_else(|| back(PageError::not_found(format!("There is no schedule {name:?}."))))?;
            !current.enabled
        }
    };
    let change = Change {
        enabled: Some(enabled),
        ..Change::default()
    };
    store::update(&state.pool, &name, &change, ACTOR)
        .await
        .map_err(|e| back(change_error(e)))?;
    Ok(see_other(&format!("/schedules#schedule-{name}")))
}

/// A schedule change's failure as a page (as the API would answer it).
fn change_error(error: ChangeError) -> PageError {
    crate::admin::ApiError::from(error).into()
}

/// The run-now form.
#[derive(Debug, Deserialize)]
pub struct RunForm {
    confirm: Option<String>,
}

/// `POST /schedules/{name}/run`: without `confirm=yes`, the confirmation page (nothing runs); with
/// it, runs the schedule now and goes back to the page at the run's row. A schedule already running
/// answers a page saying so (409).
pub async fn run(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    CsrfForm { form, session }: CsrfForm<RunForm>,
) -> Result<Response, PageError> {
    let viewer = Viewer { session: Some(session) };
    let schedule = store::get(&state.readers, &name)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no schedule {name:?}.")).back_to("/schedules"))?;
    if form.confirm.as_deref() != Some("yes") {
        return Ok(confirmation(&viewer, &schedule));
    }
    match runner::run_now(&state.pool, &state.settings, &name, ACTOR).await {
        Ok(run) => Ok(see_other(&format!("/schedules#run-{}", run.id))),
        Err(RunError::Busy(_)) => Err(PageError::new(
            StatusCode::CONFLICT,
            format!(
                "Schedule {name} is running already: another run is in progress and it was not started again. Try again when that run ends."
            ),
        )
        .back_to("/schedules")),
        Err(error) => Err(PageError::from(crate::admin::ApiError::from(error)).back_to("/schedules")),
    }
}

/// The "Run schedule X now?" page: what the run does, a Confirm button posting `confirm=yes`, and
/// a way back.
fn confirmation(viewer: &Viewer, schedule: &Schedule) -> Response {
    let what = match schedule.name.as_str() {
        "prune" => format!("It deletes up to {} expired rows per table.", schedule.limit),
        name => format!("It enqueues up to {} due {name} jobs.", schedule.limit),
    };
    let body = html! {
        p { (what) " Its planned runs (" (schedule.description) ") stay as they are." }
        form #confirm method="post" action={ "/schedules/" (schedule.name) "/run" } {
            (csrf(viewer))
            input type="hidden" name="confirm" value="yes";
            button type="submit" #confirm-run { "Confirm" }
        }
        " "
        a #cancel href="/schedules" { "Cancel" }
    };
    let page = Page {
        title: format!("Run schedule {} now?", schedule.name),
        nav: "/schedules",
        ..Page::default()
    };
    respond(StatusCode::OK, layout::page(viewer, &page, &body))
}
