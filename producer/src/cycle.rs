//! The enqueue of due jobs: a check for every link whose check is due and a refresh for every
//! link whose metadata is stale, oldest first and round-robin by host, capped per kind, never a
//! second unfinished job for the same link and kind. The `check` and `refresh` schedules run one
//! kind each ([`enqueue_kind`]); [`run_cycle`] runs both, as `producer cycle` always did.
//!
//! Each kind is one set-based statement (`INSERT … SELECT … ON CONFLICT DO NOTHING`): a range
//! scan of the due index plus, per candidate, one probe of the queue's dedupe index, then the
//! inserted rows. The dedupe index of the queue makes two producers cycling at the same moment
//! harmless: both insert in dedupe-key order, the second waits on the first's uncommitted keys
//! and then skips them.

use serde::Serialize;
use sqlx::PgPool;

use linkpulse_queue::{EnqueueSelect, QueueError};
use linkpulse_shared::config::Settings;
use linkpulse_shared::link_jobs::{CHECK, REFRESH};
use linkpulse_shared::telemetry;

/// The enqueue statement for links whose `$column` is older than `now() - $1` (or null: never
/// done) and whose status is not one of `$skipped` (a SQL list: `paused` links are never
/// scheduled, `inaccessible` ones are not refreshed until they recover), at most `$2` jobs, fair
/// to every host:
///
/// 1. `busy`: hosts that already have `$6` or more jobs of this kind waiting. More would only wait
///    behind those (a host's jobs run at most `LINKPULSE_HOST_CONCURRENCY` at a time, paced), so
///    such a host gets none this cycle and its share goes to the others.
/// 2. `candidates`: due links of the other hosts that have no unfinished job of this kind yet
///    (the queue's dedupe index answers that), oldest first along the column's `links_*_due_idx`,
///    up to four times the limit. Without the skip, every cycle after a big import re-selected
///    the same already-queued links and enqueued nothing while other hosts waited.
/// 3. `due`: the limit, taken round-robin by host (each host's oldest first, then each host's
///    second, …), so one host's backlog cannot crowd out the rest of a cycle.
///
/// The queue inserts what it returns ([`linkpulse_queue::insert_select`]): the conflict rule, the
/// insert order (concurrent cycles wait on each other's keys in one order) and the wake-up are
/// its own. The job key and payload come from `link_jobs.rs`, where their Rust forms live. Every job
/// carries the W3C trace context of the `job.enqueue` span, so each job's `job.run` span becomes
/// its child, in the cycle's trace. The skip probes `queue_jobs_dedupe_idx` with the same key,
/// spelled over the `l.` alias.
macro_rules! link_enqueue_due {
    ($column:literal, $skipped:literal) => {
        concat!(
            "WITH busy AS (
    SELECT group_key FROM queue_jobs
    WHERE state = 'queued' AND kind = $3 AND group_key IS NOT NULL
    GROUP BY group_key
    HAVING count(*) >= $4
),
candidates AS (
    SELECT l.id, l.url, l.host, coalesce(l.",
            $column,
            ", '-infinity'::timestamptz) AS due_at
    FROM links l
    WHERE coalesce(l.",
            $column,
            ", '-infinity'::timestamptz) <= now() - make_interval(secs => $1)
      AND l.status NOT IN (",
            $skipped,
            ")
      AND l.host NOT IN (SELECT group_key FROM busy)
      AND NOT EXISTS (
          SELECT 1 FROM queue_jobs q
          WHERE q.kind = $3 AND q.dedupe_key = ",
            linkpulse_shared::link_dedupe_key_sql!("l.id"),
            "
            AND q.state IN ('queued', 'running') AND q.dedupe_key IS NOT NULL)
    ORDER BY coalesce(l.",
            $column,
            ", '-infinity'::timestamptz), l.id
    LIMIT $2 * 4
),
due AS (
    SELECT id, url, host FROM (
        SELECT c.id, c.url, c.host, c.due_at,
               row_number() OVER (PARTITION BY c.host ORDER BY c.due_at, c.id) AS host_rank
        FROM candidates c
    ) ranked
    ORDER BY host_rank, due_at, id
    LIMIT $2
)
SELECT ",
            linkpulse_shared::link_dedupe_key_sql!(),
            " AS dedupe_key, host AS group_key, ",
            linkpulse_shared::link_payload_sql!(),
            " AS payload FROM due"
        )
    };
}

/// Bind parameters of the due selections: `$1` seconds since the last run, `$2` the limit,
/// `$3` the kind, `$4` a host's share.
const DUE_PARAMS: usize = 4;

/// A host's share of waiting jobs of one kind: a quarter of the cycle limit (at least a few per
/// allowed concurrent job). A host with that many queued gets no more until they drain.
pub fn host_share(settings: &Settings) -> i64 {
    share_of(settings, settings.cycle_limit)
}

fn share_of(settings: &Settings, limit: i64) -> i64 {
    (limit / 4).max(i64::from(settings.queue.host_concurrency) * 4)
}

/// The job kinds a cycle enqueues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    /// Health checks, due `LINKPULSE_CHECK_AFTER` after the last one.
    Check,
    /// Metadata refreshes, due `LINKPULSE_REFRESH_AFTER` after the last one.
    Refresh,
}

/// Enqueues up to `limit` due jobs of one kind (the work of the `check` and `refresh` schedules).
///
/// # Errors
///
/// If the statement fails; nothing of it is enqueued then.
pub async fn enqueue_kind(
    pool: &PgPool,
    settings: &Settings,
    kind: DueKind,
    limit: i64,
) -> Result<KindCycle, QueueError> {
    match kind {
        DueKind::Check => {
            enqueue_due(
                pool,
                LINK_ENQUEUE_DUE_CHECKS,
                CHECK,
                settings.check_after,
                limit,
                settings,
            )
            .await
        }
        DueKind::Refresh => {
            enqueue_due(
                pool,
                LINK_ENQUEUE_DUE_REFRESHES,
                REFRESH,
                settings.refresh_after,
                limit,
                settings,
            )
            .await
        }
    }
}

/// `link_enqueue_due_checks`: due = never checked, or checked before `now() - $1`
/// (`links_check_due_idx`); never a paused link (`archived` ones are still checked).
const LINK_ENQUEUE_DUE_CHECKS: &str = link_enqueue_due!("last_checked_at", "'paused'");

/// `link_enqueue_due_refreshes`: the same over `refreshed_at` (`links_refresh_due_idx`), and
/// not of an `inaccessible` link either: its page is not there to read, and its check (still
/// scheduled) finds out when it recovers, after which its refresh is due again.
const LINK_ENQUEUE_DUE_REFRESHES: &str = link_enqueue_due!("refreshed_at", "'paused', 'inaccessible'");

/// What a cycle did for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCycle {
    /// Whether the kind is enabled.
    pub enabled: bool,
    /// Due links selected to enqueue (at most the cycle limit); links that already have an
    /// unfinished job of the kind, and hosts with their share already waiting, are not counted.
    pub due: i64,
    /// Jobs enqueued.
    pub enqueued: i64,
    /// Selected links skipped because a concurrent cycle enqueued their job first.
    pub skipped: i64,
}

/// What a cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    /// Health checks.
    pub check: KindCycle,
    /// Metadata refreshes.
    pub refresh: KindCycle,
}

