//! Politeness toward the sites we check: a minimum gap between requests to one host (in this
//! process), and a pool-wide cool-down for hosts that answered 429 or `Retry-After`.
//!
//! The pool-wide *concurrency* per host is the queue's group cap; the gap and the cool-down here
//! keep a host that is sorted together in a link list from being hit in bursts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

/// Default minimum gap between two requests to one host.
pub const DEFAULT_HOST_INTERVAL: Duration = Duration::from_millis(500);
/// Cool-down after a 429 without `Retry-After`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// Hosts remembered before old entries are dropped.
const MAX_TRACKED_HOSTS: usize = 10_000;

/// Spaces requests to one host at least `interval` apart within this process.
#[derive(Debug)]
pub struct HostPacer {
    interval: Duration,
    next_slot: Mutex<HashMap<String, Instant>>,
}

impl HostPacer {
    /// A pacer with `interval` between requests to one host (zero disables it).
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_slot: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for this host's next free slot and books it. Each caller gets its own slot, so N
    /// concurrent callers for one host are spread over N intervals.
    pub async fn wait(&self, host: &str) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut slots = self.next_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if slots.len() > MAX_TRACKED_HOSTS {
                slots.retain(|_, next| *next > now);
            }
            let slot = slots.get(host).copied().filter(|next| *next > now).unwrap_or(now);
            slots.insert(host.to_owned(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Puts `host` on cool-down for `delay` (extending, never shortening, a current one). Cool-downs
/// that ended a day ago are deleted on the way, so the table holds recent offenders only.
///
/// # Errors
///
/// If the statement fails.
async fn start_cooldown(pool: &PgPool, host: &str, delay: Duration, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH expired AS (DELETE FROM host_cooldowns WHERE until < now() - interval '1 day')
         INSERT INTO host_cooldowns (host, until, reason) VALUES ($1, now() + make_interval(secs => $2), $3)
         ON CONFLICT (host) DO UPDATE SET until = greatest(host_cooldowns.until, excluded.until), reason = excluded.reason",
        host,
        delay.as_secs_f64(),
        reason
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// How stale a worker's view of the pool's cool-downs may get: a 429 answered to another worker
/// reaches this one's jobs within this time.
pub const COOLDOWN_REFRESH: Duration = Duration::from_millis(500);

/// A worker's view of `host_cooldowns`: every active cool-down, re-read at most once per
/// [`COOLDOWN_REFRESH`] in one query instead of one lookup per job (almost always for a host that
/// is not cooling down). Cool-downs this process starts are seen by its own jobs at once.
#[derive(Debug)]
pub struct Cooldowns {
    pool: PgPool,
    refresh_every: Duration,
    snapshot: Mutex<Snapshot>,
    /// One refresh at a time; the others wait for it and read its result.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Snapshot {
    taken: Option<Instant>,
    /// Host → (cool-down end, reason).
    hosts: HashMap<String, (Instant, String)>,
}

impl Cooldowns {
    /// A view of `pool`'s cool-downs, re-read every `refresh_every`.
    pub fn new(pool: PgPool, refresh_every: Duration) -> Self {
        Self {
            pool,
            refresh_every,
            snapshot: Mutex::new(Snapshot::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_stale(&self) -> bool {
        self.lock()
            .taken
            .is_none_or(|taken| taken.elapsed() >= self.refresh_every)
    }

    /// How long `host` is still cooling down, if it is.
    ///
    /// # Errors
    ///
    /// If the snapshot was due for a refresh and the query failed.
    pub async fn remaining(&self, host: &str) -> Result<Option<(Duration, String)>, sqlx::Error> {
        if self.is_stale() {
            let _one = self.refreshing.lock().await;
            if self.is_stale() {
                let rows = sqlx::query!(
                    r#"SELECT host, extract(epoch FROM until - now())::float8 AS "secs!", reason FROM host_cooldowns WHERE until > now()"#,
                )
                .fetch_all(&self.pool)
                .await?;
                let now = Instant::now();
                let mut hosts: HashMap<String, (Instant, String)> = rows
                    .into_iter()
                    .map(|r| (r.host, (now + Duration::from_secs_f64(r.secs.max(0.0)), r.reason)))
                    .collect();
                let mut snapshot = self.lock();
                // A cool-down this process started while the query ran may be missing from its
                // rows; cool-downs only ever end by expiring, so the later end of the two wins.
                for (host, (until, reason)) in snapshot.hosts.drain() {
                    if until <= now {
                        continue;
                    }
                    match hosts.get_mut(&host) {
                        Some(read) if read.0 >= until => {}
                        Some(read) => *read = (until, reason),
                        None => {
                            hosts.insert(host, (until, reason));
                        }
                    }
                }
                *snapshot = Snapshot {
                    taken: Some(now),
                    hosts,
                };
            }
        }
        let now = Instant::now();
        Ok(self
            .lock()
            .hosts
            .get(host)
            .filter(|(until, _)| *until > now)
            .map(|(until, reason)| (*until - now, reason.clone())))
    }

    /// Puts `host` on cool-down for `delay`, pool-wide and at once for this process's jobs.
    ///
    /// # Errors
    ///
    /// If the statement fails; the local view is not changed then.
    pub async fn start(&self, host: &str, delay: Duration, reason: &str) -> Result<(), sqlx::Error> {
        start_cooldown(&self.pool, host, delay, reason).await?;
        let until = Instant::now() + delay;
        let mut snapshot = self.lock();
        let entry = snapshot
            .hosts
            .entry(host.to_owned())
            .or_insert_with(|| (until, reason.to_owned()));
        if entry.0 < until {
            *entry = (until, reason.to_owned());
        }
        Ok(())
    }
}

/// Most extra delay [`spread`] adds.
const MAX_SPREAD: Duration = Duration::from_secs(300);

/// `delay` plus a random share of up to a quarter of it (at most [`MAX_SPREAD`]): jobs snoozed
/// by one rate limit wake over a window instead of all at the reset.
pub fn spread(delay: Duration) -> Duration {
    let window = (delay / 4).min(MAX_SPREAD);
    delay + window.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_to_one_host_are_spaced_and_other_hosts_are_not_delayed() {
        let pacer = std::sync::Arc::new(HostPacer::new(Duration::from_millis(500)));
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..3 {
            let pacer = pacer.clone();
            waits.push(tokio::spawn(async move {
                pacer.wait("a.example").await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for w in waits {
            times.push(w.await.expect("task") - start);
        }
        times.sort();
        assert_eq!(
            times,
            [Duration::ZERO, Duration::from_millis(500), Duration::from_millis(1000)]
        );
        let before = Instant::now();
        pacer.wait("b.example").await;
        assert_eq!(Instant::now() - before, Duration::ZERO);
    }
}
