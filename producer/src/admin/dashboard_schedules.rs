//! The dashboard's schedules section: every schedule (its trigger as written and in words, time
//! zone, next and last run with a status badge, limit) with an enable/disable toggle and a
//! "run now" button, and the recent runs.
//!
//! Like the rest of the dashboard it works without JavaScript: each button is a `<form
//! method=post>` authenticated by the admin-token cookie ([`super::dashboard`]). "Run now" starts
//! real work, so its first post only renders a confirmation page; the run happens on the second
//! post, which carries `confirm=yes`. Bodies are parsed leniently as URL-encoded pairs whatever
//! their `Content-Type`, so a stray post without the field can only ever reach the confirmation.

use std::fmt::Write as _;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::schedules::runner::{self, RunError};
use crate::schedules::store::{self, Change, ChangeError, Run, RunFilter, Schedule};

use super::dashboard::{back_to_page, cookie_token, escape};
use super::{AdminState, ApiError, auth};

/// Who dashboard changes and runs are recorded as (`schedules.updated_by`,
/// `schedule_runs.requested_by`).
const ACTOR: &str = "dashboard";
/// Runs shown in the "Recent runs" table.
const RUNS_SHOWN: i64 = 20;
/// The badge colours, scoped to this section so the page's own stylesheet stays untouched.
const STYLE: &str = "<style>.badge{display:inline-block;padding:0 .5em;border-radius:.8em;font-size:.9em;color:#fff;background:#777}\
     .badge.ok{background:#2e7d32}.badge.failed{background:#c62828}.badge.missed,.badge.abandoned{background:#e6a100;color:#222}\
     .badge.running{background:#1565c0}td form{display:inline}</style>";

/// The schedules' routes, merged into the dashboard's.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/dashboard/schedules/{name}/toggle", post(toggle))
        .route("/dashboard/schedules/{name}/run", post(run))
}

/// The section's HTML: the schedules table and the recent runs table, read from `readers`.
///
/// # Errors
///
/// If the database fails.
pub(super) async fn section(readers: &PgPool) -> Result<String, ApiError> {
    let schedules = store::list(readers).await?;
    let runs = store::runs(
        readers,
        &RunFilter {
            limit: Some(RUNS_SHOWN),
            ..RunFilter::default()
        },
    )
    .await?;
    let mut html = String::from(STYLE);
    html.push_str(
        "<h2>Schedules</h2><table id=schedules><tr><th>name</th><th>trigger</th><th>in words</th><th>time zone</th>\
         <th>enabled</th><th>next run</th><th>last run</th><th>limit</th><th></th></tr>",
    );
    for schedule in &schedules {
        schedule_row(&mut html, schedule);
    }
    html.push_str("</table>");

    html.push_str(
        "<h2>Recent runs</h2><table id=runs><tr><th>id</th><th>schedule</th><th>trigger</th><th>status</th>\
         <th>started</th><th>duration</th><th>enqueued</th><th>skipped</th><th>error</th></tr>",
    );
    for run in &runs {
        run_row(&mut html, run);
    }
    html.push_str("</table>");
    Ok(html)
}

/// One schedule's row with its two forms.
fn schedule_row(html: &mut String, schedule: &Schedule) {
    let name = escape(&schedule.name);
    let written = match (&schedule.every, &schedule.cron) {
        (_, Some(cron)) => cron.clone(),
        (Some(every), None) => format!("every {every}"),
        (None, None) => String::new(),
    };
    let (state, button, target) = if schedule.enabled {
        ("yes", "Disable", "false")
    } else {
        ("no", "Enable", "true")
    };
    let last = match schedule.last_run_at {
        Some(at) => format!("{} {}", when(Some(at)), badge(schedule.last_status.as_deref())),
        None => "-".to_owned(),
    };
    let _ = write!(
        html,
        "<tr id=\"schedule-{name}\" data-enabled={enabled}><td>{name}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
         <td class=enabled>{state}</td><td class=next>{}</td><td class=last>{last}</td><td class=n>{}</td><td>\
         <form method=post action=\"/dashboard/schedules/{name}/toggle\"><input type=hidden name=enabled value={target}>\
         <button type=submit id=\"toggle-{name}\">{button}</button></form> \
         <form method=post action=\"/dashboard/schedules/{name}/run\"><button type=submit id=\"run-{name}\">Run now</button></form>\
         </td></tr>",
        escape(&written),
        escape(&schedule.description),
        escape(&schedule.timezone),
        when(schedule.next_run_at),
        schedule.limit,
        enabled = schedule.enabled,
    );
}

