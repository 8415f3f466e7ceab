//! Metrics: the names every dashboard and alert relies on, and the process-wide Prometheus
//! recorder that the existing HTTP servers render at `/metrics`.
//!
//! The recorder is installed without its own listener: the producer's admin server and the
//! worker's health server already listen, and a third port per process is one more thing to
//! expose and secure. Installing is idempotent (a `OnceLock`), because tests build several
//! producers and workers in one process and a global recorder can be set only once.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge `{kind, state}`: jobs per kind and operator state (producer, refreshed at scrape time).
pub const QUEUE_JOBS: &str = "linkpulse_queue_jobs";
/// Gauge `{kind}`: seconds the oldest due queued job has waited; 0 when none waits.
pub const QUEUE_OLDEST_QUEUED_AGE: &str = "linkpulse_queue_oldest_queued_age_seconds";
/// Gauge `{status}`: links per status (producer, refreshed at scrape time).
pub const LINKS: &str = "linkpulse_links";
/// Counter: cycles this producer finished (leader or `POST /api/cycle`).
pub const CYCLES_TOTAL: &str = "linkpulse_cycles_total";
/// Gauge: 1 while this producer replica holds the cycling leader lock, else 0.
pub const PRODUCER_LEADER: &str = "linkpulse_producer_leader";
/// Counter: schedule runs finished, by `schedule` and `status` (ok, failed, missed, abandoned).
pub const SCHEDULE_RUNS_TOTAL: &str = "linkpulse_schedule_runs_total";
/// Histogram: seconds one schedule run took, by `schedule`.
pub const SCHEDULE_RUN_DURATION: &str = "linkpulse_schedule_run_duration_seconds";
/// Gauge: Unix time of the schedule's last successful run (from the database at scrape time, so
/// every replica reports the same), by `schedule`.
pub const SCHEDULE_LAST_SUCCESS: &str = "linkpulse_schedule_last_success_timestamp_seconds";
pub use linkpulse_queue::metrics::{InFlight, JOB_DURATION, JOBS_IN_FLIGHT, JOBS_TOTAL, record_job};
/// Histogram: seconds one request of a URL check took (HEAD or the GET fallback, redirects included).
pub const FETCH_DURATION: &str = "linkpulse_fetch_duration_seconds";

/// Buckets of the duration histograms: fetches and jobs range from milliseconds (a local 404) to
/// the HTTP timeout (10 s by default) times a few requests.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the global recorder on first use.
///
/// If another recorder was installed by someone else first, our metrics go to that one and this
/// handle renders an empty page: the process keeps running rather than failing over telemetry.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            match builder().install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder is already installed; /metrics will be empty");
                    builder().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(QUEUE_JOBS, "Jobs per kind and operator state");
    metrics::describe_gauge!(
        QUEUE_OLDEST_QUEUED_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest due queued job per kind"
    );
    metrics::describe_gauge!(LINKS, "Links per status");
    metrics::describe_counter!(CYCLES_TOTAL, "Producer cycles finished");
    metrics::describe_gauge!(PRODUCER_LEADER, "1 while this replica is the cycling leader");
    metrics::describe_counter!(SCHEDULE_RUNS_TOTAL, "Schedule runs finished per schedule and status");
    metrics::describe_histogram!(
        SCHEDULE_RUN_DURATION,
        metrics::Unit::Seconds,
        "Duration of one schedule run"
    );
    metrics::describe_gauge!(SCHEDULE_LAST_SUCCESS, "Unix time of the schedule's last successful run");
    metrics::describe_counter!(JOBS_TOTAL, "Finished job attempts per kind and outcome");
    metrics::describe_histogram!(JOB_DURATION, metrics::Unit::Seconds, "Duration of one job attempt");
    metrics::describe_gauge!(JOBS_IN_FLIGHT, "Job attempts running in this worker");
    metrics::describe_histogram!(
        FETCH_DURATION,
        metrics::Unit::Seconds,
        "Duration of one HTTP request of a URL check"
    );
}

/// Runs one fetch and records its duration (pacing waits excluded: they measure our politeness,
/// not the remote server).
pub async fn timed_fetch<F: std::future::Future>(fetch: F) -> F::Output {
    let started = std::time::Instant::now();
    let output = fetch.await;
    metrics::histogram!(FETCH_DURATION).record(started.elapsed().as_secs_f64());
    output
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn install_twice_returns_a_working_handle_both_times() {
        let first = install();
        let second = install();
        record_job("check", "done", Duration::from_millis(20));
        let page = second.render();
        assert!(
            page.contains("linkpulse_jobs_total{kind=\"check\",outcome=\"done\"}"),
            "{page}"
        );
        assert!(
            page.contains("linkpulse_job_duration_seconds_bucket"),
            "histogram, not summary: {page}"
        );
        assert_eq!(first.render().lines().count(), second.render().lines().count());
    }
}
