//! `producer links …`

use std::io::{BufRead, Write};

use serde::Serialize;
use sqlx::PgPool;

use linkpulse_shared::db::links::{self, Link, LinkRef, NewLink};
use linkpulse_shared::github::parse_repo_url;
use linkpulse_shared::link_url::{LinkUrl, parse_link};

use crate::cli::{CliError, print_json};

/// Links inserted per statement during an import.
const IMPORT_CHUNK: usize = 5000;

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

/// `links add URL...`: exit 1 if any URL was rejected (the valid ones are still saved).
///
/// # Errors
///
/// [`CliError::User`] when some URL was rejected; internal errors from the database.
pub async fn add(pool: &PgPool, urls: &[String], json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let mut report = AddReport::default();
    let mut valid: Vec<NewLink> = Vec::new();
    for input in urls {
        match parse_link(input) {
            Ok(link) => valid.push(new_link(link)),
            Err(e) => report.rejected.push(Rejected {
                line: None,
                input: input.clone(),
                reason: e.to_string(),
            }),
        }
    }
    let added = links::insert_many(pool, &valid).await?;
    for new in &valid {
        let url = new.link.url.to_string();
        if added.contains(&url) {
            report.added.push(url)
        } else {
            report.duplicates.push(url)
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

/// Result of `links import`.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    /// Newly saved.
    pub accepted: usize,
    /// Already saved (or repeated in the file).
    pub duplicates: usize,
    /// Refused lines, with reasons.
    pub rejected: Vec<Rejected>,
}

/// `links import FILE|-`: saves every valid line in chunks, reports the rest.
///
/// # Errors
///
/// [`CliError::User`] if the file cannot be opened; internal errors from the database.
pub async fn import(pool: &PgPool, reader: &mut dyn BufRead, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let mut report = ImportReport::default();
    let mut chunk: Vec<NewLink> = Vec::with_capacity(IMPORT_CHUNK);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| CliError::User(format!("cannot read input: {e}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        let input = line.trim();
        if input.is_empty() || input.starts_with('#') {
            continue;
        }
        match parse_link(input) {
            Ok(link) => chunk.push(new_link(link)),
            Err(e) => report.rejected.push(Rejected {
                line: Some(number),
                input: input.to_owned(),
                reason: e.to_string(),
            }),
        }
        if chunk.len() == IMPORT_CHUNK {
            flush(pool, &mut chunk, &mut report).await?;
        }
    }
    flush(pool, &mut chunk, &mut report).await?;
    if json {
        print_json(out, &report)?;
    } else {
        for r in &report.rejected {
            writeln!(
                out,
                "line {}: rejected {}: {}",
                r.line.unwrap_or_default(),
                r.input,
                r.reason
            )
            .map_err(io)?;
        }
        writeln!(
            out,
            "{} accepted, {} duplicate, {} rejected",
            report.accepted,
            report.duplicates,
            report.rejected.len()
        )
        .map_err(io)?;
    }
    Ok(())
}

async fn flush(pool: &PgPool, chunk: &mut Vec<NewLink>, report: &mut ImportReport) -> Result<(), CliError> {
    let added = links::insert_many(pool, chunk).await?.len();
    report.accepted += added;
    report.duplicates += chunk.len() - added;
    chunk.clear();
    Ok(())
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
    let links = links::list(pool, status, limit).await?;
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

/// `links show ID|URL`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn show(pool: &PgPool, link: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let link = find(pool, link).await?;
    print_link(&link, json, out)
}

/// `links activate ID|URL`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown link or a malformed URL.
pub async fn activate(pool: &PgPool, input: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let reference = LinkRef::parse(input).map_err(|e| CliError::User(e.to_string()))?;
    let link = links::activate(pool, &reference)
        .await?
        .ok_or_else(|| CliError::User(format!("no link {input}")))?;
    print_link(&link, json, out)
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

fn print_link(link: &Link, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if json {
        return print_json(out, link);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let time = |v: &Option<chrono::DateTime<chrono::Utc>>| v.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
    let lines = [
        ("id", link.id.to_string()),
        ("url", link.url.clone()),
        ("status", link.status.clone()),
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
    // Read here rather than passed in: `show` and `activate` have no settings. An invalid value
    // was already refused when the settings were read at start.
    let jaeger = linkpulse_shared::config::jaeger_url(&linkpulse_shared::config::Env::new(|k| std::env::var(k).ok()))
        .ok()
        .flatten();
    if let (Some(base), Some(trace_id)) = (jaeger, &link.last_trace_id)
        && let Some(trace_url) = linkpulse_shared::telemetry::jaeger_trace_url(&base, trace_id)
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