/// One run's row.
fn run_row(html: &mut String, run: &Run) {
    let trigger = match &run.requested_by {
        Some(by) => format!("{} ({})", escape(&run.trigger), escape(by)),
        None => escape(&run.trigger),
    };
    let count = |n: Option<i64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let _ = write!(
        html,
        "<tr id=\"run-{id}\"><td>{id}</td><td>{}</td><td class=trigger>{trigger}</td><td class=status>{}</td><td>{}</td>\
         <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=error>{}</td></tr>",
        escape(&run.schedule),
        badge(Some(&run.status)),
        when(Some(run.started_at)),
        run.duration_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
        count(run.enqueued),
        count(run.skipped),
        escape(run.error.as_deref().unwrap_or("")),
        id = run.id,
    );
}

/// A status as a coloured badge; the class is one of the known statuses or `other`, never the
/// stored text itself.
fn badge(status: Option<&str>) -> String {
    let Some(status) = status else {
        return "-".to_owned();
    };
    let class = match status {
        "ok" | "failed" | "missed" | "abandoned" | "running" => status,
        _ => "other",
    };
    format!("<span class=\"badge {class}\">{}</span>", escape(status))
}

/// A time in UTC to the second, `-` for none.
fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The value of `field` in a URL-encoded form body, if present.
fn form_field(body: &[u8], field: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == field)
        .map(|(_, value)| value.into_owned())
}

/// A small page of its own (confirmation, busy), in the dashboard's look.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{title} - linkpulse</title>\
         <style>body{{font-family:sans-serif;margin:2em}}form{{display:inline}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}

/// `POST /dashboard/schedules/{name}/toggle`: sets `enabled` to the form's value (`true` or
/// `false`, what the button showed), or flips it when the form has none. Sending the target rather
/// than "flip" keeps a double click or a stale second tab from undoing the first click.
async fn toggle(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth::check(state.settings.admin_token.as_ref(), cookie_token(&headers))?;
    let enabled = match form_field(&body, "enabled").as_deref() {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "enabled must be true or false, not {other:?}"
            )));
        }
        None => {
            let current = store::get(&state.pool, &name)
                .await?
                .ok_or_else(|| ChangeError::Unknown(name.clone()))?;
            !current.enabled
        }
    };
    let change = Change {
        enabled: Some(enabled),
        ..Change::default()
    };
    store::update(&state.pool, &name, &change, ACTOR).await?;
    Ok(back_to_page())
}

/// `POST /dashboard/schedules/{name}/run`: without `confirm=yes`, the confirmation page (nothing
/// runs); with it, runs the schedule now and goes back to the page, at the run's row. A schedule
/// already running answers a page saying so (409), not an error object.
async fn run(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth::check(state.settings.admin_token.as_ref(), cookie_token(&headers))?;
    if form_field(&body, "confirm").as_deref() != Some("yes") {
        let schedule = store::get(&state.readers, &name)
            .await?
            .ok_or_else(|| ChangeError::Unknown(name.clone()))?;
        return Ok(Html(confirmation(&schedule)).into_response());
    }
    match runner::run_now(&state.pool, &state.settings, &name, ACTOR).await {
        Ok(run) => {
            let location = format!("/#run-{}", run.id);
            Ok((StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response())
        }
        Err(RunError::Busy(_)) => {
            let name = escape(&name);
            let html = page(
                &format!("Schedule {name} is running already"),
                "<p id=busy>Another run of this schedule is in progress; it was not started again. \
                 Try again when that run ends.</p><p><a href=\"/\" id=back>Back to the dashboard</a></p>",
            );
            Ok((StatusCode::CONFLICT, Html(html)).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// The "Run schedule X now?" page: what the run does, a Confirm button posting `confirm=yes`,
/// and a way back.
fn confirmation(schedule: &Schedule) -> String {
    let name = escape(&schedule.name);
    let what = match schedule.name.as_str() {
        "prune" => format!("It deletes up to {} expired rows per table.", schedule.limit),
        _ => format!("It enqueues up to {} due {name} jobs.", schedule.limit),
    };
    page(
        &format!("Run schedule {name} now?"),
        &format!(
            "<p>{what} Its planned runs ({}) stay as they are.</p>\
             <form id=confirm method=post action=\"/dashboard/schedules/{name}/run\">\
             <input type=hidden name=confirm value=yes><button type=submit id=confirm-run>Confirm</button></form> \
             <a href=\"/\" id=cancel>Cancel</a>",
            escape(&schedule.description),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_field_reads_url_encoded_pairs() {
        assert_eq!(form_field(b"a=1&confirm=yes", "confirm").as_deref(), Some("yes"));
        assert_eq!(form_field(b"confirm=y%65s", "confirm").as_deref(), Some("yes"));
        assert_eq!(form_field(b"", "confirm"), None);
        assert_eq!(form_field(b"{\"confirm\":\"yes\"}", "confirm"), None);
    }

    #[test]
    fn badge_class_is_never_the_stored_text() {
        assert_eq!(badge(Some("ok")), "<span class=\"badge ok\">ok</span>");
        assert_eq!(
            badge(Some("\"><script>")),
            "<span class=\"badge other\">&quot;&gt;&lt;script&gt;</span>"
        );
        assert_eq!(badge(None), "-");
    }
}
