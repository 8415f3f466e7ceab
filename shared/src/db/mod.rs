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

pub mod links;
