//! Running schedules: the leader's due runs, operators' run-now, and the bookkeeping of both.
//!
//! APScheduler's semantics (`coalesce=True`, `max_instances=1`, `misfire_grace_time`):
//!
//! - **One run at a time per schedule**, across replicas and operators: a run holds a
//!   transaction-level advisory lock on its own connection for its whole length (taken without
//!   waiting: a second starter gets [`RunError::Busy`], the API's 409), and the unique index
//!   `schedule_runs_one_running_idx` backs it in the data. The lock dies with its connection, so
//!   whoever takes it next knows that any run still marked `running` was left by a producer that
//!   died: it is closed as `abandoned` first.
//! - **Each planned occurrence runs once** across producers (`schedule_runs_occurrence_idx`),
//!   and a late one **coalesces**: however many occurrences passed, the schedule jumps to the
//!   first one after now ([`super::spec::Trigger::next_after`]).
//! - **Misfire**: a planned run starting later than its grace is recorded as one `missed` row
//!   and skipped, so a week of downtime leaves one row, not hundreds.
//! - **A failing run never stops the loop**: it is recorded `failed` with its error and the
//!   schedule has already moved on to its next occurrence.
//!
//! Connections: the lock's, plus one at a time for the work and the bookkeeping; the producer's
//! pool has three.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::db::history;
use linkpulse_shared::metrics::{SCHEDULE_RUN_DURATION, SCHEDULE_RUNS_TOTAL};
use linkpulse_shared::telemetry;

use super::store::{self, PRUNE_BATCH, Run, Schedule};
use crate::cycle::{self, DueKind};

/// First key of the schedules' advisory locks (the second is the name's hash): "ls" for
/// linkpulse schedules, apart from the leader's and the queue's maintenance keys.
const SCHEDULE_LOCK_CLASS: i32 = 0x6c73;

/// How often a producer's `prune` runs also recount the finished-job totals from the job table
/// ([`linkpulse_queue::counts::recount`]): that count visits every retained job (seconds at ten
/// million), while the counters only drift through writes from outside the queue crate.
const RECOUNT_EVERY: Duration = Duration::from_secs(3600);

/// When this process last recounted (`None`: not yet, so its first prune run does).
static LAST_RECOUNT: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Whether a recount is due, marking it done if so.
fn recount_due() -> bool {
    let mut last = LAST_RECOUNT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *last {
        Some(at) if at.elapsed() < RECOUNT_EVERY => false,
        _ => {
            *last = Some(std::time::Instant::now());
            true
        }
    }
}

/// Why a run did not start or did not end well.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run of the schedule is in progress (HTTP 409).
    #[error("schedule {0:?} is running already; try again when it ends")]
    Busy(String),
    /// No such schedule.
    #[error("no schedule {0:?} (schedules: check, refresh, prune)")]
    Unknown(String),
    /// The bookkeeping failed (the work's own failure is recorded in the run, not returned).
    #[error("schedule bookkeeping failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A run of a cycle failed (recorded in its run row too).
    #[error("the {schedule} run {run_id} failed: {error}")]
    Failed {
        /// Schedule.
        schedule: String,
        /// Its run.
        run_id: i64,
        /// Why.
        error: String,
    },
}

/// What started a run.
#[derive(Debug, Clone)]
pub enum Started {
    /// The leader, for the occurrence planned at this time.
    Schedule(DateTime<Utc>),
    /// An operator or an external scheduler (`producer cycle`), named here.
    Manual(String),
}

/// What a run's work did.
#[derive(Debug, Default)]
struct Work {
    enqueued: Option<i64>,
    skipped: Option<i64>,
    details: Option<serde_json::Value>,
}

/// The producer instance recorded with each run: `hostname:pid`.
pub fn instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Runs schedule `name` now, apart from its plan (the next planned occurrence stays as it was).
///
/// # Errors
///
/// [`RunError::Busy`] while another run of it is in progress, [`RunError::Unknown`], or a
/// database failure of the bookkeeping. A failure of the work itself is in the returned run.
pub async fn run_now(pool: &PgPool, settings: &Settings, name: &str, by: &str) -> Result<Run, RunError> {
    // Any replica or command may be the first to need the rows.
    store::seed(pool, settings).await?;
    let schedule = store::get(pool, name)
        .await?
        .ok_or_else(|| RunError::Unknown(name.to_owned()))?;
    execute(pool, settings, &schedule, Started::Manual(by.to_owned()))
        .await?
        .ok_or_else(|| RunError::Busy(name.to_owned()))
}

