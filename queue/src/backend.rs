//! The apalis-core 1.0 `Backend` over our engine, and the layer that reports each attempt's
//! outcome back to it.
//!
//! Why not apalis-core's `Persisted` helper: it fetches only when its buffer is empty (no overlap
//! with execution) and turns any database error into a dead worker. Here the engine's tasks do
//! all database work in the background; `poll_next` only pops from the buffer and never fails, so
//! no database hiccup can end the apalis worker.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::from_request::FromRequest;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{Completion, Engine, EngineConfig, JobArgs, JobLease, Outcome, QueueError, ReportSlot};

/// What a handler returns to steer its job, besides `Ok`.
///
/// Any other error type counts as [`JobError::Retry`]: transient until proven otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Try again after the retry policy's backoff; consumes the attempt.
    #[error("{0}")]
    Retry(String),
    /// Like [`JobError::Retry`], after the server's `Retry-After` instead of the backoff.
    #[error("{reason} (retry after {delay:?})")]
    RetryAfter {
        /// The delay the server asked for.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Run again after `delay` without consuming the attempt (rate limits, `Retry-After`).
    #[error("snoozed for {delay:?}: {reason}")]
    Snooze {
        /// How long to wait.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Retrying cannot help: the job is `failed` now.
    #[error("{0}")]
    Fail(String),
}

/// An apalis backend that runs jobs of `Args`'s kinds from our PostgreSQL queue.
pub struct PgBackend<Args> {
    engine: Engine,
    config: EngineConfig,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for PgBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("worker_id", &self.engine.id())
            .finish_non_exhaustive()
    }
}

impl<Args> PgBackend<Args> {
    /// A backend over a started engine.
    pub fn new(engine: Engine, config: EngineConfig) -> Self {
        Self {
            engine,
            config,
            closing: None,
            _args: PhantomData,
        }
    }

    /// The engine behind this backend (for drain and shutdown from outside the worker).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl<Args: JobArgs> Backend for PgBackend<Args> {
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<Args>, QueueError>>> {
        loop {
            let job = match self.engine.poll_job(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The engine is draining: put the apalis worker into its shutdown phase too,
                    // or it would wait for a stop that never comes once in-flight jobs finish.
                    if !worker.is_shutting_down() {
                        let _ = worker.stop();
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(job)) => job,
            };
            let lease = JobLease {
                job_id: job.id,
                owner: job.lease_owner,
                token: job.lease_token,
                run: job.run_id,
                attempt: job.attempts,
                max_attempts: job.max_attempts,
                kind: job.kind.clone(),
                group_key: job.group_key.clone(),
                trace_context: job.trace_context.clone(),
                run_at: job.run_at,
            };
            match Args::decode(&job.kind, job.payload) {
                Ok(args) => {
                    let task = TaskBuilder::new(args)
                        .task_id(TaskId::from(u64::try_from(job.id).unwrap_or_default()))
                        .attempt(usize::try_from(job.attempts).unwrap_or_default())
                        .max_attempts(usize::try_from(job.max_attempts).unwrap_or_default())
                        .data(lease)
                        .data(ReportSlot::default())
                        .build();
                    return Poll::Ready(Some(Ok(task)));
                }
                Err(error) => {
                    // A poison payload: fail it with the reason and keep going.
                    tracing::error!(job.id = job.id, job.kind = %job.kind, %error, "failing job with undecodable payload");
                    self.engine.complete(Completion::new(
                        lease,
                        Outcome::Fail {
                            error: error.to_string(),
                        },
                    ));
                }
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), QueueError>> {
        let engine = self.engine.clone();
        let closing = self
            .closing
            .get_or_insert_with(|| async move { engine.shutdown().await }.boxed());
        closing.as_mut().poll(cx).map(Ok)
    }
}

impl<Args: JobArgs> BackendConfig for PgBackend<Args> {
    type Args = Args;
    type Id = i64;
    type Kind = Ephemeral;
    type Config = EngineConfig;
    type Layer = AckLayer;

    fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> AckLayer {
        AckLayer {
            engine: self.engine.clone(),
        }
    }
}

/// Outermost layer of the worker's service: turns each attempt's result — including a panic
/// anywhere below it — into an [`Outcome`] for the engine to write back.
#[derive(Debug, Clone)]
pub struct AckLayer {
    engine: Engine,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            engine: self.engine.clone(),
        }
    }
}

