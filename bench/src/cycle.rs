//! The `cycle` command: how long one real producer cycle takes over a links table of a given
//! size, next to the cheapest statement that enqueues the same jobs (a bare `INSERT … SELECT`),
//! so what the cycle's ordering, limit and dedupe cost is visible, and how both grow with the
//! table.
//!
//! Each size runs in its own scratch database: fill `links`, bring it to a steady state, then
//! time, in order:
//! 1. the cycle ([`producer::cycle::run_cycle`]) with a limit of every due link (or `LIMIT`);
//! 2. the same cycle again at once: every due link is already queued, so it measures the dedupe;
//! 3. the bare insert of every due link into an emptied queue;
//! 4. one cycle with the production default limit into an emptied queue.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use linkpulse_shared::config::{DEFAULT_CYCLE_LIMIT, Settings};
use producer::cycle::{CycleReport, run_cycle};
use sqlx::PgPool;

use crate::report::{Cycle, CycleTimes};
use crate::settings::CycleSettings;

/// The check period of the run (production's default). Due links were checked twice as long
/// ago, the others an hour ago, so no link is near the boundary while the run lasts.
const CHECK_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Fills `links` with `$1` links over 5,000 hosts and returns how many it inserted and how many
/// of them it made due. `(i * 37) % 100 < $2` picks the due ones: 37 is coprime to 100, so it
/// permutes every run of 100 consecutive ids and exactly `$2` of each hundred are due, spread
/// over the whole table as links checked at different times are, not in one block whose few heap
/// pages the cycle would read cheaply. Refreshes are not due.
///
/// The due count is the fill's own choice, counted where it is made: the run checks the cycle's
/// enqueue predicate, so the expected count must not come from a second copy of that predicate.
const FILL_LINKS: &str = r#"
WITH chosen AS (
    SELECT i, (i * 37) % 100 < $2 AS due FROM generate_series(1::bigint, $1::bigint) AS i
),
filled AS (
    INSERT INTO links (url, host, last_checked_at, refreshed_at)
    SELECT 'https://host' || (i % 5000) || '.example/page/' || i,
           'host' || (i % 5000) || '.example',
           CASE WHEN due THEN now() - interval '2 days' ELSE now() - interval '1 hour' END,
           now()
    FROM chosen
    RETURNING 1
)
SELECT (SELECT count(*) FROM filled), (SELECT count(*) FROM chosen WHERE due)
"#;

/// The cheapest statement that enqueues a check for every due link: no ordering, no limit, no
/// dedupe, no trace context. The cycle's cost above this is what its guarantees cost.
const BARE_INSERT: &str = r#"
INSERT INTO queue_jobs (kind, dedupe_key, group_key, payload, max_attempts)
SELECT 'check', 'link:' || id, host, jsonb_build_object('link_id', id, 'url', url), 5
FROM links
WHERE last_checked_at <= now() - make_interval(secs => $1)
"#;

/// Measures one size in `pool`'s freshly migrated database; `database_url` only fills the
/// producer settings (the cycle uses the pool, never the URL).
///
/// # Errors
///
/// A failed statement, or a step that did not enqueue (or skip) the expected number of jobs.
pub async fn measure(pool: &PgPool, database_url: &str, links: i64, settings: &CycleSettings) -> anyhow::Result<Cycle> {
    let due = fill(pool, links, settings.due_percent).await?;
    ensure!(
        due > 0,
        "none of the {links} links is due: use more links or a higher DUE_PERCENT"
    );
    let limit = settings.limit.unwrap_or(due);
    let expected = limit.min(due);
    if limit < due {
        tracing::warn!(
            limit,
            due,
            "LIMIT is below the due count: the cycle enqueues fewer jobs than the bare insert it is compared with"
        );
    }
    let mut producer_settings = Settings::defaults(database_url);
    producer_settings.check_after = CHECK_AFTER;
    producer_settings.refresh_enabled = false;
    producer_settings.cycle_limit = limit;

    settle(pool).await;
    let (cycle, first) = timed(run_cycle(pool, &producer_settings))
        .await
        .context("first cycle")?;
    ensure_enqueued("first cycle", first, expected, 0)?;
    tracing::info!(seconds = secs(cycle), enqueued = expected, "first cycle");
    let (second_cycle, second) = timed(run_cycle(pool, &producer_settings))
        .await
        .context("second cycle")?;
    // Every due link already has a queued job: the fair selection skips them all before the
    // insert, so nothing is selected, enqueued or skipped on conflict.
    ensure_enqueued("second cycle", second, 0, 0)?;
    tracing::info!(seconds = secs(second_cycle), queued_already = expected, "second cycle");

    empty_queue(pool).await?;
    let (bare_insert, inserted) = timed(sqlx::query(BARE_INSERT).bind(CHECK_AFTER.as_secs_f64()).execute(pool))
        .await
        .context("bare insert")?;
    ensure!(
        inserted.rows_affected() == due.unsigned_abs(),
        "the bare insert enqueued {} jobs, not {due}",
        inserted.rows_affected()
    );
    tracing::info!(seconds = secs(bare_insert), inserted = due, "bare insert");

    empty_queue(pool).await?;
    producer_settings.cycle_limit = DEFAULT_CYCLE_LIMIT;
    let (limit_default_cycle, report) = timed(run_cycle(pool, &producer_settings))
        .await
        .context("cycle with the default limit")?;
    ensure_enqueued("cycle with the default limit", report, DEFAULT_CYCLE_LIMIT.min(due), 0)?;
    tracing::info!(
        seconds = secs(limit_default_cycle),
        limit = DEFAULT_CYCLE_LIMIT,
        "cycle with the default limit"
    );

    Ok(Cycle::new(
        links,
        due,
        CycleTimes {
            enqueued: usize::try_from(expected).context("enqueued count")?,
            cycle,
            second_cycle,
            bare_insert,
            limit_default_cycle,
        },
    ))
}

