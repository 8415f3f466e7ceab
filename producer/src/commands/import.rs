//! `producer links import FILE|-`: links from one URL per line, CSV with a `url` column, or a
//! browser's bookmarks export (detected by content, or `--format lines|csv|html`).
//!
//! Built for big, imperfect files: the input is read as bytes in bounded memory (a line at a
//! time, see [`linkpulse_shared::bookmarks`]), links are saved in batches of [`IMPORT_BATCH`] (each
//! with its new links' first jobs, in one transaction), and every line that cannot be imported is
//! reported with its number and reason as soon as it is met, in text and in JSON alike, so the
//! report of a million bad lines is never held in memory either. Exit codes: 0 when every line was
//! accepted or a duplicate, 1 when some were rejected (the others are imported all the same), 2
//! on an internal error.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sqlx::PgPool;

use linkpulse_shared::bookmarks::{self, Entry, Format, Item, ReadError};
use linkpulse_shared::config::Settings;
use linkpulse_shared::db::import::{ImportLink, save_batch};
use linkpulse_shared::link_url::parse_link;
use linkpulse_shared::rules::Rules;

use super::links::{io, new_link};
use crate::cli::{CliError, import_source};

/// Links saved per transaction.
pub const IMPORT_BATCH: usize = 5000;

/// Files at least this big get a progress bar (when stderr is a terminal); stdin always does.
const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;

/// How an import runs.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions<'a> {
    /// The input's format; `None`: detected from its first line.
    pub format: Option<Format>,
    /// Print JSON.
    pub json: bool,
    /// Exclude patterns: matching links are saved `paused` with the rule as reason.
    pub rules: &'a Rules,
    /// `Some(max_attempts)`: enqueue each new link's first check and refresh at once (as
    /// `links add` does); `None`: leave them to the schedules.
    pub first_jobs: Option<i32>,
}

/// What an import did. In JSON it closes the object whose `rejected` array was streamed first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// The format read.
    pub format: &'static str,
    /// Links newly saved.
    pub accepted: u64,
    /// Links already saved, or repeated in the input.
    pub duplicates: u64,
    /// Lines refused (each reported with its reason).
    #[serde(skip)]
    pub rejected: u64,
    /// Of the accepted links, those saved `paused` by an exclude pattern.
    pub excluded: u64,
    /// Links saved before whose empty title the input filled.
    pub titled: u64,
    /// Why the import stopped early, if it did (JSON only; the process exits non-zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One refused line, as it is reported (the shape `links import --json` always had).
#[derive(Debug, Serialize)]
struct RejectedLine<'a> {
    line: u64,
    input: &'a str,
    reason: &'a str,
}

/// The report, written as the import goes.
struct Report<'o> {
    out: &'o mut dyn Write,
    json: bool,
    rejected: u64,
    progress: Option<ProgressBar>,
}

impl Report<'_> {
    fn start(&mut self) -> Result<(), CliError> {
        if self.json {
            self.write(|out| write!(out, "{{\"rejected\":["))?;
        }
        Ok(())
    }

    fn rejected(&mut self, line: u64, input: &str, reason: &str) -> Result<(), CliError> {
        let first = self.rejected == 0;
        self.rejected += 1;
        if self.json {
            let entry = RejectedLine { line, input, reason };
            let text = serde_json::to_string(&entry).map_err(|e| CliError::Internal(e.into()))?;
            self.write(|out| write!(out, "{}{text}", if first { "" } else { "," }))
        } else {
            self.write(|out| writeln!(out, "line {line}: rejected {input}: {reason}"))
        }
    }

    fn finish(&mut self, summary: &ImportSummary) -> Result<(), CliError> {
        if let Some(progress) = &self.progress {
            progress.finish_and_clear();
        }
        if self.json {
            let rest = serde_json::to_string(summary).map_err(|e| CliError::Internal(e.into()))?;
            // `rest` is an object: its fields follow the streamed array.
            let fields = rest.strip_prefix('{').unwrap_or(&rest);
            return self.write(|out| writeln!(out, "],{fields}"));
        }
        self.write(|out| {
            writeln!(
                out,
                "{} accepted, {} duplicate, {} rejected",
                summary.accepted, summary.duplicates, summary.rejected
            )?;
            if summary.excluded > 0 {
                writeln!(
                    out,
                    "{} of the accepted links saved paused by an exclude rule",
                    summary.excluded
                )?;
            }
            Ok(())
        })
    }

    /// Writes with the progress bar out of the way.
    fn write(&mut self, f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), CliError> {
        let out = &mut *self.out;
        match &self.progress {
            Some(progress) => progress.suspend(|| f(out)),
            None => f(out),
        }
        .map_err(io)
    }
}