/// A cycle as `producer cycle` and `POST /api/cycle` always meant it: a run of `check`, then of
/// `refresh`, each if enabled, recorded as manual runs by `by`, traced under one `producer.cycle`
/// span.
///
/// # Errors
///
/// [`RunError::Busy`] when either is running already; [`RunError::Failed`] when a run failed
/// (a kind already enqueued stays enqueued).
#[tracing::instrument(
    name = "producer.cycle",
    skip_all,
    fields(enqueued.check, skipped.check, enqueued.refresh, skipped.refresh)
)]
pub async fn cycle(pool: &PgPool, settings: &Settings, by: &str) -> Result<cycle::CycleReport, RunError> {
    let mut report = cycle::CycleReport::default();
    let span = tracing::Span::current();
    store::seed(pool, settings).await?;
    for schedule in store::list(pool).await? {
        let slot = match schedule.name.as_str() {
            "check" => &mut report.check,
            "refresh" => &mut report.refresh,
            _ => continue,
        };
        if !schedule.enabled {
            continue;
        }
        let run = execute(pool, settings, &schedule, Started::Manual(by.to_owned()))
            .await?
            .ok_or_else(|| RunError::Busy(schedule.name.clone()))?;
        if run.status != "ok" {
            let error = run.error.unwrap_or_default();
            telemetry::set_error(&span, &error);
            return Err(RunError::Failed {
                schedule: schedule.name,
                run_id: run.id,
                error,
            });
        }
        let enqueued = run.enqueued.unwrap_or(0);
        let skipped = run.skipped.unwrap_or(0);
        *slot = cycle::KindCycle {
            enabled: true,
            due: enqueued + skipped,
            enqueued,
            skipped,
        };
        span.record(format!("enqueued.{}", schedule.name).as_str(), enqueued);
        span.record(format!("skipped.{}", schedule.name).as_str(), skipped);
    }
    tracing::info!(
        check.enqueued = report.check.enqueued,
        check.skipped = report.check.skipped,
        refresh.enqueued = report.refresh.enqueued,
        refresh.skipped = report.refresh.skipped,
        "cycle done"
    );
    Ok(report)
}

/// One pass of the leader: every enabled schedule whose occurrence is due at `now` runs (or is
/// recorded `missed`), one after another. A schedule busy with a manual run is left for the next
/// pass. Returns the runs recorded.
///
/// # Errors
///
/// If the schedules cannot be read; a failure of one schedule's bookkeeping is logged and the
/// others still run.
pub async fn run_due(pool: &PgPool, settings: &Settings, now: DateTime<Utc>) -> Result<Vec<Run>, sqlx::Error> {
    let mut runs = Vec::new();
    for schedule in store::due(pool, now).await? {
        let Some(planned) = schedule.next_run_at else {
            continue;
        };
        match execute(pool, settings, &schedule, Started::Schedule(planned)).await {
            Ok(Some(run)) => runs.push(run),
            Ok(None) => tracing::debug!(schedule = %schedule.name, "schedule busy or already run; next pass"),
            Err(error) => {
                tracing::error!(schedule = %schedule.name, error = %linkpulse_util::errors::error_chain(&error), "schedule run failed");
            }
        }
    }
    Ok(runs)
}

/// Closes, for every schedule nobody is running, the runs a dead producer left `running` (a new
/// leader calls this once). Returns how many were closed.
///
/// # Errors
///
/// If a statement fails.
pub async fn close_abandoned(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut closed = 0;
    for name in store::NAMES {
        let mut lock = pool.begin().await?;
        if try_lock(&mut lock, name).await? {
            closed += close_abandoned_of(pool, name).await?;
        }
        lock.rollback().await?;
    }
    Ok(closed)
}

async fn try_lock(lock: &mut sqlx::PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS "locked!""#,
        SCHEDULE_LOCK_CLASS,
        name
    )
    .fetch_one(lock)
    .await
}

