//! The `schedules` and `schedule_runs` tables: seeding, reading, changing a schedule, listing runs
//! and the statistics. What runs a schedule is [`super::runner`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use linkpulse_shared::config::Settings;

use super::spec::{SpecError, Trigger};

/// Every schedule, in the order they are listed.
pub const NAMES: [&str; 3] = ["check", "refresh", "prune"];

/// How often the `prune` schedule runs when first seeded.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most rows one `prune` run deletes per table (in batches of [`PRUNE_BATCH`]).
pub const DEFAULT_PRUNE_LIMIT: i64 = 1_000_000;
/// Rows per prune statement: short row locks, steady progress.
pub const PRUNE_BATCH: i64 = 1_000;

/// One schedule as the CLI, the API and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// `check`, `refresh` or `prune`.
    pub name: String,
    /// The interval (`90s`, `1h`), when it has one.
    pub every: Option<String>,
    /// The cron expression as written, when it has one.
    pub cron: Option<String>,
    /// IANA time zone of the cron expression.
    pub timezone: String,
    /// The trigger in words.
    pub description: String,
    /// Whether the leader runs it.
    pub enabled: bool,
    /// Most jobs one run enqueues (check, refresh) or deletes (prune).
    pub limit: i64,
    /// A run later than this is recorded `missed` and skipped.
    pub misfire_grace: String,
    /// The next planned occurrence (null while disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// When the last run started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// `ok`, `failed`, `missed` or `abandoned`.
    pub last_status: Option<String>,
    /// When a run last ended `ok`.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made it: `seed`, `cli:<user>`, `api`, `dashboard`.
    pub updated_by: String,
    /// The interval in milliseconds (for the runner).
    #[serde(skip)]
    pub every_ms: Option<i64>,
    /// The misfire grace in milliseconds (for the runner).
    #[serde(skip)]
    pub misfire_grace_ms: i64,
}

/// The row as stored.
#[derive(Debug)]
struct Row {
    name: String,
    every_ms: Option<i64>,
    cron: Option<String>,
    timezone: String,
    enabled: bool,
    job_limit: i64,
    misfire_grace_ms: i64,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_status: Option<String>,
    last_success_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn ms_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Row {
    fn into_schedule(self) -> Schedule {
        let description = match trigger_of(self.every_ms, self.cron.as_deref(), &self.timezone) {
            Ok(trigger) => trigger.describe(),
            Err(error) => format!("invalid: {error}"),
        };
        Schedule {
            every: self
                .every_ms
                .map(|ms| humantime::format_duration(millis(ms)).to_string()),
            cron: self.cron,
            timezone: self.timezone,
            description,
            enabled: self.enabled,
            limit: self.job_limit,
            misfire_grace: humantime::format_duration(millis(self.misfire_grace_ms)).to_string(),
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            last_status: self.last_status,
            last_success_at: self.last_success_at,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
            every_ms: self.every_ms,
            misfire_grace_ms: self.misfire_grace_ms,
            name: self.name,
        }
    }
}

fn trigger_of(every_ms: Option<i64>, cron: Option<&str>, timezone: &str) -> Result<Trigger, SpecError> {
    match (every_ms, cron) {
        (_, Some(cron)) => Trigger::cron(cron, timezone),
        (Some(ms), None) => Trigger::every(millis(ms)),
        (None, None) => Err(SpecError::ZeroInterval),
    }
}

impl Schedule {
    /// The schedule's trigger.
    ///
    /// # Errors
    ///
    /// A stored expression the parser no longer accepts (never written by our own surfaces).
    pub fn trigger(&self) -> Result<Trigger, SpecError> {
        trigger_of(self.every_ms, self.cron.as_deref(), &self.timezone)
    }

