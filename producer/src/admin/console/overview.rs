//! `GET /`: the page an operator keeps open. Queue depth per kind × state with the oldest due age,
//! the last hour's throughput, the workers alive, the leader, the schedules and the webhooks.
//!
//! Every figure comes from something cheap to read whatever the retained history: the counters
//! and partial indexes behind `inspect::stats`, the per-minute counters, `queue_workers`,
//! `pg_locks`, the schedules and webhooks tables.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgPool;

use linkpulse_queue::{counts, detail, inspect};
use linkpulse_shared::link_jobs::KINDS;

use super::layout::{self, Page, age, badge, when};
use super::{PageError, Viewer, chart, respond};
use crate::admin::AdminState;
use crate::run::LEADER_LOCK_KEY;

/// Seconds between two reloads while auto-refresh is on.
pub const REFRESH_SECONDS: u32 = 5;

/// `?refresh=on|off`.
#[derive(Debug, Default, Deserialize)]
pub struct OverviewQuery {
    refresh: Option<String>,
}

/// The leader replica as the database sees it: the session holding the leader's advisory lock.
#[derive(Debug)]
struct Leader {
    client: Option<String>,
    since: Option<DateTime<Utc>>,
}

/// `GET /`.
pub async fn page(
    viewer: Viewer,
    State(state): State<AdminState>,
    Query(query): Query<OverviewQuery>,
) -> Result<Response, PageError> {
    let readers = &state.readers;
    let stats = inspect::stats(readers, &KINDS).await?;
    let now = Utc::now();
    let minutes = counts::finished_per_minute(readers, now - chrono::Duration::minutes(chart::MINUTES)).await?;
    let workers = detail::workers(readers).await?;
    let leader = leader(readers).await?;
    let schedules = crate::schedules::store::list(readers).await?;
    let paused = linkpulse_queue::control::paused(readers).await?;
    let webhooks = linkpulse_shared::webhooks::store::list(readers)
        .await
        .map_err(|e| PageError::from(crate::admin::webhooks::api_error(e)))?;
    let refreshing = query.refresh.as_deref() == Some("on");
    let rescue_after =
        chrono::Duration::from_std(state.settings.queue.rescue_after).unwrap_or(chrono::Duration::seconds(30));

    let body = html! {
        p {
            @if refreshing {
                "Auto-refresh every " (REFRESH_SECONDS) " s · " a #refresh-toggle href="/?refresh=off" { "turn off" }
            } @else {
                a #refresh-toggle href="/?refresh=on" { "Auto-refresh" }
            }
        }
        h2 { "Queue" }
        table #queue {
            tr {
                th { "kind" } th.n { "queued" } th.n { "running" } th.n { "done" } th.n { "failed" }
                th.n { "oldest due" } th.n { "done 24 h" } th.n { "failed 24 h" } th.n { "mean duration 24 h" }
            }
            @for (kind, s) in &stats.kinds {
                tr id={ "queue-" (kind) } {
                    td { (kind) @if paused.iter().any(|p| &p.kind == kind) { " " (badge(Some("paused"))) } }
                    @for (state_name, n) in [("queued", s.queued), ("running", s.running), ("done", s.done), ("failed", s.failed)] {
                        td.n data-state=(state_name) {
                            a href={ "/jobs?kind=" (kind) "&state=" (state_name) } { (n) }
                        }
                    }
                    td.n data-stat="oldest_due" { (age(s.oldest_queued_age_seconds)) }
                    td.n data-stat="done_24h" { (s.done_24h) }
                    td.n data-stat="failed_24h" { (s.failed_24h) }
                    td.n { (s.mean_duration_ms_24h.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))) }
                }
            }
        }
        h2 { "Finished per minute, last hour" }
        (chart::svg(&chart::per_minute(&minutes, now)))
        p.muted { "Green: done; red: failed." }

        h2 { "Workers" }
        (workers_table(&workers, now, rescue_after))
        h2 { "Leader" }
        p #leader {
            @match &leader {
                Some(l) => {
                    "The schedules run on the replica connected from "
                    code { (l.client.as_deref().unwrap_or("a local socket")) }
                    " (leader since " (when(l.since)) ")."
                }
                None => { "No replica holds the leader lock: no schedule runs (is `producer run` up?)." }
            }
        }
        h2 { "Schedules" }
        table #schedules {
            tr { th { "name" } th { "trigger" } th { "enabled" } th { "next run" } th { "last run" } }
            @for s in &schedules {
                tr id={ "schedule-" (s.name) } {
                    td { a href="/schedules" { (s.name) } }
                    td { code { (super::schedules::trigger(s)) } " " span.muted { (s.timezone) } }
                    td { (badge(Some(if s.enabled { "enabled" } else { "disabled" }))) }
                    td { (when(s.next_run_at)) }
                    td { (when(s.last_run_at)) " " (badge(s.last_status.as_deref())) }
                }
            }
        }
        h2 { "Webhooks" }
        (webhooks_table(&webhooks))
    };
    let page = Page {
        title: "Overview".to_owned(),
        nav: "/",
        refresh: refreshing.then_some(REFRESH_SECONDS),
        ..Page::default()
    };
    Ok(respond(StatusCode::OK, layout::page(&viewer, &page, &body)))
}

