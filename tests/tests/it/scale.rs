//! Scale out for real: a worker holds three connections whatever its concurrency, so dozens of
//! replicas share one default PostgreSQL (`max_connections` 100) with room for the producer and
//! operators.
//!
//! The 24-process test needs most of the server's connections for itself, so it is `#[ignore]`d
//! in the parallel run and `scripts/test.sh` runs it afterwards on its own (`--ignored`,
//! one test at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use linkpulse_queue::engine::LISTENER_APPLICATION_NAME;
use linkpulse_shared::config::ExposeSecret;
use linkpulse_shared::db::worker_connections;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;
use crate::hostile::ServiceProcess;

/// `application_name` the workers of these tests connect with, to count their connections.
const APP_NAME: &str = "scale-worker";

/// Samples the workers' connections to this test's database every 20 ms until `stop`; the peak.
fn sample_connections(pool: PgPool, stop: CancellationToken) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicI64::new(0));
    let seen = peak.clone();
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name IN ($1, $2)",
            )
            .bind(APP_NAME)
            .bind(LISTENER_APPLICATION_NAME)
            .fetch_one(&pool)
            .await
            .expect("pg_stat_activity");
            seen.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, task)
}

fn worker_env(app: &TestApp, concurrency: usize) -> Vec<(&'static str, String)> {
    let url = app.settings.database_url.expose_secret();
    let separator = if url.contains('?') { '&' } else { '?' };
    vec![
        ("DATABASE_URL", format!("{url}{separator}application_name={APP_NAME}")),
        ("LINKPULSE_WORKER_CONCURRENCY", concurrency.to_string()),
        ("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        // Every link of the local site shares one host: the per-host cap must not be the limit.
        ("LINKPULSE_HOST_CONCURRENCY", "1000".to_owned()),
        ("LINKPULSE_HOST_INTERVAL", "0s".to_owned()),
        ("LINKPULSE_HTTP_TIMEOUT", "20s".to_owned()),
        ("LINKPULSE_POLL_INTERVAL", "200ms".to_owned()),
        ("LINKPULSE_WORKER_ADDR", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

async fn open_jobs(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), \
                count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed') \
         FROM queue_jobs",
    )
    .fetch_one(pool)
    .await
    .expect("counts")
}

/// Waits until no job is queued or running; `(done, failed)`.
async fn drained(pool: &PgPool, deadline: Duration) -> (i64, i64) {
    let started = tokio::time::Instant::now();
    loop {
        let (open, done, failed) = open_jobs(pool).await;
        if open == 0 {
            return (done, failed);
        }
        assert!(
            started.elapsed() < deadline,
            "{open} jobs still open after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn one_worker_holds_three_connections_whatever_its_concurrency(pool: PgPool) {
    assert_eq!(worker_connections(), 3, "premise: the documented footprint");
    let app = TestApp::spawn(pool).await;
    let urls: Vec<String> = (0..1000).map(|i| app.url(&format!("/ok?{i}"))).collect();
    app.add_links(&urls).await;
    let mut settings = app.settings.clone();
    settings.cycle_limit = 5000;
    producer::cycle::run_cycle(&app.pool, &settings).await.expect("cycle");

    let stop = CancellationToken::new();
    let (peak, sampler) = sample_connections(app.pool.clone(), stop.clone());
    let worker = ServiceProcess::spawn_worker(&worker_env(&app, 512));
    let (done, failed) = drained(&app.pool, Duration::from_secs(120)).await;
    stop.cancel();
    sampler.await.expect("sampler");
    assert_eq!((done, failed), (1000, 0));
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak >= 2, "premise: the sampler saw the worker's connections ({peak})");
    assert!(peak <= 3, "one worker at concurrency 512 opened {peak} connections");
    worker.stop().await;
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
#[ignore = "uses most of the server's connections: run alone (scripts/test.sh does)"]
async fn two_dozen_workers_share_a_default_server_and_check_two_thousand_links(pool: PgPool) {
    const WORKERS: usize = 24;
    const LINKS: usize = 2000;
    let app = TestApp::spawn(pool).await;
    let (max_connections,): (i32,) = sqlx::query_as("SELECT current_setting('max_connections')::int")
        .fetch_one(&app.pool)
        .await
        .expect("max_connections");
    let urls: Vec<String> = (0..LINKS).map(|i| app.url(&format!("/ok?{i}"))).collect();
    app.add_links(&urls).await;

    let stop = CancellationToken::new();
    let (peak, sampler) = sample_connections(app.pool.clone(), stop.clone());
    let env = worker_env(&app, 16);
    let workers: Vec<ServiceProcess> = (0..WORKERS).map(|_| ServiceProcess::spawn_worker(&env)).collect();
    crate::helpers::wait_for(Duration::from_secs(60), "every worker to register", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
            .fetch_one(&app.pool)
            .await
            .expect("workers");
        (n == i64::try_from(WORKERS).expect("small")).then_some(())
    })
    .await;
    let mut settings = app.settings.clone();
    settings.cycle_limit = 5000;
    producer::cycle::run_cycle(&app.pool, &settings).await.expect("cycle");

    // An operator's command answers while the pool works.
    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"))
            .args(["queue", "stats", "--json"])
            .env("DATABASE_URL", app.settings.database_url.expose_secret())
            .output(),
    )
    .await
    .expect("queue stats answered in time")
    .expect("run producer");
    assert!(
        stats.status.success(),
        "queue stats failed: {}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    assert!(stats["kinds"]["check"].is_object(), "{stats}");

    let (done, failed) = drained(&app.pool, Duration::from_secs(300)).await;
    stop.cancel();
    sampler.await.expect("sampler");
    assert_eq!((done, failed), (i64::try_from(LINKS).expect("small"), 0));
    let peak = peak.load(Ordering::Relaxed);
    let footprint = i64::from(worker_connections()) * i64::try_from(WORKERS).expect("small");
    assert!(
        peak <= footprint,
        "{WORKERS} workers opened {peak} connections (at most {footprint} expected)"
    );
    assert!(
        footprint + 10 < i64::from(max_connections),
        "premise: the footprint leaves room on a server with max_connections {max_connections}"
    );
    // No worker exited on its own: each still answers SIGTERM with a clean drain.
    for worker in workers {
        worker.stop().await;
    }
}
