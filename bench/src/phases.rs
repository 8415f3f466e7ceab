//! The measured phases of `queue`, run in order on one scratch database, and the `fill` helper
//! for the pgbench ceiling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use linkpulse_queue::engine::LISTENER_APPLICATION_NAME;
use linkpulse_queue::inspect::stats;
use linkpulse_queue::{NewJob, Queue, insert_many};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::noop::{self, Recorder, Started};
use crate::report::{EnqueueBulk, LatencyIdle, Process};
use crate::settings::Settings;
use crate::worker::RunningWorker;

/// Latency samples reported.
const LATENCY_SAMPLES: usize = 200;
/// Samples taken and discarded first, so one-time costs (a statement prepared on a pooled
/// connection for the first time, the first claim's plan) do not count as idle latency.
const LATENCY_WARMUP: usize = 5;
/// Pause before each sample, so the worker is idle again (fetcher asleep, waiting for a
/// notification) when the job arrives.
const LATENCY_PAUSE: Duration = Duration::from_millis(20);
/// A sample that takes longer failed: even a lost notification is caught by the 500 ms poll.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the process phase looks at the handlers' counters and then the queue.
const PROGRESS_POLL: Duration = Duration::from_millis(2);
/// How often a slow process phase logs its progress (stderr), so a stall is visible as it happens.
const PROGRESS_LOG: Duration = Duration::from_secs(1);

/// Inserts `jobs` in statements of `chunk` jobs, one after the other; returns how many were
/// inserted and skipped as duplicates.
///
/// # Errors
///
/// The first failed insert.
pub async fn insert_chunks(pool: &PgPool, jobs: &[NewJob], chunk: usize) -> anyhow::Result<(u64, u64)> {
    let (mut inserted, mut skipped) = (0, 0);
    for batch in jobs.chunks(chunk.max(1)) {
        let report = insert_many(pool, batch).await.context("inserting a chunk of jobs")?;
        inserted += report.inserted;
        skipped += report.skipped;
    }
    Ok((inserted, skipped))
}

/// `enqueue_bulk`: N jobs in chunks of CHUNK, one statement per chunk. Building the rows is not
/// timed; the inserts are.
///
/// # Errors
///
/// A failed insert, or jobs skipped (the scratch database must start empty).
pub async fn enqueue_bulk(pool: &PgPool, settings: Settings) -> anyhow::Result<EnqueueBulk> {
    let jobs = noop::new_jobs(settings.n, "").context("encoding jobs")?;
    let started = Instant::now();
    let (inserted, skipped) = insert_chunks(pool, &jobs, settings.chunk).await?;
    let elapsed = started.elapsed();
    ensure!(
        skipped == 0 && inserted == settings.n as u64,
        "inserted {inserted} jobs and skipped {skipped}"
    );
    Ok(EnqueueBulk::new(settings.n, settings.chunk, elapsed))
}

/// `process`: a real worker drains the N queued jobs. Timed from before the engine starts until
/// every job has run and the queue shows none queued or running; then the worker is drained.
///
/// # Errors
///
/// If the worker fails, or the jobs are not all done within a generous deadline.
pub async fn process(pool: &PgPool, settings: Settings) -> anyhow::Result<Process> {
    let recorder = Arc::new(Recorder::new(settings.n, None));
    let name = format!("bench-{}-process", std::process::id());
    let started = Instant::now();
    let worker = RunningWorker::start(pool, &name, settings.conc, recorder.clone()).await?;
    let finished = wait_until_done(pool, &recorder, settings.n, started).await;
    // Stop before reporting, also on failure, so duplicates from the drain are counted and no
    // worker outlives the phase.
    let stopped = worker.stop().await;
    let elapsed = finished?;
    stopped?;
    Ok(Process::new(
        settings.n,
        recorder.completed(),
        recorder.duplicates(),
        elapsed,
    ))
}

