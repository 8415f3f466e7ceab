//! `producer links export [--format json|csv|html]` and `GET /api/links/export?format=`: the
//! whole collection, streamed.
//!
//! Both write the same bytes from the same stream ([`chunks`]): links are read in keyset batches
//! of [`EXPORT_BATCH`] by id (never the table at once, never an `OFFSET` that gets slower page
//! after page) and each batch is rendered and written before the next is read, so memory stays
//! flat however large the collection.
//!
//! - `json`: the array `links list --json` prints (one line, then a newline).
//! - `csv`: a header naming the columns, `url` first, then one row per link: importable back.
//! - `html`: Netscape bookmarks (escaped), importable by browsers and by `links import`.

use std::io::{IsTerminal, Write};

use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;

use linkpulse_shared::bookmarks::netscape;
use linkpulse_shared::db::links::{self, Link, ListFilter};

use super::links::io;
use crate::cli::CliError;

/// Links read per statement.
pub const EXPORT_BATCH: i64 = 1000;

/// The columns of the CSV export.
pub const CSV_COLUMNS: [&str; 14] = [
    "url",
    "status",
    "title",
    "status_reason",
    "description",
    "site_name",
    "last_status_code",
    "last_outcome",
    "last_error",
    "consecutive_failures",
    "last_checked_at",
    "refreshed_at",
    "created_at",
    "id",
];

/// An export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The `links list --json` array.
    Json,
    /// CSV with a header.
    Csv,
    /// Netscape bookmarks HTML.
    Html,
}

impl ExportFormat {
    /// Every format, by name.
    pub const NAMES: [&'static str; 3] = ["json", "csv", "html"];

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }

    /// Its file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "html" => Ok(Self::Html),
            other => Err(format!("unknown export format {other:?} (expected json, csv or html)")),
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the links failed.
    #[error("cannot read the links: {0}")]
    Database(#[from] sqlx::Error),
    /// Rendering a CSV row failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Rendering a link as JSON failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where the stream is.
struct Cursor {
    pool: PgPool,
    format: ExportFormat,
    after_id: Option<i64>,
    written: u64,
    started: bool,
    done: bool,
}

/// The export of every link in `format`, as chunks of bytes, one per batch of links: the header
/// with the first, the footer with the last.
pub fn chunks(pool: PgPool, format: ExportFormat) -> impl Stream<Item = Result<Vec<u8>, ExportError>> + Send + 'static {
    let cursor = Cursor {
        pool,
        format,
        after_id: None,
        written: 0,
        started: false,
        done: false,
    };
    futures::stream::try_unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return Ok(None);
        }
        let filter = ListFilter {
            after_id: cursor.after_id,
            ..ListFilter::default()
        };
        let page = links::list_page(&cursor.pool, &filter, EXPORT_BATCH).await?;
        let mut chunk = Vec::new();
        if !cursor.started {
            cursor.started = true;
            header(cursor.format, &mut chunk)?;
        }
        for link in &page {
            render(cursor.format, link, cursor.written == 0, &mut chunk)?;
            cursor.written += 1;
        }
        cursor.after_id = page.last().map(|l| l.id).or(cursor.after_id);
        // A short page is the last one: no empty read at the end.
        if (page.len() as i64) < EXPORT_BATCH {
            cursor.done = true;
            footer(cursor.format, &mut chunk);
        }
        Ok(Some((chunk, cursor)))
    })
}

fn header(format: ExportFormat, chunk: &mut Vec<u8>) -> Result<(), ExportError> {
    match format {
        ExportFormat::Json => chunk.push(b'['),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(chunk);
            writer.write_record(CSV_COLUMNS)?;
            writer.flush().map_err(csv::Error::from)?;
        }
        ExportFormat::Html => chunk.extend_from_slice(netscape::HEADER.as_bytes()),
    }
    Ok(())
}

fn footer(format: ExportFormat, chunk: &mut Vec<u8>) {
    match format {
        ExportFormat::Json => chunk.extend_from_slice(b"]\n"),
        ExportFormat::Csv => {}
        ExportFormat::Html => chunk.extend_from_slice(netscape::FOOTER.as_bytes()),
    }
}

fn render(format: ExportFormat, link: &Link, first: bool, chunk: &mut Vec<u8>) -> Result<(), ExportError> {
    match format {
        ExportFormat::Json => {
            if !first {
                chunk.push(b',');
            }
            serde_json::to_writer(&mut *chunk, link)?;
        }
        ExportFormat::Csv => {
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
            let text = |t: &Option<String>| t.clone().unwrap_or_default();
            let mut writer = csv::Writer::from_writer(chunk);
            writer.write_record([
                link.url.clone(),
                link.status.clone(),
                text(&link.title),
                text(&link.status_reason),
                text(&link.description),
                text(&link.site_name),
                link.last_status_code.map(|c| c.to_string()).unwrap_or_default(),
                text(&link.last_outcome),
                text(&link.last_error),
                link.consecutive_failures.to_string(),
                time(link.last_checked_at),
                time(link.refreshed_at),
                link.created_at.to_rfc3339(),
                link.id.to_string(),
            ])?;
            writer.flush().map_err(csv::Error::from)?;
        }
        ExportFormat::Html => {
            let mut line = String::new();
            netscape::write_entry(
                &mut line,
                &link.url,
                link.title.as_deref(),
                Some(link.created_at.timestamp()),
            );
            chunk.extend_from_slice(line.as_bytes());
        }
    }
    Ok(())
}

/// `links export [--format F]`: writes the export to `out` as it is read, with a progress bar on
/// stderr when a person watches one ([`progress_bar`]).
///
/// # Errors
///
/// Internal errors from the database or when `out` cannot be written.
pub async fn export(pool: &PgPool, format: ExportFormat, out: &mut dyn Write) -> Result<(), CliError> {
    let progress = progress_bar(pool).await?;
    let mut stream = std::pin::pin!(chunks(pool.clone(), format));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CliError::Internal(anyhow::Error::new(e)))?;
        out.write_all(&chunk).map_err(io)?;
        if let Some(bar) = &progress {
            // Every chunk but the last carries a full batch; the last one ends the bar anyway.
            let done = (bar.position() + EXPORT_BATCH.unsigned_abs()).min(bar.length().unwrap_or(u64::MAX));
            bar.set_position(done);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    out.flush().map_err(io)
}

/// A bar counting exported links, on stderr, or none: when stderr is not a terminal (logs and CI
/// output stay clean), when stdout is one (the bar would be drawn through the export itself),
/// or for a collection of one batch or less (done before a bar would show). The count is one
/// extra statement, spent only when a bar is drawn.
async fn progress_bar(pool: &PgPool) -> Result<Option<ProgressBar>, CliError> {
    if !std::io::stderr().is_terminal() || std::io::stdout().is_terminal() {
        return Ok(None);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM links").fetch_one(pool).await?;
    if total <= EXPORT_BATCH {
        return Ok(None);
    }
    let bar = ProgressBar::with_draw_target(Some(total.unsigned_abs()), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("exporting {wide_bar} {pos}/{len} links {eta}") {
        bar.set_style(style);
    }
    Ok(Some(bar))
}
