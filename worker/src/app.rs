//! Building the worker from settings: pool, fetcher, engine, apalis worker, health server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use tokio_util::sync::CancellationToken;

use linkpulse_queue::{Engine, EngineConfig, JobArgs, PgBackend};
use linkpulse_shared::config::{ExposeSecret, Settings};
use linkpulse_shared::db::{self, check_writer::CheckWriter};
use linkpulse_shared::fetch::{FetchSettings, Fetcher};
use linkpulse_shared::github::GithubClient;
use linkpulse_shared::link_jobs::LinkJob;
use linkpulse_shared::politeness::{COOLDOWN_REFRESH, Cooldowns};
use linkpulse_shared::shutdown::{Drained, run_until_drained};

use crate::handlers::{AppState, run_link_job};

/// Upper bound of one job: a refresh makes two requests (page, GitHub API) plus database writes;
/// anything longer is stuck and is retried instead of holding a slot forever.
fn job_timeout(settings: &Settings) -> Duration {
    settings.fetch.timeout * 3 + Duration::from_secs(10)
}

/// Runs a worker until `stop` is cancelled, then drains it.
///
/// # Errors
///
/// If the database, the HTTP client or the health server cannot be set up.
pub async fn run(settings: Settings, concurrency: usize, stop: CancellationToken) -> anyhow::Result<Drained> {
    let concurrency = concurrency.max(1);
    // Before the first job: the ack layer records into whatever recorder is installed then.
    linkpulse_shared::metrics::install();
    // Three connections whatever the concurrency (`db::worker_connections`): the engine's one
    // (claims, heartbeat, maintenance), the handlers' one (batched write-backs, short reads and
    // the batched acknowledgements, so claims and acks overlap; never held across a fetch) and
    // the engine's LISTEN. A scaled-out pool of workers
    // stays under the server's connection limit.
    let pool = db::connect_engine(settings.database_url.expose_secret())
        .await
        .context("failed to connect to the database")?;
    let handler_pool = db::connect_handler_pool(settings.database_url.expose_secret())
        .await
        .context("failed to connect to the database")?;
    // Start order: both pools above have connected (the database answers), and the health port is
    // bound here, before the engine registers and claims anything: a port already taken or an
    // unreachable database ends the process without a job leased.
    let health = crate::http::serve(settings.worker_addr, handler_pool.clone(), stop.clone()).await?;
    // Keep as many idle connections to a host as may be in use at once: no more than the jobs of
    // one host this worker can run, and no more than its concurrency.
    let host_cap = usize::try_from(settings.queue.host_concurrency).unwrap_or(usize::MAX);
    let fetch_settings = FetchSettings {
        max_idle_per_host: concurrency.min(host_cap),
        ..settings.fetch.clone()
    };
    let fetcher = Fetcher::new(fetch_settings).context("failed to build the HTTP client")?;
    let github = GithubClient::new(
        fetcher.client().clone(),
        settings.github_api_url.clone(),
        settings.github_token.clone(),
    );
    let name = format!(
        "worker-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        std::process::id()
    );
    let config = EngineConfig {
        kinds: LinkJob::kinds().to_vec(),
        concurrency,
        name: name.clone(),
        queue: settings.queue.clone(),
    };
    let timeout = job_timeout(&settings);
    let grace = settings.shutdown_grace;
    let pacer = linkpulse_shared::politeness::HostPacer::new(settings.host_interval);
    let cooldowns = Cooldowns::new(handler_pool.clone(), COOLDOWN_REFRESH);
    let checks = CheckWriter::start(handler_pool.clone(), settings.failure_threshold);
    let state = Arc::new(AppState {
        checks,
        pool: handler_pool.clone(),
        cooldowns,
        fetcher,
        github,
        pacer,
        settings,
    });
    // Last, once nothing else can fail: registering starts the claims, and a worker that then
    // failed to start would leave its leased jobs waiting for a rescue with an attempt spent.
    let engine = Engine::start_with_ack_pool(pool.clone(), handler_pool.clone(), config.clone())
        .await
        .context("failed to register the worker")?;
    tracing::info!(addr = %health, concurrency, "worker ready");
    let worker = WorkerBuilder::new(name)
        .backend(PgBackend::<LinkJob>::new(engine.clone(), config))
        .data(state)
        .concurrency(concurrency)
        .timeout(timeout)
        .build(run_link_job);
    let drained = run_until_drained(&engine, worker.run(), stop, grace)
        .await
        .context("worker failed")?;
    Ok(drained)
}