    /// The misfire grace.
    pub fn misfire_grace(&self) -> Duration {
        millis(self.misfire_grace_ms)
    }
}

/// Writes the rows that are absent from the environment's settings (`LINKPULSE_CYCLE_INTERVAL`,
/// `LINKPULSE_CYCLE_LIMIT`, `LINKPULSE_CHECK_ENABLED`, `LINKPULSE_REFRESH_ENABLED`); rows present
/// are left alone, since from then on the table is the truth. A seeded schedule runs at once
/// (a new producer cycles at start, as it always did).
///
/// # Errors
///
/// If the statement fails.
pub async fn seed(pool: &PgPool, settings: &Settings) -> Result<(), sqlx::Error> {
    let every = ms_of(settings.cycle_interval.max(Duration::from_millis(100)));
    let grace = every / 2;
    let prune_every = ms_of(DEFAULT_PRUNE_EVERY);
    sqlx::query!(
        "INSERT INTO schedules (name, every_ms, enabled, job_limit, misfire_grace_ms, next_run_at, updated_by)
         SELECT u.*, now(), 'seed' FROM unnest($1::text[], $2::int8[], $3::bool[], $4::int8[], $5::int8[]) AS u
         ON CONFLICT (name) DO NOTHING",
        &NAMES[..] as &[&str],
        &[every, every, prune_every],
        &[settings.check_enabled, settings.refresh_enabled, true],
        &[settings.cycle_limit, settings.cycle_limit, DEFAULT_PRUNE_LIMIT],
        &[grace, grace, prune_every / 2],
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Every schedule, in [`NAMES`] order.
///
/// # Errors
///
/// If the query fails.
pub async fn list(executor: impl PgExecutor<'_>) -> Result<Vec<Schedule>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT name, every_ms, cron, timezone, enabled, job_limit, misfire_grace_ms, next_run_at,
                last_run_at, last_status, last_success_at, updated_at, updated_by
         FROM schedules ORDER BY array_position(ARRAY['check', 'refresh', 'prune'], name)"
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(Row::into_schedule).collect())
}

/// The enabled schedules whose next occurrence is at or before `now`.
///
/// # Errors
///
/// If the query fails.
pub async fn due(executor: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<Vec<Schedule>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT name, every_ms, cron, timezone, enabled, job_limit, misfire_grace_ms, next_run_at,
                last_run_at, last_status, last_success_at, updated_at, updated_by
         FROM schedules WHERE enabled AND next_run_at <= $1
         ORDER BY next_run_at, array_position(ARRAY['check', 'refresh', 'prune'], name)",
        now
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(Row::into_schedule).collect())
}

/// The earliest next occurrence of an enabled schedule: when the leader wakes next.
///
/// # Errors
///
/// If the query fails.
pub async fn next_due(executor: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!("SELECT min(next_run_at) FROM schedules WHERE enabled")
        .fetch_one(executor)
        .await
}

/// One schedule by name, `None` when there is no such schedule.
///
/// # Errors
///
/// If the query fails.
pub async fn get(executor: impl PgExecutor<'_>, name: &str) -> Result<Option<Schedule>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "SELECT name, every_ms, cron, timezone, enabled, job_limit, misfire_grace_ms, next_run_at,
                last_run_at, last_status, last_success_at, updated_at, updated_by
         FROM schedules WHERE name = $1",
        name
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(Row::into_schedule))
}

/// A change to a schedule; absent fields stay as they are. Setting `every` clears `cron` and the
/// other way round.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Turn it on or off.
    pub enabled: Option<bool>,
    /// An interval (`90s`, `15m`).
    pub every: Option<String>,
    /// A cron expression.
    pub cron: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
    /// Jobs per run.
    pub limit: Option<i64>,
    /// Misfire grace (`30s`).
    pub misfire_grace: Option<String>,
}