/// Service produced by [`AckLayer`].
#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    engine: Engine,
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.ctx().data().get::<JobLease>().cloned();
        let slot = task.ctx().data().get::<ReportSlot>().cloned().unwrap_or_default();
        let engine = self.engine.clone();
        // Measured from here, the one place that sees every attempt and its outcome.
        let started = std::time::Instant::now();
        let in_flight = crate::metrics::InFlight::start();
        // A panic while building the future is caught like one while running it.
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(task)));
        async move {
            let _in_flight = in_flight;
            let result = match call {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            let (outcome, result) = match result {
                Ok(Ok(response)) => (Outcome::Done, Ok(response)),
                Ok(Err(error)) => {
                    let error: BoxDynError = error.into();
                    (outcome_of(error.as_ref()), Err(error))
                }
                Err(panic) => {
                    let message = format!("handler panicked: {}", panic_message(panic.as_ref()));
                    (Outcome::Retry { error: message.clone() }, Err(message.into()))
                }
            };
            match lease {
                Some(lease) => {
                    let duration = started.elapsed();
                    crate::metrics::record_job(&lease.kind, outcome_label(&outcome, &lease), duration);
                    engine.complete(Completion {
                        lease,
                        outcome,
                        report: slot.take().unwrap_or_default(),
                        duration: Some(duration),
                    })
                }
                None => tracing::error!("task without a lease reached the ack layer"),
            }
            result
        }
        .boxed()
    }
}

/// The metrics' name for what an attempt's outcome does to the job: a retry of the last allowed
/// attempt fails the job, so it is counted as `fail`.
fn outcome_label(outcome: &Outcome, lease: &JobLease) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::Retry { .. } | Outcome::RetryAfter { .. } if lease.is_last_attempt() => "fail",
        Outcome::Retry { .. } | Outcome::RetryAfter { .. } => "retry",
        Outcome::Snooze { .. } => "snooze",
        Outcome::Fail { .. } => "fail",
    }
}

/// Maps a handler error to an outcome: [`JobError`] says what it wants; a panic caught by a
/// spawning layer below us (`parallelize`) fails the attempt; anything else is retried.
fn outcome_of(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Outcome {
    if let Some(job_error) = error.downcast_ref::<JobError>() {
        return match job_error {
            JobError::Retry(message) => Outcome::Retry { error: message.clone() },
            JobError::RetryAfter { delay, reason } => Outcome::RetryAfter {
                error: reason.clone(),
                delay: *delay,
            },
            JobError::Snooze { delay, reason } => Outcome::Snooze {
                delay: *delay,
                reason: reason.clone(),
            },
            JobError::Fail(message) => Outcome::Fail { error: message.clone() },
        };
    }
    if let Some(join) = error.downcast_ref::<tokio::task::JoinError>()
        && join.is_panic()
    {
        return Outcome::Retry {
            error: format!("handler panicked: {join}"),
        };
    }
    Outcome::Retry {
        error: linkpulse_util::errors::error_chain(error),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// What the backend attached to the task's data: the lease and the report slot every task
/// carries (a task built elsewhere has neither).
fn attached<T: Clone + Send + Sync + 'static, Args>(task: &Task<Args>) -> Result<T, QueueError> {
    task.ctx().data().get::<T>().cloned().ok_or(QueueError::MissingLease)
}

impl<Args: Sync> FromRequest<Task<Args>> for ReportSlot {
    type Error = QueueError;

    async fn from_request(task: &Task<Args>) -> Result<Self, QueueError> {
        attached(task)
    }
}

impl<Args: Sync> FromRequest<Task<Args>> for JobLease {
    type Error = QueueError;

    async fn from_request(task: &Task<Args>) -> Result<Self, QueueError> {
        attached(task)
    }
}
