//! `producer links …`

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::Serialize;
use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::db::lifecycle::{self, LifecycleError};
use linkpulse_shared::db::links::{self, Link, LinkRef, ListFilter, NewLink, StatusChange};
use linkpulse_shared::github::parse_repo_url;
use linkpulse_shared::link_url::{LinkUrl, parse_link};
use linkpulse_shared::rules::Rules;

use crate::cli::{CliError, print_json};

/// One rejected input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// 1-based line number (imports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What was given.
    pub input: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Result of `links add`.
#[derive(Debug, Default, Serialize)]
pub struct AddReport {
    /// Newly saved (normalised) URLs.
    pub added: Vec<String>,
    /// Already saved.
    pub duplicates: Vec<String>,
    /// Refused, with reasons.
    pub rejected: Vec<Rejected>,
}

/// What is saved for a valid URL: the link, and its repository when it is a GitHub repository
/// page, so the refresh asks the API instead of scraping the page (and `links show` names the
/// repository before the first refresh).
pub fn new_link(link: LinkUrl) -> NewLink {
    let github = parse_repo_url(&link.url).map(|repo| (repo.owner, repo.repo));
    NewLink { link, github }
}

impl From<LifecycleError> for CliError {
    fn from(e: LifecycleError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

/// What became of one URL given to `links add` or `POST /api/links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddOutcome {
    /// Saved now, its first check and refresh enqueued.
    Accepted,
    /// Already saved (or given twice: the first is accepted).
    Duplicate,
    /// Not a URL we keep; `reason` says why.
    Rejected,
}

/// One URL's answer of [`add_urls`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AddResult {
    /// The normalised URL; the input as given when it was rejected.
    pub url: String,
    /// `accepted`, `duplicate` or `rejected`.
    pub result: AddOutcome,
    /// The link's id (accepted or duplicate; `null` when rejected).
    pub id: Option<i64>,
    /// Why it was rejected (`null` otherwise).
    pub reason: Option<String>,
}

/// Saves the valid ones of `inputs` with their first check and refresh enqueued at once
/// ([`lifecycle::add`]: one transaction, one set-based enqueue) and answers per input, in input
/// order, with the same normalisation and rules as `links import` (a link an exclude pattern
/// matches is accepted, saved `paused`, and gets no job).
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails; nothing is saved then.
pub async fn add_urls(
    pool: &PgPool,
    inputs: &[String],
    rules: &Rules,
    max_attempts: i32,
) -> Result<Vec<AddResult>, LifecycleError> {
    let mut results = Vec::with_capacity(inputs.len());
    let mut valid: Vec<NewLink> = Vec::new();
    let mut unique: HashSet<String> = HashSet::new();
    for input in inputs {
        match parse_link(input) {
            Ok(link) => {
                let url = link.url.to_string();
                if unique.insert(url.clone()) {
                    valid.push(new_link(link));
                }
                results.push(AddResult {
                    url,
                    result: AddOutcome::Duplicate,
                    id: None,
                    reason: None,
                });
            }
            Err(e) => results.push(AddResult {
                url: input.clone(),
                result: AddOutcome::Rejected,
                id: None,
                reason: Some(e.to_string()),
            }),
        }
    }
    let added: HashMap<String, i64> = lifecycle::add(pool, &valid, rules, max_attempts)
        .await?
        .into_iter()
        .map(|link| (link.url, link.id))
        .collect();
    let others: Vec<String> = unique.into_iter().filter(|url| !added.contains_key(url)).collect();
    let saved: HashMap<String, i64> = links::ids_by_url(pool, &others)
        .await?
        .into_iter()
        .map(|(id, url)| (url, id))
        .collect();
    let mut answered: HashSet<&str> = HashSet::new();
    for result in results.iter_mut().filter(|r| r.result != AddOutcome::Rejected) {
        if let Some(&id) = added.get(&result.url) {
            result.id = Some(id);
            if answered.insert(result.url.as_str()) {
                result.result = AddOutcome::Accepted;
            }
        } else {
            // `None` only if the link was deleted meanwhile.
            result.id = saved.get(&result.url).copied();
        }
    }
    Ok(results)
}

