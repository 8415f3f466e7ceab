//! The queue's settings: what producers, workers and operators must agree on. Defaults are named
//! constants shared with the application's configuration and `--help`; reading them from the
//! environment is the application's business (`linkpulse_shared::config`), not the queue's.

use std::time::Duration;

use crate::RetryPolicy;
use crate::backoff::{DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX};

/// Attempts per job before it is `failed`.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Running jobs per group (host) across the whole pool.
pub const DEFAULT_HOST_CONCURRENCY: u32 = 2;
/// How often a worker renews its leases.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A worker silent this long is dead and its jobs are rescued.
pub const DEFAULT_RESCUE_AFTER: Duration = Duration::from_secs(30);
/// How long `done` jobs are kept.
pub const DEFAULT_RETAIN_DONE: Duration = Duration::from_secs(24 * 3600);
/// How long `failed` jobs are kept.
pub const DEFAULT_RETAIN_FAILED: Duration = Duration::from_secs(14 * 24 * 3600);
/// Fallback poll when no notification arrives (also bounds how late a scheduled job starts).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Queue behaviour shared by producers, workers and operators.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// `LINKPULSE_MAX_ATTEMPTS`: attempts per job before it is `failed` (snoozes do not count).
    pub max_attempts: i32,
    /// `LINKPULSE_HOST_CONCURRENCY`: running jobs per group (host) across the whole pool.
    pub host_concurrency: u32,
    /// `LINKPULSE_HEARTBEAT_INTERVAL`: how often a worker renews its leases. Keep it well under
    /// `rescue_after` (a third or less), or a slow heartbeat gets a live worker's jobs rescued.
    pub heartbeat_interval: Duration,
    /// `LINKPULSE_RESCUE_AFTER`: a worker silent this long is dead; its running jobs go back to
    /// `queued` (attempt counted). Lower means faster recovery and more risk of double runs
    /// during database hiccups.
    pub rescue_after: Duration,
    /// `LINKPULSE_RETAIN_DONE`: how long `done` jobs are kept for the audit trail.
    pub retain_done: Duration,
    /// `LINKPULSE_RETAIN_FAILED`: how long `failed` jobs are kept (long enough to requeue them).
    pub retain_failed: Duration,
    /// `LINKPULSE_POLL_INTERVAL`: fallback poll of an idle worker when notifications are lost;
    /// also the worst lateness of a scheduled job.
    pub poll_interval: Duration,
    /// `LINKPULSE_RETRY_BASE` / `LINKPULSE_RETRY_MAX`: backoff after failed attempts.
    pub retry: RetryPolicy,
    /// Whether the workers' maintenance pass also prunes finished jobs past their retention. An
    /// application that prunes on a schedule of its own turns this off, so there is one pruner;
    /// rescue always stays with the workers (it must run while any worker does).
    pub prune_in_maintenance: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            host_concurrency: DEFAULT_HOST_CONCURRENCY,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            rescue_after: DEFAULT_RESCUE_AFTER,
            retain_done: DEFAULT_RETAIN_DONE,
            retain_failed: DEFAULT_RETAIN_FAILED,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry: RetryPolicy {
                base: DEFAULT_RETRY_BASE,
                max: DEFAULT_RETRY_MAX,
            },
            prune_in_maintenance: true,
        }
    }
}
