//! The `links` command: checks a file of URLs through the real pipeline — `links import`, one
//! producer cycle, real `worker` processes, until the queue is drained — and reports checks per
//! second, the workers' CPU and peak RSS, and the verdicts, in the shape lychee's numbers are
//! compared with (`bench/links-vs-lychee.sh`).
//!
//! The workers run as child processes of the production binary, not in the bench's process: the
//! kernel then accounts their CPU and peak RSS apart from the bench's own (import, cycle, progress
//! polling), exactly as `/usr/bin/time` accounts lychee's.
//!
//! Settings mirror the lychee run it is compared with: per-host limits off (no pacing interval,
//! host concurrency = `CONC`), one attempt per job (lychee judges a 500 at once, `--max-retries
//! 0`), a 5 s fetch timeout (`--timeout 5`), and loopback allowed (the test site is local).

use std::collections::BTreeMap;
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use linkpulse_shared::config::Settings;
use linkpulse_shared::db::worker_connections;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill};
use nix::sys::time::TimeVal;
use nix::unistd::{Pid, SysconfVar, sysconf};
use producer::cycle::run_cycle;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::report::{Links, LinksUsage, Verdicts};
use crate::settings::LinksSettings;

/// Total deadline of one fetch, as lychee's `--timeout 5`.
pub const FETCH_TIMEOUT: &str = "5s";
/// How often the bench looks whether the queue is drained: fine enough for runs of seconds, rare
/// enough that the two index probes it costs are noise next to the workers' queries.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// How often a slow run logs its progress (stderr), so a stall is visible as it happens.
const PROGRESS_LOG: Duration = Duration::from_secs(2);
/// How long the workers get to exit after SIGTERM. Nothing is in flight by then, so they exit at
/// once; a worker still alive after this is killed and the run fails.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// Queued or running jobs left: two probes of the queue's partial indexes, not a count, so the
/// poll stays cheap while thousands of jobs are queued.
const PENDING: &str = "SELECT EXISTS (SELECT 1 FROM queue_jobs WHERE state = 'queued') \
    OR EXISTS (SELECT 1 FROM queue_jobs WHERE state = 'running')";

/// The PostgreSQL backends of this database other than the asking connection: with the bench's
/// pool held to one connection, they are the workers'.
const WORKER_BACKENDS: &str =
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";

/// Verdicts per link once the queue is drained; `NULL` = never checked.
const OUTCOMES: &str = "SELECT last_outcome, count(*) FROM links GROUP BY last_outcome";

/// Per-link results, for the comparison with lychee's per-URL statuses.
const RESULTS: &str = "SELECT url, coalesce(last_outcome, 'unchecked'), last_status_code FROM links ORDER BY id";

/// The bench's own connections during a `links` run: one, so [`WORKER_BACKENDS`] can tell the
/// workers' backends from the bench's by excluding the asking backend alone.
pub const LINKS_CONNECTIONS: u32 = 1;

/// What `links import --json` printed (the fields the bench needs).
#[derive(Debug, Deserialize)]
struct ImportReport {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<serde_json::Value>,
}

