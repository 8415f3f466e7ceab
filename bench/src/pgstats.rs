//! Where the database's share of a `links` run goes: with `PG_STATS_FILE=FILE`, the run writes the
//! statements the workers ran (`pg_stat_statements`, when the server preloads it) and the
//! update counters of the tables a check writes (how many updates were HOT) to FILE.
//!
//! Off by default: the numbers are for profiling (`bench/links-vs-lychee.sh` with `PG_STATS=1`
//! starts its private server with the module preloaded), and creating the extension in the
//! scratch database is not something a plain measurement should do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sqlx::PgPool;

/// Statements by total execution time; the bench's own polling shows up too, as what it is.
const TOP_STATEMENTS: &str = "SELECT calls, rows, round(total_plan_time::numeric, 1)::float8, \
    round(total_exec_time::numeric, 1)::float8, \
    round((total_exec_time / greatest(calls, 1))::numeric, 3)::float8, \
    shared_blks_hit + shared_blks_read, wal_records, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) \
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
    ORDER BY total_exec_time DESC LIMIT 15";

/// One row of [`TOP_STATEMENTS`]: calls, rows, planning ms, execution ms, mean execution ms,
/// blocks touched, WAL records, the query's first characters.
type StatementRow = (i64, i64, f64, f64, f64, i64, i64, String);

/// Updates, HOT updates and inserts of the tables a check writes.
const TABLES: &str = "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del \
    FROM pg_stat_user_tables \
    WHERE relname IN ('links', 'queue_jobs', 'link_verdicts', 'link_events', 'queue_group_slots') ORDER BY relname";

/// Where to write the statistics, if anywhere.
pub fn target() -> Option<PathBuf> {
    std::env::var_os("PG_STATS_FILE").map(PathBuf::from)
}

/// Starts the statement statistics from zero (the import and the cycle are not the workers'
/// work). Without the module preloaded, warns and carries on: the table counters still come.
pub async fn reset(pool: &PgPool) {
    let reset = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await?;
        sqlx::query("SELECT pg_stat_statements_reset()").execute(pool).await
    };
    if let Err(error) = reset.await {
        tracing::warn!(%error, "pg_stat_statements unavailable (not in shared_preload_libraries?)");
    }
}

/// Writes the top statements and the table counters to `path`. Called after the workers exited:
/// a backend flushes its table counters when it ends.
///
/// # Errors
///
/// If the table counters cannot be read or the file cannot be written.
pub async fn dump(pool: &PgPool, path: &Path) -> anyhow::Result<()> {
    // Counters reach the shared statistics at most a second after the backends' last activity.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let mut out = String::new();
    let statements: Result<Vec<StatementRow>, _> = sqlx::query_as(TOP_STATEMENTS).fetch_all(pool).await;
    match statements {
        Ok(rows) => {
            writeln!(
                out,
                "calls\trows\tplan_ms\texec_ms\tmean_exec_ms\tblocks\twal_records\tquery"
            )?;
            for (calls, rows, plan, total, mean, blocks, wal, query) in rows {
                writeln!(
                    out,
                    "{calls}\t{rows}\t{plan}\t{total}\t{mean}\t{blocks}\t{wal}\t{query}"
                )?;
            }
        }
        Err(error) => writeln!(out, "pg_stat_statements: {error}")?,
    }
    let tables: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(TABLES)
        .fetch_all(pool)
        .await
        .context("reading pg_stat_user_tables")?;
    writeln!(out, "\ntable\tins\tupd\thot_upd\tdel")?;
    for (table, ins, upd, hot, del) in tables {
        writeln!(out, "{table}\t{ins}\t{upd}\t{hot}\t{del}")?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
