//! Helpers shared by the integration tests and the `test-worker` binary.
//!
//! The `test-worker` binary runs the real queue engine and apalis worker over a `test` job kind
//! whose handler records each start and finish in `test_runs`, so tests can count how many times a
//! job ran, in which process, and how runs overlapped.

use std::time::Duration;

use linkpulse_queue::{DecodeError, JobArgs};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Kind name of [`TestJob`].
pub const TEST_KIND: &str = "test";

/// What a test job does when it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestJob {
    /// Sleep this long before finishing.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Panic instead of finishing.
    #[serde(default)]
    pub panic: bool,
    /// Return `JobError::Retry` with this message.
    #[serde(default)]
    pub retry: Option<String>,
    /// Return `JobError::Fail` with this message.
    #[serde(default)]
    pub fail: Option<String>,
    /// Return `JobError::Snooze` for this long, on the first attempt only.
    #[serde(default)]
    pub snooze_ms: Option<u64>,
}

impl JobArgs for TestJob {
    fn kinds() -> &'static [&'static str] {
        &[TEST_KIND]
    }

    fn kind(&self) -> &'static str {
        TEST_KIND
    }

    fn encode(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn decode(kind: &str, payload: serde_json::Value) -> Result<Self, DecodeError> {
        if kind != TEST_KIND {
            return Err(DecodeError::UnknownKind(kind.to_owned()));
        }
        serde_json::from_value(payload).map_err(|source| DecodeError::Malformed {
            kind: kind.to_owned(),
            source,
        })
    }
}

/// Creates the `test_runs` table the test handler writes to (idempotent).
///
/// # Errors
///
/// If the statement fails.
pub async fn create_test_runs(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS test_runs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_id bigint NOT NULL,
            attempt int NOT NULL,
            pid int NOT NULL,
            event text NOT NULL CHECK (event IN ('start', 'finish')),
            group_key text,
            at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The URL of `database` on the server of `base_url` (`postgres://…/name?opts` → `…/database?opts`).
pub fn database_url(base_url: &str, database: &str) -> String {
    let (without_query, query) = match base_url.split_once('?') {
        Some((head, q)) => (head, Some(q)),
        None => (base_url, None),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let path_start = without_query[scheme_end..]
        .find('/')
        .map_or(without_query.len(), |i| i + scheme_end);
    let mut url = format!("{}/{}", &without_query[..path_start], database);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline` with `what`.
///
/// # Panics
///
/// When the deadline passes: the test's expectation did not come true.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
