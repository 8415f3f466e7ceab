//! Check write-backs in batches: the results of many concurrent checks in one statement.
//!
//! A check's own work is one HTTP request; writing its result one row per statement made the
//! database the bottleneck of a busy worker (a statement's fixed cost — round trip, parse,
//! executor start, commit — dwarfs updating one row). Handlers hand their result to a
//! [`CheckWriter`] and wait for it to be written: whatever arrives while a batch is in flight
//! forms the next one, so a quiet worker writes at once and a busy one writes hundreds per
//! statement. Each handler still waits for its own row, so a job is acknowledged only after its
//! result is stored, and the handler's `db.write_back` span covers the wait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::links::{CheckRecord, WriteLease};

/// Most results in one statement.
const MAX_BATCH: usize = 512;
/// Batches in flight at once: while one waits on the database the next one fills.
const MAX_IN_FLIGHT: usize = 2;
/// How long a batch waits, while the other one is in flight, for that one's answer before it is
/// sent anyway (collecting results meanwhile). A statement's fixed cost — custom planning, since
/// the pools plan every execution afresh, and the executor's start — is about 0.75 ms of server
/// CPU against about 13 µs per row, and a second batch sent as soon as one result arrived made
/// batches of about 25 results at 128 concurrent checks. Waiting for the answer (a millisecond or
/// two) makes them larger; the limit keeps a batch stuck on a row lock from holding every other
/// result until its timeout.
const SECOND_BATCH_DELAY: Duration = Duration::from_millis(5);
/// Longest wait for one batch (the pool's `statement_timeout` bounds the statement itself): a
/// batch stuck on a dead connection must not hold its permit, and its handlers, forever.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Results waiting for a batch before handlers wait to hand theirs over.
const CHANNEL_CAPACITY: usize = 4096;

/// Why a result was not written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The batch's statement failed (none of the batch was written).
    #[error("writing the check result: {0}")]
    Database(String),
    /// The writer's task is gone (the worker is shutting down).
    #[error("writing the check result: the writer has stopped")]
    Stopped,
}

/// One check result on its way to the database.
#[derive(Debug)]
struct Pending {
    link_id: i64,
    lease: WriteLease,
    record: CheckRecord,
    trace_id: Option<String>,
    reply: oneshot::Sender<Result<bool, WriteError>>,
}

/// Writes check results in batches; cheap to clone, one per worker process.
#[derive(Debug, Clone)]
pub struct CheckWriter {
    tx: mpsc::Sender<Pending>,
}

impl CheckWriter {
    /// Starts the writer's task on `pool`; `threshold` consecutive counted failures make a link
    /// `inaccessible`. The task ends when every clone of the writer is dropped.
    pub fn start(pool: PgPool, threshold: i32) -> Self {
        Self::with_batch_timeout(pool, threshold, BATCH_TIMEOUT)
    }

    /// [`CheckWriter::start`] with another limit than 30 s on one batch's wait.
    ///
    /// A batch that gets no answer in time fails its results, which their jobs then retry. Its
    /// statement may still commit later (the server does not know the client gave up). The
    /// retry's write is then a replay of the same job, which changes nothing, so nothing is
    /// counted twice.
    pub fn with_batch_timeout(pool: PgPool, threshold: i32, batch_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(run(pool, threshold, batch_timeout, rx));
        Self { tx }
    }

    /// Writes one check's result and waits until its batch is committed. Returns whether the
    /// row changed (`false`: a replay of a run already written, a lease no longer held, or a link
    /// deleted meanwhile).
    ///
    /// Same rules as one statement per result: applied only under the job's current lease and at
    /// most once per run (see [`WriteLease`]); a success resets failures
    /// and restores `active` (an `archived` link stays archived; a `paused` one stays paused with its
    /// failures uncounted); a counted failure increments
    /// them and at the threshold makes the link `inaccessible`; a blocked result changes
    /// neither. The current trace id (the job's) is stored as `last_trace_id`. A written result
    /// also adds a verdict to the link's history and, if the status changed, an event (same
    /// transaction; see `write_batch`).
    ///
    /// # Errors
    ///
    /// [`WriteError`] if the batch failed or the writer stopped; the job should be retried.
    #[tracing::instrument(
        name = "db.write_back",
        skip_all,
        fields(
            db.system.name = "postgresql",
            db.operation.name = "link_record_check",
            link.id = link_id,
            job.id = lease.job_id,
            outcome = record.outcome,
            applied = tracing::field::Empty,
        )
    )]
    pub async fn record(&self, link_id: i64, lease: WriteLease, record: CheckRecord) -> Result<bool, WriteError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            link_id,
            lease,
            record,
            trace_id: crate::telemetry::current_trace_id(),
            reply,
        };
        let result = match self.tx.send(pending).await {
            Ok(()) => answer.await.unwrap_or(Err(WriteError::Stopped)),
            Err(_) => Err(WriteError::Stopped),
        };
        let span = tracing::Span::current();
        match &result {
            Ok(applied) => {
                span.record("applied", applied);
            }
            Err(error) => crate::telemetry::set_error(&span, &error.to_string()),
        }
        result
    }
}

