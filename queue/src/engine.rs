//! The worker side of the queue: claims ahead into a buffer, writes completions back in batches,
//! keeps the worker's leases alive and runs maintenance.
//!
//! Tasks (all tracked, all stopped by [`Engine::shutdown`]):
//!
//! - **listener**: `LISTEN linkpulse_jobs` on its own connection; every notification (and every
//!   reconnect, since notifications may have been lost meanwhile) wakes the fetcher.
//! - **fetcher**: claims batches while the buffer has room; returns to sleep only after a claim
//!   came back short, until a wake-up, the poll interval, or room in the buffer. Because a
//!   wake-up stores a permit, a notification that arrives during a claim is never lost.
//! - **acker**: takes every completion that is waiting and writes them in one statement; while
//!   one write is in flight the next batch accumulates. Failed writes are retried, never dropped.
//! - **heartbeat**: renews this worker's row — and with it every lease it holds — also while
//!   handlers run and while draining.
//! - **maintenance**: rescue and pruning, by whichever worker wins the advisory lock, and only once
//!   its own heartbeats have been healthy for a whole rescue window (the outage rule).
//!
//! A database error in any task is logged and retried with backoff; it never ends the worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{ClaimedJob, Completion, NOTIFY_CHANNEL, QueueError, ack, claim, maintenance, registry};
use crate::settings::QueueSettings;

/// Session settings the engine's pool should carry, for the claim. On a table without statistics
/// (fresh, or just bulk-loaded) the planner otherwise guesses few queued rows and sorts *all* of
/// them (50 ms at 50,000 jobs) instead of walking `queue_jobs_ready_idx` in order (0.1 ms); and
/// pairing a claim's candidates with their group's free slots as a merge join on the group alone
/// compares every candidate of a group with every free slot (65,000 comparisons for 256 jobs of
/// one host), where the hash join on (group, rank) does not. Harmless for the engine's other
/// statements, which all find their rows by key.
pub const CLAIM_SESSION_OPTIONS: [(&str, &str); 2] = [("enable_bitmapscan", "off"), ("enable_mergejoin", "off")];

/// `application_name` of the listener connection (operators and tests find it by this name).
pub const LISTENER_APPLICATION_NAME: &str = "linkpulse-listener";

/// Most completions written in one statement.
const MAX_ACK_BATCH: usize = 2000;
/// Most jobs one claim statement leases. A claim's time grows with its size, and the first jobs
/// of a claim wait for the last to be locked: a start or a wake-up with thousands of jobs ready
/// fills the buffer in several quick claims instead of one slow one, so handlers start sooner.
const MAX_CLAIM_BATCH: usize = 256;

/// How long shutdown keeps retrying to write the last completions before giving up (the jobs are
/// then rescued and run again: at-least-once, never lost).
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(15);

/// What the engine needs to know about the worker it serves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Kinds this worker claims.
    pub kinds: Vec<&'static str>,
    /// Jobs the worker runs at once; the buffer holds claimed jobs ahead of them.
    pub concurrency: usize,
    /// Human-readable worker name (logs, `queue_workers.name`).
    pub name: String,
    /// Queue settings (heartbeat, rescue, retention, poll, group limit, retry policy).
    pub queue: QueueSettings,
}

impl EngineConfig {
    /// Jobs kept claimed ahead of execution: four times the concurrency, at least 64, so one
    /// claim round trip (a few milliseconds) per dozens of jobs keeps the handlers fed. Claimed
    /// jobs wait as `running` under this worker's heartbeat; a drain hands them back at once.
    pub fn prefetch(&self) -> usize {
        (self.concurrency * 4).max(64)
    }
}

