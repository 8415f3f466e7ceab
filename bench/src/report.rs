//! The JSON lines the bench prints: one object per phase on stdout, fields in a fixed order so
//! other tools (and people diffing runs) can rely on the shape.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// Name every line carries, so results of several systems can share one file.
const SYSTEM: &str = "linkpulse";

/// Result of the bulk insert.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueBulk {
    system: &'static str,
    phase: &'static str,
    n: usize,
    chunk: usize,
    seconds: f64,
    jobs_per_s: u64,
}

impl EnqueueBulk {
    /// `n` jobs inserted in chunks of `chunk` in `elapsed`.
    pub fn new(n: usize, chunk: usize, elapsed: Duration) -> Self {
        Self {
            system: SYSTEM,
            phase: "enqueue_bulk",
            n,
            chunk,
            seconds: round(elapsed.as_secs_f64(), 3),
            jobs_per_s: rate(n, elapsed),
        }
    }
}

/// Result of draining the queue with a real worker.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    system: &'static str,
    phase: &'static str,
    n: usize,
    completed: usize,
    duplicates: usize,
    drained_s: f64,
    jobs_per_s: u64,
}

impl Process {
    /// `completed` of `n` jobs ran (`duplicates` more than once); all were done after `elapsed`.
    pub fn new(n: usize, completed: usize, duplicates: usize, elapsed: Duration) -> Self {
        Self {
            system: SYSTEM,
            phase: "process",
            n,
            completed,
            duplicates,
            drained_s: round(elapsed.as_secs_f64(), 3),
            jobs_per_s: rate(completed, elapsed),
        }
    }
}

/// Enqueue-to-start latency of single jobs on an idle worker.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyIdle {
    system: &'static str,
    phase: &'static str,
    samples: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl LatencyIdle {
    /// Percentiles of `samples` (any order).
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let ms = |q: f64| round(percentile(&samples, q).as_secs_f64() * 1000.0, 2);
        Self {
            system: SYSTEM,
            phase: "latency_idle",
            samples: samples.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }
}

/// Result of one producer cycle over a links table of one size, next to the bare insert of the
/// same rows.
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    system: &'static str,
    phase: &'static str,
    links: i64,
    due: i64,
    cycle_s: f64,
    cycle_jobs_per_s: u64,
    second_cycle_s: f64,
    bare_insert_s: f64,
    /// `cycle_s / bare_insert_s`: what the cycle's ordering, limit and dedupe cost over the
    /// cheapest statement that enqueues the same jobs.
    ratio: f64,
    limit_10000_cycle_s: f64,
}

/// The timings of one size of the `cycle` command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleTimes {
    /// Jobs the first cycle enqueued.
    pub enqueued: usize,
    /// The first cycle (every due link enqueued, unless `LIMIT` is lower).
    pub cycle: Duration,
    /// The same cycle again at once: every due link already queued, so all are skipped.
    pub second_cycle: Duration,
    /// The bare `INSERT … SELECT` of every due link into an empty queue.
    pub bare_insert: Duration,
    /// One cycle with the production default limit into an empty queue.
    pub limit_default_cycle: Duration,
}

impl Cycle {
    /// The line for `links` links of which `due` were due.
    pub fn new(links: i64, due: i64, times: CycleTimes) -> Self {
        let bare_insert_s = times.bare_insert.as_secs_f64();
        let ratio = if bare_insert_s > 0.0 {
            times.cycle.as_secs_f64() / bare_insert_s
        } else {
            0.0
        };
        Self {
            system: SYSTEM,
            phase: "cycle",
            links,
            due,
            cycle_s: round(times.cycle.as_secs_f64(), 3),
            cycle_jobs_per_s: rate(times.enqueued, times.cycle),
            second_cycle_s: round(times.second_cycle.as_secs_f64(), 3),
            bare_insert_s: round(bare_insert_s, 3),
            ratio: round(ratio, 2),
            limit_10000_cycle_s: round(times.limit_default_cycle.as_secs_f64(), 3),
        }
    }
}

/// How many links ended with each verdict (`links.last_outcome`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    /// Reachable.
    pub ok: u64,
    /// 404 and other evidence of death.
    pub dead: u64,
    /// 5xx, timeouts (judged at once: the run allows one attempt).
    pub transient: u64,
    /// 401/403/429, bot walls, failures on our side.
    pub blocked: u64,
}

/// What the worker processes of a `links` run used, from the kernel's accounting of its waited-for
/// children and of the database backends that served them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinksUsage {
    /// Worker CPU (user + system), all processes.
    pub worker_cpu: Duration,
    /// Largest peak resident set of one worker process, in KiB (`ru_maxrss`).
    pub worker_peak_rss_kib: u64,
    /// CPU of the PostgreSQL backends of the worker processes' connections; `None` when the
    /// server's processes cannot be read (not on this machine).
    pub db_cpu: Option<Duration>,
}