/// `links add URL...`: saves the valid URLs with their first check and refresh enqueued at once;
/// exit 1 if any URL was rejected (the valid ones are still saved).
///
/// # Errors
///
/// [`CliError::User`] when some URL was rejected; internal errors from the database.
pub async fn add(
    pool: &PgPool,
    urls: &[String],
    settings: &Settings,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut report = AddReport::default();
    for result in add_urls(pool, urls, &settings.rules, settings.queue.max_attempts).await? {
        match result.result {
            AddOutcome::Accepted => report.added.push(result.url),
            AddOutcome::Duplicate => report.duplicates.push(result.url),
            AddOutcome::Rejected => report.rejected.push(Rejected {
                line: None,
                input: result.url,
                reason: result.reason.unwrap_or_default(),
            }),
        }
    }
    report.duplicates.dedup();
    if json {
        print_json(out, &report)?;
    } else {
        for url in &report.added {
            writeln!(out, "added      {url}").map_err(io)?;
        }
        for url in &report.duplicates {
            writeln!(out, "duplicate  {url}").map_err(io)?;
        }
        for r in &report.rejected {
            writeln!(out, "rejected   {}: {}", r.input, r.reason).map_err(io)?;
        }
    }
    match report.rejected.len() {
        0 => Ok(()),
        n => Err(CliError::User(format!("{n} URL(s) rejected"))),
    }
}

/// `links import` as a library call (the bench and older tests use it): the format detected,
/// no host rules, no first jobs (the schedules pick the links up), the report printed as
/// `links import` prints it; rejected lines are in the report, not an error. The command itself,
/// with the rules, the first jobs and the exit code, is [`super::import::run_cli`].
///
/// # Errors
///
/// [`CliError::User`] if the input cannot be read; internal errors from the database.
pub async fn import(pool: &PgPool, reader: &mut dyn BufRead, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let options = super::import::ImportOptions {
        format: None,
        json,
        rules: &linkpulse_shared::rules::Rules::default(),
        first_jobs: None,
    };
    super::import::import(pool, reader, options, None, out).await.map(drop)
}

/// `links list [--status S]`.
///
/// # Errors
///
/// Internal errors from the database.
pub async fn list(
    pool: &PgPool,
    status: Option<&str>,
    limit: i64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let filter = ListFilter {
        status: status.map(str::to_owned),
        ..ListFilter::default()
    };
    list_filtered(pool, &filter, limit, json, out).await
}