/// Shared state between the engine's tasks and the apalis backend.
#[derive(Debug)]
struct Inner {
    /// Claims, heartbeats, maintenance and the releases of a drain or a rebirth (and the
    /// acknowledgements too, unless `ack_pool` is another pool): one connection is enough (see
    /// [`CLAIM_SESSION_OPTIONS`] and `docs/queue.md`, "Connection footprint").
    pool: PgPool,
    /// Acknowledgements and the release of unstarted jobs: the engine's pool, or one of their own
    /// ([`Engine::start_with_ack_pool`]).
    ack_pool: PgPool,
    /// The current worker identity: the owner of new leases. A new one replaces it when a rescue
    /// deleted this worker's row ([`rebirth`]); leases of a retired identity are never renewed.
    id: Mutex<Uuid>,
    /// Since when every heartbeat has succeeded (`None` after a failed one). A worker that could
    /// not heartbeat, during a database outage say, cannot tell dead workers from live ones that
    /// could not heartbeat either: it rescues nothing until its own heartbeats have been healthy
    /// for a whole rescue window, which gives every live worker time to renew its leases first.
    healthy_since: Mutex<Option<tokio::time::Instant>>,
    config: EngineConfig,
    buffer: Mutex<VecDeque<ClaimedJob>>,
    /// Woken when the buffer gains jobs or the engine stops (the apalis worker's waker).
    consumer: AtomicWaker,
    /// Room appeared in the buffer, or a notification arrived: the fetcher should claim.
    wake_fetcher: Notify,
    /// Fetching stops (drain begins).
    stop_fetching: CancellationToken,
    /// Everything stops (after the drain).
    stop_all: CancellationToken,
    /// The acker should flush what is left and exit.
    stop_acker: CancellationToken,
    /// Set by the fetcher as it exits: no job will enter the buffer any more.
    fetching_stopped: AtomicBool,
    fetcher_exited: CancellationToken,
    acks: mpsc::UnboundedSender<Completion>,
    tracker: TaskTracker,
    maintenance_tracker: TaskTracker,
    /// Set once the shutdown sequence has completed.
    shut_down: tokio::sync::OnceCell<()>,
}

