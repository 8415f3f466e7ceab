//! Worker registration and heartbeats: the liveness half of every lease.

use sqlx::PgPool;
use uuid::Uuid;

use super::QueueError;

/// Registers (or re-registers, after a rescuer deleted the row) worker `id`.
///
/// # Errors
///
/// [`QueueError::Database`] if the insert fails.
pub async fn register(pool: &PgPool, id: Uuid, name: &str) -> Result<(), QueueError> {
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_owned());
    sqlx::query!(
        "INSERT INTO queue_workers (id, name, hostname, pid) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        id,
        name,
        hostname,
        i32::try_from(std::process::id()).unwrap_or(i32::MAX),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// `worker_heartbeat`: renews the lease of every job the worker owns at once (one row update per
/// worker per interval, instead of one per running job). Returns `false` when the row is gone —
/// a rescuer judged this worker dead and its running jobs were handed out again.
///
/// # Errors
///
/// [`QueueError::Database`] if the update fails.
pub async fn heartbeat(pool: &PgPool, id: Uuid, draining: bool) -> Result<bool, QueueError> {
    let result = sqlx::query!(
        "UPDATE queue_workers SET heartbeat_at = now(), draining = $2 WHERE id = $1",
        id,
        draining,
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Removes the worker's row at the end of a clean shutdown.
///
/// # Errors
///
/// [`QueueError::Database`] if the delete fails.
pub async fn deregister(pool: &PgPool, id: Uuid) -> Result<(), QueueError> {
    sqlx::query!("DELETE FROM queue_workers WHERE id = $1", id)
        .execute(pool)
        .await?;
    Ok(())
}
