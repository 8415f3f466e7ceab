//! The `scale` command: many worker processes (`WORKERS`, default 24) at `CONC` checks each
//! (default 16) against one PostgreSQL server, as a scaled-out Kubernetes deployment runs them.
//!
//! Two phases in one scratch database, with the test site served in-process:
//!
//! 1. **Backlog**: `N` links (default 20,000) enqueued at once, drained by the pool: jobs/s.
//! 2. **Trickle**: with the pool idle, `TRICKLE` more links (default 200) enqueued one at a time,
//!    20 ms apart: the time from enqueue to start (the claim that leased the job) with every
//!    worker listening, p50/p95/max — the latency an application sees from "check now".
//!
//! Throughout, the workers' connections are counted in `pg_stat_activity` every 20 ms: the peak is
//! the footprint the README's sizing rule promises (three per worker).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use linkpulse_shared::config::Env;
use linkpulse_shared::db::worker_connections;
use producer::cycle::run_cycle;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::links;
use crate::settings::LinksSettings;

/// Worker processes when `WORKERS` is unset: the two dozen replicas.
pub const DEFAULT_WORKERS: usize = 24;
/// Checks per worker when `CONC` is unset: the production default.
pub const DEFAULT_CONC: usize = linkpulse_shared::config::DEFAULT_WORKER_CONCURRENCY;
/// Links of the backlog phase when `N` is unset.
pub const DEFAULT_N: usize = 20_000;
/// Links of the trickle phase when `TRICKLE` is unset.
pub const DEFAULT_TRICKLE: usize = 200;
/// Gap between two trickled enqueues: the pool is idle again before the next one.
const TRICKLE_GAP: Duration = Duration::from_millis(20);
/// The bench's own connections: its pool (one) and the connection sampler's (one).
pub const SCALE_CONNECTIONS: u32 = 1;

/// One `scale` run, as a JSON line.
#[derive(Debug, Serialize)]
pub struct Scale {
    /// Always `"scale"`.
    pub phase: &'static str,
    /// Worker processes.
    pub workers: usize,
    /// Checks in flight per worker.
    pub conc: usize,
    /// Links of the backlog phase.
    pub jobs: usize,
    /// Backlog drained per second.
    pub jobs_per_sec: f64,
    /// Most worker connections seen at once.
    pub peak_connections: i64,
    /// What the sizing rule allows: workers × 3.
    pub footprint: i64,
    /// Trickled jobs measured.
    pub trickle: usize,
    /// Enqueue to start, median, in ms.
    pub start_p50_ms: f64,
    /// Enqueue to start, 95th percentile, in ms.
    pub start_p95_ms: f64,
    /// Enqueue to start, worst, in ms.
    pub start_max_ms: f64,
}