/// `schedule_close_abandoned`: with the schedule's lock held, a `running` row has no runner.
async fn close_abandoned_of(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let closed = sqlx::query_scalar!(
        r#"WITH closed AS (
               UPDATE schedule_runs
               SET status = 'abandoned', finished_at = now(),
                   duration_ms = extract(epoch FROM now() - started_at) * 1000,
                   error = 'the producer running it stopped before it finished'
               WHERE schedule = $1 AND status = 'running'
               RETURNING started_at
           ),
           marked AS (
               UPDATE schedules s SET last_status = 'abandoned'
               FROM (SELECT max(started_at) AS started_at FROM closed) c
               WHERE s.name = $1 AND c.started_at IS NOT NULL
           )
           SELECT count(*) AS "closed!" FROM closed"#,
        name
    )
    .fetch_one(pool)
    .await?;
    if closed > 0 {
        tracing::warn!(
            schedule = name,
            closed,
            "closed a run left unfinished by a producer that stopped"
        );
        metrics::counter!(SCHEDULE_RUNS_TOTAL, "schedule" => name.to_owned(), "status" => "abandoned")
            .increment(u64::try_from(closed).unwrap_or(0));
    }
    Ok(u64::try_from(closed).unwrap_or(0))
}

/// Runs `schedule` once under its lock; `None` when it is busy (another run holds the lock) or
/// the planned occurrence was already run by another producer.
#[tracing::instrument(
    name = "schedule.run",
    skip_all,
    fields(schedule = %schedule.name, trigger, run_id, status, enqueued, skipped)
)]
async fn execute(
    pool: &PgPool,
    settings: &Settings,
    schedule: &Schedule,
    started: Started,
) -> Result<Option<Run>, RunError> {
    let name = schedule.name.as_str();
    let mut lock = pool.begin().await?;
    if !try_lock(&mut lock, name).await? {
        return Ok(None);
    }
    close_abandoned_of(pool, name).await?;
    let now = Utc::now();
    let trigger = schedule
        .trigger()
        .map_err(|e| RunError::Database(sqlx::Error::Protocol(format!("schedule {name}: {e}"))))?;
    let span = tracing::Span::current();
    let (kind, requested_by, scheduled_for) = match &started {
        Started::Schedule(planned) => ("schedule", None, Some(*planned)),
        Started::Manual(by) => ("manual", Some(by.clone()), None),
    };
    span.record("trigger", kind);
    let mut next_planned = None;
    if let Started::Schedule(planned) = started {
        // Coalesce: whatever passed, the next occurrence is the first one after now. Moved before
        // the work, so a toggle or a change made during the run is judged against the new plan.
        let next = trigger
            .next_after(now, Some(planned))
            .map_err(|e| RunError::Database(sqlx::Error::Protocol(format!("schedule {name}: {e}"))))?;
        let moved = sqlx::query!(
            "UPDATE schedules SET next_run_at = $3 WHERE name = $1 AND next_run_at = $2 AND enabled",
            name,
            planned,
            next,
        )
        .execute(pool)
        .await?
        .rows_affected();
        next_planned = Some(next);
        if moved == 0 {
            // Changed, disabled or already run since we read it.
            lock.rollback().await?;
            return Ok(None);
        }
        let late = (now - planned).to_std().unwrap_or(Duration::ZERO);
        if late > schedule.misfire_grace() {
            let run = record_missed(pool, schedule, planned, late).await?;
            lock.rollback().await?;
            return Ok(run);
        }
    }
    let Some(run_id) = sqlx::query_scalar!(
        "INSERT INTO schedule_runs (schedule, trigger, requested_by, scheduled_for, status, producer, trace_id)
         VALUES ($1, $2, $3, $4, 'running', $5, $6)
         ON CONFLICT DO NOTHING
         RETURNING id",
        name,
        kind,
        requested_by,
        scheduled_for,
        instance(),
        telemetry::current_trace_id(),
    )
    .fetch_optional(pool)
    .await?
    else {
        // This occurrence already ran on another producer.
        lock.rollback().await?;
        return Ok(None);
    };
    span.record("run_id", run_id);
    let clock = std::time::Instant::now();
    let result = work(pool, settings, schedule).await;
    let took = clock.elapsed();
    if let Some(next) = next_planned
        && Utc::now() > next
    {
        // The next occurrence passed meanwhile: it runs once, late (or is recorded missed past
        // its grace), never twice.
        tracing::warn!(schedule = name, took = ?took, next = %next, "schedule run overran its interval");
    }
    let (status, work, error) = match result {
        Ok(work) => ("ok", work, None),
        Err(error) => {
            let reason = linkpulse_util::errors::error_chain(error.as_ref());
            telemetry::set_error(&span, &reason);
            ("failed", Work::default(), Some(telemetry::redact(&reason)))
        }
    };
    span.record("status", status);
    if let Some(enqueued) = work.enqueued {
        span.record("enqueued", enqueued);
    }
    if let Some(skipped) = work.skipped {
        span.record("skipped", skipped);
    }
    let run = finish(pool, run_id, status, &work, error.as_deref()).await?;
    lock.commit().await?;
    let labels = [("schedule", name.to_owned()), ("status", status.to_owned())];
    metrics::counter!(SCHEDULE_RUNS_TOTAL, &labels).increment(1);
    metrics::histogram!(SCHEDULE_RUN_DURATION, "schedule" => name.to_owned()).record(took.as_secs_f64());
    if let Some(error) = &error {
        tracing::error!(
            schedule = name, run_id, trigger = kind, duration_ms = took.as_secs_f64() * 1000.0,
            error = %error, "schedule run failed"
        );
    } else {
        tracing::info!(
            schedule = name, run_id, trigger = kind, duration_ms = took.as_secs_f64() * 1000.0,
            enqueued = work.enqueued, skipped = work.skipped, details = ?work.details,
            "schedule run done"
        );
    }
    Ok(Some(run))
}