/// Runs one cycle.
///
/// Traced as `producer.cycle` (counts of enqueued and skipped jobs per kind) with one
/// `job.enqueue` child per kind; the jobs carry the trace context of their `job.enqueue`.
///
/// # Errors
///
/// If a statement fails; a kind already enqueued stays enqueued.
#[tracing::instrument(
    name = "producer.cycle",
    skip_all,
    fields(enqueued.check, skipped.check, enqueued.refresh, skipped.refresh)
)]
pub async fn run_cycle(pool: &PgPool, settings: &Settings) -> Result<CycleReport, QueueError> {
    let result = cycle(pool, settings).await;
    if let Err(error) = &result {
        telemetry::set_error(&tracing::Span::current(), &linkpulse_util::errors::error_chain(error));
    }
    result
}

async fn cycle(pool: &PgPool, settings: &Settings) -> Result<CycleReport, QueueError> {
    let mut report = CycleReport::default();
    if settings.check_enabled {
        report.check = enqueue_kind(pool, settings, DueKind::Check, settings.cycle_limit).await?;
    }
    if settings.refresh_enabled {
        report.refresh = enqueue_kind(pool, settings, DueKind::Refresh, settings.cycle_limit).await?;
    }
    let span = tracing::Span::current();
    span.record("enqueued.check", report.check.enqueued);
    span.record("skipped.check", report.check.skipped);
    span.record("enqueued.refresh", report.refresh.enqueued);
    span.record("skipped.refresh", report.refresh.skipped);
    tracing::info!(
        check.enqueued = report.check.enqueued,
        check.skipped = report.check.skipped,
        refresh.enqueued = report.refresh.enqueued,
        refresh.skipped = report.refresh.skipped,
        "cycle done"
    );
    Ok(report)
}

/// One kind's set-based enqueue, traced as `job.enqueue`.
#[tracing::instrument(name = "job.enqueue", skip_all, fields(job.kind = kind, due, enqueued, skipped))]
async fn enqueue_due(
    pool: &PgPool,
    statement: &'static str,
    kind: &str,
    after: std::time::Duration,
    limit: i64,
    settings: &Settings,
) -> Result<KindCycle, QueueError> {
    let spec = EnqueueSelect {
        kind,
        max_attempts: settings.queue.max_attempts,
        trace_context: telemetry::current_trace_context(),
        select: statement,
        params: DUE_PARAMS,
    };
    let share = share_of(settings, limit);
    let kind_param = kind.to_owned();
    let result = linkpulse_queue::insert_select(pool, &spec, |query| {
        query.bind(after.as_secs_f64()).bind(limit).bind(kind_param).bind(share)
    })
    .await;
    let span = tracing::Span::current();
    let (due, enqueued) = match result {
        Ok(report) => (report.selected, report.inserted),
        Err(error) => {
            telemetry::set_error(&span, &linkpulse_util::errors::error_chain(&error));
            return Err(error);
        }
    };
    span.record("due", due);
    span.record("enqueued", enqueued);
    span.record("skipped", due - enqueued);
    Ok(KindCycle {
        enabled: true,
        due,
        enqueued,
        skipped: due - enqueued,
    })
}