/// Handle to a running engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Registers a new worker identity and starts the engine's tasks on the current runtime.
    ///
    /// `pool` carries every statement of the engine: claims, acknowledgements, heartbeats and
    /// maintenance share it, overlapped with the handlers' work, so a pool of **one** connection
    /// serves any concurrency (plus the `LISTEN` connection the engine opens itself). Give its
    /// connections [`CLAIM_SESSION_OPTIONS`]. [`Engine::start_with_ack_pool`] moves the
    /// acknowledgements to a pool of their own.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if the worker cannot be registered.
    pub async fn start(pool: PgPool, config: EngineConfig) -> Result<Self, QueueError> {
        Self::start_with_ack_pool(pool.clone(), pool, config).await
    }

    /// [`Engine::start`], with the acknowledgements (and the releases of a drain) on `ack_pool`.
    ///
    /// Claims and acknowledgements on one connection take turns: each waits for the other's
    /// round trip, and at low concurrency, where both are frequent and small, that cost the no-op
    /// benchmark about a fifth of its jobs per second. On two connections they overlap again. A
    /// worker passes its handlers' connection (batched write-backs, which come right before the
    /// acknowledgements of the same jobs), so it still opens three connections in all.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if the worker cannot be registered.
    pub async fn start_with_ack_pool(pool: PgPool, ack_pool: PgPool, config: EngineConfig) -> Result<Self, QueueError> {
        let id = Uuid::new_v4();
        registry::register(&pool, id, &config.name).await?;
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            ack_pool,
            id: Mutex::new(id),
            healthy_since: Mutex::new(None),
            config,
            buffer: Mutex::new(VecDeque::new()),
            consumer: AtomicWaker::new(),
            wake_fetcher: Notify::new(),
            stop_fetching: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            stop_acker: CancellationToken::new(),
            fetching_stopped: AtomicBool::new(false),
            fetcher_exited: CancellationToken::new(),
            acks,
            tracker: TaskTracker::new(),
            maintenance_tracker: TaskTracker::new(),
            shut_down: tokio::sync::OnceCell::new(),
        });
        inner.tracker.spawn(listen(inner.clone()));
        inner.tracker.spawn(claim_ahead(inner.clone()));
        inner.tracker.spawn(write_completions(inner.clone(), ack_rx));
        inner.maintenance_tracker.spawn(heartbeat(inner.clone()));
        inner.maintenance_tracker.spawn(maintain(inner.clone()));
        tracing::info!(worker_id = %id, name = %inner.config.name, "worker registered");
        Ok(Self { inner })
    }

    /// This process's current worker id (the lease owner of the jobs it claims from now on).
    pub fn id(&self) -> Uuid {
        self.inner.current_id()
    }

    /// Takes the next claimed job, or registers `cx`'s waker. `Ready(None)` once fetching has
    /// stopped and the buffer is empty.
    pub(crate) fn poll_job(&self, cx: &mut Context<'_>) -> Poll<Option<ClaimedJob>> {
        let inner = &self.inner;
        inner.consumer.register(cx.waker());
        let mut buffer = lock(&inner.buffer);
        if let Some(job) = buffer.pop_front() {
            if buffer.len() <= inner.config.prefetch() / 2 {
                inner.wake_fetcher.notify_one();
            }
            return Poll::Ready(Some(job));
        }
        if inner.fetching_stopped.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        inner.wake_fetcher.notify_one();
        Poll::Pending
    }

    /// Queues a finished attempt for the acker. Never blocks.
    pub(crate) fn complete(&self, completion: Completion) {
        if self.inner.acks.send(completion).is_err() {
            tracing::error!("completion arrived after the acker stopped; the job will be rescued");
        }
    }

    /// Stops claiming and hands buffered (unstarted) jobs back to the queue. Running handlers go
    /// on, and heartbeats continue so their leases stay valid while they finish.
    pub async fn begin_drain(&self) {
        let inner = &self.inner;
        if inner.stop_fetching.is_cancelled() {
            return;
        }
        inner.stop_fetching.cancel();
        inner.wake_fetcher.notify_one();
        // The fetcher may be mid-claim: wait for it (and the listener) so nothing lands in the
        // buffer after we emptied it.
        inner.tracker.close();
        inner.fetcher_exited.cancelled().await;
        let unstarted: Vec<ClaimedJob> = lock(&inner.buffer).drain(..).collect();
        inner.consumer.wake();
        release_unstarted(inner, unstarted).await;
    }

    /// Finishes the shutdown once no handler is running: flushes completions, releases any lease
    /// still held (a drain that ran out of grace), stops the heartbeat and deregisters.
    /// Called by the backend's `poll_close` and by `linkpulse_shared::shutdown::run_until_drained`; the
    /// second caller waits for the first one's shutdown instead of repeating it.
    pub async fn shutdown(&self) {
        let inner = self.inner.clone();
        self.inner.shut_down.get_or_init(|| Self::shutdown_once(inner)).await;
    }

    async fn shutdown_once(inner: Arc<Inner>) {
        Engine { inner: inner.clone() }.begin_drain().await;
        let inner = &inner;
        inner.stop_acker.cancel();
        inner.tracker.wait().await;
        match ack::release_all(&inner.pool, inner.current_id()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(released = n, "released jobs still running at shutdown"),
            Err(error) => tracing::warn!(%error, "failed to release running jobs; they will be rescued"),
        }
        inner.stop_all.cancel();
        inner.maintenance_tracker.close();
        inner.maintenance_tracker.wait().await;
        if let Err(error) = registry::deregister(&inner.pool, inner.current_id()).await {
            tracing::warn!(%error, "failed to deregister worker; its row expires after the rescue threshold");
        }
        tracing::info!(worker_id = %inner.current_id(), "worker stopped");
    }
}

impl Inner {
    fn current_id(&self) -> Uuid {
        *lock(&self.id)
    }
}

