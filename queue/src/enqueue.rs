//! Inserting jobs: bulk, deduplicated, in one round trip, and waking idle workers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use tokio::sync::mpsc;

use super::{NOTIFY_CHANNEL, NewJob, QueueError};

/// What an insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnqueueReport {
    /// Rows inserted.
    pub inserted: u64,
    /// Jobs skipped because an unfinished job with the same kind and dedupe key exists.
    pub skipped: u64,
}

/// A set-based enqueue: the caller's `SELECT` names the jobs, the queue inserts them, in one
/// statement whatever their number (the producer's cycle enqueues up to its limit this way).
///
/// The `SELECT` must return the columns `dedupe_key text`, `group_key text` and `payload jsonb`,
/// and may use the bind parameters `$1` to `$params`, bound by the caller's `bind` closure; the
/// queue appends its own parameters after them. It may read `queue_jobs` (to skip what is already
/// waiting, say), never write it: the insert, its conflict rule and the wake-up are the queue's.
#[derive(Debug, Clone)]
pub struct EnqueueSelect<'a> {
    /// Stable kind of every job.
    pub kind: &'a str,
    /// Attempts allowed per job.
    pub max_attempts: i32,
    /// The enqueuer's W3C trace context, stored with every job.
    pub trace_context: Option<serde_json::Value>,
    /// The caller's `SELECT dedupe_key, group_key, payload …`: a constant of the program, never
    /// text from input (it is spliced into the statement; values go in as bind parameters).
    pub select: &'static str,
    /// How many bind parameters `select` uses (`$1`…`$params`).
    pub params: usize,
}

/// What a set-based enqueue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectReport {
    /// Rows the caller's `SELECT` returned.
    pub selected: i64,
    /// Jobs inserted (the rest already had an unfinished job with their key).
    pub inserted: i64,
}

/// `job_insert_select`: the caller's `SELECT` as a CTE, inserted in `dedupe_key` order (so two
/// concurrent enqueues of overlapping keys wait on each other in one order and never deadlock),
/// skipping keys already queued or running, with one `NOTIFY` at commit when anything was
/// inserted. `{select}` is the caller's statement; `{kind}`, `{max}`, `{trace}`, `{channel}` are
/// the numbers of the queue's own parameters.
fn insert_select_sql(spec: &EnqueueSelect<'_>) -> String {
    let (kind, max, trace, channel) = (spec.params + 1, spec.params + 2, spec.params + 3, spec.params + 4);
    format!(
        "WITH picked AS (
    {select}
),
inserted AS (
    INSERT INTO queue_jobs (kind, dedupe_key, group_key, payload, max_attempts, trace_context)
    SELECT ${kind}, p.dedupe_key, p.group_key, p.payload, ${max}, ${trace}::jsonb
    FROM picked p
    ORDER BY p.dedupe_key
    ON CONFLICT (kind, dedupe_key) WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING 1
),
notified AS (
    SELECT pg_notify(${channel}, '') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_inserted
)
SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM inserted), (SELECT count(*) FROM notified)",
        select = spec.select,
    )
}

/// Runs a set-based enqueue (see [`EnqueueSelect`]). `bind` binds the caller's parameters in
/// order.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails; nothing is inserted then.
pub async fn insert_select<'e, E, B>(executor: E, spec: &EnqueueSelect<'_>, bind: B) -> Result<SelectReport, QueueError>
where
    E: PgExecutor<'e>,
    B: for<'q> FnOnce(
        sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, i64, i64), sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, i64, i64), sqlx::postgres::PgArguments>,
{
    // Audited: composed only of the caller's `&'static str` and parameter numbers.
    let sql = sqlx::AssertSqlSafe(insert_select_sql(spec));
    let query = bind(sqlx::query_as::<_, (i64, i64, i64)>(sql))
        .bind(spec.kind)
        .bind(spec.max_attempts)
        .bind(spec.trace_context.clone())
        .bind(NOTIFY_CHANNEL);
    let (selected, inserted, _) = query.fetch_one(executor).await?;
    Ok(SelectReport { selected, inserted })
}

/// Inserts `jobs` with `executor` (a pool, a connection or the caller's transaction), skipping
/// any whose `(kind, dedupe_key)` is already queued or running, and notifies idle workers at
/// commit. Inside a transaction the jobs become visible — and the workers are woken — only when the
/// caller commits.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails; nothing is inserted then.
pub async fn insert_many<'e, E>(executor: E, jobs: &[NewJob]) -> Result<EnqueueReport, QueueError>
where
    E: PgExecutor<'e>,
{
    insert(executor, jobs, true).await
}