/// Result of checking a file of URLs through the whole pipeline, in the shape lychee's numbers
/// are compared with (`bench/links-vs-lychee.sh`).
#[derive(Debug, Clone, Serialize)]
pub struct Links {
    system: &'static str,
    phase: &'static str,
    urls: u64,
    concurrency: usize,
    checks_per_s: u64,
    seconds: f64,
    /// Worker CPU per check: the number comparable with lychee's own CPU per check.
    cpu_ms_per_check: f64,
    worker_peak_rss_mb: f64,
    verdicts: Verdicts,
    workers: usize,
    /// PostgreSQL's CPU per check for the worker's queries: lychee has no such cost, so it is
    /// reported apart rather than hidden (`null` when the server is not local).
    db_cpu_ms_per_check: Option<f64>,
    /// Links that had no result when the queue drained: must be zero.
    unchecked: u64,
    /// Finished jobs already in the table when the run started (`RETAINED_DONE`).
    retained_done: i64,
}

impl Links {
    /// `urls` links checked by `workers` processes running `concurrency` checks at once; the
    /// queue drained after `elapsed`. `phase` is `links`, or `links_ungrouped` for the diagnostic
    /// run without host groups.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        phase: &'static str,
        urls: u64,
        concurrency: usize,
        workers: usize,
        elapsed: Duration,
        usage: LinksUsage,
        verdicts: Verdicts,
        unchecked: u64,
    ) -> Self {
        let per_check = |cpu: Duration| {
            if urls == 0 {
                0.0
            } else {
                round(cpu.as_secs_f64() * 1000.0 / urls as f64, 3)
            }
        };
        Self {
            system: SYSTEM,
            phase,
            urls,
            concurrency,
            checks_per_s: rate(usize::try_from(urls).unwrap_or(usize::MAX), elapsed),
            seconds: round(elapsed.as_secs_f64(), 3),
            cpu_ms_per_check: per_check(usage.worker_cpu),
            worker_peak_rss_mb: round(usage.worker_peak_rss_kib as f64 / 1024.0, 1),
            verdicts,
            workers,
            db_cpu_ms_per_check: usage.db_cpu.map(per_check),
            unchecked,
            retained_done: 0,
        }
    }

    /// The same line, saying `n` finished jobs were retained before the run.
    #[must_use]
    pub fn with_retained_done(mut self, n: i64) -> Self {
        self.retained_done = n;
        self
    }
}

/// Prints `line` as one JSON object on stdout and flushes, so a reader sees each phase as soon
/// as it ends.
///
/// # Errors
///
/// If stdout is closed.
pub fn emit(line: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string(line).context("encoding a result line")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")
}

/// Nearest-rank percentile `q` (0..=1) of ascending `sorted`; zero when empty.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Rank in 1..=len; the casts are exact for any realistic sample count.
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Jobs per second, rounded down.
fn rate(jobs: usize, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0
    } else {
        (jobs as f64 / seconds) as u64
    }
}

/// `x` rounded to `digits` decimals, so lines stay readable.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let line = LatencyIdle::new(samples.into_iter().rev().collect());
        assert_eq!(
            (line.p50_ms, line.p95_ms, line.p99_ms, line.max_ms),
            (100.0, 190.0, 198.0, 200.0)
        );
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn lines_keep_the_documented_field_order() {
        let line =
            serde_json::to_string(&EnqueueBulk::new(50_000, 5_000, Duration::from_millis(800))).expect("encodes");
        assert_eq!(
            line,
            r#"{"system":"linkpulse","phase":"enqueue_bulk","n":50000,"chunk":5000,"seconds":0.8,"jobs_per_s":62500}"#
        );
        let line = serde_json::to_string(&Process::new(10, 10, 0, Duration::from_secs(2))).expect("encodes");
        assert_eq!(
            line,
            r#"{"system":"linkpulse","phase":"process","n":10,"completed":10,"duplicates":0,"drained_s":2.0,"jobs_per_s":5}"#
        );
    }

    #[test]
    fn cycle_line_keeps_the_documented_field_order() {
        let times = CycleTimes {
            enqueued: 100_000,
            cycle: Duration::from_millis(2_000),
            second_cycle: Duration::from_millis(1_500),
            bare_insert: Duration::from_millis(800),
            limit_default_cycle: Duration::from_millis(250),
        };
        let line = serde_json::to_string(&Cycle::new(1_000_000, 100_000, times)).expect("encodes");
        assert_eq!(
            line,
            r#"{"system":"linkpulse","phase":"cycle","links":1000000,"due":100000,"cycle_s":2.0,"cycle_jobs_per_s":50000,"second_cycle_s":1.5,"bare_insert_s":0.8,"ratio":2.5,"limit_10000_cycle_s":0.25}"#
        );
    }

    #[test]
    fn links_line_keeps_the_documented_field_order() {
        let usage = LinksUsage {
            worker_cpu: Duration::from_millis(1_000),
            worker_peak_rss_kib: 40 * 1024,
            db_cpu: Some(Duration::from_millis(500)),
        };
        let verdicts = Verdicts {
            ok: 4_500,
            dead: 250,
            transient: 250,
            blocked: 0,
        };
        let line = Links::new("links", 5_000, 128, 1, Duration::from_secs(2), usage, verdicts, 0);
        assert_eq!(
            serde_json::to_string(&line).expect("encodes"),
            r#"{"system":"linkpulse","phase":"links","urls":5000,"concurrency":128,"checks_per_s":2500,"seconds":2.0,"cpu_ms_per_check":0.2,"worker_peak_rss_mb":40.0,"verdicts":{"ok":4500,"dead":250,"transient":250,"blocked":0},"workers":1,"db_cpu_ms_per_check":0.1,"unchecked":0,"retained_done":0}"#
        );
    }
}
