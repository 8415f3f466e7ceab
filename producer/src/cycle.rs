//! One producer cycle: enqueue a check for every link whose check is due and a refresh for every
//! link whose metadata is stale, oldest first and round-robin by host, capped per kind, never a
//! second unfinished job for the same link and kind.
//!
//! Each kind is one set-based statement (`INSERT … SELECT … ON CONFLICT DO NOTHING`) so the cost
//! is one index range scan plus the inserted rows, whatever the number of links. The dedupe index
//! of the queue makes two producers cycling at the same moment harmless: both insert in link-id
//! order, the second waits on the first's uncommitted keys and then skips them.

use serde::Serialize;
use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::jobs::{CHECK, REFRESH};
use linkpulse_shared::queue::NOTIFY_CHANNEL;
use linkpulse_shared::telemetry;

/// The enqueue statement for links whose `$column` is older than `now() - $1` (or null: never
/// done), at most `$2` jobs, fair to every host:
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
/// Inserted in id order so concurrent cycles wait on each other's keys in one order. `$5` is the
/// W3C trace context of the `job.enqueue` span, the same for every job of the statement: each
/// job's `job.run` span becomes its child, in the cycle's trace.
macro_rules! link_enqueue_due {
    ($column:literal) => {
        concat!(
            "WITH busy AS (
    SELECT group_key FROM queue_jobs
    WHERE state = 'queued' AND kind = $3 AND group_key IS NOT NULL
    GROUP BY group_key
    HAVING count(*) >= $6
),
candidates AS (
    SELECT l.id, l.url, l.host, coalesce(l.",
            $column,
            ", '-infinity'::timestamptz) AS due_at
    FROM links l
    WHERE coalesce(l.",
            $column,
            ", '-infinity'::timestamptz) <= now() - make_interval(secs => $1)
      AND l.host NOT IN (SELECT group_key FROM busy)
      AND NOT EXISTS (
          SELECT 1 FROM queue_jobs q
          WHERE q.kind = $3 AND q.dedupe_key = 'link:' || l.id
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
),
inserted AS (
    INSERT INTO queue_jobs (kind, dedupe_key, group_key, payload, max_attempts, trace_context)
    SELECT $3, 'link:' || id, host, jsonb_build_object('link_id', id, 'url', url), $4, $5::jsonb
    FROM due
    ORDER BY id
    ON CONFLICT (kind, dedupe_key) WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM inserted)"
        )
    };
}

/// A host's share of waiting jobs of one kind: a quarter of the cycle limit (at least a few per
/// allowed concurrent job). A host with that many queued gets no more until they drain.
pub fn host_share(settings: &Settings) -> i64 {
    (settings.cycle_limit / 4).max(i64::from(settings.queue.host_concurrency) * 4)
}

/// `link_enqueue_due_checks`: due = never checked, or checked before `now() - $1`
/// (`links_check_due_idx`).
const LINK_ENQUEUE_DUE_CHECKS: &str = link_enqueue_due!("last_checked_at");

/// `link_enqueue_due_refreshes`: the same over `refreshed_at` (`links_refresh_due_idx`).
const LINK_ENQUEUE_DUE_REFRESHES: &str = link_enqueue_due!("refreshed_at");

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
pub async fn run_cycle(pool: &PgPool, settings: &Settings) -> Result<CycleReport, sqlx::Error> {
    let result = cycle(pool, settings).await;
    if let Err(error) = &result {
        telemetry::set_error(
            &tracing::Span::current(),
            &linkpulse_shared::queue::backend::error_chain(error),
        );
    }
    result
}

async fn cycle(pool: &PgPool, settings: &Settings) -> Result<CycleReport, sqlx::Error> {
    let mut report = CycleReport::default();
    if settings.check_enabled {
        report.check = enqueue_due(pool, LINK_ENQUEUE_DUE_CHECKS, CHECK, settings.check_after, settings).await?;
    }
    if settings.refresh_enabled {
        report.refresh = enqueue_due(
            pool,
            LINK_ENQUEUE_DUE_REFRESHES,
            REFRESH,
            settings.refresh_after,
            settings,
        )
        .await?;
    }
    if report.check.enqueued + report.refresh.enqueued > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(pool)
            .await?;
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
    settings: &Settings,
) -> Result<KindCycle, sqlx::Error> {
    let result: Result<(i64, i64), sqlx::Error> = sqlx::query_as(statement)
        .bind(after.as_secs_f64())
        .bind(settings.cycle_limit)
        .bind(kind)
        .bind(settings.queue.max_attempts)
        .bind(telemetry::current_trace_context())
        .bind(host_share(settings))
        .fetch_one(pool)
        .await;
    let span = tracing::Span::current();
    let (due, enqueued) = match result {
        Ok(counts) => counts,
        Err(error) => {
            telemetry::set_error(&span, &linkpulse_shared::queue::backend::error_chain(&error));
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
