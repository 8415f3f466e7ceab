//! Test plumbing: databases, test jobs, worker child processes.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::{TEST_KIND, TestJob, create_test_runs, database_url};
use linkpulse_queue::{JobArgs, NewJob, insert_many};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use integration_tests::wait_for;

/// Queue settings for fast tests: quick heartbeats, rescue and retries.
pub fn fast_env() -> Vec<(&'static str, String)> {
    vec![
        ("LINKPULSE_HEARTBEAT_INTERVAL", "200ms".into()),
        ("LINKPULSE_RESCUE_AFTER", "1500ms".into()),
        ("LINKPULSE_RETRY_BASE", "100ms".into()),
        ("LINKPULSE_RETRY_MAX", "1s".into()),
        ("LINKPULSE_POLL_INTERVAL", "300ms".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// The URL of the test's own database, for child processes.
pub async fn url_of(pool: &PgPool) -> String {
    let (name,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("current_database");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set for the integration tests");
    database_url(&base, &name)
}

/// Inserts test jobs and returns their ids in insertion order.
pub async fn enqueue(pool: &PgPool, jobs: &[(TestJob, Option<&str>)], max_attempts: i32) -> Vec<i64> {
    create_test_runs(pool).await.expect("test_runs");
    let (before,): (i64,) = sqlx::query_as("SELECT coalesce(max(id), 0) FROM queue_jobs")
        .fetch_one(pool)
        .await
        .expect("max id");
    let new: Vec<NewJob> = jobs
        .iter()
        .map(|(job, group)| {
            let mut new = NewJob::new(TEST_KIND, job.encode().expect("encode"), max_attempts);
            new.group_key = group.map(str::to_owned);
            new
        })
        .collect();
    insert_many(pool, &new).await.expect("insert");
    let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM queue_jobs WHERE id > $1 ORDER BY id")
        .bind(before)
        .fetch_all(pool)
        .await
        .expect("ids");
    ids.into_iter().map(|(id,)| id).collect()
}

/// State, attempts and recorded errors of a job.
pub async fn job(pool: &PgPool, id: i64) -> (String, i32, serde_json::Value) {
    sqlx::query_as("SELECT state, attempts, errors FROM queue_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job row")
}

/// Count of jobs per state.
pub async fn count_state(pool: &PgPool, state: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .expect("count");
    n
}

/// Recorded `event`s (start/finish) per job id.
pub async fn events_per_job(pool: &PgPool, event: &str) -> HashMap<i64, i64> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT job_id, count(*) FROM test_runs WHERE event = $1 GROUP BY job_id")
            .bind(event)
            .fetch_all(pool)
            .await
            .expect("events");
    rows.into_iter().collect()
}

/// A `test-worker` child process.
pub struct WorkerProcess {
    pub child: Child,
    pub pid: i32,
}

impl WorkerProcess {
    /// Starts a worker on the test's database and waits until it has registered.
    pub async fn spawn(pool: &PgPool, extra_env: &[(&str, String)]) -> Self {
        let url = url_of(pool).await;
        let mut command = Command::new(env!("CARGO_BIN_EXE_test-worker"));
        command
            .arg(url)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in fast_env().iter().chain(extra_env.iter()) {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn test-worker");
        let pid = i32::try_from(child.id().expect("pid")).expect("pid fits");
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[worker {pid}] {line}");
                if line.starts_with("test-worker ready")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("worker ready in time")
            .expect("worker printed its ready line");
        Self { child, pid }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal).expect("signal worker");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(mut self, deadline: Duration) -> Option<i32> {
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .expect("worker exited in time")
            .expect("wait");
        status.code()
    }
}

/// The lease of a job this test claimed itself (as the backend builds it for a handler).
pub fn lease_of(claimed: &linkpulse_queue::ClaimedJob) -> linkpulse_queue::JobLease {
    linkpulse_queue::JobLease {
        job_id: claimed.id,
        owner: claimed.lease_owner,
        token: claimed.lease_token,
        run: claimed.run_id,
        attempt: claimed.attempts,
        max_attempts: claimed.max_attempts,
        kind: claimed.kind.clone(),
        group_key: claimed.group_key.clone(),
        trace_context: None,
        run_at: claimed.run_at,
    }
}
