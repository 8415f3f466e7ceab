//! The operator's command line (contract in the README: every listing takes `--json`; JSON on
//! stdout, logs on stderr; exit 0 success, 1 user error, 2 internal error).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use linkpulse_queue::JobState;

/// linkpulse producer: enqueues due checks and refreshes, and answers the operator.
#[derive(Debug, Parser)]
#[command(name = "producer", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply all migrations (ours and the queue's); idempotent.
    Migrate,
    /// Cycle every LINKPULSE_CYCLE_INTERVAL until SIGTERM/SIGINT.
    Run,
    /// Run one cycle, print what it enqueued, exit (for cron).
    Cycle {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Saved links.
    #[command(subcommand)]
    Links(LinksCommand),
    /// The job queue.
    #[command(subcommand)]
    Queue(QueueCommand),
}

/// `producer links …`
#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// Add links; a rejected URL is reported with its reason.
    Add {
        /// URLs to add.
        #[arg(required = true)]
        urls: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import one URL per line from FILE, or `-` for stdin (blank lines and `#` comments skipped).
    Import {
        /// File path or `-`.
        file: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List links.
    List {
        /// Only this status: active, inaccessible, repo_unavailable, archived.
        #[arg(long, value_parser = ["active", "inaccessible", "repo_unavailable", "archived"])]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one link by id or URL.
    Show {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manual override: status active, failures reset to 0.
    Activate {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `producer queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts per kind × state, age of the oldest queued job.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    List {
        /// Only this state: queued, running, done, failed.
        #[arg(long)]
        state: Option<JobState>,
        /// Only this kind: check, refresh.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move finished jobs back to queued with fresh attempts; prints how many.
    Requeue {
        /// Which finished jobs: failed (default) or done.
        #[arg(long, default_value = "failed")]
        state: JobState,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only the jobs of this link (id or URL).
        #[arg(long)]
        link: Option<String>,
        /// Only this one job (its id from `queue list`).
        #[arg(long)]
        job: Option<i64>,
        /// Only jobs that finished longer ago than this (e.g. 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete finished jobs older than a duration (default: the configured retention of each).
    Prune {
        /// Age limit (e.g. 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A command's failure, by who must act on it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The operator asked for something impossible (bad URL, unknown link): exit 1.
    #[error("{0}")]
    User(String),
    /// Something broke on our side (database unreachable, I/O): exit 2.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::User(_) => 1,
            Self::Internal(_) => 2,
        }
    }
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<linkpulse_queue::QueueError> for CliError {
    fn from(e: linkpulse_queue::QueueError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

/// Writes `value` as one line of JSON.
///
/// # Errors
///
/// If stdout cannot be written.
pub fn print_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| CliError::Internal(e.into()))?;
    writeln!(out).map_err(|e| CliError::Internal(e.into()))
}

/// Where `links import` reads from.
pub fn import_source(file: &str) -> Option<PathBuf> {
    (file != "-").then(|| PathBuf::from(file))
}
