//! `producer run`: a cycle at start, then one per interval, by one leader among the replicas; the
//! admin HTTP server on every replica.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::{ExposeSecret, Settings};
use linkpulse_shared::metrics::{CYCLES_TOTAL, PRODUCER_LEADER};

/// Advisory lock key held by the cycling producer ("lpcycle").
pub const LEADER_LOCK_KEY: i64 = 0x006c_7063_7963_6c65;

/// Leadership: a session-level advisory lock held on a dedicated connection. If that connection
/// dies, PostgreSQL drops the lock and another replica takes over; this one notices at its next
/// check and stops cycling until it wins the lock again.
#[derive(Debug, Default)]
struct Leader {
    conn: Option<PgConnection>,
}

impl Leader {
    async fn ensure(&mut self, url: &str) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the leader connection; no longer cycling");
            self.conn = None;
        }
        let mut conn = match PgConnection::connect(url).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "cannot connect for the leader lock");
                return false;
            }
        };
        match sqlx::query_as::<_, (bool,)>("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
        {
            Ok((true,)) => {
                tracing::info!("became the cycling leader");
                self.conn = Some(conn);
                true
            }
            Ok((false,)) => false,
            Err(error) => {
                tracing::warn!(%error, "leader lock query failed");
                false
            }
        }
    }
}

/// Cycles until `stop`; only the leader cycles, the others wait for the lock.
///
/// # Errors
///
/// If the database pool cannot be created.
pub async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    // One connection more than the cycle needs, for the admin server's probes and queries.
    let pool = linkpulse_shared::db::connect(settings.database_url.expose_secret(), 5)
        .await
        .context("failed to connect to the database")?;
    // Every replica serves the admin API, leader or not: a Service may route to any of them.
    let admin = crate::admin::serve(pool.clone(), Arc::new(settings.clone()), stop.clone())
        .await
        .context("failed to start the admin server")?;
    tracing::info!(addr = %admin, "admin server listening");
    let mut leader = Leader::default();
    let mut ticker = tokio::time::interval(settings.cycle_interval.max(Duration::from_millis(100)));
    // A cycle that overruns its interval is not started twice: missed ticks are dropped.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let leading = leader.ensure(settings.database_url.expose_secret()).await;
        metrics::gauge!(PRODUCER_LEADER).set(if leading { 1.0 } else { 0.0 });
        if !leading {
            tracing::debug!("not the leader; skipping this cycle");
            continue;
        }
        let started = tokio::time::Instant::now();
        match crate::cycle::run_cycle(&pool, &settings).await {
            Ok(_) => metrics::counter!(CYCLES_TOTAL).increment(1),
            Err(error) => {
                tracing::error!(error = %linkpulse_shared::queue::backend::error_chain(&error), "cycle failed");
            }
        }
        let took = started.elapsed();
        if took > settings.cycle_interval {
            tracing::warn!(took = ?took, interval = ?settings.cycle_interval, "cycle overran its interval");
        }
    }
    tracing::info!("producer stopped");
    Ok(())
}
