//! A worker process over the `test` job kind, for crash, drain and cluster tests.
//!
//! Usage: `test-worker DATABASE_URL`; settings come from the same `LINKPULSE_*` variables as the
//! real worker (the test sets them on the child's command, not in its own environment), plus
//! `TEST_CONCURRENCY` (default 4), `TEST_SHUTDOWN_GRACE_MS` (default 30000) and
//! `TEST_APPLICATION_NAME` (unset: none), the `application_name` of the worker's connections
//! other than the listener's, so a test can find them in `pg_stat_activity`.

use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use integration_tests::{TestJob, create_test_runs};
use linkpulse_queue::{Engine, EngineConfig, JobError, JobLease, PgBackend};
use linkpulse_shared::config::{Env, queue_settings};
use linkpulse_shared::shutdown::{Drained, cancel_on_signal, run_until_drained};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

async fn record(pool: &PgPool, lease: &JobLease, event: &str) -> Result<(), JobError> {
    sqlx::query("INSERT INTO test_runs (job_id, attempt, pid, event, group_key) VALUES ($1, $2, $3, $4, $5)")
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(i32::try_from(std::process::id()).unwrap_or_default())
        .bind(event)
        .bind(lease.group_key.as_deref())
        .execute(pool)
        .await
        .map_err(|e| JobError::Retry(format!("recording {event}: {e}")))?;
    Ok(())
}

async fn run_test_job(job: TestJob, lease: JobLease, pool: Data<PgPool>) -> Result<(), JobError> {
    record(&pool, &lease, "start").await?;
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    if job.panic {
        panic!("test job {} asked to panic", lease.job_id);
    }
    if let Some(ms) = job.snooze_ms
        && lease.attempt == 1
    {
        return Err(JobError::Snooze {
            delay: Duration::from_millis(ms),
            reason: "test snooze".into(),
        });
    }
    if let Some(message) = job.retry {
        return Err(JobError::Retry(message));
    }
    if let Some(message) = job.fail {
        return Err(JobError::Fail(message));
    }
    record(&pool, &lease, "finish").await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linkpulse_shared::telemetry::init_logging();
    let url = std::env::args().nth(1).context("usage: test-worker DATABASE_URL")?;
    let env = Env::new(|k| std::env::var(k).ok());
    let queue = queue_settings(&env)?;
    let concurrency: usize = env.positive("TEST_CONCURRENCY", 4)?;
    let grace = Duration::from_millis(env.parse("TEST_SHUTDOWN_GRACE_MS", 30_000)?);
    let url = match env.optional("TEST_APPLICATION_NAME") {
        Some(name) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}application_name={name}")
        }
        None => url,
    };
    let pool = linkpulse_shared::db::connect(&url, 8)
        .await
        .context("failed to connect")?;
    create_test_runs(&pool).await?;

    let config = EngineConfig {
        kinds: vec![integration_tests::TEST_KIND],
        concurrency,
        name: format!("test-worker-{}", std::process::id()),
        queue,
    };
    // The engine's own pool, as production has it: one connection for claims, acks, heartbeats and
    // maintenance ([`linkpulse_shared::db::connect_engine`]).
    let engine_pool = linkpulse_shared::db::connect_engine(&url)
        .await
        .context("failed to connect the engine")?;
    let engine = Engine::start_with_ack_pool(engine_pool, pool.clone(), config.clone()).await?;
    let backend = PgBackend::<TestJob>::new(engine.clone(), config.clone());
    let worker = WorkerBuilder::new(config.name.clone())
        .backend(backend)
        .data(pool.clone())
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .build(run_test_job);
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone())?;
    // Tests wait for this line before they signal the process.
    eprintln!("test-worker ready {}", engine.id());
    match run_until_drained(&engine, worker.run(), stop, grace).await? {
        Drained::Clean => tracing::info!("drained cleanly"),
        Drained::GraceExpired => tracing::warn!("grace expired"),
    }
    Ok(())
}
