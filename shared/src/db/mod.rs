//! Database pool and migrations.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Migrations of our tables and the queue's, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Seconds a connection may sit silent before the server probes its client
/// (`tcp_keepalives_idle`; the kernel's default is 7,200 s).
pub const TCP_KEEPALIVES_IDLE: &str = "10";
/// Seconds between two unanswered probes (`tcp_keepalives_interval`).
pub const TCP_KEEPALIVES_INTERVAL: &str = "5";
/// Unanswered probes after which the server drops the connection (`tcp_keepalives_count`).
pub const TCP_KEEPALIVES_COUNT: &str = "3";

/// The options of every connection we open, parsed from `url`: with server-side TCP keepalives,
/// so a backend whose client's node vanished (power loss, network partition) is ended within
/// about 25 s instead of the kernel's two hours, and the locks and leases it held are freed.
///
/// Every pool of this module starts from here, and so do the dedicated connections (the producer
/// leader's lock, and the queue engine's `LISTEN` connection, which clones its pool's options). Keepalives are answered by whatever holds the socket, so they cannot see a client
/// that vanished behind a proxy, NAT or pooler that stays up: locks that must not outlive their
/// holder are bounded on the server side as well (`idle_session_timeout` on the leader's lock,
/// `idle_in_transaction_session_timeout` on the maintenance lock). sqlx offers no client-side
/// keepalive; each of those holders bounds its own statements with a deadline instead.
///
/// # Errors
///
/// If the URL is invalid.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    Ok(options.options([
        ("tcp_keepalives_idle", TCP_KEEPALIVES_IDLE),
        ("tcp_keepalives_interval", TCP_KEEPALIVES_INTERVAL),
        ("tcp_keepalives_count", TCP_KEEPALIVES_COUNT),
    ]))
}

/// Opens a pool of at most `max_connections` to `url`.
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(url)?;
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
    let options = connect_options(url)?;
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

/// Connections of a worker's engine pool: claims, heartbeats and maintenance share one, overlapped
/// with the handlers' work.
pub const WORKER_ENGINE_CONNECTIONS: u32 = 1;
/// Connections of a worker's handler pool: the batched check write-backs and acknowledgements,
/// refresh reads and writes, host cool-downs and `/readyz`. Handlers never hold one while fetching.
pub const WORKER_HANDLER_CONNECTIONS: u32 = 1;
/// The engine's `LISTEN` connection.
pub const WORKER_LISTENER_CONNECTIONS: u32 = 1;

/// Most connections one worker process opens, whatever its concurrency: the engine's pool, the
/// handlers' pool and the engine's `LISTEN` connection. Size PostgreSQL's `max_connections` as
/// worker replicas × this + the producers' and operators' (docs/operations.md, "Database connections").
pub const fn worker_connections() -> u32 {
    WORKER_ENGINE_CONNECTIONS + WORKER_HANDLER_CONNECTIONS + WORKER_LISTENER_CONNECTIONS
}

/// Connections of `producer run`'s pool: the leader's cycles (one statement at a time), the
/// admin server's mutations and the gauges' refresh. With the leader's lock connection that is at
/// most four; the admin server's readers have their own small pool
/// (`producer::admin::READER_CONNECTIONS`).
pub const PRODUCER_CONNECTIONS: u32 = 3;
/// Connections of a one-shot command (`producer cycle` from a CronJob, `queue stats`, …).
pub const COMMAND_CONNECTIONS: u32 = 2;

/// Opens a worker engine's pool: [`WORKER_ENGINE_CONNECTIONS`] connection(s) with the session
/// settings of [`tuned`] and the claim's ([`linkpulse_queue::engine::CLAIM_SESSION_OPTIONS`]).
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect_engine(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = tuned(connect_options(url)?).options(linkpulse_queue::engine::CLAIM_SESSION_OPTIONS);
    PgPoolOptions::new()
        .max_connections(WORKER_ENGINE_CONNECTIONS)
        // Statements wait their turn on the one connection (a maintenance pass holds it for up
        // to a few hundred milliseconds); only a dead database makes them wait this long.
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// Opens the worker handlers' pool, for the link write-backs.
///
/// Commits are synchronous (the server's default). Skipping the WAL flush here is not safe: the
/// acker retries a failed acknowledgement until it succeeds, so after a database crash the job's
/// row, still `running` under the same lease, would be marked done while its unflushed write-back
/// was lost. Check results are written in batches, so the flush is paid once per batch anyway.
///
/// Connections are not pinged before each use (`test_before_acquire(false)`): that ping is a
/// round trip per statement, and a connection that did die fails its statement (a check
/// write-back then retries once on a new connection).
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect_handler_pool(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(url)?;
    PgPoolOptions::new()
        .max_connections(WORKER_HANDLER_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        // `tuned`: the acknowledgements run here too, and a generic plan of a batch statement
        // (which cannot see how few ids the batch holds) may hash every running job instead of
        // probing the batch's ids. A statement that hangs is cancelled rather than holding the
        // connection of this one-connection pool.
        .connect_with(tuned(options).options([("statement_timeout", "30s")]))
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
    drop_failed_index_builds(pool).await?;
    MIGRATOR.run(pool).await?;
    rebuild_missing_indexes(pool).await?;
    Ok(())
}

/// Indexes a `-- no-transaction` migration builds `CONCURRENTLY` (so the workers' writes never
/// wait), as (name, the migration's version, its statement, the statement dropping it).
///
/// Such a build that fails (a timeout, a killed migrate pod) leaves an INVALID index behind that
/// the planner never uses, and the migration's `IF NOT EXISTS` would then skip it on the next run:
/// [`migrate`] drops such a leftover first, and rebuilds one that an applied migration should have
/// made but is missing.
const CONCURRENT_INDEXES: [(&str, i64, &str, &str); 1] = [(
    "queue_jobs_failed_id_idx",
    20_261_207_000_015,
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS queue_jobs_failed_id_idx ON queue_jobs (id) WHERE state = 'failed'",
    "DROP INDEX CONCURRENTLY IF EXISTS queue_jobs_failed_id_idx",
)];

/// Drops the [`CONCURRENT_INDEXES`] left invalid by a failed build; one another `migrate` is
/// building right now is left alone.
async fn drop_failed_index_builds(pool: &PgPool) -> Result<(), sqlx::Error> {
    for (name, _, _, drop) in CONCURRENT_INDEXES {
        let leftover: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = to_regclass($1) AND NOT i.indisvalid \
               AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid))",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        if leftover {
            tracing::warn!(index = name, "dropping an index a failed concurrent build left invalid");
            sqlx::query(drop).execute(pool).await?;
        }
    }
    Ok(())
}

/// Builds the [`CONCURRENT_INDEXES`] whose migration is recorded as applied but which are missing.
async fn rebuild_missing_indexes(pool: &PgPool) -> Result<(), sqlx::Error> {
    for (name, version, create, _) in CONCURRENT_INDEXES {
        let missing: bool = sqlx::query_scalar(
            "SELECT to_regclass($1) IS NULL \
                    AND EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $2 AND success)",
        )
        .bind(name)
        .bind(version)
        .fetch_one(pool)
        .await?;
        if missing {
            tracing::warn!(index = name, "building an index its applied migration should have made");
            sqlx::query(create).execute(pool).await?;
        }
    }
    Ok(())
}

pub mod check_writer;
pub mod history;
pub mod import;
pub mod lifecycle;
pub mod links;
