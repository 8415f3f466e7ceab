//! linkpulse benchmark: measures the queue as production runs it (bulk enqueue, a real apalis
//! worker draining the queue, idle enqueue-to-start latency) in a scratch database, fills a
//! database for the raw-SQL pgbench ceiling (`bench/pgbench/README.md`), and times the producer
//! cycle over large links tables next to a bare insert of the same jobs, checks a file of URLs
//! through the whole pipeline with real worker processes (`links`, compared with lychee by
//! `bench/links-vs-lychee.sh`), and serves the local test site those URLs point at (`site`).
//!
//! Results are JSON lines on stdout; logs go to stderr.

mod cycle;
mod links;
mod noop;
mod pgstats;
mod phases;
mod report;
mod scale;
mod scratch;
mod settings;
mod site;
mod stats;
mod worker;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::settings::{CycleSettings, LinksSettings, Settings};

/// Connections beyond the worker's concurrency: engine fetcher, acker, heartbeat, maintenance,
/// the producer side and the progress queries each need one at times.
const EXTRA_CONNECTIONS: usize = 4;

/// Connections of a `stats` run: the fill, then one caller at a time.
const STATS_CONNECTIONS: u32 = 4;

/// Connections of a `cycle` run: its statements run one at a time, the second is slack.
const CYCLE_CONNECTIONS: u32 = 2;

/// linkpulse queue benchmark. Sizes come from the environment. `queue` and `fill`: N (jobs,
/// default 50000), CONC (worker concurrency, default 16), CHUNK (jobs per insert statement,
/// default 5000). `cycle`: SIZES (link counts, default 100000,1000000), DUE_PERCENT (default 10),
/// LIMIT (cycle limit, default the due count). `links`: CONC (checks in flight, default 128),
/// WORKERS (worker processes sharing them, default 1), HOST_CONCURRENCY (the queue's per-host cap,
/// default CONC), UNGROUPED (diagnostic: jobs without host groups), VERDICTS (file for per-URL results),
/// WORKER_LOG (file for the workers' logs), WORKER_BIN (default: `worker` next to this binary).
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
    /// For each of SIZES, in its own scratch database: fills `links` (DUE_PERCENT due), times a
    /// producer cycle, the same cycle again (all due links already queued), a bare
    /// `INSERT … SELECT` of the due links and a cycle with the default limit; one JSON line per
    /// size.
    Cycle {
        /// Any database on the server; only used to create and drop the scratch databases.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
    /// Checks every URL of FILE through the real pipeline in a scratch database: `links import`,
    /// one producer cycle, `worker` child processes until no job is queued or running; prints
    /// checks/s, the workers' CPU and peak RSS and the verdicts as one JSON line.
    Links {
        /// One URL per line (as `producer links import` reads it).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Any database on the server; only used to create and drop the scratch database.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
    /// Runs WORKERS worker processes (default 24) at CONC checks each (default 16) against one
    /// server in a scratch database: drains N links (default 20,000) for jobs/s, then trickles
    /// TRICKLE more (default 200) into the idle pool for the enqueue-to-start p50/p95/max; counts
    /// the workers' connections throughout (peak vs 3 per worker). One JSON line.
    Scale {
        /// Any database on the server; only used to create and drop the scratch database.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
    /// Fills a scratch database with RETAINED finished jobs (default 10,000,000), recounts, and
    /// times `queue stats`, the throughput query, `/api/queue/stats`, `/metrics` and the dashboard
    /// ROUNDS times each (default 20), against the old count over the job table; every
    /// FAILED_EVERY-th retained job is failed (default 100; 0 for none). One JSON line.
    Stats {
        /// Any database on the server; only used to create and drop the scratch database.
        #[arg(value_name = "DATABASE_URL")]
        database_url: String,
    },
    /// Serves the test site on 127.0.0.1:PORT (80 % 200, 5 % each 404, 500, slow 200, 302) and
    /// writes the list of its URLs, until SIGTERM or SIGINT.
    Site {
        /// Port to listen on; 0 picks a free one (the list then carries it).
        #[arg(value_name = "PORT")]
        port: u16,
        /// Where to write the URL list.
        #[arg(long, value_name = "FILE", default_value = "target/bench-sites/links.txt")]
        urls: PathBuf,
        /// How many URLs the list holds.
        #[arg(long, default_value_t = 5_000)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linkpulse_shared::telemetry::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Queue { database_url } => run_queue(&database_url, queue_settings()?).await,
        Command::Fill { database_url } => run_fill(&database_url, queue_settings()?).await,
        Command::Cycle { database_url } => {
            let settings = CycleSettings::from_env()?;
            tracing::info!(
                sizes = ?settings.sizes,
                due_percent = settings.due_percent,
                limit = ?settings.limit,
                "bench settings"
            );
            run_cycle(&database_url, &settings).await
        }
        Command::Links { file, database_url } => {
            let settings = LinksSettings::from_env()?;
            tracing::info!(
                conc = settings.conc,
                workers = settings.workers,
                host_concurrency = settings.host_concurrency,
                ungrouped = settings.ungrouped,
                "bench settings"
            );
            run_links(&database_url, &file, settings).await
        }
        Command::Scale { database_url } => run_scale(&database_url).await,
        Command::Stats { database_url } => run_stats(&database_url).await,
        Command::Site { port, urls, count } => site::serve(port, &urls, count).await,
    }
}

/// The settings of `queue` and `fill`, logged so a run's output says what it measured.
fn queue_settings() -> anyhow::Result<Settings> {
    let settings = Settings::from_env()?;
    tracing::info!(
        n = settings.n,
        conc = settings.conc,
        chunk = settings.chunk,
        "bench settings"
    );
    Ok(settings)
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
    let pool = scratch::connect(database_url, 2).await?;
    let filled = phases::fill(&pool, settings).await;
    pool.close().await;
    filled
}

/// The `stats` command, sized by RETAINED and ROUNDS.
async fn run_stats(database_url: &str) -> anyhow::Result<()> {
    let env = |var: &str, default: i64| -> anyhow::Result<i64> {
        std::env::var(var).ok().map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("{var}={v} is not a number"))
        })
    };
    let retained = env("RETAINED", 10_000_000)?;
    let failed_every = env("FAILED_EVERY", 100)?;
    let rounds = usize::try_from(env("ROUNDS", 20)?.max(1)).unwrap_or(20);
    tracing::info!(retained, failed_every, rounds, "bench settings");
    let line = scratch::with_scratch_database(database_url, STATS_CONNECTIONS, |pool| async move {
        let url = scratch::scratch_url(database_url)?;
        stats::measure(&pool, &url, retained, failed_every, rounds).await
    })
    .await?;
    report::emit(&line)
}

