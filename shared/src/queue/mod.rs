//! The job queue: a PostgreSQL backend for apalis of our own.
//!
//! # Layout
//!
//! - [`job`]: job values, the four operator states, the [`JobArgs`] trait (stable kind names).
//! - [`enqueue`]: bulk, deduplicated inserts in one round trip; debounced wake-ups.
//! - [`claim`]: the batch claim (`FOR UPDATE SKIP LOCKED` feeding `UPDATE … RETURNING`) with the
//!   cluster-wide per-group cap.
//! - [`ack`]: batched completions (done, retry with persisted backoff, snooze, fail), fenced by
//!   lease owner and attempt; release of unstarted jobs.
//! - [`backoff`]: the retry policy.
//! - [`registry`]: worker identities and heartbeats.
//! - [`maintenance`]: rescue of lost jobs and pruning, by one elected worker.
//! - [`engine`]: the worker-side tasks tying the above together.
//! - [`backend`]: the apalis `Backend` and the layer that reports outcomes.
//! - [`inspect`]: stats, listings, requeue, prune for operators.
//!
//! The state machine and each statement's locking are documented in `docs/queue.md`.

pub mod ack;
pub mod backend;
pub mod backoff;
pub mod claim;
pub mod engine;
pub mod enqueue;
pub mod inspect;
pub mod job;
pub mod maintenance;
pub mod registry;

pub use ack::{Completion, Outcome};
pub use backend::{JobError, PgBackend};
pub use backoff::RetryPolicy;
pub use engine::{Engine, EngineConfig};
pub use enqueue::{EnqueueReport, Queue, insert_many};
pub use inspect::{JobFilter, JobSummary, KindStats, QueueStats, RequeueReport};
pub use job::{ClaimedJob, DecodeError, JobArgs, JobLease, JobReport, JobState, NewJob, ReportSlot};

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
    /// A task reached a handler without the lease the backend attaches.
    #[error("task carries no job lease or report slot")]
    MissingLease,
}
