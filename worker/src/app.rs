//! Building the worker from settings: pool, fetcher, engine, apalis worker, health server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use tokio_util::sync::CancellationToken;

use linkpulse_queue::{Engine, EngineConfig, JobArgs, PgBackend, inspect};
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

/// When a worker run ends by itself, besides `stop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunMode {
    /// Only when `stop` is cancelled (SIGTERM/SIGINT): a long-running worker.
    #[default]
    UntilStopped,
    /// Also once nothing of its kinds is due and it holds no job (`worker --until-empty`): ad-hoc
    /// runs and CI. Jobs scheduled for later, jobs of paused kinds and jobs other workers hold do
    /// not keep it running.
    UntilEmpty,
}

/// Runs a worker until `stop` is cancelled, then drains it.
///
/// # Errors
///
/// If the database, the HTTP client or the health server cannot be set up.
pub async fn run(settings: Settings, concurrency: usize, stop: CancellationToken) -> anyhow::Result<Drained> {
    run_with(settings, concurrency, RunMode::UntilStopped, stop).await
}

/// [`run`], ending also by itself as `mode` says; then it drains exactly as after a SIGTERM.
///
/// # Errors
///
/// If the database, the HTTP client or the health server cannot be set up.
pub async fn run_with(
    settings: Settings,
    concurrency: usize,
    mode: RunMode,
    stop: CancellationToken,
) -> anyhow::Result<Drained> {
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
    let poll_interval = settings.queue.poll_interval;
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
    let watcher = (mode == RunMode::UntilEmpty).then(|| {
        tokio::spawn(stop_when_empty(
            handler_pool.clone(),
            engine.clone(),
            config.kinds.clone(),
            poll_interval,
            stop.clone(),
        ))
    });
    let worker = WorkerBuilder::new(name)
        .backend(PgBackend::<LinkJob>::new(engine.clone(), config))
        .data(state)
        .concurrency(concurrency)
        .timeout(timeout)
        .build(run_link_job);
    let drained = run_until_drained(&engine, worker.run(), stop, grace).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    drained.context("worker failed")
}

/// Idle checks in a row, one poll interval apart, that make `--until-empty` stop. One check is a
/// consistent snapshot (a claim moves a job from due to held in one statement), but a job can
/// become due between two checks without having been due at either end of a single one: a retry
/// whose backoff is shorter than the poll interval, a job enqueued meanwhile, a lease of this
/// worker rescued back. Two checks a poll interval apart give each of those a full interval to
/// show up, which is also how late the engine's own fallback poll would notice them.
const IDLE_CHECKS_TO_STOP: u32 = 2;

/// `--until-empty`: cancels `stop` — the same token SIGTERM cancels, so the drain is the same —
/// once [`IDLE_CHECKS_TO_STOP`] checks in a row find no job of `kinds` due and none held by this
/// worker (claimed ahead, running, or acknowledgement not yet written). "Held" is read from the
/// leases in the database rather than counted in memory: a count kept beside the buffer would
/// miss a job between its claim's commit and its arrival in the buffer, while the leases change
/// in the same statement that makes a job stop being due. Returns early if `stop` is cancelled
/// by a signal. A failed check counts as not idle: the worker never stops on a guess.
async fn stop_when_empty(
    pool: sqlx::PgPool,
    engine: Engine,
    kinds: Vec<&'static str>,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    // A zero poll interval (tests) would turn this into a busy loop on the handlers' connection.
    let period = poll_interval.max(Duration::from_millis(50));
    let mut idle_checks = 0;
    loop {
        match inspect::backlog(&pool, &kinds, engine.id()).await {
            Ok(backlog) if !backlog.due && backlog.held == 0 => idle_checks += 1,
            Ok(_) => idle_checks = 0,
            Err(error) => {
                let error = linkpulse_util::errors::error_chain(&error);
                tracing::warn!(%error, "until-empty: backlog check failed; retrying");
                idle_checks = 0;
            }
        }
        if idle_checks >= IDLE_CHECKS_TO_STOP {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
    match inspect::not_due(&pool, &kinds).await {
        Ok(left) if left.scheduled > 0 || left.paused > 0 => {
            let next_at = left.next_at.map(|at| at.to_rfc3339());
            tracing::info!(
                scheduled_later = left.scheduled,
                next_at = next_at.as_deref(),
                paused_kinds_queued = left.paused,
                "until-empty: nothing due and nothing in flight; draining (jobs scheduled later or of paused kinds stay queued)"
            );
        }
        Ok(_) => tracing::info!("until-empty: nothing due and nothing in flight; draining"),
        Err(error) => tracing::info!(
            error = %linkpulse_util::errors::error_chain(&error),
            "until-empty: nothing due and nothing in flight; draining (could not count the jobs scheduled later)"
        ),
    }
    stop.cancel();
}
