//! The job the bench runs: it does nothing but record that (and when) it ran, so every measured
//! microsecond belongs to the queue and the apalis worker, not to the handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use apalis::prelude::Data;
use linkpulse_queue::{DecodeError, JobArgs, NewJob};
use linkpulse_shared::config::DEFAULT_MAX_ATTEMPTS;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Stable kind name of the no-op job.
pub const KIND: &str = "noop";

/// Arguments of the no-op job: the index that identifies it in the [`Recorder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noop {
    /// Job index (process phase) or sample index (latency phase).
    pub i: usize,
}

impl JobArgs for Noop {
    fn kinds() -> &'static [&'static str] {
        &[KIND]
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn encode(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn decode(kind: &str, payload: serde_json::Value) -> Result<Self, DecodeError> {
        if kind != KIND {
            return Err(DecodeError::UnknownKind(kind.to_owned()));
        }
        serde_json::from_value(payload).map_err(|source| DecodeError::Malformed {
            kind: kind.to_owned(),
            source,
        })
    }
}

/// The job row for index `i`: dedupe key `{prefix}{i}` so a re-run of `fill` into the same
/// database never doubles its queued jobs.
///
/// # Errors
///
/// Never in practice: a `Noop` always encodes.
pub fn new_job(i: usize, dedupe_prefix: &str) -> Result<NewJob, serde_json::Error> {
    Ok(NewJob::new(KIND, Noop { i }.encode()?, DEFAULT_MAX_ATTEMPTS).dedupe_key(format!("{dedupe_prefix}{i}")))
}

/// `count` jobs with indexes `0..count`.
///
/// # Errors
///
/// Never in practice: a `Noop` always encodes.
pub fn new_jobs(count: usize, dedupe_prefix: &str) -> Result<Vec<NewJob>, serde_json::Error> {
    (0..count).map(|i| new_job(i, dedupe_prefix)).collect()
}

/// A handler start, sent to the latency probe.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Index of the job that started.
    pub i: usize,
    /// When the handler began.
    pub at: Instant,
}

/// What the handlers observed: runs per job index (to find lost and duplicated jobs) and,
/// for the latency probe, each start.
#[derive(Debug)]
pub struct Recorder {
    runs: Vec<AtomicU32>,
    /// Indexes that ran at least once, so waiting for completion polls one counter.
    distinct: AtomicUsize,
    started: Option<mpsc::UnboundedSender<Started>>,
}

impl Recorder {
    /// Counts runs of `jobs` indexes; reports starts to `started` if given.
    pub fn new(jobs: usize, started: Option<mpsc::UnboundedSender<Started>>) -> Self {
        Self {
            runs: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            started,
        }
    }

    /// Notes one run of job `i`.
    fn record(&self, i: usize) {
        let at = Instant::now();
        if let Some(started) = &self.started {
            // The probe may have given up on this sample already; a late start is not an error.
            let _ = started.send(Started { i, at });
        }
        match self.runs.get(i) {
            Some(runs) => {
                if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.distinct.fetch_add(1, Ordering::Release);
                }
            }
            None => tracing::warn!(i, "job index outside the recorded range"),
        }
    }

    /// Indexes that ran at least once.
    pub fn completed(&self) -> usize {
        self.distinct.load(Ordering::Acquire)
    }

    /// Indexes that ran more than once.
    pub fn duplicates(&self) -> usize {
        self.runs.iter().filter(|runs| runs.load(Ordering::Relaxed) > 1).count()
    }
}

/// The apalis handler: records the run and returns at once.
pub async fn run_noop(job: Noop, recorder: Data<Arc<Recorder>>) {
    recorder.record(job.i);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_under_its_stable_kind() {
        let job = new_job(7, "").expect("encodes");
        assert_eq!(job.kind, "noop");
        assert_eq!(job.payload, serde_json::json!({"i": 7}));
        assert_eq!(job.dedupe_key.as_deref(), Some("7"));
        assert_eq!(job.max_attempts, 5);
        assert_eq!(Noop::decode("noop", job.payload).expect("decodes"), Noop { i: 7 });
    }

    #[test]
    fn other_kinds_and_bad_payloads_are_poison() {
        assert!(matches!(
            Noop::decode("check", serde_json::json!({"i": 1})),
            Err(DecodeError::UnknownKind(_))
        ));
        assert!(matches!(
            Noop::decode("noop", serde_json::json!({"x": 1})),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn recorder_counts_first_runs_and_duplicates() {
        let recorder = Recorder::new(3, None);
        recorder.record(0);
        recorder.record(2);
        recorder.record(2);
        recorder.record(9);
        assert_eq!(recorder.completed(), 2);
        assert_eq!(recorder.duplicates(), 1);
    }
}
