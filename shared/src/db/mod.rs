//! Database pool and migrations.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Migrations of our tables and the queue's, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool of at most `max_connections` to `url`.
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(tuned(options))
        .await
}

/// Longest a reader's statement may run: an admin page or scrape that takes longer is cancelled
/// rather than holding one of the few reader connections.
pub const READER_STATEMENT_TIMEOUT: &str = "5s";
/// Longest an admin request waits for a reader connection before it answers 500.
pub const READER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the admin server's readers' pool: a few read-only connections with a statement timeout,
/// apart from the pool the leader's cycles use, so a burst of dashboard, API or scrape requests
/// queues on its own connections and never delays a cycle.
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect_readers(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(READER_ACQUIRE_TIMEOUT)
        .connect_with(tuned(options).options([
            ("statement_timeout", READER_STATEMENT_TIMEOUT),
            ("default_transaction_read_only", "on"),
        ]))
        .await
}

/// Connections of a worker's engine pool: acks, heartbeats, maintenance and `/readyz`.
/// (A maintenance pass holds two at once; the acker and the heartbeat must never wait for both.)
pub const WORKER_ENGINE_CONNECTIONS: u32 = 5;
/// Most connections a worker's handlers use, whatever its concurrency: they hold one only for a
/// short statement, and check results are written in batches.
pub const WORKER_MAX_HANDLER_CONNECTIONS: usize = 16;

/// Handler connections of a worker running `concurrency` jobs at once.
pub fn worker_handler_connections(concurrency: usize) -> u32 {
    u32::try_from(concurrency.clamp(1, WORKER_MAX_HANDLER_CONNECTIONS)).unwrap_or(1)
}

/// Most connections one worker process opens: its handler and engine pools, plus the engine's
/// claim and `LISTEN` connections.
pub fn worker_connections(concurrency: usize) -> u32 {
    worker_handler_connections(concurrency) + WORKER_ENGINE_CONNECTIONS + 2
}

/// Opens the worker handlers' pool, for the link write-backs.
///
/// Commits are synchronous (the server's default). Skipping the WAL flush here is not safe: the
/// acker retries a failed acknowledgement until it succeeds, so after a database crash the job's
/// row, still `running` under the same lease, would be marked done while its unflushed write-back
/// was lost. Check results are written in batches, so the flush is paid once per batch anyway.
///
/// Connections are not pinged before each use (`test_before_acquire(false)`): that ping is a
/// round trip per statement, and a connection that did die fails its statement, which retries the
/// job through the queue.
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect_handler_pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        // Not `tuned`: these statements touch rows by primary key (one, or a batch of them), so a
        // generic plan is as good as a custom one and the default plan cache saves replanning.
        // A statement that hangs is cancelled rather than holding a connection of this small pool.
        .connect_with(options.options([("jit", "off"), ("statement_timeout", "30s")]))
        .await
}

/// Session settings for an OLTP workload of short statements:
/// - `jit = off`: JIT compilation costs tens of milliseconds and a claim of 64 rows never earns
///   that back; cost estimates of `LIMIT $n` in generic plans can still cross `jit_above_cost`.
/// - `plan_cache_mode = force_custom_plan`: plan each execution with its real parameters, so a
///   generic plan that guesses `LIMIT $n` large never sorts the whole queue.
pub fn tuned(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("jit", "off"), ("plan_cache_mode", "force_custom_plan")])
}

/// Applies every pending migration; a no-op when all are applied.
///
/// # Errors
///
/// If a migration fails or the applied history does not match the embedded one.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

pub mod check_writer;
pub mod links;