/// Runs both phases in `pool`'s scratch database (workers connect with `scratch_url`).
///
/// # Errors
///
/// A worker that fails or exits, a queue that does not drain, or a database error.
pub async fn measure(pool: &PgPool, scratch_url: &str) -> anyhow::Result<Scale> {
    let env = Env::new(|var| std::env::var(var).ok());
    let workers = env.positive("WORKERS", DEFAULT_WORKERS).context("reading WORKERS")?;
    let conc = env.positive("CONC", DEFAULT_CONC).context("reading CONC")?;
    let n = env.positive("N", DEFAULT_N).context("reading N")?;
    let trickle = env.positive("TRICKLE", DEFAULT_TRICKLE).context("reading TRICKLE")?;
    let settings = LinksSettings {
        conc: workers * conc,
        workers,
        host_concurrency: workers * conc,
        ungrouped: false,
        retained_done: 0,
    };

    // The test site, in-process, and the backlog's links.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("binding the test site")?;
    let port = listener.local_addr().context("test site address")?.port();
    tokio::spawn(async move { axum::serve(listener, crate::site::router()).await });
    let list = std::env::temp_dir().join(format!("linkpulse-scale-{}.txt", std::process::id()));
    crate::site::write_urls(&list, port, n)?;
    let imported = links::import(pool, &list).await;
    let _ = std::fs::remove_file(&list);
    let urls = imported?;

    let stop = CancellationToken::new();
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = tokio::spawn(sample_connections(scratch_url.to_owned(), peak.clone(), stop.clone()));
    let bin = links::worker_binary()?;
    let mut children = links::spawn_workers(&bin, scratch_url, settings)?;
    wait_registered(pool, workers).await?;

    let producer_settings = links::producer_settings(scratch_url, settings, urls);
    let started = Instant::now();
    run_cycle(pool, &producer_settings).await.context("producer cycle")?;
    let elapsed = links::wait_until_drained(pool, &mut children, urls, started).await?;
    // The trickle's cycles must find only the new link: the backlog's links were just checked.
    let mut trickle_settings = producer_settings.clone();
    trickle_settings.check_after = Duration::from_secs(24 * 3600);
    let latencies = trickle_phase(pool, port, trickle, &trickle_settings).await?;
    stop.cancel();
    sampler.await.context("connection sampler")??;
    links::stop_workers(&mut children).await?;

    let percentile = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(index).copied().unwrap_or_default()
    };
    Ok(Scale {
        phase: "scale",
        workers,
        conc,
        jobs: n,
        jobs_per_sec: n as f64 / elapsed.as_secs_f64(),
        peak_connections: peak.load(Ordering::Relaxed),
        footprint: i64::from(worker_connections()) * i64::try_from(workers).unwrap_or(i64::MAX),
        trickle: latencies.len(),
        start_p50_ms: percentile(0.5),
        start_p95_ms: percentile(0.95),
        start_max_ms: latencies.last().copied().unwrap_or_default(),
    })
}

async fn wait_registered(pool: &PgPool, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
            .fetch_one(pool)
            .await
            .context("counting workers")?;
        if usize::try_from(n).unwrap_or_default() >= workers {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "only {n} of {workers} workers registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enqueues `count` links one at a time into an idle pool; returns each job's enqueue-to-start
/// time in ms, ascending.
async fn trickle_phase(
    pool: &PgPool,
    port: u16,
    count: usize,
    settings: &linkpulse_shared::config::Settings,
) -> anyhow::Result<Vec<f64>> {
    let (before,): (i64,) = sqlx::query_as("SELECT coalesce(max(id), 0) FROM queue_jobs")
        .fetch_one(pool)
        .await
        .context("last job id")?;
    for i in 0..count {
        let url = format!("http://127.0.0.1:{port}/ok/trickle{i}");
        let link = linkpulse_shared::link_url::parse_link(&url).context("trickle URL")?;
        linkpulse_shared::db::links::insert_many(pool, &[producer::commands::links::new_link(link)])
            .await
            .context("adding a trickled link")?;
        run_cycle(pool, settings).await.context("trickle cycle")?;
        tokio::time::sleep(TRICKLE_GAP).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM queue_jobs WHERE id > $1 AND (state = 'queued' OR started_at IS NULL)",
        )
        .bind(before)
        .fetch_one(pool)
        .await
        .context("waiting for the trickle")?;
        if open == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "{open} trickled jobs never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(f64,)> = sqlx::query_as(
        "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 FROM queue_jobs \
         WHERE id > $1 AND kind = 'check' ORDER BY 1",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .context("reading start latencies")?;
    Ok(rows.into_iter().map(|(ms,)| ms).collect())
}

/// Counts the workers' connections (every backend of the scratch database but the bench's two)
/// until `stop`, keeping the peak.
async fn sample_connections(url: String, peak: Arc<AtomicI64>, stop: CancellationToken) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&url).await.context("sampler connection")?;
    while !stop.is_cancelled() {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .context("sampling connections")?;
        // Minus the bench's own pool connection.
        peak.fetch_max(n - i64::from(SCALE_CONNECTIONS), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