/// Hands claimed-but-unstarted jobs back (attempt refunded), each under the identity that
/// claimed it.
async fn release_unstarted(inner: &Inner, jobs: Vec<ClaimedJob>) {
    let mut by_owner: std::collections::HashMap<Uuid, Vec<i64>> = std::collections::HashMap::new();
    for job in jobs {
        by_owner.entry(job.lease_owner).or_default().push(job.id);
    }
    for (owner, ids) in by_owner {
        match ack::release_many(&inner.ack_pool, owner, &ids).await {
            Ok(n) => tracing::info!(released = n, "released unstarted jobs"),
            Err(error) => tracing::warn!(%error, "failed to release unstarted jobs; they will be rescued"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the buffer half-updated (push/pop are atomic),
    // so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Grows a retry delay for a failing database call: 100 ms doubling to 5 s.
#[derive(Debug)]
struct DbBackoff(Duration);

impl DbBackoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
}

async fn listen(inner: Arc<Inner>) {
    let mut backoff = DbBackoff::new();
    let options = inner
        .pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(LISTENER_APPLICATION_NAME);
    while !inner.stop_fetching.is_cancelled() {
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options.clone());
        let mut listener = match PgListener::connect_with(&listener_pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "listener failed to connect; retrying");
                sleep_or_stop(&inner.stop_fetching, backoff.next()).await;
                continue;
            }
        };
        listener.ignore_pool_close_event(true);
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(%error, "listener failed to LISTEN; retrying");
            sleep_or_stop(&inner.stop_fetching, backoff.next()).await;
            continue;
        }
        backoff.reset();
        // Armed: anything committed from now on wakes us. Anything before was either claimed
        // already or is found by this wake-up's claim.
        inner.wake_fetcher.notify_one();
        loop {
            tokio::select! {
                () = inner.stop_fetching.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => inner.wake_fetcher.notify_one(),
                    Ok(None) => {
                        tracing::warn!("listener connection lost; reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
        // Notifications may have been lost while disconnected: claim once to be sure.
        inner.wake_fetcher.notify_one();
        sleep_or_stop(&inner.stop_fetching, backoff.next()).await;
    }
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// The fetcher task: claims batches ahead into the buffer. (Named for what it does, apart from
/// the application's HTTP `fetch::Fetcher`.)
async fn claim_ahead(inner: Arc<Inner>) {
    let prefetch = inner.config.prefetch();
    let mut backoff = DbBackoff::new();
    let kinds = inner.config.kinds.clone();
    loop {
        if inner.stop_fetching.is_cancelled() {
            break;
        }
        let room = prefetch.saturating_sub(lock(&inner.buffer).len());
        if room < prefetch / 2 {
            // Enough buffered: wait until the handlers take some.
            tokio::select! {
                () = inner.stop_fetching.cancelled() => break,
                () = inner.wake_fetcher.notified() => continue,
            }
        }
        let owner = inner.current_id();
        let claimed = claim::claim_batch(
            &inner.pool,
            owner,
            &kinds,
            room.min(MAX_CLAIM_BATCH),
            inner.config.queue.host_concurrency,
        )
        .await;
        let jobs = match claimed {
            Ok(jobs) if inner.current_id() != owner => {
                // The identity was retired while the claim ran (a rescue deleted our row and the
                // claim's snapshot still saw it): those leases will never be renewed, so hand the
                // jobs back at once instead of running them under a dead identity.
                release_unstarted(&inner, jobs).await;
                continue;
            }
            Ok(jobs) => {
                backoff.reset();
                jobs
            }
            Err(error) => {
                tracing::warn!(%error, "claim failed; backing off");
                sleep_or_stop(&inner.stop_fetching, backoff.next()).await;
                continue;
            }
        };
        let full = jobs.len() == room.min(MAX_CLAIM_BATCH);
        if !jobs.is_empty() {
            lock(&inner.buffer).extend(jobs);
            inner.consumer.wake();
        }
        if full {
            continue;
        }
        tokio::select! {
            () = inner.stop_fetching.cancelled() => break,
            () = inner.wake_fetcher.notified() => {}
            () = tokio::time::sleep(inner.config.queue.poll_interval) => {}
        }
    }
    inner.fetching_stopped.store(true, Ordering::Release);
    inner.fetcher_exited.cancel();
    inner.consumer.wake();
}

async fn write_completions(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let policy = inner.config.queue.retry;
    let mut pending: Vec<Completion> = Vec::new();
    let mut backoff = DbBackoff::new();
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            tokio::select! {
                biased;
                received = rx.recv() => match received {
                    Some(completion) => pending.push(completion),
                    None => return,
                },
                () = inner.stop_acker.cancelled() => {
                    while let Ok(completion) = rx.try_recv() {
                        pending.push(completion);
                    }
                    if pending.is_empty() {
                        return;
                    }
                    give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + FINAL_FLUSH_DEADLINE);
                }
            }
        }
        while pending.len() < MAX_ACK_BATCH {
            match rx.try_recv() {
                Ok(completion) => pending.push(completion),
                Err(_) => break,
            }
        }
        match ack::complete_many(&inner.ack_pool, &pending, &policy).await {
            Ok(applied) => {
                let refused = pending.len() as u64 - applied;
                if refused > 0 {
                    tracing::warn!(refused, "completions refused: their jobs were rescued from this worker");
                }
                pending.clear();
                backoff.reset();
            }
            Err(error) => {
                if inner.stop_acker.is_cancelled() {
                    give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + FINAL_FLUSH_DEADLINE);
                }
                if give_up_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    tracing::error!(%error, lost = pending.len(), "giving up writing completions; the jobs will be rescued");
                    return;
                }
                tracing::warn!(%error, pending = pending.len(), "writing completions failed; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
        if inner.stop_acker.is_cancelled() && pending.is_empty() {
            while let Ok(completion) = rx.try_recv() {
                pending.push(completion);
            }
            if pending.is_empty() {
                return;
            }
            give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + FINAL_FLUSH_DEADLINE);
        }
    }
}

async fn heartbeat(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.config.queue.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stop_all.cancelled() => return,
            _ = interval.tick() => {}
        }
        let draining = inner.stop_fetching.is_cancelled();
        match registry::heartbeat(&inner.pool, inner.current_id(), draining).await {
            Ok(true) => {
                lock(&inner.healthy_since).get_or_insert_with(tokio::time::Instant::now);
            }
            Ok(false) => rebirth(&inner).await,
            Err(error) => {
                *lock(&inner.healthy_since) = None;
                tracing::warn!(%error, "heartbeat failed");
            }
        }
    }
}

