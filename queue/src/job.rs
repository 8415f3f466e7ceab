//! Job values as the queue stores and hands them out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The four states an operator sees, stored as-is in `queue_jobs.state`.
///
/// `queued` covers "ready now", "scheduled for later" and "waiting out a retry backoff": the
/// difference is only `run_at`, and keeping one state keeps the dedupe index and the claim simple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to run (now or at `run_at`).
    Queued,
    /// Leased by a live worker.
    Running,
    /// Finished successfully.
    Done,
    /// Terminal failure: attempts exhausted, poison payload or discarded.
    Failed,
}

impl JobState {
    /// Every state, in the order operators read them.
    pub const ALL: [JobState; 4] = [Self::Queued, Self::Running, Self::Done, Self::Failed];

    /// The string stored in the database and printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?} (expected queued, running, done or failed)"))
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Stable kind name.
    pub kind: String,
    /// JSON arguments handed to the handler.
    pub payload: serde_json::Value,
    /// Unfinished jobs with the same kind and key are never inserted twice.
    pub dedupe_key: Option<String>,
    /// Concurrency group (the link's host): at most the configured number run at once.
    pub group_key: Option<String>,
    /// Lower runs first.
    pub priority: i16,
    /// Earliest start; `None` means now (by the database clock).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is `failed`.
    pub max_attempts: i32,
    /// W3C trace context of the enqueuer, so the worker's span joins the same trace.
    pub trace_context: Option<serde_json::Value>,
}

impl NewJob {
    /// A job of `kind` with `payload`, default priority, due now, `max_attempts` attempts.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value, max_attempts: i32) -> Self {
        Self {
            kind: kind.into(),
            payload,
            dedupe_key: None,
            group_key: None,
            priority: 0,
            run_at: None,
            max_attempts: max_attempts.max(1),
            trace_context: None,
        }
    }

    /// Sets the dedupe key.
    #[must_use]
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Sets the concurrency group.
    #[must_use]
    pub fn group_key(mut self, key: impl Into<String>) -> Self {
        self.group_key = Some(key.into());
        self
    }

    /// Schedules the job for later.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the priority (lower first).
    #[must_use]
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Attaches the enqueuer's trace context.
    #[must_use]
    pub fn trace_context(mut self, context: Option<serde_json::Value>) -> Self {
        self.trace_context = context;
        self
    }
}

/// A job this worker has leased: what the claim returns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Stable kind name.
    pub kind: String,
    /// Raw JSON arguments, decoded by the backend.
    pub payload: serde_json::Value,
    /// This attempt's number (1-based).
    pub attempts: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// Concurrency group, if any.
    pub group_key: Option<String>,
    /// Enqueuer's trace context.
    pub trace_context: Option<serde_json::Value>,
    /// When the job was inserted.
    pub created_at: DateTime<Utc>,
    /// When the job became due (queue wait is `started_at - run_at`).
    pub run_at: DateTime<Utc>,
    /// The worker identity the job was leased to (the claim's, which a re-registration may
    /// have retired since).
    pub lease_owner: uuid::Uuid,
    /// This lease's token, minted by the claim: completions and write-backs are fenced by it.
    pub lease_token: uuid::Uuid,
    /// The job's current run (new at insert and at each requeue, kept across retries).
    pub run_id: uuid::Uuid,
}

/// The lease of one running attempt, carried in the apalis task's data so the
/// completion can be written back by the owner only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    /// Job id.
    pub job_id: i64,
    /// Worker that owns the lease.
    pub owner: uuid::Uuid,
    /// The lease's token, unique per claim: a replayed completion or a late handler of an
    /// earlier lease of the same job never matches it.
    pub token: uuid::Uuid,
    /// The job's run: the same for every attempt until an operator requeues the job. What a
    /// handler's effects are idempotent by (a retry's write-back after a write that did commit
    /// changes nothing; a requeued job's does).
    pub run: uuid::Uuid,
    /// Attempt number of this lease (1-based).
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// Stable kind name.
    pub kind: String,
    /// Concurrency group, if any.
    pub group_key: Option<String>,
    /// Enqueuer's trace context.
    pub trace_context: Option<serde_json::Value>,
    /// When the job became due.
    pub run_at: DateTime<Utc>,
}

impl JobLease {
    /// True when a failure of this attempt is the last one allowed.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What a handler learned in one attempt, for the job's audit trail (`queue list`, the dashboard).
///
/// The queue itself only knows whether an attempt succeeded; what it *found* — a link check's
/// verdict and status code — is the handler's to say, through the attempt's [`ReportSlot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Result class: for link jobs the verdict (`ok`, `dead`, `transient`, `blocked`) or
    /// `not_modified`; `None` when the handler reported nothing (the ack layer then stores
    /// `snoozed` or `error` for an attempt that did not succeed).
    pub result: Option<String>,
    /// HTTP status code of the final response, if there was one.
    pub status_code: Option<i32>,
    /// Why the result is not `ok` ("HTTP 404: Not Found", "no such host").
    pub detail: Option<String>,
}

/// Where a handler leaves its [`JobReport`]: one slot per attempt, carried in the apalis task's
/// data beside the [`JobLease`] and read by the ack layer when the attempt ends.
///
/// A slot rather than the handler's return value because failed attempts have findings too (a
/// 503 that will be retried, a 429 that snoozes), and those travel as errors.
#[derive(Debug, Clone, Default)]
pub struct ReportSlot(std::sync::Arc<std::sync::Mutex<Option<JobReport>>>);

impl ReportSlot {
    /// Records the attempt's findings; a later call replaces an earlier one.
    pub fn set(&self, report: JobReport) {
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(report);
    }

    /// Takes what the handler reported, if anything.
    pub fn take(&self) -> Option<JobReport> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Arguments that travel through the queue.
///
/// The kind is a stable string chosen by the implementation, never derived from the Rust type
/// path: moving or renaming a struct must not orphan queued jobs.
pub trait JobArgs: Sized + Send + Sync + 'static {
    /// Kinds this type is decoded from; a worker claims only these.
    fn kinds() -> &'static [&'static str];

    /// Kind of this value.
    fn kind(&self) -> &'static str;

    /// Encodes the arguments for storage.
    ///
    /// # Errors
    ///
    /// Fails if the value cannot be represented as JSON.
    fn encode(&self) -> Result<serde_json::Value, serde_json::Error>;

    /// Decodes a stored payload of `kind`.
    ///
    /// # Errors
    ///
    /// A payload that does not match its kind (a poison job): the job is failed with this reason.
    fn decode(kind: &str, payload: serde_json::Value) -> Result<Self, DecodeError>;
}

/// Why a stored payload could not be turned into job arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The kind is not one this type handles.
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    /// The JSON does not match the kind's arguments.
    #[error("malformed {kind} payload: {source}")]
    Malformed {
        /// Kind of the job.
        kind: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}