/// `schedule_run_finish`: the run's outcome, and the schedule's last run, in one statement.
async fn finish(
    pool: &PgPool,
    run_id: i64,
    status: &str,
    work: &Work,
    error: Option<&str>,
) -> Result<Run, sqlx::Error> {
    sqlx::query_as!(
        Run,
        r#"WITH finished AS (
               UPDATE schedule_runs
               SET status = $2, finished_at = clock_timestamp(),
                   duration_ms = extract(epoch FROM clock_timestamp() - started_at) * 1000,
                   enqueued = $3, skipped = $4, details = $5, error = $6
               WHERE id = $1
               RETURNING *
           ),
           marked AS (
               UPDATE schedules s
               SET last_run_at = f.started_at, last_status = f.status,
                   last_success_at = CASE WHEN f.status = 'ok' THEN f.finished_at ELSE s.last_success_at END
               FROM finished f
               WHERE s.name = f.schedule
           )
           SELECT id AS "id!", schedule AS "schedule!", trigger AS "trigger!", requested_by, scheduled_for,
                  started_at AS "started_at!", finished_at, duration_ms, status AS "status!", enqueued,
                  skipped, details, error, producer AS "producer!", trace_id
           FROM finished"#,
        run_id,
        status,
        work.enqueued,
        work.skipped,
        work.details,
        error,
    )
    .fetch_one(pool)
    .await
}

/// `schedule_run_missed`: one row for a skipped occurrence, however many passed.
async fn record_missed(
    pool: &PgPool,
    schedule: &Schedule,
    planned: DateTime<Utc>,
    late: Duration,
) -> Result<Option<Run>, sqlx::Error> {
    let reason = format!(
        "started {} after its planned time, past the misfire grace of {}; skipped to the next occurrence",
        humantime::format_duration(Duration::from_secs(late.as_secs())),
        humantime::format_duration(schedule.misfire_grace()),
    );
    let run = sqlx::query_as!(
        Run,
        r#"WITH missed AS (
               INSERT INTO schedule_runs (schedule, trigger, scheduled_for, started_at, finished_at, duration_ms,
                                          status, error, producer)
               VALUES ($1, 'missed', $2, now(), now(), 0, 'missed', $3, $4)
               ON CONFLICT DO NOTHING
               RETURNING *
           ),
           marked AS (
               UPDATE schedules s SET last_status = 'missed' FROM missed m WHERE s.name = m.schedule
           )
           SELECT id AS "id!", schedule AS "schedule!", trigger AS "trigger!", requested_by, scheduled_for,
                  started_at AS "started_at!", finished_at, duration_ms, status AS "status!", enqueued,
                  skipped, details, error, producer AS "producer!", trace_id
           FROM missed"#,
        schedule.name,
        planned,
        reason,
        instance(),
    )
    .fetch_optional(pool)
    .await?;
    if run.is_some() {
        tracing::warn!(schedule = %schedule.name, planned = %planned, late_ms = late.as_millis() as u64, "schedule run missed");
        metrics::counter!(SCHEDULE_RUNS_TOTAL, "schedule" => schedule.name.clone(), "status" => "missed").increment(1);
    }
    Ok(run)
}

