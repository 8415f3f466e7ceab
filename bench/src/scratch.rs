//! A throwaway database per run, so the bench never touches the data of the database it is
//! pointed at and always starts from an empty, freshly migrated queue.

use std::future::Future;

use anyhow::{Context as _, anyhow};
use sqlx::{AssertSqlSafe, PgPool};
use url::Url;

/// Opens a pool to `url` the way the binaries do ([`linkpulse_shared::db::connect`]), so the
/// bench's connections carry whatever session settings production's carry.
///
/// # Errors
///
/// If the URL is invalid or the first connection fails.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    linkpulse_shared::db::connect(url, max_connections)
        .await
        .context("connecting to PostgreSQL")
}

/// `url` with its path (the database name) replaced by `database`; user, host, port and query
/// parameters (`sslmode`, `options`, ...) are kept.
///
/// # Errors
///
/// If `url` is not a URL.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut url = Url::parse(url).context("DATABASE_URL is not a valid postgres:// URL")?;
    url.set_path(&format!("/{database}"));
    Ok(url.into())
}

/// Name of this process's scratch database: the pid keeps concurrent runs apart.
fn scratch_name() -> String {
    format!("linkpulse_bench_{}", std::process::id())
}

/// The URL of the scratch database [`with_scratch_database`] creates for `admin_url`, for child
/// processes (the `links` command's workers) that must connect to it themselves.
///
/// # Errors
///
/// If `admin_url` is not a URL.
pub fn scratch_url(admin_url: &str) -> anyhow::Result<String> {
    with_database(admin_url, &scratch_name())
}

/// Creates a scratch database on the server of `admin_url`, migrates it, runs `body` with a pool
/// of `max_connections` on it, and drops it — also when `body` fails or the run is interrupted.
///
/// # Errors
///
/// `body`'s error, or a failure to create, migrate or drop the scratch database.
pub async fn with_scratch_database<F, Fut, T>(admin_url: &str, max_connections: u32, body: F) -> anyhow::Result<T>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let name = scratch_name();
    let scratch_url = scratch_url(admin_url)?;
    let admin = connect(admin_url, 1).await.context("connecting to DATABASE_URL")?;
    execute(&admin, format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    tracing::info!(database = %name, "created scratch database");
    let outcome = async {
        let pool = connect(&scratch_url, max_connections).await?;
        let result = run_migrated(&pool, body).await;
        pool.close().await;
        result
    };
    let outcome = tokio::select! {
        outcome = outcome => outcome,
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err(anyhow!("interrupted")),
            Err(error) => Err(anyhow!(error).context("listening for Ctrl-C")),
        },
    };
    let dropped = execute(
        &admin,
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name)),
    )
    .await
    .with_context(|| format!("dropping scratch database {name}"));
    admin.close().await;
    match (outcome, dropped) {
        (Ok(value), Ok(())) => {
            tracing::info!(database = %name, "dropped scratch database");
            Ok(value)
        }
        (Ok(_), Err(error)) => Err(error),
        (Err(error), dropped) => {
            if let Err(drop_error) = dropped {
                tracing::error!(error = format!("{drop_error:#}"), "scratch database left behind");
            }
            Err(error)
        }
    }
}

/// Applies the queue's migrations, then runs `body`.
async fn run_migrated<F, Fut, T>(pool: &PgPool, body: F) -> anyhow::Result<T>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    linkpulse_shared::db::migrate(pool)
        .await
        .context("migrating the scratch database")?;
    body(pool.clone()).await
}

/// Runs a one-off utility statement with the simple protocol: preparing it (sqlx's default)
/// would only fill the connection's statement cache with names used once.
async fn execute(pool: &PgPool, sql: String) -> anyhow::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("linkpulse_bench_1"), "\"linkpulse_bench_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn scratch_database_replaces_only_the_path() {
        let url = with_database(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            "linkpulse_bench_1",
        )
        .expect("valid");
        assert_eq!(
            url,
            "postgres://postgres@127.0.0.1:5432/linkpulse_bench_1?sslmode=disable"
        );
        let url = with_database("postgres://u:p@db", "linkpulse_bench_1").expect("valid");
        assert_eq!(url, "postgres://u:p@db/linkpulse_bench_1");
    }
}
