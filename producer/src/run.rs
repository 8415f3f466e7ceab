//! `producer run`: the due schedules, run by one leader among the replicas; the admin HTTP server
//! on every replica. `producer serve`: the admin HTTP server alone (beside an external scheduler
//! running `producer cycle`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::{ExposeSecret, Settings};
use linkpulse_shared::metrics::{CYCLES_TOTAL, PRODUCER_LEADER};

/// Advisory lock key held by the cycling producer ("lpcycle").
pub const LEADER_LOCK_KEY: i64 = 0x006c_7063_7963_6c65;

/// How often the leader checks that it still holds its lock, and a standby tries to take it
/// (more often when the cycle interval is shorter: every cycle tick checks too). The check is
/// also the lock connection's keepalive ping, so it must come well inside
/// [`LEADER_IDLE_SESSION_TIMEOUT`].
pub const LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Server-side bound on the lock's life (`idle_session_timeout` on the lock's connection): a
/// leader whose node vanished behind something that keeps its TCP connection up (a proxy, a NAT, a
/// pooler), where keepalives see nothing, loses the lock this long after its last check, and a
/// standby cycles at most one [`LEADER_CHECK_INTERVAL`] later — 25 s, inside the 60 s target.
pub const LEADER_IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest one statement of the elector may take. A connection that does not answer in time is
/// dropped and its lock counted as lost: the client-side bound, since sqlx has no client TCP
/// keepalive. Together with [`LEADER_CHECK_INTERVAL`] it stays inside the idle timeout, so a
/// healthy leader is never timed out by the server.
pub const LEADER_STATEMENT_DEADLINE: Duration = Duration::from_secs(5);

const _: () = assert!(
    LEADER_CHECK_INTERVAL.as_secs() + LEADER_STATEMENT_DEADLINE.as_secs() < LEADER_IDLE_SESSION_TIMEOUT.as_secs()
);

/// SQLSTATE of an unknown setting: `idle_session_timeout` before PostgreSQL 14.
const UNDEFINED_OBJECT: &str = "42704";

/// Leadership: a session-level advisory lock held on a dedicated connection. If that connection
/// dies, PostgreSQL drops the lock and another replica takes over. The connection carries server
/// keepalives and an `idle_session_timeout` that only the leader's regular checks keep at bay, so
/// the lock also dies with a node that vanished silently.
#[derive(Debug)]
struct LeaderLock {
    options: PgConnectOptions,
    /// The lock's connection: held by the leader, and by a standby between its tries.
    conn: Option<PgConnection>,
    /// Whether `conn` holds the lock.
    leading: bool,
}

impl LeaderLock {
    fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            conn: None,
            leading: false,
        }
    }

    /// Checks the lock (leader) or tries to take it (standby); returns whether this replica leads.
    async fn keep(&mut self) -> bool {
        match tokio::time::timeout(LEADER_STATEMENT_DEADLINE, self.try_keep()).await {
            Ok(Ok(leading)) => {
                if leading && !self.leading {
                    tracing::info!("became the cycling leader");
                } else if !leading && self.leading {
                    tracing::warn!("the leader lock is gone; no longer cycling");
                }
                self.leading = leading;
            }
            Ok(Err(error)) => self.give_up(&format!("leader lock query failed: {error}")),
            Err(_) => self.give_up("the leader lock's connection did not answer in time"),
        }
        self.leading
    }

    async fn try_keep(&mut self) -> Result<bool, sqlx::Error> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(connect(&self.options).await?),
        };
        if self.leading {
            let held = leader_lock_held(conn).await?;
            if !held {
                // Something ended our hold without ending the session: start afresh.
                self.conn = None;
            }
            return Ok(held);
        }
        let won = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "won!""#, LEADER_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        Ok(won)
    }

    /// Drops the connection (and the lock with it, once the server notices) after a failure.
    fn give_up(&mut self, why: &str) {
        if self.leading {
            tracing::warn!(reason = why, "lost the leader lock; no longer cycling");
        } else {
            tracing::warn!(reason = why, "cannot take the leader lock");
        }
        self.conn = None;
        self.leading = false;
    }

    /// Closes the connection, releasing the lock at once for a standby.
    async fn resign(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(LEADER_STATEMENT_DEADLINE, conn.close()).await;
        }
        self.leading = false;
    }
}

/// `leader_lock_held`: whether this session holds the leader's advisory lock, read from
/// `pg_locks` (a bigint key is stored as its high and low 32 bits, `objsubid` 1). A connection
/// that merely answers is not enough: the lock is what excludes the other replicas.
async fn leader_lock_held(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks \
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
           AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid) AS \"held!\"",
        LEADER_LOCK_KEY
    )
    .fetch_one(conn)
    .await
}

/// Opens the lock's connection and bounds its idle life on the server.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let timeout = format!("{}ms", LEADER_IDLE_SESSION_TIMEOUT.as_millis());
    // Through `Executor`: a checked query with a result column has no `execute` of its own.
    let set = sqlx::query!("SELECT set_config('idle_session_timeout', $1, false)", timeout);
    match sqlx::Executor::execute(&mut conn, set).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_OBJECT) => {
            tracing::warn!(
                "the server has no idle_session_timeout (PostgreSQL < 14): a leader that vanished behind a proxy keeps the lock until its connection dies"
            );
        }
        Err(error) => return Err(error),
    }
    Ok(conn)
}