async fn run(pool: PgPool, threshold: i32, timeout: Duration, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        if in_flight.available_permits() == 0 {
            // The other batch is in flight: its answer frees a permit (taken and given back at
            // once); meanwhile the channel fills.
            let _ = tokio::time::timeout(SECOND_BATCH_DELAY, in_flight.acquire()).await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        // A handler that gave up (its job timed out and will be retried) no longer listens:
        // writing its result would only delay the others.
        batch.retain(|pending| !pending.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answers = write_or_split(&pool, threshold, timeout, &batch).await;
            for (pending, answer) in batch.into_iter().zip(answers) {
                // A handler that gave up (its job timed out) no longer listens: nothing to do.
                let _ = pending.reply.send(answer);
            }
        });
    }
}

/// Writes `batch`. If the database refuses the statement because of the data in it (a value it
/// does not accept, a constraint), writes each result on its own, so one bad row fails alone
/// instead of costing every job of the batch an attempt. Any other failure (timeout, lost
/// connection, pool exhausted) fails the whole batch at once: retrying row by row would repeat
/// the same wait for every row while the other handlers queue up behind it. Answers in `batch`'s
/// order.
async fn write_or_split(
    pool: &PgPool,
    threshold: i32,
    timeout: Duration,
    batch: &[Pending],
) -> Vec<Result<bool, WriteError>> {
    let whole: Vec<&Pending> = batch.iter().collect();
    let mut first = write_batch(pool, threshold, timeout, &whole).await;
    if let Err(failure) = &first
        && failure.connection_lost
    {
        // A connection that died while idle (the database restarted, a proxy dropped it) fails
        // the first statement sent on it; the pool opens a new one for the second. Without this,
        // every check in flight across an outage would spend an attempt and run again. A replay
        // is harmless: the write is fenced by the lease and idempotent per run.
        tracing::info!(error = %failure.error, "check write-back lost its connection; retrying once");
        first = write_batch(pool, threshold, timeout, &whole).await;
    }
    match first {
        Ok(applied) => batch.iter().map(|p| Ok(applied.contains(&p.lease.job_id))).collect(),
        Err(failure) if failure.caused_by_data && batch.len() > 1 => {
            tracing::warn!(error = %failure.error, results = batch.len(), "check write-back batch refused; writing one by one");
            let mut answers = Vec::with_capacity(batch.len());
            for pending in batch {
                answers.push(
                    write_batch(pool, threshold, timeout, &[pending])
                        .await
                        .map(|applied| applied.contains(&pending.lease.job_id))
                        .map_err(|failure| failure.error),
                );
            }
            answers
        }
        Err(failure) => {
            if batch.len() > 1 {
                tracing::warn!(error = %failure.error, results = batch.len(), "check write-back batch failed");
            }
            vec![Err(failure.error); batch.len()]
        }
    }
}

/// Why a batch was not written, and whether writing its rows one by one could help.
struct BatchFailure {
    error: WriteError,
    /// The server refused the statement for the data in it (SQLSTATE class 22, data exception, or
    /// 23, integrity constraint violation): some rows may be fine on their own.
    caused_by_data: bool,
    /// The connection failed under the statement (I/O error, closed): a new one may work.
    connection_lost: bool,
}

impl BatchFailure {
    fn from_sqlx(error: &sqlx::Error) -> Self {
        let caused_by_data = error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
        Self {
            error: WriteError::Database(linkpulse_util::errors::error_chain(error)),
            caused_by_data,
            connection_lost: matches!(error, sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed),
        }
    }
}