/// Runs the whole measurement in `pool`'s freshly migrated scratch database, whose URL the
/// worker processes get as `scratch_url`.
///
/// # Errors
///
/// An import, cycle or worker failure, a queue that does not drain, or links left unchecked.
pub async fn measure(pool: &PgPool, scratch_url: &str, file: &Path, settings: LinksSettings) -> anyhow::Result<Links> {
    let worker_bin = worker_binary()?;
    ensure_connections(pool, settings).await?;
    if settings.retained_done > 0 {
        retain_done(pool, settings.retained_done).await?;
    }
    let urls = import(pool, file).await?;
    let producer_settings = producer_settings(scratch_url, settings, urls);
    let cycle = run_cycle(pool, &producer_settings).await.context("producer cycle")?;
    ensure!(
        u64::try_from(cycle.check.enqueued).ok() == Some(urls),
        "the cycle enqueued {} checks for {urls} links",
        cycle.check.enqueued
    );
    tracing::info!(enqueued = urls, "cycle done");
    if settings.ungrouped {
        tracing::warn!("UNGROUPED: jobs lose their host group; not a production configuration");
        sqlx::query("UPDATE queue_jobs SET group_key = NULL WHERE state = 'queued'")
            .execute(pool)
            .await
            .context("ungrouping the queued jobs")?;
    }
    crate::cycle::settle(pool).await;
    let stats = crate::pgstats::target();
    if stats.is_some() {
        crate::pgstats::reset(pool).await;
    }

    let before = children_usage()?;
    ensure!(
        before.max_rss() == 0,
        "the bench already has waited-for children; their peak RSS would mask the workers'"
    );
    let started = Instant::now();
    let mut workers = spawn_workers(&worker_bin, scratch_url, settings)?;
    let drained = wait_until_drained(pool, &mut workers, urls, started).await;
    // Read before the workers exit: their backends close with them.
    let db_cpu = match &drained {
        Ok(_) => worker_backends_cpu(pool).await,
        Err(_) => None,
    };
    let stopped = stop_workers(&mut workers).await;
    let elapsed = drained?;
    stopped?;
    let after = children_usage()?;
    if let Some(path) = &stats {
        crate::pgstats::dump(pool, path).await?;
    }

    let usage = LinksUsage {
        worker_cpu: cpu(&after).saturating_sub(cpu(&before)),
        worker_peak_rss_kib: u64::try_from(after.max_rss()).unwrap_or_default(),
        db_cpu,
    };
    ensure_none_failed(pool).await?;
    let (verdicts, unchecked) = verdicts(pool).await?;
    ensure!(unchecked == 0, "{unchecked} links were never checked");
    if let Some(path) = std::env::var_os("VERDICTS") {
        write_results(pool, Path::new(&path)).await?;
    }
    Ok(Links::new(
        if settings.ungrouped { "links_ungrouped" } else { "links" },
        urls,
        settings.conc,
        settings.workers,
        elapsed,
        usage,
        verdicts,
        unchecked,
    )
    .with_retained_done(settings.retained_done))
}

/// `n` finished check jobs of other links, an hour old, as a deployment's retained history
/// (`VACUUM ANALYZE`d, as autovacuum would have), with the counters recounted.
async fn retain_done(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO queue_jobs (kind, dedupe_key, payload, state, attempts, max_attempts, started_at, finished_at, \
                                 result_class, duration_ms) \
         SELECT 'check', 'link:' || (100000000 + i), jsonb_build_object('link_id', 100000000 + i), 'done', 1, 5, \
                now() - interval '1 hour', now() - interval '1 hour', 'ok', 20 \
         FROM generate_series(1, $1::int8) i",
    )
    .bind(n)
    .execute(pool)
    .await
    .context("writing the retained history")?;
    sqlx::query("VACUUM ANALYZE queue_jobs").execute(pool).await?;
    linkpulse_queue::counts::recount(pool).await?;
    tracing::info!(retained_done = n, "retained history written");
    Ok(())
}

/// The `worker` binary next to the bench's own executable (both are built into the same
/// `target/<profile>/`), unless `WORKER_BIN` names another.
pub(crate) fn worker_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("WORKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let bench = std::env::current_exe().context("locating the bench executable")?;
    let path = bench.with_file_name("worker");
    ensure!(
        path.is_file(),
        "{} not found: build it with `cargo build --release -p worker` (or set WORKER_BIN)",
        path.display()
    );
    Ok(path)
}