/// The task that owns the [`LeaderLock`]: it checks the lock every [`LEADER_CHECK_INTERVAL`],
/// also while a cycle runs (so a long cycle never lets the lock's connection idle out), and
/// answers the cycle loop's checks.
#[derive(Debug)]
struct Elector {
    /// Asks for a check now; the answer is whether this replica leads.
    checks: mpsc::Sender<oneshot::Sender<bool>>,
    /// The latest answer.
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    fn start(options: PgConnectOptions) -> Self {
        let (checks, mut requests) = mpsc::channel::<oneshot::Sender<bool>>(1);
        let (state, leading) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut lock = LeaderLock::new(options);
            let mut ticker = tokio::time::interval(LEADER_CHECK_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let reply = tokio::select! {
                    _ = ticker.tick() => None,
                    request = requests.recv() => match request {
                        Some(reply) => Some(reply),
                        None => break,
                    },
                };
                let leading = lock.keep().await;
                state.send_replace(leading);
                if let Some(reply) = reply {
                    let _ = reply.send(leading);
                }
            }
            lock.resign().await;
        });
        Self { checks, leading, task }
    }

    /// Checks the lock now (a standby tries to take it).
    async fn check(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.checks.send(reply).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Gives the lock up and waits until it is released.
    async fn resign(self) {
        drop(self.checks);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the leader elector failed");
        }
    }
}

/// How often the leader looks for due schedules: a toggle or a changed schedule takes effect
/// within this, and a run starts at most this late.
pub const SCHEDULE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What `run` does besides serving the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `producer run`: also run the due schedules (leader only).
    Run,
    /// `producer serve`: only the admin API, dashboard and metrics.
    Serve,
}

/// Serves the admin API until `stop`; in [`Mode::Run`] the leader among the replicas also runs
/// the due schedules. A replica that becomes the leader closes the runs its predecessor left
/// unfinished, then runs what is due at once.
///
/// # Errors
///
/// If the database pool cannot be created.
pub async fn run(settings: Settings, mode: Mode, stop: CancellationToken) -> anyhow::Result<()> {
    // The schedules and the admin server's mutations; with the leader's lock connection, at most
    // four (the admin server's readers have their own pool).
    let pool = linkpulse_shared::db::connect(
        settings.database_url.expose_secret(),
        linkpulse_shared::db::PRODUCER_CONNECTIONS,
    )
    .await
    .context("failed to connect to the database")?;
    crate::schedules::store::seed(&pool, &settings)
        .await
        .context("failed to seed the schedules (run `producer migrate` first?)")?;
    // Every replica serves the admin API, leader or not: a Service may route to any of them.
    let admin = crate::admin::serve(pool.clone(), Arc::new(settings.clone()), stop.clone())
        .await
        .context("failed to start the admin server")?;
    tracing::info!(addr = %admin, mode = ?mode, "admin server listening");
    if mode == Mode::Serve {
        stop.cancelled().await;
        tracing::info!("producer stopped");
        return Ok(());
    }
    let lock_options = linkpulse_shared::db::connect_options(settings.database_url.expose_secret())
        .context("invalid DATABASE_URL")?
        .application_name("linkpulse-leader");
    let elector = Elector::start(lock_options);
    let mut became_leader = elector.leading.clone();
    let mut leading = false;
    // The first pass at once; then at the next planned occurrence, or a poll later at the latest
    // (a change made elsewhere is seen within one poll).
    let mut wake = tokio::time::Instant::now();
    loop {
        let mut gained = false;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {}
            changed = became_leader.changed() => {
                if changed.is_err() {
                    // Only a panic ends the elector while we run.
                    anyhow::bail!("the leader elector stopped");
                }
                let now = *became_leader.borrow_and_update();
                gained = now && !leading;
                leading = now;
                metrics::gauge!(PRODUCER_LEADER).set(if leading { 1.0 } else { 0.0 });
                if !gained {
                    continue;
                }
            }
        }
        // A pass that overran its poll is followed by one pass, not a burst.
        wake = tokio::time::Instant::now() + SCHEDULE_POLL_INTERVAL;
        // Checked before every pass, not trusted from the last tick: the lock, not the
        // connection, is what keeps another replica from running schedules beside this one.
        let was_leading = leading;
        leading = elector.check().await;
        became_leader.mark_unchanged();
        metrics::gauge!(PRODUCER_LEADER).set(if leading { 1.0 } else { 0.0 });
        if !leading {
            tracing::debug!("not the leader; no schedules run here");
            continue;
        }
        if gained || !was_leading {
            match crate::schedules::runner::close_abandoned(&pool).await {
                Ok(closed) if closed > 0 => tracing::warn!(closed, "closed runs a previous leader left unfinished"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not close abandoned runs"),
            }
        }
        match crate::schedules::runner::run_due(&pool, &settings, chrono::Utc::now()).await {
            Ok(runs) => {
                let cycled = runs
                    .iter()
                    .any(|r| r.status == "ok" && (r.schedule == "check" || r.schedule == "refresh"));
                if cycled {
                    metrics::counter!(CYCLES_TOTAL).increment(1);
                }
            }
            Err(error) => {
                tracing::error!(error = %linkpulse_util::errors::error_chain(&error), "cannot read the schedules");
            }
        }
        // The webhooks' outbox: every pass, so a transition's deliveries start within a second.
        if let Err(error) = linkpulse_shared::webhooks::dispatch(&pool, &settings).await {
            tracing::error!(error = %linkpulse_util::errors::error_chain(&error), "cannot dispatch webhook events");
        }
        // Wake exactly at the next occurrence when it comes before the poll: a run's lateness
        // is then its own, not the loop's, and a short misfire grace stays meaningful.
        if let Ok(Some(next)) = crate::schedules::store::next_due(&pool).await {
            let until = (next - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wake = wake.min(tokio::time::Instant::now() + until);
        }
    }
    elector.resign().await;
    tracing::info!("producer stopped");
    Ok(())
}
