//! The queue's own metrics: attempts finished per kind and outcome, their durations, attempts in
//! flight. Recorded through the `metrics` facade; whoever installs a recorder (the application's
//! Prometheus exporter) renders them.

use std::time::Duration;

/// Counter `{kind, outcome}`: finished attempts; outcome is `done`, `retry`, `snooze` or `fail`.
pub const JOBS_TOTAL: &str = "linkpulse_jobs_total";
/// Histogram `{kind}`: seconds from the start of an attempt to its outcome.
pub const JOB_DURATION: &str = "linkpulse_job_duration_seconds";
/// Gauge: attempts running in this worker process right now.
pub const JOBS_IN_FLIGHT: &str = "linkpulse_jobs_in_flight";

/// Counts an attempt as running until dropped, so a panicking or cancelled attempt still leaves
/// the in-flight gauge.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Increments the in-flight gauge.
    pub fn start() -> Self {
        metrics::gauge!(JOBS_IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(JOBS_IN_FLIGHT).decrement(1.0);
    }
}

/// Records one finished attempt of a `kind` job.
pub fn record_job(kind: &str, outcome: &'static str, took: Duration) {
    metrics::counter!(JOBS_TOTAL, "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_DURATION, "kind" => kind.to_owned()).record(took.as_secs_f64());
}
