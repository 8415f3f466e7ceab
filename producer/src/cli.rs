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
    /// Serve the admin API and run the due schedules (leader only) until SIGTERM/SIGINT.
    Run,
    /// Serve the admin API, dashboard and metrics only, without running schedules (beside an
    /// external scheduler that runs `producer cycle`).
    Serve,
    /// Run one schedule's work once, print what it did, exit (cron, systemd timers). Without
    /// NAME: the enabled ones of check and refresh.
    Cycle {
        /// Schedule to run: check, refresh or prune.
        #[arg(value_parser = ["check", "refresh", "prune"])]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The effective settings (secrets redacted) and where the schedules' timing lives.
    Config {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Schedules: list, show, enable, disable, change, run now.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// The history of schedule runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Saved links.
    #[command(subcommand)]
    Links(LinksCommand),
    /// The job queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Print the admin API's OpenAPI 3.1 document (as served at `/api/openapi.json`); needs no
    /// database.
    Openapi,
    /// Webhooks: endpoints that receive link status events.
    #[command(subcommand)]
    Webhooks(crate::commands::webhooks::WebhooksCommand),
    /// Container health check: GET /readyz (or /livez) of the admin server on
    /// LINKPULSE_ADMIN_ADDR; exit 0 when it answers 2xx, else 1. Needs no database.
    Healthcheck {
        /// Probe /livez (the process answers) instead of /readyz (it also reaches the database).
        #[arg(long)]
        live: bool,
    },
    /// Print a shell completion script, e.g. `producer completions bash >
    /// /etc/bash_completion.d/producer`; needs no database.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
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
    /// Import links from FILE, or `-` for stdin: one URL per line (blank lines and `#` comments
    /// skipped), CSV with a `url` column, or a browser's bookmarks export (Netscape HTML), detected
    /// by content. Bad lines are reported with their reason; exit 1 when some were rejected (the
    /// others are imported all the same).
    Import {
        /// File path or `-`.
        file: String,
        /// The input's format, instead of detecting it: lines, csv or html.
        #[arg(long)]
        format: Option<linkpulse_shared::bookmarks::Format>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every link to stdout, streamed: json (the `links list --json` array), csv or html
    /// (Netscape bookmarks, importable by browsers and `links import`).
    Export {
        /// json, csv or html.
        #[arg(long, default_value = "json")]
        format: crate::commands::export::ExportFormat,
    },
    /// Pause every saved link that an exclude pattern of LINKPULSE_RULES_FILE matches (status
    /// reason `excluded by rule "…"`) and cancel its queued jobs. New and imported links are
    /// excluded as they are saved; run this after adding a pattern.
    ApplyRules {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List links, by id (the same query as `GET /api/links`).
    List {
        /// Only this status: active, inaccessible, repo_unavailable, archived, paused.
        #[arg(long, value_parser = ["active", "inaccessible", "repo_unavailable", "archived", "paused"])]
        status: Option<String>,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Only links whose URL or title contains this text (case-insensitive).
        #[arg(long)]
        q: Option<String>,
        /// Only links last checked before this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        checked_before: Option<chrono::DateTime<chrono::FixedOffset>>,
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
    /// Pause a link: never checked or refreshed on schedule, never counted, until resumed.
    Pause {
        /// Id or URL.
        link: String,
        /// Why (kept as the link's status reason and in its event).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused link: status active, failures reset to 0.
    Resume {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a link and cancel its queued jobs (a running one finishes and writes nothing).
    Remove {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a link now, ahead of scheduled work (its queued check, if any, is the answer).
    Check {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refresh a link's metadata now, ahead of scheduled work.
    Refresh {
        /// Id or URL.
        link: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `producer schedules …`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its trigger, toggle, next and last run.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One schedule and its recent runs.
    Show {
        /// check, refresh or prune.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn a schedule on (its next run is its next occurrence from now).
    Enable {
        /// check, refresh or prune.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn a schedule off (the leader stops running it within a second).
    Disable {
        /// check, refresh or prune.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule's trigger, time zone, limit or misfire grace.
    Set {
        /// check, refresh or prune.
        name: String,
        /// An interval (e.g. 90s, 15m, 1h).
        #[arg(long, conflicts_with = "cron")]
        every: Option<String>,
        /// A cron expression: 5 fields (minute first) or 6 (seconds first), e.g. "30 2 * * *".
        #[arg(long)]
        cron: Option<String>,
        /// IANA time zone of the cron expression (e.g. Europe/Berlin; default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Most jobs one run enqueues (prune: deletes).
        #[arg(long)]
        limit: Option<i64>,
        /// A run later than this is recorded as missed and skipped (e.g. 30s).
        #[arg(long)]
        misfire_grace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a schedule now (recorded as a manual run; its plan is unchanged).
    Run {
        /// check, refresh or prune.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `producer runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only this schedule.
        #[arg(long)]
        schedule: Option<String>,
        /// Only this status: running, ok, failed, missed, abandoned.
        #[arg(long, value_parser = ["running", "ok", "failed", "missed", "abandoned"])]
        status: Option<String>,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
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
    /// Correct the done/failed totals from the job table (after SQL by hand or a rolling upgrade;
    /// the prune schedule runs it hourly); prints the corrections.
    Recount {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop workers claiming a kind (within one poll interval); queued jobs wait, running ones
    /// finish.
    Pause {
        /// check, refresh or deliver.
        kind: String,
        /// Why (shown by `queue stats` and the API).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let workers claim a paused kind again, at once.
    Resume {
        /// check, refresh or deliver.
        kind: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Discard queued jobs: they become failed with result class `cancelled`. Running, done and
    /// failed jobs are left alone. Needs a filter.
    Cancel {
        /// Only this one job (its id from `queue list`).
        #[arg(long, conflicts_with_all = ["kind", "link"])]
        job: Option<i64>,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only the jobs of this link (id or URL).
        #[arg(long)]
        link: Option<String>,
        /// Why (stored as the jobs' last error; default "cancelled by cli:$USER").
        #[arg(long)]
        reason: Option<String>,
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