/// Inserts `jobs` in one statement whatever their number, `job_insert_many`; `notify` is its `$9`.
///
/// Locks: inserts take the unique-index entry of each `(kind, dedupe_key)`; a concurrent insert of
/// the same key waits for this transaction and then skips (`ON CONFLICT DO NOTHING`). Rows are
/// inserted in `(kind, dedupe_key)` order (the caller sorts them) so two bulk inserts with
/// overlapping keys wait on each other in the same order and cannot deadlock.
/// `$9` adds a `pg_notify` to the statement, which PostgreSQL delivers at commit.
async fn insert<'e, E>(executor: E, jobs: &[NewJob], notify: bool) -> Result<EnqueueReport, QueueError>
where
    E: PgExecutor<'e>,
{
    if jobs.is_empty() {
        return Ok(EnqueueReport::default());
    }
    let mut order: Vec<&NewJob> = jobs.iter().collect();
    order.sort_by(|a, b| (&a.kind, &a.dedupe_key).cmp(&(&b.kind, &b.dedupe_key)));
    let n = order.len();
    let mut kinds = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut groups = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut traces = Vec::with_capacity(n);
    for job in order {
        kinds.push(job.kind.as_str());
        keys.push(job.dedupe_key.as_deref());
        groups.push(job.group_key.as_deref());
        payloads.push(&job.payload);
        priorities.push(job.priority);
        run_ats.push(job.run_at);
        max_attempts.push(job.max_attempts.max(1));
        traces.push(job.trace_context.as_ref());
    }
    // The overrides (`as &[…]`) bind arrays of borrowed or NULL-able elements: the same arrays as
    // the owned, non-null `Vec`s the macro's check expects.
    let inserted = sqlx::query!(
        r#"
WITH inserted AS (
    INSERT INTO queue_jobs (kind, dedupe_key, group_key, payload, priority, run_at, max_attempts, trace_context)
    SELECT u.kind, u.dedupe_key, u.group_key, u.payload, u.priority, coalesce(u.run_at, now()), u.max_attempts, u.trace_context
    FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::timestamptz[], $7::int4[], $8::jsonb[])
         WITH ORDINALITY AS u(kind, dedupe_key, group_key, payload, priority, run_at, max_attempts, trace_context, ord)
    ORDER BY u.ord
    ON CONFLICT (kind, dedupe_key) WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING run_at
)
SELECT count(*) AS "inserted!",
       CASE WHEN $9 AND bool_or(run_at <= now()) THEN pg_notify($10, '') IS NOT NULL END AS notified
FROM inserted
"#,
        &kinds as &[&str],
        &keys as &[Option<&str>],
        &groups as &[Option<&str>],
        &payloads as &[&serde_json::Value],
        &priorities,
        &run_ats as &[Option<DateTime<Utc>>],
        &max_attempts,
        &traces as &[Option<&serde_json::Value>],
        notify,
        NOTIFY_CHANNEL,
    )
    .fetch_one(executor)
    .await?
    .inserted;
    let inserted = u64::try_from(inserted).unwrap_or(0);
    Ok(EnqueueReport {
        inserted,
        skipped: n as u64 - inserted,
    })
}

/// The producer side of the queue: autocommit inserts with a debounced wake-up.
///
/// At high insert rates a `NOTIFY` per insert would serialise commits on PostgreSQL's notify
/// queue lock for nothing: one wake-up is enough for every job committed before the worker's next
/// claim. So inserts made through a [`Queue`] do not notify in their statement; after the commit
/// they ask the [`Notifier`], which sends one `NOTIFY` at once and then at most one more per
/// debounce window. The trailing notification always follows the last commit, so no wake-up is
/// lost; the workers' poll interval covers the rest.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    notifier: Notifier,
}

impl Queue {
    /// A queue over `pool`; spawns the notifier task on the current Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        let notifier = Notifier::spawn(pool.clone(), DEFAULT_NOTIFY_DEBOUNCE);
        Self { pool, notifier }
    }

    /// The pool this queue uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts `jobs` in one statement (autocommit) and wakes idle workers.
    ///
    /// # Errors
    ///
    /// [`QueueError::Database`] if the insert fails; nothing is inserted then.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<EnqueueReport, QueueError> {
        let report = insert(&self.pool, jobs, false).await?;
        if report.inserted > 0 {
            self.notifier.wake();
        }
        Ok(report)
    }
}

/// Default debounce window between two notifications sent by one process.
pub const DEFAULT_NOTIFY_DEBOUNCE: Duration = Duration::from_millis(2);

/// Sends `NOTIFY linkpulse_jobs` for committed inserts, at most once per debounce window plus one
/// trailing notification.
#[derive(Debug, Clone)]
pub struct Notifier {
    // capacity 1: a wake-up while one is pending collapses into it
    signal: mpsc::Sender<()>,
}

impl Notifier {
    /// Spawns the notifier task; it ends when the last handle is dropped.
    pub fn spawn(pool: PgPool, debounce: Duration) -> Self {
        let (signal, mut wakes) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while wakes.recv().await.is_some() {
                if let Err(error) = sqlx::query!("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(%error, "failed to notify workers; they will poll");
                }
                tokio::time::sleep(debounce).await;
            }
        });
        Self { signal }
    }

    /// Asks for a notification (call after the insert committed).
    pub fn wake(&self) {
        // Full means a notification is already pending, which covers this commit too.
        let _ = self.signal.try_send(());
    }
}