/// Fails before anything is measured when the server cannot give the workers their pools: a
/// worker opens [`worker_connections`] connections, and a connection refused with "too many clients" fails the job that asked for it — with one
/// attempt per job, the link then stays unchecked and the run measures an error path.
async fn ensure_connections(pool: &PgPool, settings: LinksSettings) -> anyhow::Result<()> {
    const FREE: &str = "SELECT current_setting('max_connections')::int \
        - current_setting('superuser_reserved_connections')::int \
        - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int";
    let (free,): (i32,) = sqlx::query_as(FREE)
        .fetch_one(pool)
        .await
        .context("reading the server's free connections")?;
    let needed: usize = settings
        .per_worker()
        .iter()
        .map(|_| usize::try_from(worker_connections()).unwrap_or(usize::MAX))
        .sum();
    ensure!(
        usize::try_from(free).unwrap_or_default() >= needed,
        "the workers may open {needed} connections but the server has \
         {free} free: raise max_connections (bench/links-vs-lychee.sh starts a server of its own for this)"
    );
    Ok(())
}

/// Fails when a job ended `failed` for another reason than its verdict: with one attempt per job
/// that is an error of the worker's own (a database write that failed), not a verdict, and the
/// run would not compare like with like.
async fn ensure_none_failed(pool: &PgPool) -> anyhow::Result<()> {
    // A check whose only attempt got no answer (a 500, a timeout) ends failed with class
    // `transient`: that is its verdict, as lychee reports it. Anything else failed is an error.
    let (failed, example): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), min(errors -> -1 ->> 'error') FROM queue_jobs \
         WHERE state = 'failed' AND result_class IS DISTINCT FROM 'transient'",
    )
    .fetch_one(pool)
    .await
    .context("counting failed jobs")?;
    ensure!(
        failed == 0,
        "{failed} jobs failed; one error: {}",
        example.unwrap_or_default()
    );
    Ok(())
}

/// Imports `file` with the producer's own `links import`; returns how many links were saved.
pub(crate) async fn import(pool: &PgPool, file: &Path) -> anyhow::Result<u64> {
    let opened = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = BufReader::new(opened);
    let mut out = Vec::new();
    let started = Instant::now();
    producer::commands::links::import(pool, &mut reader, true, &mut out)
        .await
        .with_context(|| format!("importing {}", file.display()))?;
    let report: ImportReport = serde_json::from_slice(&out).context("reading the import report")?;
    tracing::info!(
        accepted = report.accepted,
        duplicates = report.duplicates,
        rejected = report.rejected.len(),
        seconds = started.elapsed().as_secs_f64(),
        "imported"
    );
    if report.duplicates > 0 || !report.rejected.is_empty() {
        tracing::warn!(
            duplicates = report.duplicates,
            rejected = ?report.rejected,
            "some lines were not imported: lychee checks them anyway, so the verdict counts differ"
        );
    }
    ensure!(report.accepted > 0, "{} holds no URL to check", file.display());
    Ok(report.accepted)
}

/// Producer settings of the run: every link due now, all of them in one cycle, checks only, one
/// attempt per job. The worker-side settings are the same, passed as environment variables in
/// [`spawn_workers`]; the ones set here document the run and keep the two in step.
pub(crate) fn producer_settings(scratch_url: &str, settings: LinksSettings, urls: u64) -> Settings {
    let mut producer = Settings::defaults(scratch_url);
    producer.check_after = Duration::ZERO;
    producer.refresh_enabled = false;
    producer.cycle_limit = i64::try_from(urls).unwrap_or(i64::MAX).max(1);
    producer.queue.max_attempts = 1;
    producer.queue.host_concurrency = u32::try_from(settings.host_concurrency).unwrap_or(u32::MAX);
    producer.host_interval = Duration::ZERO;
    producer.fetch.guard.allow_private_networks = true;
    producer
}

