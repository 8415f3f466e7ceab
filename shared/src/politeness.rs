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

/// How long `host` is still cooling down, if it is.
///
/// # Errors
///
/// If the query fails.
pub async fn cooldown_remaining(pool: &PgPool, host: &str) -> Result<Option<(Duration, String)>, sqlx::Error> {
    let row: Option<(f64, String)> = sqlx::query_as(
        "SELECT extract(epoch FROM until - now())::float8, reason FROM host_cooldowns WHERE host = $1 AND until > now()",
    )
    .bind(host)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(secs, reason)| (Duration::from_secs_f64(secs.max(0.0)), reason)))
}

/// Puts `host` on cool-down for `delay` (extending, never shortening, a current one).
///
/// # Errors
///
/// If the statement fails.
pub async fn start_cooldown(pool: &PgPool, host: &str, delay: Duration, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO host_cooldowns (host, until, reason) VALUES ($1, now() + make_interval(secs => $2), $3)
         ON CONFLICT (host) DO UPDATE SET until = greatest(host_cooldowns.until, excluded.until), reason = excluded.reason",
    )
    .bind(host)
    .bind(delay.as_secs_f64())
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
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