/// Our row is gone: a rescuer judged this worker dead, and its running jobs were (or, for a
/// claim that raced the rescue, will be) handed out again. Every lease of the old identity is
/// abandoned: the buffered jobs are dropped, jobs still leased to it are released (a claim that
/// ran while the rescue deleted the row may have leased some after the rescue took the others),
/// and the worker registers under a **new** identity, so nothing renews the old leases and a
/// handler still running for one of them can neither complete nor write back (its token is gone).
async fn rebirth(inner: &Inner) {
    let old = inner.current_id();
    let dropped = lock(&inner.buffer).drain(..).count();
    // Register the new identity before claiming under it: a lease to an id without a row would be
    // rescued at once by any other worker. Until then claims under the old id take nothing (their
    // worker row is gone), and if registering fails the next heartbeat tries the whole rebirth again.
    let new = Uuid::new_v4();
    if let Err(error) = registry::register(&inner.pool, new, &inner.config.name).await {
        tracing::warn!(%error, dropped, "worker row was rescued away and registering again failed; retrying at the next heartbeat");
        return;
    }
    // New claims use the new identity from here on; a claim in flight under the old one hands its
    // jobs back when it returns (see `claim_ahead`).
    *lock(&inner.id) = new;
    tracing::warn!(old_worker_id = %old, worker_id = %new, dropped, "worker row was rescued away; registered under a new id");
    match ack::release_all(&inner.pool, old).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(released = n, "released jobs leased to the retired worker id"),
        Err(error) => tracing::warn!(%error, "failed to release the retired id's jobs; rescue will take them"),
    }
}

async fn maintain(inner: Arc<Inner>) {
    let settings = &inner.config.queue;
    let period = (settings.rescue_after / 3).clamp(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = inner.stop_all.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let healthy_for = lock(&inner.healthy_since).map(|since| since.elapsed());
        if healthy_for.is_none_or(|healthy| healthy < settings.rescue_after) {
            // The outage rule (docs/queue.md): after our own heartbeats failed, everyone else's
            // probably did too; wait until live workers have had a rescue window to renew theirs.
            continue;
        }
        match maintenance::run_once(
            &inner.pool,
            settings.rescue_after,
            &settings.retry,
            settings
                .prune_in_maintenance
                .then_some((settings.retain_done, settings.retain_failed)),
        )
        .await
        {
            Ok(Some((rescued, pruned))) => {
                if rescued > 0 {
                    tracing::warn!(rescued, "rescued jobs of workers that stopped heartbeating");
                    inner.wake_fetcher.notify_one();
                }
                if pruned > 0 {
                    tracing::info!(pruned, "pruned finished jobs");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "maintenance failed"),
        }
    }
}