/// Starts the worker processes with the production binary's own configuration path
/// (environment and `--concurrency`). Their stderr (logs) goes to the bench's stderr, or is
/// appended to `WORKER_LOG` when set.
pub(crate) fn spawn_workers(bin: &Path, scratch_url: &str, settings: LinksSettings) -> anyhow::Result<Vec<Child>> {
    let log = std::env::var_os("WORKER_LOG");
    let host_concurrency = settings.host_concurrency.to_string();
    settings
        .per_worker()
        .into_iter()
        .map(|concurrency| {
            let stderr = match &log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("opening WORKER_LOG {}", path.to_string_lossy()))?,
                ),
                None => Stdio::inherit(),
            };
            Command::new(bin)
                .arg("--concurrency")
                .arg(concurrency.to_string())
                .env("DATABASE_URL", scratch_url)
                .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
                .env("LINKPULSE_HOST_INTERVAL", "0s")
                .env("LINKPULSE_HOST_CONCURRENCY", &host_concurrency)
                .env("LINKPULSE_MAX_ATTEMPTS", "1")
                .env("LINKPULSE_HTTP_TIMEOUT", FETCH_TIMEOUT)
                .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
                // No trace export: lychee exports nothing either, and a collector may not run.
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                // A bench that fails or is interrupted never leaves workers behind.
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))
        })
        .collect()
}