/// Why a change is refused: the operator's mistake (exit 1, HTTP 400/404).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such schedule.
    #[error("no schedule {0:?} (schedules: check, refresh, prune)")]
    Unknown(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<SpecError> for ChangeError {
    fn from(e: SpecError) -> Self {
        Self::Invalid(e.to_string())
    }
}

fn duration_arg(what: &str, value: &str) -> Result<Duration, ChangeError> {
    humantime::parse_duration(value).map_err(|e| {
        ChangeError::Invalid(format!(
            "{what} {value:?}: {e} (expected a duration such as 90s, 15m, 7d)"
        ))
    })
}

/// Applies `change` to schedule `name` as `by`, recomputing the next occurrence when the trigger
/// or the toggle changed (a schedule enabled after a week off runs at its next occurrence, not a
/// week of missed ones). Returns the schedule as it now is.
///
/// # Errors
///
/// [`ChangeError`] for an unknown schedule, invalid input or a database failure.
pub async fn update(pool: &PgPool, name: &str, change: &Change, by: &str) -> Result<Schedule, ChangeError> {
    if change.every.is_some() && change.cron.is_some() {
        return Err(ChangeError::Invalid(
            "give either an interval or a cron expression, not both".into(),
        ));
    }
    if let Some(limit) = change.limit
        && limit <= 0
    {
        return Err(ChangeError::Invalid(format!(
            "limit {limit}: must be greater than zero"
        )));
    }
    let mut tx = pool.begin().await?;
    let current = sqlx::query_as!(
        Row,
        "SELECT name, every_ms, cron, timezone, enabled, job_limit, misfire_grace_ms, next_run_at,
                last_run_at, last_status, last_success_at, updated_at, updated_by
         FROM schedules WHERE name = $1 FOR UPDATE",
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ChangeError::Unknown(name.to_owned()))?;
    let (mut every_ms, mut cron) = (current.every_ms, current.cron.clone());
    if let Some(every) = &change.every {
        let every = duration_arg("interval", every)?;
        every_ms = Some(ms_of(Trigger::every(every).map(|_| every)?));
        cron = None;
    }
    if let Some(expression) = &change.cron {
        cron = Some(expression.trim().to_owned());
        every_ms = None;
    }
    let timezone = change.timezone.clone().unwrap_or_else(|| current.timezone.clone());
    let trigger = trigger_of(every_ms, cron.as_deref(), &timezone)?;
    let trigger_changed = every_ms != current.every_ms || cron != current.cron || timezone != current.timezone;
    let misfire_grace_ms = match &change.misfire_grace {
        Some(grace) => ms_of(duration_arg("misfire grace", grace)?),
        // A new trigger with no grace given gets the default for it.
        None if trigger_changed => ms_of(trigger.default_misfire_grace()),
        None => current.misfire_grace_ms,
    };
    let enabled = change.enabled.unwrap_or(current.enabled);
    let now = Utc::now();
    let next_run_at = if !enabled {
        None
    } else if trigger_changed || !current.enabled || current.next_run_at.is_none() {
        Some(trigger.next_after(now, None)?)
    } else {
        current.next_run_at
    };
    let row = sqlx::query_as!(
        Row,
        "UPDATE schedules SET every_ms = $2, cron = $3, timezone = $4, enabled = $5, job_limit = $6,
                misfire_grace_ms = $7, next_run_at = $8, updated_at = now(), updated_by = $9
         WHERE name = $1
         RETURNING name, every_ms, cron, timezone, enabled, job_limit, misfire_grace_ms, next_run_at,
                   last_run_at, last_status, last_success_at, updated_at, updated_by",
        name,
        every_ms,
        cron,
        timezone,
        enabled,
        change.limit.unwrap_or(current.job_limit),
        misfire_grace_ms,
        next_run_at,
        by,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(schedule = name, by, enabled, trigger = %trigger.describe(), "schedule changed");
    Ok(row.into_schedule())
}

/// One run, as `runs list` and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// Schedule name.
    pub schedule: String,
    /// `schedule`, `manual` or `missed`.
    pub trigger: String,
    /// Who asked, for a manual run.
    pub requested_by: Option<String>,
    /// The planned occurrence it stands for.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End (null while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from start to end.
    pub duration_ms: Option<f64>,
    /// `running`, `ok`, `failed`, `missed` or `abandoned`.
    pub status: String,
    /// Jobs enqueued (check, refresh).
    pub enqueued: Option<i64>,
    /// Due links not enqueued (a job already pending, or a concurrent cycle was first).
    pub skipped: Option<i64>,
    /// What else it did (prune: rows deleted).
    pub details: Option<serde_json::Value>,
    /// Why it failed, was missed or abandoned.
    pub error: Option<String>,
    /// `hostname:pid` of the producer.
    pub producer: String,
    /// Trace id of the run's span.
    pub trace_id: Option<String>,
}

/// Filters of `runs list` and `GET /api/runs`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RunFilter {
    /// Only this schedule.
    pub schedule: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
}

