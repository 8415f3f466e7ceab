//! `bench stats`: the operator surfaces (`queue stats`, `/api/queue/stats`, `/metrics`, the
//! dashboard) with RETAINED finished jobs in the table, against the count over the job table they
//! used to run.
//!
//! The retained jobs are written by SQL, as a long-running deployment's history would be, and the
//! counters are then brought in line the way an operator would after such a write: `queue
//! recount` for the totals and the per-minute history rebuilt from `finished_at` (the
//! acknowledgements would have written it as they went). Timings are medians and maxima of ROUNDS
//! calls each, against the running admin server over loopback HTTP for the routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// Rows per fill statement: a few seconds each, so progress shows in the log.
const FILL_CHUNK: i64 = 1_000_000;

/// One `bench stats` line.
#[derive(Debug, Serialize)]
pub struct StatsLine {
    /// `"stats"`.
    pub phase: &'static str,
    /// Finished jobs retained in the table.
    pub retained: i64,
    /// Every how many retained jobs one is `failed` (0: none, the dashboard's failed list then
    /// finds nothing to show).
    pub failed_every: i64,
    /// Queued and running jobs besides them.
    pub unfinished: i64,
    /// Seconds to fill the table (not a figure of linkpulse; for the record).
    pub fill_s: f64,
    /// Seconds `queue recount` took over the whole table.
    pub recount_s: f64,
    /// Calls per surface.
    pub rounds: usize,
    /// `inspect::stats` (what `queue stats` and `/api/queue/stats` run): median, max ms.
    pub stats_ms: (f64, f64),
    /// `counts::finished_per_minute` over the last hour (the throughput chart): median, max ms.
    pub per_minute_ms: (f64, f64),
    /// GET /api/queue/stats over loopback: median, max ms.
    pub api_stats_ms: (f64, f64),
    /// GET /metrics: median, max ms.
    pub metrics_ms: (f64, f64),
    /// GET / (the dashboard's overview): median, max ms.
    pub dashboard_ms: (f64, f64),
    /// Every other dashboard page (job list first page, filtered, deep page, bulk-requeue
    /// confirmation, one job, link list, one link, schedules): path, median, max ms.
    pub pages_ms: Vec<(String, f64, f64)>,
    /// The statement the stats ran before the counters (a count per kind and state over the job
    /// table, plus the last 24 hours by `finished_at`): median, max ms of 3 calls.
    pub table_count_ms: (f64, f64),
    /// Whether the counters' totals equal the table's count.
    pub totals_exact: bool,
}

