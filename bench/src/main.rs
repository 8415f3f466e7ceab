//! linkpulse benchmark: measures the queue as production runs it (bulk enqueue, a real apalis
//! worker draining the queue, idle enqueue-to-start latency) in a scratch database, and fills a
//! database for the raw-SQL pgbench ceiling (`bench/pgbench/README.md`).
//!
//! Results are JSON lines on stdout; logs go to stderr.

mod noop;
mod phases;
mod report;
mod scratch;
mod settings;
mod worker;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::settings::Settings;

/// Connections beyond the worker's concurrency: engine fetcher, acker, heartbeat, maintenance,
/// the producer side and the progress queries each need one at times.
const EXTRA_CONNECTIONS: usize = 4;

/// linkpulse queue benchmark. Sizes come from the environment: N (jobs, default 50000),
/// CONC (worker concurrency, default 16), CHUNK (jobs per insert statement, default 5000).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs enqueue_bulk, process and latency_idle in a scratch database created on the server of
    /// DATABASE_URL (and dropped afterwards); prints one JSON line per phase.
    Queue {
        /// Any database on the server; only used to create and drop the scratch database.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
    /// Inserts N queued noop jobs into DATABASE_URL itself (migrating it first) and exits, to
    /// prepare the pgbench ceiling.
    Fill {
        /// The database to fill; it is modified.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linkpulse_shared::telemetry::init_logging();
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    tracing::info!(
        n = settings.n,
        conc = settings.conc,
        chunk = settings.chunk,
        "bench settings"
    );
    match cli.command {
        Command::Queue { database_url } => run_queue(&database_url, settings).await,
        Command::Fill { database_url } => run_fill(&database_url, settings).await,
    }
}

/// Connections for a run of `settings`.
fn max_connections(settings: Settings) -> u32 {
    u32::try_from(settings.conc + EXTRA_CONNECTIONS).unwrap_or(u32::MAX)
}

/// The `queue` command: every phase, in order, in one scratch database.
async fn run_queue(database_url: &str, settings: Settings) -> anyhow::Result<()> {
    scratch::with_scratch_database(database_url, max_connections(settings), |pool| async move {
        report::emit(
            &phases::enqueue_bulk(&pool, settings)
                .await
                .context("phase enqueue_bulk")?,
        )?;
        report::emit(&phases::process(&pool, settings).await.context("phase process")?)?;
        report::emit(
            &phases::latency_idle(&pool, settings)
                .await
                .context("phase latency_idle")?,
        )?;
        Ok(())
    })
    .await
}

/// The `fill` command.
async fn run_fill(database_url: &str, settings: Settings) -> anyhow::Result<()> {
    let pool = scratch::connect(scratch::parse_url(database_url)?, 2).await?;
    let filled = phases::fill(&pool, settings).await;
    pool.close().await;
    filled
}