/// Waits until every job ran once and the queue holds none queued or running; returns the time
/// since `started`.
async fn wait_until_done(pool: &PgPool, recorder: &Recorder, n: usize, started: Instant) -> anyhow::Result<Duration> {
    // A minute plus a millisecond per job: far beyond any healthy run, short enough for CI.
    let deadline = started + Duration::from_secs(60) + Duration::from_millis(n as u64);
    let mut next_progress = Instant::now() + PROGRESS_LOG;
    while recorder.completed() < n {
        if Instant::now() >= next_progress {
            tracing::info!(ran = recorder.completed(), of = n, "progress");
            next_progress += PROGRESS_LOG;
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} jobs ran before the deadline", recorder.completed());
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
    let ran_s = started.elapsed().as_secs_f64();
    loop {
        let kinds = stats(pool, &[noop::KIND]).await.context("reading queue stats")?;
        let noop = kinds.kinds.get(noop::KIND).cloned().unwrap_or_default();
        if noop.queued == 0 && noop.running == 0 {
            let elapsed = started.elapsed();
            tracing::info!(
                ran_s,
                done_s = elapsed.as_secs_f64(),
                done = noop.done,
                failed = noop.failed,
                "queue drained"
            );
            ensure!(noop.failed == 0, "{} jobs failed", noop.failed);
            return Ok(elapsed);
        }
        if Instant::now() > deadline {
            bail!(
                "{} jobs still queued and {} running after every job ran",
                noop.queued,
                noop.running
            );
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

/// `latency_idle`: single autocommit inserts through [`Queue`] (debounced `NOTIFY`) into a fresh,
/// idle worker; each sample is the time from just before the insert to the handler's start.
///
/// # Errors
///
/// If the worker fails, an insert fails, or a sample does not start within [`SAMPLE_TIMEOUT`].
pub async fn latency_idle(pool: &PgPool, settings: Settings) -> anyhow::Result<LatencyIdle> {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let recorder = Arc::new(Recorder::new(LATENCY_WARMUP + LATENCY_SAMPLES, Some(started_tx)));
    let name = format!("bench-{}-latency", std::process::id());
    let worker = RunningWorker::start(pool, &name, settings.conc, recorder.clone()).await?;
    let sampled = async {
        wait_for_listener(pool, worker.id()).await?;
        sample_latencies(pool, &mut started_rx).await
    }
    .await;
    let stopped = worker.stop().await;
    let samples = sampled?;
    stopped?;
    ensure!(
        recorder.duplicates() == 0,
        "{} latency jobs ran twice",
        recorder.duplicates()
    );
    Ok(LatencyIdle::new(samples))
}

/// Waits until the worker's listener connection has run `LISTEN`, so the first sample is woken
/// by its notification rather than found by the fallback poll.
async fn wait_for_listener(pool: &PgPool, worker_id: uuid::Uuid) -> anyhow::Result<()> {
    // Listener connections opened after this worker registered: not a previous worker's.
    const LISTENING: &str = r#"
        SELECT EXISTS (
            SELECT 1 FROM pg_stat_activity a
            WHERE a.datname = current_database()
              AND a.application_name = $1
              AND a.query ILIKE 'LISTEN%'
              AND a.backend_start >= (SELECT w.started_at FROM queue_workers w WHERE w.id = $2))
    "#;
    let deadline = Instant::now() + SAMPLE_TIMEOUT;
    loop {
        let (listening,): (bool,) = sqlx::query_as(LISTENING)
            .bind(LISTENER_APPLICATION_NAME)
            .bind(worker_id)
            .fetch_one(pool)
            .await
            .context("looking for the worker's listener")?;
        if listening {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the worker's listener did not LISTEN within {SAMPLE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes the warm-up and the measured samples one at a time; returns the measured ones.
async fn sample_latencies(
    pool: &PgPool,
    started: &mut mpsc::UnboundedReceiver<Started>,
) -> anyhow::Result<Vec<Duration>> {
    let queue = Queue::new(pool.clone());
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        tokio::time::sleep(LATENCY_PAUSE).await;
        let job = noop::new_job(i, "latency-").context("encoding a latency job")?;
        let before_insert = Instant::now();
        queue
            .enqueue(&[job])
            .await
            .with_context(|| format!("enqueueing latency sample {i}"))?;
        let start = wait_for_start(started, i).await?;
        if i >= LATENCY_WARMUP {
            samples.push(start.saturating_duration_since(before_insert));
        }
    }
    Ok(samples)
}

/// Waits for the handler of sample `i` to start; returns when it did.
async fn wait_for_start(started: &mut mpsc::UnboundedReceiver<Started>, i: usize) -> anyhow::Result<Instant> {
    let wait = async {
        while let Some(start) = started.recv().await {
            if start.i == i {
                return Some(start.at);
            }
            tracing::warn!(expected = i, got = start.i, "unexpected latency job start");
        }
        None
    };
    match tokio::time::timeout(SAMPLE_TIMEOUT, wait).await {
        Ok(Some(at)) => Ok(at),
        Ok(None) => bail!("the worker stopped before latency sample {i} started"),
        Err(_) => bail!("latency sample {i} did not start within {SAMPLE_TIMEOUT:?}"),
    }
}

/// `fill`: inserts N queued no-op jobs into `pool`'s database (migrated first) for the pgbench
/// ceiling, then analyzes the table, and logs what it did.
///
/// The `ANALYZE` is there because the ceiling should measure the SQL with the plan it gets in a
/// steady state (autovacuum analyzes a table within a minute of a bulk insert), not the plan of a
/// table the planner has no statistics for yet.
///
/// # Errors
///
/// If the migration, an insert or the `ANALYZE` fails.
pub async fn fill(pool: &PgPool, settings: Settings) -> anyhow::Result<()> {
    linkpulse_shared::db::migrate(pool)
        .await
        .context("migrating the database")?;
    let jobs = noop::new_jobs(settings.n, "").context("encoding jobs")?;
    let started = Instant::now();
    let (inserted, skipped) = insert_chunks(pool, &jobs, settings.chunk).await?;
    tracing::info!(
        inserted,
        skipped,
        seconds = started.elapsed().as_secs_f64(),
        "filled the queue with noop jobs"
    );
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "jobs with the same dedupe key were still queued or running; they were not inserted again"
        );
    }
    sqlx::query("ANALYZE queue_jobs")
        .execute(pool)
        .await
        .context("analyzing queue_jobs")?;
    Ok(())
}