type WorkError = Box<dyn std::error::Error + Send + Sync>;

/// The work of one run of `schedule`.
async fn work(pool: &PgPool, settings: &Settings, schedule: &Schedule) -> Result<Work, WorkError> {
    let kind = match schedule.name.as_str() {
        "check" => DueKind::Check,
        "refresh" => DueKind::Refresh,
        "prune" => return prune(pool, settings, schedule.limit).await,
        other => return Err(format!("schedule {other:?} has no work").into()),
    };
    let report = cycle::enqueue_kind(pool, settings, kind, schedule.limit).await?;
    Ok(Work {
        enqueued: Some(report.enqueued),
        skipped: Some(report.skipped),
        details: Some(json!({ "due": report.due })),
    })
}

/// The `prune` schedule: finished jobs past their retention (`LINKPULSE_RETAIN_DONE`,
/// `LINKPULSE_RETAIN_FAILED`) and runs past `LINKPULSE_RETAIN_RUNS`, at most `limit` rows of each
/// per run, in batches; link events past `LINKPULSE_RETAIN_EVENTS`, and the check verdicts of
/// each link beyond its newest `LINKPULSE_HISTORY_PER_LINK` (here, not in the write-back: that is
/// the workers' hot path). Once an hour per producer it also recounts the finished-job totals. The verdict trim starts where the previous run's ended
/// ([`verdicts_trimmed_until`]), recorded in the run's details.
async fn prune(pool: &PgPool, settings: &Settings, limit: i64) -> Result<Work, WorkError> {
    let batches = usize::try_from((limit / PRUNE_BATCH).max(1)).unwrap_or(1);
    let mut conn = pool.acquire().await?;
    let jobs = linkpulse_queue::maintenance::prune_finished(
        &mut conn,
        settings.queue.retain_done,
        settings.queue.retain_failed,
        PRUNE_BATCH,
        batches,
    )
    .await?;
    let mut runs = 0;
    for _ in 0..batches {
        let deleted = sqlx::query!(
            "DELETE FROM schedule_runs WHERE id IN (
                 SELECT id FROM schedule_runs
                 WHERE started_at < now() - make_interval(secs => $1) AND status <> 'running'
                 ORDER BY started_at LIMIT $2)",
            settings.retain_runs.as_secs_f64(),
            PRUNE_BATCH,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        runs += deleted;
        if deleted < u64::try_from(PRUNE_BATCH).unwrap_or(0) {
            break;
        }
    }
    let events = history::prune_events(&mut conn, settings.retain_events, PRUNE_BATCH, batches).await?;
    drop(conn);
    let recounted = if recount_due() {
        Some(linkpulse_queue::counts::recount(pool).await?)
    } else {
        None
    };
    let mut conn = pool.acquire().await?;
    let keep = settings.history_per_link;
    let since = verdicts_trimmed_until(&mut conn, keep).await?;
    let verdicts = history::prune_verdicts(
        &mut conn,
        keep,
        since,
        PRUNE_BATCH,
        u64::try_from(limit.max(1)).unwrap_or(u64::MAX),
    )
    .await?;
    Ok(Work {
        enqueued: None,
        skipped: None,
        details: Some(json!({
            "deleted_jobs": jobs,
            "counter_corrections": recounted,
            "deleted_runs": runs,
            "deleted_events": events,
            "deleted_verdicts": verdicts.deleted,
            "verdicts_kept": keep,
            "verdicts_trimmed_until": verdicts.trimmed_until,
        })),
    })
}

/// Where the last successful prune left the verdict trim, if its `verdicts_kept` was at most
/// `keep` (a trim to fewer verdicts covers this one); `None` (trim every link) otherwise, or when
/// there is no such run (the first prune, or one after a lower `LINKPULSE_HISTORY_PER_LINK`).
async fn verdicts_trimmed_until(
    conn: &mut sqlx::PgConnection,
    keep: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let last = sqlx::query!(
        r#"SELECT (details->>'verdicts_kept')::int8 AS kept,
                  (details->>'verdicts_trimmed_until')::timestamptz AS until
           FROM schedule_runs
           WHERE schedule = 'prune' AND status = 'ok' AND details ? 'verdicts_trimmed_until'
           ORDER BY started_at DESC LIMIT 1"#
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(last.and_then(|r| match r.kept {
        Some(kept) if kept <= keep => r.until,
        _ => None,
    }))
}
