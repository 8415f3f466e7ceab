//! linkpulse-queue: a PostgreSQL job queue, and its backend for apalis.
//!
//! # Layout
//!
//! - [`job`]: job values, the four operator states, the [`JobArgs`] trait (stable kind names).
//! - [`enqueue`]: bulk, deduplicated inserts in one round trip (rows, or a caller's `SELECT`);
//!   debounced wake-ups.
//! - [`claim`]: the batch claim (`FOR UPDATE SKIP LOCKED` feeding `UPDATE … RETURNING`) with the
//!   cluster-wide per-group cap.
//! - [`ack`]: batched completions (done, retry with persisted backoff, snooze, fail), fenced by
//!   the lease token; release of unstarted jobs.
//! - [`backoff`]: the retry policy.
//! - [`registry`]: worker identities and heartbeats.
//! - [`maintenance`]: rescue of lost jobs and pruning, by one elected worker.
//! - [`engine`]: the worker-side tasks tying the above together.
//! - [`backend`]: the apalis `Backend` and the layer that reports outcomes.
//! - [`inspect`]: stats, listings, requeue, prune for operators.
//! - [`counts`]: the finished-job counters the stats read, and their recount.
//! - [`control`]: pausing and resuming a kind, cancelling queued jobs, for operators.
//!
//! - [`settings`]: what producers, workers and operators must agree on, with named defaults.
//! - [`metrics`]: attempts per kind and outcome, durations, attempts in flight.
//!
//! The state machine and each statement's locking are documented in `docs/queue.md`. This crate
//! knows nothing of links, HTTP or the application's configuration, and it is the only code that
//! writes `queue_jobs` (the application's write-backs read a lease's token and attempt from it to
//! fence themselves).

pub mod ack;
pub mod backend;
pub mod backoff;
pub mod claim;
pub mod control;
pub mod counts;
pub mod detail;
pub mod engine;
pub mod enqueue;
pub mod inspect;
pub mod job;
pub mod maintenance;
pub mod metrics;
pub mod registry;
pub mod settings;

pub use ack::{Completion, Outcome};
pub use backend::{JobError, PgBackend};
pub use backoff::RetryPolicy;
pub use control::{CANCELLED_CLASS, CancelSelection, PausedKind};
pub use engine::{Engine, EngineConfig};
pub use enqueue::{EnqueueReport, EnqueueSelect, Queue, SelectReport, insert_many, insert_select};
pub use inspect::{JobFilter, JobSummary, KindStats, QueueStats, RequeueReport};
pub use job::{ClaimedJob, DecodeError, JobArgs, JobLease, JobReport, JobState, NewJob, ReportSlot};
pub use settings::QueueSettings;

/// Channel the enqueuers `NOTIFY` and the workers `LISTEN` on.
pub const NOTIFY_CHANNEL: &str = "linkpulse_jobs";

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A statement failed or the database could not be reached.
    #[error("queue database error")]
    Database(#[from] sqlx::Error),
    /// Job arguments could not be encoded as JSON.
    #[error("failed to encode job arguments")]
    Encode(#[from] serde_json::Error),
    /// Requeue asked for a state that is not finished.
    #[error("only failed or done jobs can be requeued, not {0}")]
    NotFinished(JobState),
    /// A cancel named no filter at all, which would discard every queued job of every kind.
    #[error("cancel needs a job id, a kind or a dedupe key")]
    EmptySelection,
    /// A task reached a handler without the lease the backend attaches.
    #[error("task carries no job lease or report slot")]
    MissingLease,
}
