//! `producer queue …`

use std::io::Write;
use std::time::Duration;

use sqlx::PgPool;

use linkpulse_queue::{CancelSelection, JobFilter, JobState, JobSummary, control, inspect};
use linkpulse_shared::config::Settings;
use linkpulse_shared::link_jobs::{KINDS, dedupe_key};

use super::links::{find, io};
use crate::cli::{CliError, print_json};

/// `queue stats`.
///
/// # Errors
///
/// Internal errors from the database.
pub async fn stats(pool: &PgPool, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let stats = inspect::stats(pool, &KINDS).await?;
    if json {
        return print_json(out, &stats);
    }
    writeln!(
        out,
        "{:<10} {:>9} {:>9} {:>9} {:>9}  {:<13} {:>9} {:>10} {:>10}",
        "KIND", "QUEUED", "RUNNING", "DONE", "FAILED", "OLDEST QUEUED", "DONE 24H", "FAILED 24H", "MEAN 24H"
    )
    .map_err(io)?;
    for (kind, s) in &stats.kinds {
        let age = s
            .oldest_queued_age_seconds
            .map(|a| format!("{a:.1}s"))
            .unwrap_or_else(|| "-".into());
        let mean = s
            .mean_duration_ms_24h
            .map(|ms| format!("{ms:.0}ms"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{kind:<10} {:>9} {:>9} {:>9} {:>9}  {age:<13} {:>9} {:>10} {mean:>10}",
            s.queued, s.running, s.done, s.failed, s.done_24h, s.failed_24h
        )
        .map_err(io)?;
    }
    for p in control::paused(pool).await? {
        writeln!(
            out,
            "{} is paused since {} by {}{}",
            p.kind,
            p.paused_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            p.paused_by,
            p.reason.map(|r| format!(": {r}")).unwrap_or_default()
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `queue list`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown kind; internal errors from the database.
pub async fn list(
    pool: &PgPool,
    state: Option<JobState>,
    kind: Option<String>,
    limit: i64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    check_kind(kind.as_deref())?;
    let filter = JobFilter {
        state,
        kind,
        ..JobFilter::default()
    };
    let jobs = inspect::list(pool, &filter, limit).await?;
    if json {
        return print_json(out, &jobs);
    }
    writeln!(
        out,
        "{:>10}  {:<8} {:<8} {:<10} {:>8}  {:<10} {:>4} {:>9}  {:<20}  {:<32}  ERROR / REASON",
        "ID", "KIND", "STATE", "LINK", "ATTEMPTS", "RESULT", "CODE", "DURATION", "AT", "TRACE"
    )
    .map_err(io)?;
    for j in &jobs {
        writeln!(
            out,
            "{:>10}  {:<8} {:<8} {:<10} {:>5}/{:<2}  {:<10} {:>4} {:>9}  {:<20}  {:<32}  {}",
            j.id,
            j.kind,
            j.state,
            j.dedupe_key.as_deref().unwrap_or("-"),
            j.attempts,
            j.max_attempts,
            j.result_class.as_deref().unwrap_or("-"),
            j.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            j.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms")),
            job_time(j).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            j.trace_id.as_deref().unwrap_or("-"),
            j.problem().unwrap_or("")
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The one time a job row shows: when it is due (queued), started (running) or finished.
fn job_time(job: &JobSummary) -> chrono::DateTime<chrono::Utc> {
    match (job.finished_at, job.started_at) {
        (Some(finished), _) => finished,
        (None, Some(started)) if job.state == "running" => started,
        _ => job.run_at,
    }
}

/// Which finished jobs `queue requeue` moves back, or which queued jobs `queue cancel` discards
/// (job, kind and link only); every filter optional, all must match.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this link's jobs (id or URL).
    pub link: Option<String>,
    /// Only this job.
    pub job: Option<i64>,
    /// Only jobs finished longer ago than this.
    pub older_than: Option<Duration>,
}

/// `queue requeue`.
///
/// # Errors
///
/// [`CliError::User`] for a state that is not finished, an unknown kind or link.
pub async fn requeue(
    pool: &PgPool,
    state: JobState,
    selection: Selection,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Selection {
        kind,
        link,
        job,
        older_than,
    } = selection;
    if !matches!(state, JobState::Failed | JobState::Done) {
        return Err(CliError::User(format!(
            "only failed or done jobs can be requeued, not {state}"
        )));
    }
    check_kind(kind.as_deref())?;
    let dedupe = match link {
        Some(link) => Some(dedupe_key(find(pool, &link).await?.id)),
        None => None,
    };
    let filter = JobFilter {
        state: Some(state),
        kind,
        dedupe_key: dedupe,
        older_than,
        id: job,
        ..JobFilter::default()
    };
    let report = inspect::requeue(pool, state, &filter).await?;
    if json {
        return print_json(out, &serde_json::json!({ "requeued": report.requeued }));
    }
    writeln!(out, "requeued {} job(s)", report.requeued).map_err(io)?;
    if report.skipped > 0 {
        writeln!(
            out,
            "skipped {} job(s) whose link already has a queued or running job",
            report.skipped
        )
        .map_err(io)?;
    }
    if let Some(id) = job
        && report.requeued == 0
        && report.skipped == 0
    {
        // Say why the one job asked for did not move.
        let found = inspect::list(
            pool,
            &JobFilter {
                id: Some(id),
                ..JobFilter::default()
            },
            1,
        )
        .await?;
        match found.first() {
            Some(j) if j.state != state.as_str() => writeln!(out, "job {id} is {}, not {state}", j.state),
            Some(_) => writeln!(out, "job {id} does not match the other filters"),
            None => writeln!(out, "no job {id} (never existed, or pruned)"),
        }
        .map_err(io)?;
    }
    Ok(())
}

/// `queue prune`.
///
/// # Errors
///
/// Internal errors from the database.
pub async fn prune(
    pool: &PgPool,
    settings: &Settings,
    older_than: Option<Duration>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let pruned = match older_than {
        Some(age) => inspect::prune(pool, age).await?,
        None => {
            let mut conn = pool.acquire().await.map_err(linkpulse_queue::QueueError::from)?;
            linkpulse_queue::maintenance::prune_finished(
                &mut conn,
                settings.queue.retain_done,
                settings.queue.retain_failed,
                5000,
                usize::MAX,
            )
            .await?
        }
    };
    if json {
        return print_json(out, &serde_json::json!({ "pruned": pruned }));
    }
    writeln!(out, "pruned {pruned} finished job(s)").map_err(io)
}

/// `queue recount`: `{"corrections":[{"kind","state","delta"}]}`, or one line per correction.
///
/// # Errors
///
/// Internal errors from the database.
pub async fn recount(pool: &PgPool, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let corrections = linkpulse_queue::counts::recount(pool).await?;
    if json {
        return print_json(out, &serde_json::json!({ "corrections": corrections }));
    }
    if corrections.is_empty() {
        return writeln!(out, "the finished-job counters match the job table").map_err(io);
    }
    for c in &corrections {
        writeln!(out, "{} {}: {:+}", c.kind, c.state, c.delta).map_err(io)?;
    }
    Ok(())
}

/// Who a pause or cancel from the command line is recorded as: `cli:$USER`, or `cli` when the
/// environment does not say.
fn actor() -> String {
    match std::env::var("USER") {
        Ok(user) if !user.is_empty() => format!("cli:{user}"),
        _ => "cli".to_owned(),
    }
}

/// `queue pause KIND`: `{"kind":"check","paused":true}`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown kind; internal errors from the database.
pub async fn pause(
    pool: &PgPool,
    kind: &str,
    reason: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    check_kind(Some(kind))?;
    let newly = control::pause(pool, kind, &actor(), reason).await?;
    if json {
        return print_json(out, &serde_json::json!({ "kind": kind, "paused": true }));
    }
    if newly {
        writeln!(
            out,
            "paused {kind}: workers stop claiming it within one poll interval; running jobs finish"
        )
    } else {
        writeln!(out, "{kind} was already paused")
    }
    .map_err(io)
}

/// `queue resume KIND`: `{"kind":"check","paused":false}`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown kind; internal errors from the database.
pub async fn resume(pool: &PgPool, kind: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    check_kind(Some(kind))?;
    let was_paused = control::resume(pool, kind).await?;
    if json {
        return print_json(out, &serde_json::json!({ "kind": kind, "paused": false }));
    }
    if was_paused {
        writeln!(out, "resumed {kind}: workers claim it again")
    } else {
        writeln!(out, "{kind} was not paused")
    }
    .map_err(io)
}

/// `queue cancel`: `{"cancelled":N}`. Uses the `job`, `kind` and `link` of `selection`.
///
/// # Errors
///
/// [`CliError::User`] without any filter, for an unknown kind or link; internal errors from the
/// database.
pub async fn cancel(
    pool: &PgPool,
    selection: Selection,
    reason: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Selection { kind, link, job, .. } = selection;
    if job.is_none() && kind.is_none() && link.is_none() {
        return Err(CliError::User(
            "cancel needs --job ID, --kind K or --link ID|URL (it never cancels every queued job)".into(),
        ));
    }
    check_kind(kind.as_deref())?;
    let dedupe = match link {
        Some(link) => Some(dedupe_key(find(pool, &link).await?.id)),
        None => None,
    };
    let selection = CancelSelection {
        id: job,
        kind,
        dedupe_key: dedupe,
    };
    let cancelled = control::cancel(pool, &selection, reason, &actor()).await?;
    if json {
        return print_json(out, &serde_json::json!({ "cancelled": cancelled }));
    }
    writeln!(out, "cancelled {cancelled} queued job(s)").map_err(io)?;
    if let Some(id) = job
        && cancelled == 0
    {
        // Say why the one job asked for was left alone.
        let found = inspect::list(
            pool,
            &JobFilter {
                id: Some(id),
                ..JobFilter::default()
            },
            1,
        )
        .await?;
        match found.first() {
            Some(j) => writeln!(out, "job {id} is {}, not queued", j.state),
            None => writeln!(out, "no job {id} (never existed, or pruned)"),
        }
        .map_err(io)?;
    }
    Ok(())
}

fn check_kind(kind: Option<&str>) -> Result<(), CliError> {
    match kind {
        Some(k) if !KINDS.contains(&k) => Err(CliError::User(format!(
            "unknown kind {k:?} (expected check, refresh or deliver)"
        ))),
        _ => Ok(()),
    }
}