/// The workers table; one silent for the rescue threshold is marked lost.
fn workers_table(workers: &[detail::WorkerSummary], now: DateTime<Utc>, rescue_after: chrono::Duration) -> Markup {
    html! {
        @if workers.is_empty() {
            p.muted #no-workers { "No worker is registered." }
        } @else {
            table #workers {
                tr { th { "name" } th { "host" } th.n { "pid" } th { "started" } th { "last heartbeat" } th { "state" } th.n { "jobs held" } }
                @for w in workers {
                    @let lost = now - w.heartbeat_at > rescue_after;
                    tr id={ "worker-" (w.id) } {
                        td { (w.name) } td { (w.hostname) } td.n { (w.pid) }
                        td { (when(Some(w.started_at))) } td { (when(Some(w.heartbeat_at))) }
                        td { @if lost { (badge(Some("failed"))) " lost" } @else if w.draining { (badge(Some("paused"))) " draining" } @else { (badge(Some("ok"))) } }
                        td.n { (w.jobs_held) }
                    }
                }
            }
        }
    }
}

/// The webhooks table.
fn webhooks_table(webhooks: &[linkpulse_shared::webhooks::store::Webhook]) -> Markup {
    html! {
        @if webhooks.is_empty() {
            p.muted #no-webhooks { "No webhook is registered (" code { "producer webhooks add URL" } ")." }
        } @else {
            table #webhooks {
                tr { th.n { "id" } th { "state" } th { "events" } th { "url" } th { "last success" } th { "failing since" } th { "reason / last error" } }
                @for w in webhooks {
                    tr id={ "webhook-" (w.id) } {
                        td.n { (w.id) }
                        td data-state=(if w.enabled { "enabled" } else { "disabled" }) { (badge(Some(if w.enabled { "enabled" } else { "disabled" }))) }
                        td { (w.events.join(", ")) }
                        td.url { (w.url) }
                        td { (when(w.last_success_at)) }
                        td { (when(w.failing_since)) }
                        td { (w.disabled_reason.as_deref().or(w.last_error.as_deref()).unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// Who holds the leader's advisory lock (`LEADER_LOCK_KEY`, see [`crate::run`]), from `pg_locks`
/// and `pg_stat_activity`.
async fn leader(readers: &PgPool) -> Result<Option<Leader>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT host(a.client_addr) AS client, a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = (($1::int8 >> 32) & 4294967295)::oid AND l.objid = ($1::int8 & 4294967295)::oid
           LIMIT 1"#,
        LEADER_LOCK_KEY
    )
    .fetch_optional(readers)
    .await?;
    Ok(row.map(|r| Leader {
        client: r.client,
        since: r.backend_start,
    }))
}