/// `link_record_check_many`: writes `batch`, a batch of results, in one statement; returns the
/// job ids whose row changed. A link appears once per
/// batch (one check of a link is queued or running at a time). A row is written only while its
/// lease is the job's current one (its token and attempt, read from `queue_jobs`: a rescued attempt's
/// late result is dropped) and once per run (`last_check_run`).
///
/// The same statement (so the same transaction) keeps the link's history of every row it writes,
/// and only of those (a replay or a fenced-off result adds nothing): one `link_verdicts` row, and
/// when the status changes a `link_events` row with the next `event_seq` (the outbox the webhooks
/// read). An event that cannot be written fails the whole statement: no transition without its
/// event, no event without its transition.
///
/// The rows are locked first (`cur`) because the event needs the status the update replaces, and
/// `RETURNING` sees only the new one (PostgreSQL < 18): the lock makes the status read there the
/// one the update overwrites, also when another transaction changed it after this statement's
/// snapshot.
async fn write_batch(
    pool: &PgPool,
    threshold: i32,
    timeout: Duration,
    batch: &[&Pending],
) -> Result<HashSet<i64>, BatchFailure> {
    // Rows in link order (the locking clause locks in that order). Two
    // batches share no link in practice; if they ever did and deadlocked, PostgreSQL aborts one,
    // whose results are then written one by one.
    let mut sorted: Vec<&Pending> = batch.to_vec();
    sorted.sort_by_key(|p| p.link_id);
    let link_ids: Vec<i64> = sorted.iter().map(|p| p.link_id).collect();
    let job_ids: Vec<i64> = sorted.iter().map(|p| p.lease.job_id).collect();
    let outcomes: Vec<&str> = sorted.iter().map(|p| p.record.outcome).collect();
    let status_codes: Vec<Option<i32>> = sorted.iter().map(|p| p.record.status_code.map(i32::from)).collect();
    // NUL in a server's reason must not fail the batch; a huge one is cut like job errors.
    let errors: Vec<Option<String>> = sorted
        .iter()
        .map(|p| p.record.error.as_deref().map(linkpulse_util::text::storable))
        .collect();
    let counts: Vec<bool> = sorted.iter().map(|p| p.record.counts_as_failure).collect();
    let trace_ids: Vec<Option<&str>> = sorted.iter().map(|p| p.trace_id.as_deref()).collect();
    let tokens: Vec<uuid::Uuid> = sorted.iter().map(|p| p.lease.token).collect();
    let runs: Vec<uuid::Uuid> = sorted.iter().map(|p| p.lease.run).collect();
    let attempts: Vec<i32> = sorted.iter().map(|p| p.lease.attempt).collect();
    // A NaN or infinite duration (a clock gone wrong) is not a duration.
    let durations: Vec<Option<f64>> = sorted
        .iter()
        .map(|p| p.record.duration_ms.filter(|d| d.is_finite()))
        .collect();
    // The arrays of nullable or borrowed elements are typed by hand: the macro's check expects
    // owned, non-null elements for an array parameter.
    let query = sqlx::query_scalar!(
        r#"
WITH cur AS (
    SELECT l.id, l.url, l.status AS from_status, u.job_id, u.outcome, u.status_code, u.error,
           u.trace_id, u.run, u.duration_ms,
           -- a paused link's count is frozen: a late result is never counted
           CASE WHEN l.status = 'paused' THEN l.consecutive_failures
                WHEN u.outcome = 'ok' THEN 0
                WHEN u.counts THEN l.consecutive_failures + 1
                ELSE l.consecutive_failures END AS failures
    FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $5::text[], $6::bool[], $7::text[], $9::uuid[],
                $10::uuid[], $11::int4[], $12::float8[])
         AS u(link_id, job_id, outcome, status_code, error, counts, trace_id, token, run, attempt, duration_ms)
         -- the lease fence, a read of the queue's table: still running under this lease's token
         -- and attempt (the previous release's claims and rescues leave the token as it was, but
         -- count the attempt)
         JOIN queue_jobs q
           ON q.id = u.job_id AND q.state = 'running' AND q.lease_token = u.token AND q.attempts = u.attempt
         JOIN links l ON l.id = u.link_id
    WHERE l.last_check_run IS DISTINCT FROM u.run
    ORDER BY l.id
    FOR NO KEY UPDATE OF l
),
n AS (
    SELECT cur.*,
           CASE WHEN from_status = 'archived' THEN 'archived'
                -- a result arriving for a paused link (enqueued before the pause) never unpauses it
                WHEN from_status = 'paused' THEN 'paused'
                WHEN outcome = 'ok' AND from_status = 'inaccessible' THEN 'active'
                WHEN failures >= $8 THEN 'inaccessible'
                ELSE from_status END AS to_status
    FROM cur
),
w AS (
    UPDATE links l
    SET last_checked_at = now(),
        last_check_job_id = n.job_id,
        last_check_run = n.run,
        last_outcome = n.outcome,
        last_status_code = n.status_code,
        last_error = n.error,
        consecutive_failures = n.failures,
        last_trace_id = n.trace_id,
        status = n.to_status,
        event_seq = l.event_seq + (n.to_status <> n.from_status)::int,
        updated_at = now()
    FROM n
    WHERE l.id = n.id
    RETURNING n.id, n.url, n.from_status, n.to_status, n.job_id, n.outcome, n.status_code, n.error,
              n.duration_ms, l.event_seq
),
verdicts AS (
    INSERT INTO link_verdicts (link_id, checked_at, outcome, status_code, duration_ms, error, job_id)
    SELECT id, now(), outcome, status_code, duration_ms, error, job_id FROM w
),
events AS (
    INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, reason, job_id)
    SELECT id, event_seq, url, link_event_type(from_status, to_status), from_status, to_status, coalesce(error, 'check ok'), job_id
    FROM w
    WHERE to_status <> from_status
)
SELECT job_id AS "job_id!" FROM w
"#,
        &link_ids,
        &job_ids,
        &outcomes as &[&str],
        &status_codes as &[Option<i32>],
        &errors as &[Option<String>],
        &counts,
        &trace_ids as &[Option<&str>],
        threshold,
        &tokens,
        &runs,
        &attempts,
        &durations as &[Option<f64>],
    );
    let rows = tokio::time::timeout(timeout, query.fetch_all(pool))
        .await
        .map_err(|_| BatchFailure {
            error: WriteError::Database(format!("no answer within {timeout:?}")),
            caused_by_data: false,
            connection_lost: false,
        })?
        .map_err(|e| BatchFailure::from_sqlx(&e))?;
    Ok(rows.into_iter().collect())
}