/// The `cycle` command: one fresh scratch database per size, so a size never sees the previous
/// one's rows (or its queue's dead tuples); each line is printed as soon as its size is done.
async fn run_cycle(database_url: &str, settings: &CycleSettings) -> anyhow::Result<()> {
    for &links in &settings.sizes {
        let line = scratch::with_scratch_database(database_url, CYCLE_CONNECTIONS, |pool| async move {
            cycle::measure(&pool, database_url, links, settings).await
        })
        .await
        .with_context(|| format!("cycle over {links} links"))?;
        report::emit(&line)?;
    }
    Ok(())
}

/// The `links` command: one scratch database, one JSON line.
async fn run_scale(database_url: &str) -> anyhow::Result<()> {
    let scratch_url = scratch::scratch_url(database_url)?;
    let line = scratch::with_scratch_database(database_url, scale::SCALE_CONNECTIONS, |pool| async move {
        scale::measure(&pool, &scratch_url).await
    })
    .await
    .context("scale run")?;
    report::emit(&line)
}

async fn run_links(database_url: &str, file: &Path, settings: LinksSettings) -> anyhow::Result<()> {
    let scratch_url = scratch::scratch_url(database_url)?;
    let line = scratch::with_scratch_database(database_url, links::LINKS_CONNECTIONS, |pool| async move {
        links::measure(&pool, &scratch_url, file, settings).await
    })
    .await
    .with_context(|| format!("checking the links of {}", file.display()))?;
    report::emit(&line)
}