/// `links list [--status S] [--host H] [--q TEXT] [--checked-before TIME]`: the first `limit`
/// links of the same query as `GET /api/links` (`links::list_page`).
///
/// # Errors
///
/// Internal errors from the database.
pub async fn list_filtered(
    pool: &PgPool,
    filter: &ListFilter,
    limit: i64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let links = links::list_page(pool, filter, limit).await?;
    if json {
        return print_json(out, &links);
    }
    writeln!(
        out,
        "{:>8}  {:<16}  {:>5}  {:>4}  {:<40}  URL",
        "ID", "STATUS", "FAILS", "CODE", "TITLE"
    )
    .map_err(io)?;
    for l in &links {
        writeln!(
            out,
            "{:>8}  {:<16}  {:>5}  {:>4}  {:<40}  {}",
            l.id,
            l.status,
            l.consecutive_failures,
            l.last_status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            truncate(l.title.as_deref().unwrap_or("-"), 40),
            l.url
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `links show ID|URL`: the link, then its history (dead since, last good check, share of ok
/// checks, the newest of its `history` kept verdicts and events); `--json` adds the history as a
/// `"history"` object next to the link's fields.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn show(
    pool: &PgPool,
    link: &str,
    history: i64,
    jaeger: Option<&url::Url>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let link = find(pool, link).await?;
    let history = linkpulse_shared::db::history::for_link(pool, link.id, history).await?;
    if json {
        /// The link's own fields, as every other command prints them, plus its history.
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            link: &'a Link,
            history: &'a linkpulse_shared::db::history::LinkHistory,
        }
        return print_json(
            out,
            &Shown {
                link: &link,
                history: &history,
            },
        );
    }
    print_link(&link, jaeger, false, out)?;
    print_history(&history, out)
}

/// Verdicts and events `links show` prints (all kept ones are in `--json`).
const SHOWN_HISTORY: usize = 10;

/// The human form of a link's history, after [`print_link`]'s lines.
fn print_history(h: &linkpulse_shared::db::history::LinkHistory, out: &mut dyn Write) -> Result<(), CliError> {
    let time = |v: Option<chrono::DateTime<chrono::Utc>>| v.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    writeln!(out, "{:>13}: {}", "dead since", time(h.dead_since)).map_err(io)?;
    writeln!(out, "{:>13}: {}", "last ok", time(h.last_ok_at)).map_err(io)?;
    let share = h
        .ok_share
        .map_or_else(|| "-".to_owned(), |s| format!("{:.0}% of the kept checks", s * 100.0));
    writeln!(out, "{:>13}: {share}", "ok share").map_err(io)?;
    if !h.verdicts.is_empty() {
        writeln!(out, "recent checks:").map_err(io)?;
    }
    for v in h.verdicts.iter().take(SHOWN_HISTORY) {
        let code = v.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let took = v.duration_ms.map_or_else(|| "-".to_owned(), |d| format!("{d:.0} ms"));
        let error = v.error.as_deref().unwrap_or("");
        writeln!(
            out,
            "  {}  {:<9} {code:>3}  {took:>8}  {error}",
            v.checked_at.to_rfc3339(),
            v.outcome
        )
        .map_err(io)?;
    }
    if !h.events.is_empty() {
        writeln!(out, "events:").map_err(io)?;
    }
    for e in h.events.iter().take(SHOWN_HISTORY) {
        let by = match (e.job_id, e.actor.as_deref()) {
            (_, Some(actor)) => format!(" by {actor}"),
            (Some(job), None) => format!(" job {job}"),
            (None, None) => String::new(),
        };
        let reason = e.reason.as_deref().map_or_else(String::new, |r| format!(" ({r})"));
        writeln!(
            out,
            "  #{} {}  {:<12} {} -> {}{reason}{by}",
            e.seq,
            e.at.to_rfc3339(),
            e.kind,
            e.from,
            e.to
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `links activate ID|URL`: status active, failures 0, an event by `cli:<user>`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn activate(
    pool: &PgPool,
    input: &str,
    jaeger: Option<&url::Url>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let reference = LinkRef::parse(input).map_err(|e| CliError::User(e.to_string()))?;
    let link = links::activate(pool, &reference, &super::schedules::cli_actor())
        .await?
        .ok_or_else(|| CliError::User(format!("no link {input}")))?;
    print_link(&link, jaeger, json, out)
}

/// The reason stored for a manual change: `<verb> by <actor>`, and the operator's words if any.
pub fn change_reason(verb: &str, actor: &str, reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{verb} by {actor}: {}", linkpulse_util::text::storable(reason)),
        None => format!("{verb} by {actor}"),
    }
}

/// `links pause ID|URL [--reason TEXT]` and `links resume ID|URL`: the link as `links show`
/// prints it, after the change and its event.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn set_status(
    pool: &PgPool,
    input: &str,
    status: &str,
    reason: Option<&str>,
    jaeger: Option<&url::Url>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let reference = LinkRef::parse(input).map_err(|e| CliError::User(e.to_string()))?;
    let actor = super::schedules::cli_actor();
    let verb = if status == "paused" { "paused" } else { "resumed" };
    let reason = change_reason(verb, &actor, reason);
    let change = StatusChange {
        status,
        actor: &actor,
        reason: &reason,
    };
    let link = links::set_status(pool, &reference, &change)
        .await?
        .ok_or_else(|| CliError::User(format!("no link {input}")))?;
    print_link(&link, jaeger, json, out)
}

/// `links remove ID|URL`: deletes the link and cancels its queued jobs; `--json` prints
/// `{"id","url","removed":true,"cancelled_jobs":N}` as `DELETE /api/links/{id}` answers.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn remove(pool: &PgPool, input: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let reference = LinkRef::parse(input).map_err(|e| CliError::User(e.to_string()))?;
    let removed = lifecycle::remove(pool, &reference, &super::schedules::cli_actor())
        .await?
        .ok_or_else(|| CliError::User(format!("no link {input}")))?;
    if json {
        return print_json(out, &removed);
    }
    writeln!(
        out,
        "removed {} {} ({} queued job(s) cancelled)",
        removed.id, removed.url, removed.cancelled_jobs
    )
    .map_err(io)
}

/// `links check|refresh ID|URL`: enqueues the job now, ahead of scheduled work; `--json` prints
/// `{"enqueued":bool,"job_id":N}` as `POST /api/links/{id}/check` answers. A link that already has
/// such a job queued or running keeps it (that job is the answer).
///
/// # Errors
///
/// [`CliError::User`] for an unknown, malformed or paused link.
pub async fn enqueue(
    pool: &PgPool,
    input: &str,
    kind: &str,
    max_attempts: i32,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let link = find(pool, input).await?;
    if link.status == "paused" {
        return Err(CliError::User(format!(
            "link {} is paused: resume it first (`links resume {}`)",
            link.id, link.id
        )));
    }
    let answer = lifecycle::enqueue_now(pool, kind, link.id, &link.url, &link.host, max_attempts).await?;
    if json {
        return print_json(out, &answer);
    }
    if answer.enqueued {
        writeln!(out, "{kind} of link {} enqueued as job {}", link.id, answer.job_id).map_err(io)
    } else {
        writeln!(
            out,
            "link {} already has {kind} job {} queued or running",
            link.id, answer.job_id
        )
        .map_err(io)
    }
}

/// Resolves an id or URL to a saved link.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn find(pool: &PgPool, input: &str) -> Result<Link, CliError> {
    let reference = LinkRef::parse(input).map_err(|e| CliError::User(e.to_string()))?;
    links::find(pool, &reference)
        .await?
        .ok_or_else(|| CliError::User(format!("no link {input}")))
}

/// `jaeger` (`LINKPULSE_JAEGER_URL`, from the settings so `--jaeger-url` counts too) adds a link to
/// the last trace.
fn print_link(link: &Link, jaeger: Option<&url::Url>, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if json {
        return print_json(out, link);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let time = |v: &Option<chrono::DateTime<chrono::Utc>>| v.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
    let lines = [
        ("id", link.id.to_string()),
        ("url", link.url.clone()),
        ("status", link.status.clone()),
        ("status reason", opt(&link.status_reason)),
        ("failures", link.consecutive_failures.to_string()),
        ("last check", time(&link.last_checked_at)),
        ("last outcome", opt(&link.last_outcome)),
        (
            "last status",
            link.last_status_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("last error", opt(&link.last_error)),
        ("refreshed", time(&link.refreshed_at)),
        ("title", opt(&link.title)),
        ("description", opt(&link.description)),
        ("site name", opt(&link.site_name)),
        ("favicon", opt(&link.favicon_url)),
        ("image", opt(&link.image_url)),
        ("trace", opt(&link.last_trace_id)),
    ];
    for (k, v) in lines {
        writeln!(out, "{k:>13}: {v}").map_err(io)?;
    }
    if let (Some(base), Some(trace_id)) = (jaeger, &link.last_trace_id)
        && let Some(trace_url) = linkpulse_shared::telemetry::jaeger_trace_url(base, trace_id)
    {
        writeln!(out, "{:>13}: {trace_url}", "jaeger").map_err(io)?;
    }
    if let Some(gh) = &link.github {
        writeln!(
            out,
            "{:>13}: {}/{} ★{} archived={}",
            "github",
            gh.owner,
            gh.repo,
            gh.stars.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            gh.archived.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
        )
        .map_err(io)?;
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Maps a stdout write failure.
pub fn io(e: std::io::Error) -> CliError {
    CliError::Internal(anyhow::Error::new(e).context("failed to write output"))
}