/// Links waiting for their batch, distinct by URL.
#[derive(Default)]
struct Batch {
    links: Vec<ImportLink>,
    index: HashMap<String, usize>,
    /// Repeats of a URL already in this batch.
    repeats: u64,
}

impl Batch {
    fn push(&mut self, link: ImportLink) {
        let url = link.link.link.url.to_string();
        match self.index.get(&url) {
            Some(&at) => {
                self.repeats += 1;
                // A later line's title fills the first one's absence.
                if self.links[at].title.is_none() {
                    self.links[at].title = link.title;
                }
            }
            None => {
                self.index.insert(url, self.links.len());
                self.links.push(link);
            }
        }
    }

    async fn flush(
        &mut self,
        pool: &PgPool,
        first_jobs: Option<i32>,
        summary: &mut ImportSummary,
    ) -> Result<(), CliError> {
        if self.links.is_empty() {
            return Ok(());
        }
        let saved = save_batch(pool, &self.links, first_jobs).await?;
        let accepted = saved.inserted.len() as u64;
        summary.accepted += accepted;
        summary.duplicates += self.links.len() as u64 - accepted + self.repeats;
        summary.excluded += saved.inserted.iter().filter(|l| l.status == "paused").count() as u64;
        summary.titled += saved.titled;
        self.links.clear();
        self.index.clear();
        self.repeats = 0;
        Ok(())
    }
}

/// Imports `reader`, writing the report to `out` as it goes; returns the summary. Rejected lines
/// are part of the report, not an error: the caller decides the exit code.
///
/// # Errors
///
/// [`CliError::User`] when the input cannot be read (or a CSV file has no `url` column);
/// [`CliError::Internal`] when the database fails. Either way the batches saved before stay
/// saved, and a JSON report is still closed (with an `error` field).
pub async fn import(
    pool: &PgPool,
    reader: impl BufRead,
    options: ImportOptions<'_>,
    progress: Option<ProgressBar>,
    out: &mut dyn Write,
) -> Result<ImportSummary, CliError> {
    let mut report = Report {
        out,
        json: options.json,
        rejected: 0,
        progress,
    };
    report.start()?;
    let mut summary = ImportSummary::default();
    let result = run(pool, reader, options, &mut report, &mut summary).await;
    summary.rejected = report.rejected;
    if let Err(e) = &result {
        summary.error = Some(match e {
            CliError::User(reason) => reason.clone(),
            CliError::Internal(error) => format!("{error:#}"),
        });
    }
    report.finish(&summary)?;
    result.map(|()| summary)
}

async fn run(
    pool: &PgPool,
    reader: impl BufRead,
    options: ImportOptions<'_>,
    report: &mut Report<'_>,
    summary: &mut ImportSummary,
) -> Result<(), CliError> {
    let read_error = |e: ReadError| CliError::User(e.to_string());
    let (format, items) = bookmarks::read(reader, options.format).map_err(read_error)?;
    summary.format = format.as_str();
    let mut batch = Batch::default();
    for item in items {
        match item.map_err(read_error)? {
            Item::Rejected(r) => report.rejected(r.line, &r.input, &r.reason)?,
            Item::Entry(Entry { line, url, title }) => match parse_link(&url) {
                Ok(link) => {
                    let excluded = options.rules.exclusion_reason(link.url.as_str());
                    batch.push(ImportLink {
                        link: new_link(link),
                        title,
                        excluded,
                    });
                }
                Err(e) => report.rejected(line, &bookmarks::shorten(&url), &e.to_string())?,
            },
        }
        if batch.links.len() >= IMPORT_BATCH {
            batch.flush(pool, options.first_jobs, summary).await?;
        }
    }
    batch.flush(pool, options.first_jobs, summary).await
}