/// Most runs one listing returns.
pub const MAX_RUNS_LIMIT: i64 = 1_000;
/// Runs listed when no limit is given.
pub const DEFAULT_RUNS_LIMIT: i64 = 50;

/// Runs, newest first.
///
/// # Errors
///
/// If the query fails.
pub async fn runs(executor: impl PgExecutor<'_>, filter: &RunFilter) -> Result<Vec<Run>, sqlx::Error> {
    let limit = filter.limit.unwrap_or(DEFAULT_RUNS_LIMIT).clamp(1, MAX_RUNS_LIMIT);
    sqlx::query_as!(
        Run,
        r#"SELECT id, schedule, trigger, requested_by, scheduled_for, started_at, finished_at,
                  duration_ms, status, enqueued, skipped, details, error, producer, trace_id
           FROM schedule_runs
           WHERE ($1::text IS NULL OR schedule = $1) AND ($2::text IS NULL OR status = $2)
           ORDER BY started_at DESC, id DESC
           LIMIT $3"#,
        filter.schedule,
        filter.status,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// The statistics of `GET /api/schedules/stats`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Stats {
    /// Schedules.
    pub total: i64,
    /// Enabled schedules.
    pub enabled: i64,
    /// Runs kept, their successes and failures.
    pub runs: i64,
    /// Runs that ended `ok`.
    pub succeeded: i64,
    /// Runs that ended `failed`.
    pub failed: i64,
    /// The same over the last 24 hours.
    pub last_24h: serde_json::Value,
    /// Per schedule: name, last run time and status, next run time.
    pub schedules: serde_json::Value,
}

/// All the statistics in one statement (counts over the kept runs, per-schedule state from the
/// schedules rows).
///
/// # Errors
///
/// If the query fails.
pub async fn stats(executor: impl PgExecutor<'_>) -> Result<Stats, sqlx::Error> {
    sqlx::query_as!(
        Stats,
        r#"
WITH runs AS (
    SELECT count(*) AS runs,
           count(*) FILTER (WHERE status = 'ok') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE started_at > now() - interval '24 hours') AS runs_24h,
           count(*) FILTER (WHERE started_at > now() - interval '24 hours' AND status = 'ok') AS ok_24h,
           count(*) FILTER (WHERE started_at > now() - interval '24 hours' AND status = 'failed') AS failed_24h
    FROM schedule_runs
)
SELECT (SELECT count(*) FROM schedules) AS "total!",
       (SELECT count(*) FROM schedules WHERE enabled) AS "enabled!",
       runs.runs AS "runs!", runs.succeeded AS "succeeded!", runs.failed AS "failed!",
       jsonb_build_object('runs', runs.runs_24h, 'succeeded', runs.ok_24h, 'failed', runs.failed_24h) AS "last_24h!",
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'name', s.name, 'enabled', s.enabled, 'last_run_at', s.last_run_at,
                    'last_status', s.last_status, 'last_success_at', s.last_success_at,
                    'next_run_at', s.next_run_at)
                  ORDER BY array_position(ARRAY['check', 'refresh', 'prune'], s.name))
                 FROM schedules s), '[]'::jsonb) AS "schedules!"
FROM runs
"#
    )
    .fetch_one(executor)
    .await
}