/// Waits until no job is queued or running; returns the time since `started`. Fails at once if a
/// worker exits on its own, and after a generous deadline.
pub(crate) async fn wait_until_drained(
    pool: &PgPool,
    workers: &mut [Child],
    urls: u64,
    started: Instant,
) -> anyhow::Result<Duration> {
    // A minute plus 10 ms per link: far beyond any healthy run (a timed-out fetch costs 5 s).
    let deadline = started + Duration::from_secs(60) + Duration::from_millis(urls.saturating_mul(10));
    let mut next_progress = started + PROGRESS_LOG;
    loop {
        let (pending,): (bool,) = sqlx::query_as(PENDING)
            .fetch_one(pool)
            .await
            .context("looking for queued or running jobs")?;
        if !pending {
            let elapsed = started.elapsed();
            tracing::info!(seconds = elapsed.as_secs_f64(), "queue drained");
            return Ok(elapsed);
        }
        for worker in workers.iter_mut() {
            if let Some(status) = worker.try_wait().context("polling a worker")? {
                bail!("a worker exited before the queue drained: {status}");
            }
        }
        let now = Instant::now();
        ensure!(
            now < deadline,
            "the queue did not drain within {:?}",
            deadline - started
        );
        if now >= next_progress {
            let (checked,): (i64,) = sqlx::query_as("SELECT count(*) FROM links WHERE last_checked_at IS NOT NULL")
                .fetch_one(pool)
                .await
                .context("counting checked links")?;
            tracing::info!(checked, of = urls, "progress");
            next_progress += PROGRESS_LOG;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// SIGTERMs every worker (the production shutdown path) and waits for them, so the kernel has
/// accounted their whole life in the bench's children usage.
pub(crate) async fn stop_workers(workers: &mut [Child]) -> anyhow::Result<()> {
    for worker in workers.iter() {
        if let Some(pid) = worker.id() {
            let pid = Pid::from_raw(i32::try_from(pid).context("worker pid")?);
            kill(pid, Signal::SIGTERM).context("sending SIGTERM to a worker")?;
        }
    }
    let mut failures = Vec::new();
    for worker in workers.iter_mut() {
        match tokio::time::timeout(EXIT_DEADLINE, worker.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => failures.push(format!("exited with {status}")),
            Ok(Err(error)) => failures.push(format!("cannot wait for it: {error}")),
            Err(_) => {
                worker.kill().await.context("killing a worker")?;
                failures.push(format!("still running {EXIT_DEADLINE:?} after SIGTERM; killed"));
            }
        }
    }
    ensure!(failures.is_empty(), "worker exit: {}", failures.join("; "));
    Ok(())
}

/// The usage of the bench's terminated, waited-for children (its workers, after they exit).
fn children_usage() -> anyhow::Result<nix::sys::resource::Usage> {
    getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")
}

/// User plus system CPU of `usage`.
fn cpu(usage: &nix::sys::resource::Usage) -> Duration {
    timeval(usage.user_time()) + timeval(usage.system_time())
}

fn timeval(tv: TimeVal) -> Duration {
    let micros = tv.tv_sec().saturating_mul(1_000_000).saturating_add(tv.tv_usec());
    Duration::from_micros(u64::try_from(micros).unwrap_or_default())
}

/// CPU used so far by the PostgreSQL backends serving the workers, read from `/proc`. `None` when
/// the server is not on this machine (or its processes are not readable): the number is then
/// simply not reported. Backends that closed during the run are missed; the workers' pools keep
/// theirs open, so none do in practice.
async fn worker_backends_cpu(pool: &PgPool) -> Option<Duration> {
    let pids: Vec<(i32,)> = match sqlx::query_as(WORKER_BACKENDS).fetch_all(pool).await {
        Ok(pids) => pids,
        Err(error) => {
            tracing::warn!(%error, "cannot list the workers' database backends");
            return None;
        }
    };
    let ticks_per_s = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => u64::try_from(ticks).ok()?,
        _ => return None,
    };
    let mut ticks = 0;
    for (pid,) in &pids {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => ticks += stat_cpu_ticks(&stat)?,
            Err(error) => {
                tracing::warn!(pid, %error, "database backend CPU not readable (server not local?)");
                return None;
            }
        }
    }
    tracing::info!(backends = pids.len(), "read the workers' database backends' CPU");
    Some(Duration::from_millis(ticks * 1000 / ticks_per_s))
}

/// `utime + stime` (clock ticks) of one `/proc/PID/stat` line. The command name in parentheses
/// may contain spaces, so fields are counted from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Verdict counts, and the links left without one.
async fn verdicts(pool: &PgPool) -> anyhow::Result<(Verdicts, u64)> {
    let rows: Vec<(Option<String>, i64)> = sqlx::query_as(OUTCOMES)
        .fetch_all(pool)
        .await
        .context("counting verdicts")?;
    let mut verdicts = Verdicts::default();
    let mut unchecked = 0;
    let mut other = BTreeMap::new();
    for (outcome, count) in rows {
        let count = u64::try_from(count).unwrap_or_default();
        match outcome.as_deref() {
            Some("ok") => verdicts.ok += count,
            Some("dead") => verdicts.dead += count,
            Some("transient") => verdicts.transient += count,
            Some("blocked") => verdicts.blocked += count,
            None => unchecked += count,
            Some(name) => {
                other.insert(name.to_owned(), count);
            }
        }
    }
    ensure!(other.is_empty(), "unknown verdicts: {other:?}");
    Ok((verdicts, unchecked))
}

/// Writes `url<TAB>verdict<TAB>status` per link to `path`, for `bench/links-vs-lychee.sh` to
/// compare with lychee's per-URL results.
async fn write_results(pool: &PgPool, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<(String, String, Option<i32>)> = sqlx::query_as(RESULTS)
        .fetch_all(pool)
        .await
        .context("reading per-link results")?;
    let mut out = Vec::new();
    for (url, verdict, status) in rows {
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        writeln!(out, "{url}\t{verdict}\t{status}").context("formatting results")?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (postgres: a) b) S 1 4242 4242 0 -1 4194560 500 0 0 0 37 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(42));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn producer_settings_turn_the_per_host_limits_off() {
        let settings = producer_settings(
            "postgres://localhost/x",
            LinksSettings {
                conc: 512,
                workers: 2,
                host_concurrency: 512,
                ungrouped: false,
                retained_done: 0,
            },
            5_000,
        );
        assert_eq!(settings.check_after, Duration::ZERO);
        assert!(!settings.refresh_enabled);
        assert_eq!(settings.cycle_limit, 5_000);
        assert_eq!(settings.queue.max_attempts, 1);
        assert_eq!(settings.queue.host_concurrency, 512);
        assert_eq!(settings.host_interval, Duration::ZERO);
    }
}
