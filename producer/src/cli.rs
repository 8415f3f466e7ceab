//! The operator's command line (contract in the README: every listing takes `--json`; JSON on
//! stdout, logs on stderr; exit 0 success, 1 user error, 2 internal error).
//!
//! `--json` is global (accepted before or after the subcommand), the setting flags go before the
//! subcommand (their variables work everywhere); kinds, states
//! and statuses are value enums ([`crate::cli_values`]), so `--help` lists them and clap refuses
//! any other value with the list.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use linkpulse_shared::config::args::SettingsArgs;

use crate::cli_values::{JobKind, LinkStatus, QueueState, RunStatus, ScheduleName};

/// The service name traces carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "linkpulse-producer";

/// linkpulse producer: enqueues due checks and refreshes, and answers the operator.
#[derive(Debug, Parser)]
#[command(name = "producer", version, about)]
pub struct Cli {
    /// Print JSON on stdout (every listing; logs stay on stderr). Accepted before or after the
    /// subcommand.
    #[arg(long, global = true)]
    pub json: bool,
    /// Every setting, flag or environment variable.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line as clap sees it, with this binary's defaults filled in: what `--help`,
    /// parsing and the completion scripts all use.
    pub fn full_command() -> clap::Command {
        SettingsArgs::with_service_name(Self::command(), SERVICE_NAME)
    }

    /// Parses the process's arguments (and the environment behind the settings).
    ///
    /// # Errors
    ///
    /// clap's error for a bad argument, `--help` or `--version`.
    pub fn parse_process() -> Result<Self, clap::Error> {
        Self::from_arg_matches(&Self::full_command().try_get_matches()?)
    }
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
        /// Schedule to run.
        #[arg(value_enum)]
        name: Option<ScheduleName>,
    },
    /// The effective settings (secrets redacted) and where the schedules' timing lives.
    Config,
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
    },
    /// Import links from FILE, or `-` for stdin: one URL per line (blank lines and `#` comments
    /// skipped), CSV with a `url` column, or a browser's bookmarks export (Netscape HTML), detected
    /// by content. Bad lines are reported with their reason; exit 1 when some were rejected (the
    /// others are imported all the same).
    Import {
        /// File path or `-`.
        file: String,
        /// The input's format, instead of detecting it.
        #[arg(long, value_parser = crate::cli_values::import_format())]
        format: Option<linkpulse_shared::bookmarks::Format>,
    },
    /// Write every link to stdout, streamed: json (the `links list --json` array), csv or html
    /// (Netscape bookmarks, importable by browsers and `links import`).
    Export {
        /// The output's format.
        #[arg(long, default_value = "json", value_parser = crate::cli_values::export_format())]
        format: crate::commands::export::ExportFormat,
    },
    /// Pause every saved link that an exclude pattern of LINKPULSE_RULES_FILE matches (status
    /// reason `excluded by rule "…"`) and cancel its queued jobs. New and imported links are
    /// excluded as they are saved; run this after adding a pattern.
    ApplyRules,
    /// List links, by id (the same query as `GET /api/links`).
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<LinkStatus>,
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
    },
    /// Show one link by id or URL.
    Show {
        /// Id or URL.
        link: String,
    },
    /// Manual override: status active, failures reset to 0.
    Activate {
        /// Id or URL.
        link: String,
    },
    /// Pause a link: never checked or refreshed on schedule, never counted, until resumed.
    Pause {
        /// Id or URL.
        link: String,
        /// Why (kept as the link's status reason and in its event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused link: status active, failures reset to 0.
    Resume {
        /// Id or URL.
        link: String,
    },
    /// Delete a link and cancel its queued jobs (a running one finishes and writes nothing).
    Remove {
        /// Id or URL.
        link: String,
    },
    /// Check a link now, ahead of scheduled work (its queued check, if any, is the answer).
    Check {
        /// Id or URL.
        link: String,
    },
    /// Refresh a link's metadata now, ahead of scheduled work.
    Refresh {
        /// Id or URL.
        link: String,
    },
}

/// `producer schedules …`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its trigger, toggle, next and last run.
    List,
    /// One schedule and its recent runs.
    Show {
        /// The schedule.
        #[arg(value_enum)]
        name: ScheduleName,
    },
    /// Turn a schedule on (its next run is its next occurrence from now).
    Enable {
        /// The schedule.
        #[arg(value_enum)]
        name: ScheduleName,
    },
    /// Turn a schedule off (the leader stops running it within a second).
    Disable {
        /// The schedule.
        #[arg(value_enum)]
        name: ScheduleName,
    },
    /// Change a schedule's trigger, time zone, limit or misfire grace.
    Set {
        /// The schedule.
        #[arg(value_enum)]
        name: ScheduleName,
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
    },
    /// Run a schedule now (recorded as a manual run; its plan is unchanged).
    Run {
        /// The schedule.
        #[arg(value_enum)]
        name: ScheduleName,
    },
}

/// `producer runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only this schedule.
        #[arg(long, value_enum)]
        schedule: Option<ScheduleName>,
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<RunStatus>,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// `producer queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts per kind × state, age of the oldest queued job.
    Stats,
    /// List jobs, newest first.
    List {
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<QueueState>,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<JobKind>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Move finished jobs back to queued with fresh attempts; prints how many.
    Requeue {
        /// Which finished jobs (queued and running ones are refused).
        #[arg(long, value_enum, default_value_t = QueueState::Failed)]
        state: QueueState,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<JobKind>,
        /// Only the jobs of this link (id or URL).
        #[arg(long)]
        link: Option<String>,
        /// Only this one job (its id from `queue list`).
        #[arg(long)]
        job: Option<i64>,
        /// Only jobs that finished longer ago than this (e.g. 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Delete finished jobs older than a duration (default: the configured retention of each).
    Prune {
        /// Age limit (e.g. 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Correct the done/failed totals from the job table (after SQL by hand or a rolling upgrade;
    /// the prune schedule runs it hourly); prints the corrections.
    Recount,
    /// Stop workers claiming a kind (within one poll interval); queued jobs wait, running ones
    /// finish.
    Pause {
        /// The kind.
        #[arg(value_enum)]
        kind: JobKind,
        /// Why (shown by `queue stats` and the API).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let workers claim a paused kind again, at once.
    Resume {
        /// The kind.
        #[arg(value_enum)]
        kind: JobKind,
    },
    /// Discard queued jobs: they become failed with result class `cancelled`. Running, done and
    /// failed jobs are left alone. Needs a filter.
    Cancel {
        /// Only this one job (its id from `queue list`).
        #[arg(long, conflicts_with_all = ["kind", "link"])]
        job: Option<i64>,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<JobKind>,
        /// Only the jobs of this link (id or URL).
        #[arg(long)]
        link: Option<String>,
        /// Why (stored as the jobs' last error; default "cancelled by cli:$USER").
        #[arg(long)]
        reason: Option<String>,
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