/// A progress bar on stderr for an input of `len` bytes (`None`: stdin), or none when stderr is
/// not a terminal (logs and CI output stay clean) or the file is small.
fn progress_bar(len: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || len.is_some_and(|len| len < PROGRESS_MIN_BYTES) {
        return None;
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let style = match len {
        Some(_) => ProgressStyle::with_template("importing {wide_bar} {binary_bytes}/{binary_total_bytes} {eta}"),
        None => ProgressStyle::with_template("importing {spinner} {binary_bytes} read"),
    };
    if let Ok(style) = style {
        bar.set_style(style);
    }
    Some(bar)
}

/// `links import FILE|- [--format F] [--json]`, as the CLI runs it: the rules and the first jobs
/// of `settings`, a progress bar for big inputs, and exit code 1 when some line was rejected.
///
/// # Errors
///
/// [`CliError::User`] when the file cannot be opened or read, or some line was rejected;
/// internal errors from the database.
pub async fn run_cli(
    pool: &PgPool,
    settings: &Settings,
    file: &str,
    format: Option<Format>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let options = ImportOptions {
        format,
        json,
        rules: &settings.rules,
        first_jobs: Some(settings.queue.max_attempts),
    };
    let summary = match import_source(file) {
        Some(path) => {
            let opened = open(&path)?;
            let len = opened.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            let progress = progress_bar(len);
            let reader = std::io::BufReader::with_capacity(64 * 1024, opened);
            match &progress {
                Some(bar) => import(pool, bar.wrap_read(reader), options, progress.clone(), out).await?,
                None => import(pool, reader, options, None, out).await?,
            }
        }
        None => {
            let stdin = std::io::stdin().lock();
            let progress = progress_bar(None);
            match &progress {
                Some(bar) => import(pool, bar.wrap_read(stdin), options, progress.clone(), out).await?,
                None => import(pool, stdin, options, None, out).await?,
            }
        }
    };
    match summary.rejected {
        0 => Ok(()),
        n => Err(CliError::User(format!("{n} line(s) rejected"))),
    }
}

fn open(path: &Path) -> Result<std::fs::File, CliError> {
    std::fs::File::open(path).map_err(|e| CliError::User(format!("cannot open {}: {e}", path.display())))
}

/// `links apply-rules [--json]`: pauses the saved links that an exclude pattern matches (see
/// [`linkpulse_shared::db::import::apply_rules`]) and lists them.
///
/// # Errors
///
/// Internal errors from the database (the links paused before stay paused).
pub async fn apply_rules(pool: &PgPool, settings: &Settings, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let rules = &settings.rules;
    let paused = linkpulse_shared::db::import::apply_rules(pool, rules).await?;
    if json {
        return crate::cli::print_json(
            out,
            &serde_json::json!({
                "rules_file": rules.file().map(|p| p.display().to_string()),
                "paused": paused,
            }),
        );
    }
    if rules.file().is_none() {
        writeln!(out, "no rules: LINKPULSE_RULES_FILE is not set").map_err(io)?;
    }
    for link in &paused {
        writeln!(
            out,
            "paused {:>8}  {}  (was {}; {}; {} queued job(s) cancelled)",
            link.id, link.url, link.from, link.reason, link.cancelled_jobs
        )
        .map_err(io)?;
    }
    writeln!(out, "{} link(s) paused", paused.len()).map_err(io)
}
