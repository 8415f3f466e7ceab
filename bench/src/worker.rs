//! A real linkpulse worker, assembled exactly as the production worker binary does, so the bench
//! measures what production runs: engine, `PgBackend`, apalis concurrency limit, `tokio::spawn`
//! per job, and the drain at the end.

use std::sync::Arc;

use anyhow::Context as _;
use apalis::prelude::*;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use linkpulse_queue::{Engine, EngineConfig, JobArgs, PgBackend};
use linkpulse_shared::config::{DEFAULT_SHUTDOWN_GRACE, QueueSettings};
use linkpulse_shared::shutdown::{Drained, run_until_drained};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::noop::{Noop, Recorder, run_noop};

/// A started worker and what it takes to stop it.
#[derive(Debug)]
pub struct RunningWorker {
    engine: Engine,
    stop: CancellationToken,
    run: JoinHandle<Result<Drained, WorkerError>>,
}

impl RunningWorker {
    /// Starts the engine and the apalis worker over `pool`, running [`Noop`] jobs into `recorder`.
    ///
    /// # Errors
    ///
    /// If the engine cannot register the worker.
    pub async fn start(pool: &PgPool, name: &str, concurrency: usize, recorder: Arc<Recorder>) -> anyhow::Result<Self> {
        let config = EngineConfig {
            kinds: Noop::kinds().to_vec(),
            concurrency,
            name: name.to_owned(),
            queue: QueueSettings::default(),
        };
        // The engine's own one-connection pool, as a worker process has it
        // (`linkpulse_shared::db::connect_engine`).
        let engine_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(linkpulse_shared::db::WORKER_ENGINE_CONNECTIONS)
            .connect_with(
                linkpulse_shared::db::tuned(pool.connect_options().as_ref().clone())
                    .options(linkpulse_queue::engine::CLAIM_SESSION_OPTIONS),
            )
            .await
            .context("connecting the queue engine")?;
        // And, as a worker's handler connection, one for the acknowledgements.
        let ack_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(linkpulse_shared::db::WORKER_HANDLER_CONNECTIONS)
            .connect_with(pool.connect_options().as_ref().clone())
            .await
            .context("connecting the acknowledgements")?;
        let engine = Engine::start_with_ack_pool(engine_pool, ack_pool, config.clone())
            .await
            .context("starting the queue engine")?;
        let backend = PgBackend::<Noop>::new(engine.clone(), config);
        let worker = WorkerBuilder::new(name)
            .backend(backend)
            .data(recorder)
            .concurrency(concurrency)
            .parallelize(tokio::spawn)
            .build(run_noop);
        // Boxed here, outside the spawned block: proving the run future `Send` from inside the
        // block trips the compiler's "implementation of `FnOnce` is not general enough" on the
        // `tokio::spawn` executor (a known limitation with erased lifetimes in async blocks).
        let worker: BoxFuture<'static, Result<(), WorkerError>> = worker.run().boxed();
        let stop = CancellationToken::new();
        let run = tokio::spawn({
            let engine = engine.clone();
            let stop = stop.clone();
            async move { run_until_drained(&engine, worker, stop, DEFAULT_SHUTDOWN_GRACE).await }
        });
        Ok(Self { engine, stop, run })
    }

    /// The engine's worker id (its lease owner).
    pub fn id(&self) -> uuid::Uuid {
        self.engine.id()
    }

    /// Drains and stops the worker the way SIGTERM does.
    ///
    /// # Errors
    ///
    /// If the worker had already failed or its task panicked.
    pub async fn stop(self) -> anyhow::Result<Drained> {
        self.stop.cancel();
        let drained = self
            .run
            .await
            .context("worker task panicked")?
            .context("worker failed")?;
        if drained == Drained::GraceExpired {
            tracing::warn!("worker drain ran out of grace");
        }
        Ok(drained)
    }
}
