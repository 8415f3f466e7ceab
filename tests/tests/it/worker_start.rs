//! Start order: the worker binds its health port and reaches the database before the queue engine
//! registers it and claims anything, so a worker that cannot start leaves no job leased behind
//! (such a job would wait for a rescue, with an attempt spent).

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::Command;

use crate::app::TestApp;
use crate::helpers::url_of;

/// Jobs no longer untouched: leased, started or attempted at least once.
async fn touched_jobs(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM queue_jobs WHERE state <> 'queued' OR attempts > 0 OR started_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .expect("count");
    n
}

/// Checks are queued and due; the real worker binary is started on a port another socket holds.
/// It exits non-zero, says why, and no job was ever leased — nor did it register at all.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_worker_whose_port_is_taken_exits_non_zero_without_leasing_a_job(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let links: Vec<String> = (0..20).map(|i| app.url(&format!("/p/{i}"))).collect();
    app.add_links(&links).await;
    assert_eq!(app.run_cycle().await.check.enqueued, 20, "premise: 20 checks queued");
    assert_eq!(touched_jobs(&app.pool).await, 0, "premise: no job touched yet");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let port = taken.local_addr().expect("addr").port();

    let output = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .env("DATABASE_URL", url_of(&app.pool).await)
        .env("LINKPULSE_WORKER_ADDR", format!("127.0.0.1:{port}"))
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_POLL_INTERVAL", "50ms")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the worker exited in time")
        .expect("run worker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(!output.status.success(), "exit status {:?}", output.status);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );

    assert_eq!(touched_jobs(&app.pool).await, 0, "no job was leased");
    let (workers,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
        .fetch_one(&app.pool)
        .await
        .expect("workers");
    assert_eq!(workers, 0, "the worker never registered");
    drop(taken);
}