/// Fills, recounts and times; `pool` is a scratch database.
///
/// # Errors
///
/// A failed statement or request.
pub async fn measure(
    pool: &PgPool,
    database_url: &str,
    retained: i64,
    failed_every: i64,
    rounds: usize,
) -> anyhow::Result<StatsLine> {
    let filled = Instant::now();
    fill(pool, retained, failed_every).await?;
    let fill_s = filled.elapsed().as_secs_f64();
    let recounted = Instant::now();
    linkpulse_queue::counts::recount(pool).await.context("recount")?;
    let recount_s = recounted.elapsed().as_secs_f64();
    rebuild_minutes(pool).await?;

    let kinds = ["check", "refresh"];
    let stats_ms = time(rounds, || async {
        linkpulse_queue::inspect::stats(pool, &kinds)
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let per_minute_ms = time(rounds, || async {
        linkpulse_queue::counts::finished_per_minute(pool, hour_ago)
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    let table_count_ms = time(3, || async {
        sqlx::query("SELECT kind, state, count(*) FROM queue_jobs GROUP BY kind, state")
            .fetch_all(pool)
            .await?;
        sqlx::query(
            "SELECT kind, count(*), avg(duration_ms) FROM queue_jobs \
             WHERE state IN ('done', 'failed') AND finished_at > now() - interval '24 hours' GROUP BY kind",
        )
        .fetch_all(pool)
        .await?;
        Ok(())
    })
    .await?;

    let mut settings = linkpulse_shared::config::Settings::defaults(database_url);
    settings.admin_addr = "127.0.0.1:0".parse().context("address")?;
    let stop = CancellationToken::new();
    let addr = producer::admin::serve(pool.clone(), Arc::new(settings), stop.clone()).await?;
    let api_stats_ms = time(rounds, || get(addr, "/api/queue/stats")).await?;
    let metrics_ms = time(rounds, || get(addr, "/metrics")).await?;
    let dashboard_ms = time(rounds, || get(addr, "/")).await?;
    let mut pages_ms = Vec::new();
    for path in pages(pool).await? {
        let (median, max) = time(rounds, || get(addr, &path)).await?;
        pages_ms.push((path, median, max));
    }
    stop.cancel();

    let stats = linkpulse_queue::inspect::stats(pool, &kinds).await?;
    let (done, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed') FROM queue_jobs",
    )
    .fetch_one(pool)
    .await?;
    let counted_done: i64 = stats.kinds.values().map(|k| k.done).sum();
    let counted_failed: i64 = stats.kinds.values().map(|k| k.failed).sum();
    let unfinished: i64 = stats.kinds.values().map(|k| k.queued + k.running).sum();
    Ok(StatsLine {
        phase: "stats",
        retained,
        failed_every,
        unfinished,
        fill_s,
        recount_s,
        rounds,
        stats_ms,
        per_minute_ms,
        api_stats_ms,
        metrics_ms,
        dashboard_ms,
        pages_ms,
        table_count_ms,
        totals_exact: (counted_done, counted_failed) == (done, failed),
    })
}

/// The dashboard pages to time: the job list plain, by state, by kind and result class, deep
/// (an id cursor half-way down the table), one job, the link list and one link, the schedules.
async fn pages(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let (max_id, failed_id): (i64, Option<i64>) =
        sqlx::query_as("SELECT max(id), max(id) FILTER (WHERE state = 'failed') FROM queue_jobs")
            .fetch_one(pool)
            .await?;
    let (link_id,): (i64,) = sqlx::query_as("SELECT min(id) FROM links").fetch_one(pool).await?;
    let job = failed_id.unwrap_or(max_id);
    Ok(vec![
        "/jobs".to_owned(),
        "/jobs?state=failed".to_owned(),
        "/jobs?state=done&kind=check&result=ok".to_owned(),
        format!("/jobs?before={}", max_id / 2),
        format!("/jobs/{job}"),
        "/links".to_owned(),
        "/links?status=all&q=example".to_owned(),
        format!("/links/{link_id}"),
        "/schedules".to_owned(),
    ])
}

/// `retained` finished jobs over the last two days (every `failed_every`-th failed, none if 0;
/// half checks, half refreshes),
/// 10,000 queued (a tenth of them due) and 100 running, then `VACUUM ANALYZE` as autovacuum would.
async fn fill(pool: &PgPool, retained: i64, failed_every: i64) -> anyhow::Result<()> {
    let mut from = 0;
    while from < retained {
        let to = (from + FILL_CHUNK).min(retained);
        sqlx::query(
            "INSERT INTO queue_jobs (kind, dedupe_key, payload, state, attempts, max_attempts, started_at, \
                                     finished_at, result_class, duration_ms) \
             SELECT CASE WHEN i % 2 = 0 THEN 'check' ELSE 'refresh' END, 'link:' || i, \
                    jsonb_build_object('link_id', i), \
                    CASE WHEN $3 > 0 AND i % $3 = 0 THEN 'failed' ELSE 'done' END, 1, 5, f, f, 'ok', (i % 500)::int \
             FROM generate_series($1::int8, $2::int8) i, \
                  LATERAL (SELECT now() - (i % 172800) * interval '1 second' AS f) t",
        )
        .bind(from + 1)
        .bind(to)
        .bind(failed_every)
        .execute(pool)
        .await
        .context("filling finished jobs")?;
        tracing::info!(rows = to, of = retained, "filled");
        from = to;
    }
    sqlx::query(
        "INSERT INTO queue_jobs (kind, dedupe_key, payload, max_attempts, run_at) \
         SELECT 'check', 'queued:' || i, '{}'::jsonb, 5, now() + CASE WHEN i % 10 = 0 THEN interval '0' ELSE interval '1 hour' END \
         FROM generate_series(1, 10000) i",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO queue_jobs (kind, dedupe_key, payload, state, attempts, max_attempts, lease_owner, lease_token, started_at) \
         SELECT 'check', 'running:' || i, '{}'::jsonb, 'running', 1, 5, gen_random_uuid(), gen_random_uuid(), now() \
         FROM generate_series(1, 100) i",
    )
    .execute(pool)
    .await?;
    // The links the pages list: 10,000, a tenth of them dead.
    sqlx::query(
        "INSERT INTO links (url, host, status, title) \
         SELECT 'https://site' || (i % 100) || '.example.org/page/' || i, 'site' || (i % 100) || '.example.org', \
                CASE WHEN i % 10 = 0 THEN 'inaccessible' ELSE 'active' END, 'Page ' || i \
         FROM generate_series(1, 10000) i",
    )
    .execute(pool)
    .await
    .context("filling links")?;
    sqlx::query("VACUUM ANALYZE queue_jobs").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE links").execute(pool).await?;
    Ok(())
}

/// The per-minute history the acknowledgements would have written for the filled jobs.
async fn rebuild_minutes(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO queue_finished_minutes (minute, kind, state, shard, n, duration_ms_sum, duration_n) \
         SELECT date_trunc('minute', finished_at), kind, state, (id % 4)::int2, count(*), \
                coalesce(sum(duration_ms), 0), count(duration_ms) \
         FROM queue_jobs WHERE state IN ('done', 'failed') AND finished_at > now() - interval '2 days' \
         GROUP BY 1, kind, state, 4",
    )
    .execute(pool)
    .await
    .context("rebuilding the per-minute history")?;
    sqlx::query("VACUUM ANALYZE queue_finished_minutes")
        .execute(pool)
        .await?;
    Ok(())
}

/// Median and maximum milliseconds of `rounds` calls of `call`, after one warm-up call.
async fn time<F, Fut>(rounds: usize, mut call: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    call().await?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1])))
}

/// GET `path` from the admin server at `addr` over a fresh connection; fails unless it answers
/// 200.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let head = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(())
}