/// Fills `links` (one statement, timed and logged), then `VACUUM ANALYZE`s it so the cycle
/// meets the table as it is between cycles in production: statistics fresh, visibility map and
/// hint bits set, not a table whose first reader pays for a bulk load. Returns the due count the
/// fill chose.
async fn fill(pool: &PgPool, links: i64, due_percent: u32) -> anyhow::Result<i64> {
    let (fill_time, (filled, due)) = timed(
        sqlx::query_as::<_, (i64, i64)>(FILL_LINKS)
            .bind(links)
            .bind(i64::from(due_percent))
            .fetch_one(pool),
    )
    .await
    .context("filling links")?;
    ensure!(filled == links, "the fill inserted {filled} links, not {links}");
    let (vacuum_time, _) = timed(sqlx::raw_sql("VACUUM ANALYZE links").execute(pool))
        .await
        .context("vacuuming links")?;
    tracing::info!(
        links,
        due,
        fill_s = secs(fill_time),
        vacuum_analyze_s = secs(vacuum_time),
        "filled links"
    );
    Ok(due)
}

/// Empties the queue between steps, so each starts from the same empty table as the first.
async fn empty_queue(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("TRUNCATE queue_jobs")
        .execute(pool)
        .await
        .context("truncating queue_jobs")?;
    settle(pool).await;
    Ok(())
}

/// Writes the dirty pages of the previous steps (above all the fill's) before the next timed
/// step, so a checkpoint they trigger does not land inside a measurement. `CHECKPOINT` needs
/// superuser or `pg_checkpoint`; without, the run goes on, only noisier.
pub(crate) async fn settle(pool: &PgPool) {
    if let Err(error) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        tracing::warn!(%error, "CHECKPOINT failed; timings may include a checkpoint");
    }
}

/// Checks what a cycle did, so a cycle that silently enqueued nothing is an error, not a fast
/// result.
fn ensure_enqueued(step: &str, report: CycleReport, enqueued: i64, skipped: i64) -> anyhow::Result<()> {
    ensure!(
        report.check.enqueued == enqueued && report.check.skipped == skipped && report.refresh.enqueued == 0,
        "{step}: expected {enqueued} checks enqueued and {skipped} skipped, got {:?}",
        report
    );
    Ok(())
}

/// Runs `step` and returns its wall-clock time with its output.
async fn timed<T, E>(step: impl Future<Output = Result<T, E>>) -> Result<(Duration, T), E> {
    let started = Instant::now();
    let output = step.await?;
    Ok((started.elapsed(), output))
}

/// Seconds, for logs.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON field is named after the production default; keep the two in step.
    #[test]
    fn default_limit_matches_the_reported_field() {
        assert_eq!(DEFAULT_CYCLE_LIMIT, 10_000);
    }

    /// The real fill and the real cycle: exactly `p` of every 100 consecutive links are due, the
    /// fill says so, and the producer's cycle enqueues exactly those, whatever `p`. The
    /// expectation is the construction's (`p` per hundred), not a copy of either formula.
    #[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
    async fn the_fill_makes_exactly_p_of_every_hundred_links_due_for_the_real_cycle(pool: PgPool) {
        let mut settings = Settings::defaults("postgres://unused");
        settings.check_after = CHECK_AFTER;
        settings.refresh_enabled = false;
        settings.cycle_limit = 10_000;
        for p in [1_u32, 10, 37, 99, 100] {
            sqlx::raw_sql("TRUNCATE links, link_verdicts, queue_jobs RESTART IDENTITY")
                .execute(&pool)
                .await
                .expect("empty tables");
            let due = fill(&pool, 1_000, p).await.expect("fill");
            assert_eq!(due, i64::from(p) * 10, "p = {p}: the fill's count");
            let report = run_cycle(&pool, &settings).await.expect("cycle");
            ensure_enqueued("cycle", report, due, 0).expect("the cycle enqueued the due links");
            let per_hundred: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT (l.id - 1) / 100 AS hundred, count(j.id) FROM links l \
                 LEFT JOIN queue_jobs j ON j.kind = 'check' AND j.dedupe_key = 'link:' || l.id \
                 GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("jobs per hundred links");
            assert_eq!(per_hundred.len(), 10, "p = {p}");
            for (hundred, jobs) in per_hundred {
                let first = hundred * 100 + 1;
                assert_eq!(jobs, i64::from(p), "p = {p}, links {first}..={}", first + 99);
            }
        }
    }
}
