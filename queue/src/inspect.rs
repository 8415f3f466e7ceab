//! What operators ask of the queue: depth, listings, requeue and prune.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{JobState, QueueError};

/// Counts of one kind's jobs per operator state, plus the age of its oldest ready job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindStats {
    /// Ready, scheduled or backing off.
    pub queued: i64,
    /// Leased by a worker.
    pub running: i64,
    /// Finished successfully (until pruned).
    pub done: i64,
    /// Terminally failed (until pruned).
    pub failed: i64,
    /// Seconds the oldest due `queued` job has waited past its `run_at`; `null` when none is due.
    /// This is the number to alert on: scheduled and backing-off jobs do not age.
    pub oldest_queued_age_seconds: Option<f64>,
    /// Jobs that finished `done` in the last 24 hours (minute resolution; pruned ones included).
    pub done_24h: i64,
    /// Jobs that finished `failed` in the last 24 hours (minute resolution; pruned ones included).
    pub failed_24h: i64,
    /// Mean duration of the final attempt of the jobs finished in the last 24 hours, in
    /// milliseconds; `null` when none finished.
    pub mean_duration_ms_24h: Option<f64>,
}

/// Queue depth per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// Stats by kind name.
    pub kinds: BTreeMap<String, KindStats>,
}

/// Jobs per kind × state, and what finished in the last 24 hours. `kinds` are always present in
/// the result (with zeros), so a dashboard or alert sees a stable shape even on an empty queue.
///
/// Costs what is unfinished, not what is retained: `queued` and `running` are counted exactly
/// through their partial indexes (`job_count_unfinished`), `done` and `failed` are the totals
/// the finishing statements keep (see [`crate::counts`]: exact for every write of this crate;
/// after a write from outside it, exact again once [`crate::counts::recount`] ran), and the last
/// 24 hours come from the per-minute counters (minute resolution; a job requeued or pruned since
/// still counts in the minute it finished). Three statements, each reading at most a few
/// thousand small rows besides the unfinished jobs.
///
/// # Errors
///
/// [`QueueError::Database`] if a query fails.
pub async fn stats(pool: &PgPool, kinds: &[&str]) -> Result<QueueStats, QueueError> {
    let mut stats = QueueStats::default();
    for kind in kinds {
        stats.kinds.entry((*kind).to_owned()).or_default();
    }
    // Two arms so that each state's partial index serves its own count.
    let unfinished = sqlx::query!(
        r#"
SELECT kind AS "kind!", 'queued' AS "state!", count(*) AS "n!",
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest
FROM queue_jobs WHERE state = 'queued' GROUP BY kind
UNION ALL
SELECT kind, 'running', count(*), NULL FROM queue_jobs WHERE state = 'running' GROUP BY kind
"#
    )
    .fetch_all(pool)
    .await?;
    for row in unfinished {
        let entry = stats.kinds.entry(row.kind).or_default();
        if row.state == "queued" {
            entry.queued = row.n;
            entry.oldest_queued_age_seconds = row.oldest.map(|s| s.max(0.0));
        } else {
            entry.running = row.n;
        }
    }
    let totals = sqlx::query!(r#"SELECT kind, state, sum(n)::int8 AS "n!" FROM queue_counts GROUP BY kind, state"#)
        .fetch_all(pool)
        .await?;
    for row in totals {
        let entry = stats.kinds.entry(row.kind).or_default();
        match row.state.as_str() {
            "done" => entry.done = row.n,
            "failed" => entry.failed = row.n,
            _ => {}
        }
    }
    let finished = sqlx::query!(
        r#"
SELECT kind,
       coalesce(sum(n) FILTER (WHERE state = 'done'), 0)::int8 AS "done!",
       coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS "failed!",
       (sum(duration_ms_sum) / nullif(sum(duration_n), 0))::float8 AS mean_ms
FROM queue_finished_minutes
WHERE minute > now() - interval '24 hours'
GROUP BY kind
"#
    )
    .fetch_all(pool)
    .await?;
    for row in finished {
        let entry = stats.kinds.entry(row.kind).or_default();
        entry.done_24h = row.done;
        entry.failed_24h = row.failed;
        entry.mean_duration_ms_24h = row.mean_ms;
    }
    Ok(stats)
}

impl JobSummary {
    /// The one line that says what went wrong: a failed job's last error, else what a finished
    /// attempt found ("HTTP 404: Not Found"), else an earlier attempt's error.
    pub fn problem(&self) -> Option<&str> {
        if self.state == "failed" {
            self.last_error.as_deref().or(self.result_detail.as_deref())
        } else {
            self.result_detail.as_deref().or(self.last_error.as_deref())
        }
    }
}

/// One job as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    /// Job id.
    pub id: i64,
    /// Kind name.
    pub kind: String,
    /// Operator state.
    pub state: String,
    /// Dedupe key.
    pub dedupe_key: Option<String>,
    /// Concurrency group.
    pub group_key: Option<String>,
    /// Attempts started.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Earliest next start.
    pub run_at: DateTime<Utc>,
    /// Insert time.
    pub created_at: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// Finish time (done or failed).
    pub finished_at: Option<DateTime<Utc>>,
    /// The latest recorded error, if any.
    pub last_error: Option<String>,
    /// What the latest attempt found: `ok`, `dead`, `transient`, `blocked`, `not_modified`,
    /// `snoozed` or `error`; `null` before the first attempt ends.
    pub result_class: Option<String>,
    /// HTTP status code of the latest attempt's final response.
    pub status_code: Option<i32>,
    /// Why the latest attempt's result is not `ok` (a done check of a dead link has no error,
    /// only this).
    pub result_detail: Option<String>,
    /// Wall time of the latest attempt, in milliseconds.
    pub duration_ms: Option<i32>,
    /// Arguments.
    pub payload: serde_json::Value,
    /// Trace id of the enqueuer's span (from the stored `traceparent`): the job's attempts are in
    /// this trace.
    pub trace_id: Option<String>,
}

/// Filter for [`list`] and [`requeue`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs with this dedupe key.
    pub dedupe_key: Option<String>,
    /// Only jobs created (list) or finished (requeue) longer ago than this.
    pub older_than: Option<Duration>,
    /// Only the job with this id.
    pub id: Option<i64>,
    /// Only jobs whose latest attempt found this (`ok`, `dead`, `transient`, `blocked`, …).
    pub result_class: Option<String>,
    /// Only jobs of this concurrency group (the host, for link jobs).
    pub group_key: Option<String>,
    /// Only jobs with an id below this one: the keyset cursor of a listing's next page (listings
    /// go newest first), so a page costs the same wherever it is.
    pub before_id: Option<i64>,
}

/// `sqlx::query_as!` of [`JobSummary`] rows: the statement is its literal parts joined by the
/// columns of a [`JobSummary`] wherever `JOB_SUMMARY_COLUMNS` stands between two of them, so every
/// listing selects the one list and the compiler checks each statement built with it.
macro_rules! query_job_summaries {
    ($first:literal $(, JOB_SUMMARY_COLUMNS, $rest:literal)* ; $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            JobSummary,
            $first $(+ "id, kind, state, dedupe_key, group_key, attempts, max_attempts, run_at, created_at, \
                 started_at, finished_at, errors -> -1 ->> 'error' AS last_error, \
                 result_class, status_code, result_detail, duration_ms, payload, \
                 nullif(split_part(trace_context ->> 'traceparent', '-', 2), '') AS trace_id" // traceparent = version-traceid-parentid-flags
                 + $rest)*,
            $($arg),*
        )
    };
}

/// The `limit` most recently finished jobs, done or failed, newest finish first: the audit trail's
/// recent history. Each state is read backwards along `queue_jobs_finished_idx` and only the two
/// short lists are merged, so the cost does not grow with the retained history.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn recently_finished(pool: &PgPool, limit: i64) -> Result<Vec<JobSummary>, QueueError> {
    let jobs = query_job_summaries!(
        // The outer list only says which columns are `NOT NULL`: a `UNION`'s columns have no
        // table of origin, so the statement's description cannot tell.
        r#"
        SELECT id AS "id!", kind AS "kind!", state AS "state!", dedupe_key, group_key,
               attempts AS "attempts!", max_attempts AS "max_attempts!", run_at AS "run_at!",
               created_at AS "created_at!", started_at, finished_at, last_error, result_class,
               status_code, result_detail, duration_ms, payload AS "payload!", trace_id
        FROM (
            (SELECT "#, JOB_SUMMARY_COLUMNS, r#" FROM queue_jobs WHERE state = 'done'
             ORDER BY finished_at DESC LIMIT $1)
            UNION ALL
            (SELECT "#, JOB_SUMMARY_COLUMNS, r#" FROM queue_jobs WHERE state = 'failed'
             ORDER BY finished_at DESC LIMIT $1)
        ) finished
        ORDER BY finished_at DESC, id DESC
        LIMIT $1
        "#;
        limit.max(0),
    )
    .fetch_all(pool)
    .await?;
    Ok(jobs)
}

/// Lists jobs, newest first.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn list(pool: &PgPool, filter: &JobFilter, limit: i64) -> Result<Vec<JobSummary>, QueueError> {
    let jobs = query_job_summaries!(
        r#"
        SELECT "#, JOB_SUMMARY_COLUMNS, r#"
        FROM queue_jobs
        WHERE ($1::text IS NULL OR state = $1)
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::text IS NULL OR dedupe_key = $3)
          AND ($4::float8 IS NULL OR created_at < now() - make_interval(secs => $4))
          AND ($6::int8 IS NULL OR id = $6)
          AND ($7::text IS NULL OR result_class = $7)
          AND ($8::text IS NULL OR group_key = $8)
          AND id < coalesce($9::int8, 9223372036854775807)
        ORDER BY id DESC
        LIMIT $5
        "#;
        filter.state.map(JobState::as_str),
        filter.kind.as_deref(),
        filter.dedupe_key.as_deref(),
        filter.older_than.map(|d| d.as_secs_f64()),
        limit.max(0),
        filter.id,
        filter.result_class.as_deref(),
        filter.group_key.as_deref(),
        filter.before_id,
    )
    .fetch_all(pool)
    .await?;
    Ok(jobs)
}

/// What a requeue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequeueReport {
    /// Jobs moved back to `queued` with a fresh set of attempts.
    pub requeued: u64,
    /// Matching jobs left alone because an unfinished job with the same dedupe key exists.
    pub skipped: u64,
}

/// `sqlx::query!` of `job_requeue_finished`, the one statement of the fast path's chunks and the
/// safe path's single jobs: moves the finished jobs `$1` back to `queued`, attempts reset, errors
/// kept as history, the latest attempt's result cleared — each only if it is still in state `$2`
/// and no unfinished job has taken its dedupe key meanwhile, and takes them off the finished-job
/// counters. Locks those rows and, once updated, their keys. Yields how many it requeued.
macro_rules! job_requeue_finished {
    ($ids:expr, $state:expr) => {
        sqlx::query!(
            r#"
WITH requeued AS (
    UPDATE queue_jobs j
    SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, lease_owner = NULL, lease_token = NULL,
        run_id = gen_random_uuid(), result_class = NULL, status_code = NULL, result_detail = NULL, duration_ms = NULL
    WHERE j.id = ANY($1) AND j.state = $2
      AND (j.dedupe_key IS NULL
           OR NOT EXISTS (SELECT 1 FROM queue_jobs o
                          WHERE o.kind = j.kind AND o.dedupe_key = j.dedupe_key AND o.state IN ('queued', 'running')))
    RETURNING j.kind
),
counted AS (
    SELECT queue_count_finished(array_agg(kind), array_agg($2::text), array_agg(-n), NULL, NULL, NULL)
    FROM (SELECT kind, count(*) AS n FROM requeued GROUP BY kind) f
)
SELECT (SELECT count(*) FROM requeued) AS "requeued!" FROM counted
"#,
            $ids,
            $state,
        )
    };
}

/// Jobs requeued by one statement of the fast path: about 15 ms of work, far inside any
/// `deadlock_timeout`.
const REQUEUE_CHUNK: usize = 1000;
/// Longest a fast-path statement waits for one lock (a key a cycle is inserting) before it hands
/// its chunk to the one-job-at-a-time path.
const REQUEUE_LOCK_WAIT_MS: i32 = 50;
/// Times one job's requeue is retried after a deadlock or serialization failure (SQLSTATE
/// `40P01`, `40001`). With one key per statement neither is expected; both are transient by
/// definition, so an operator's requeue does not fail on one.
const REQUEUE_RETRIES: u32 = 3;

/// Requeues finished jobs in `state` (`failed` or `done`) matching `filter`.
///
/// Requeue writes dedupe keys like the producer's cycle and `insert_many` do, and one statement
/// requeueing many jobs could deadlock with a cycle (each holding keys the other wanted; PostgreSQL
/// then aborted the cycle). So: chunks of [`REQUEUE_CHUNK`] jobs, each one statement in its own
/// transaction whose statements end within half the server's `deadlock_timeout` and whose lock
/// waits end within [`REQUEUE_LOCK_WAIT_MS`]. Whoever waits for such a chunk therefore stops
/// waiting before its deadlock check runs, and the chunk never waits long enough to run its own:
/// a mutual wait ends with the chunk's timeout, never with an aborted cycle. A chunk that timed
/// out or met a concurrent insert of one of its keys is then requeued one job per statement,
/// which holds at most one key and so cannot take part in a deadlock at all, whatever order the
/// other writers use. Chunks already committed stay requeued if a later one fails.
///
/// The jobs are chosen first, without locking anything, by `job_requeue_candidates`: of several
/// matches with one dedupe key only the newest, and none whose key already has an unfinished job,
/// so the dedupe index holds (keyless jobs each stand alone). It returns their ids in ascending
/// order and the number of matches.
///
/// # Errors
///
/// [`QueueError::NotFinished`] for `queued`/`running`; [`QueueError::Database`] if a statement
/// fails.
pub async fn requeue(pool: &PgPool, state: JobState, filter: &JobFilter) -> Result<RequeueReport, QueueError> {
    if !matches!(state, JobState::Failed | JobState::Done) {
        return Err(QueueError::NotFinished(state));
    }
    let candidates = sqlx::query!(
        r#"
WITH matching AS (
    SELECT id, kind, dedupe_key FROM queue_jobs
    WHERE state = $1
      AND ($2::text IS NULL OR kind = $2)
      AND ($3::text IS NULL OR dedupe_key = $3)
      AND ($4::float8 IS NULL OR finished_at < now() - make_interval(secs => $4))
      AND ($5::int8 IS NULL OR id = $5)
      AND ($6::text IS NULL OR result_class = $6)
      AND ($7::text IS NULL OR group_key = $7)
),
chosen AS (
    -- keyless jobs each form their own partition (the id), keyed ones one per key
    SELECT DISTINCT ON (kind, dedupe_key IS NULL, coalesce(dedupe_key, id::text)) id
    FROM matching m
    WHERE m.dedupe_key IS NULL
       OR NOT EXISTS (SELECT 1 FROM queue_jobs o
                      WHERE o.kind = m.kind AND o.dedupe_key = m.dedupe_key AND o.state IN ('queued', 'running'))
    ORDER BY kind, dedupe_key IS NULL, coalesce(dedupe_key, id::text), id DESC
)
SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM chosen), '{}'::int8[]) AS "ids!",
       (SELECT count(*) FROM matching) AS "matched!"
"#,
        state.as_str(),
        filter.kind.as_deref(),
        filter.dedupe_key.as_deref(),
        filter.older_than.map(|d| d.as_secs_f64()),
        filter.id,
        filter.result_class.as_deref(),
        filter.group_key.as_deref(),
    )
    .fetch_one(pool)
    .await?;
    let (ids, matched) = (candidates.ids, candidates.matched);
    let mut requeued = 0_u64;
    if !ids.is_empty() {
        let mut conn = pool.acquire().await?;
        for chunk in ids.chunks(REQUEUE_CHUNK) {
            requeued += match requeue_chunk(&mut conn, chunk, state).await {
                Ok(moved) => moved,
                Err(sqlx::Error::Database(e)) if is_contention(e.code().as_deref()) => {
                    let mut moved = 0;
                    for &id in chunk {
                        moved += requeue_one(&mut conn, id, state).await?;
                    }
                    moved
                }
                Err(e) => return Err(e.into()),
            };
        }
        if requeued > 0 {
            let _ = sqlx::query!("SELECT pg_notify($1, '')", super::NOTIFY_CHANNEL)
                .execute(&mut *conn)
                .await;
        }
    }
    Ok(RequeueReport {
        requeued,
        skipped: u64::try_from(matched).unwrap_or(0).saturating_sub(requeued),
    })
}

/// Whether a fast-path chunk failed only because of a concurrent writer: a lock wait or the
/// statement ran out of time (`55P03`, `57014`), a deadlock or serialization failure (`40P01`,
/// `40001`), or an enqueue committed one of its keys first (`23505`).
fn is_contention(code: Option<&str>) -> bool {
    matches!(code, Some("55P03" | "57014" | "40P01" | "40001" | "23505"))
}

/// The fast path: `ids` in one statement, with its waits bounded.
///
/// `job_requeue_bound_waits` bounds the rest of this transaction below the server's
/// `deadlock_timeout`: each statement to half of it, each lock wait to `$1` ms (at most a quarter
/// of it). See [`requeue`] for why.
async fn requeue_chunk(conn: &mut sqlx::PgConnection, ids: &[i64], state: JobState) -> Result<u64, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query!(
        r#"
SELECT set_config('statement_timeout', greatest(1, s.setting::int / 2)::text, true) AS statement_timeout,
       set_config('lock_timeout', greatest(1, least($1, s.setting::int / 4))::text, true) AS lock_timeout
FROM pg_settings s WHERE s.name = 'deadlock_timeout'
"#,
        REQUEUE_LOCK_WAIT_MS,
    )
    // its one row, the settings as set, is of no use
    .fetch_all(&mut *tx)
    .await?;
    let moved = job_requeue_finished!(ids, state.as_str())
        .fetch_one(&mut *tx)
        .await?
        .requeued;
    let moved = u64::try_from(moved).unwrap_or(0);
    tx.commit().await?;
    Ok(moved)
}

/// The safe path: job `id` alone, in its own transaction; returns 1 if it moved, 0 if it was no
/// longer finished in `state` or its key was taken.
async fn requeue_one(conn: &mut sqlx::PgConnection, id: i64, state: JobState) -> Result<u64, sqlx::Error> {
    let ids = [id];
    let mut retries = 0;
    loop {
        let result = job_requeue_finished!(ids.as_slice(), state.as_str())
            .fetch_one(&mut *conn)
            .await;
        match result {
            Ok(done) => return Ok(u64::try_from(done.requeued).unwrap_or(0)),
            Err(sqlx::Error::Database(e)) => match e.code().as_deref() {
                // An enqueue committed the same key after our check: that job runs, this one
                // stays finished and counts as skipped.
                Some("23505") => return Ok(0),
                Some("40P01" | "40001") if retries < REQUEUE_RETRIES => retries += 1,
                _ => return Err(sqlx::Error::Database(e)),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Deletes finished jobs (`done` and `failed`) that finished longer ago than `older_than`, in
/// bounded batches. Returns how many.
///
/// # Errors
///
/// [`QueueError::Database`] if a statement fails; batches already deleted stay deleted.
pub async fn prune(pool: &PgPool, older_than: Duration) -> Result<u64, QueueError> {
    let mut conn = pool.acquire().await?;
    super::maintenance::prune_finished(&mut conn, older_than, older_than, 5000, usize::MAX).await
}

/// What a worker still has to do, as `worker --until-empty` asks before it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// A job of the asked kinds is claimable now (group caps aside): `queued`, `run_at` past, and
    /// its kind not paused. Scheduled, backing-off and paused jobs are not due.
    pub due: bool,
    /// Jobs leased to the asked owner: claimed ahead, running, or finished with the
    /// acknowledgement not yet written.
    pub held: i64,
}

/// `job_backlog_of_owner`: whether any job of `kinds` is due, and how many jobs `owner` holds,
/// read in one snapshot. A claim moves a job from due to held in one statement, so no job slips
/// between the two counts; a job whose acknowledgement is still on its way counts as held. Due
/// means what the claim would take: paused kinds are left out the same way (a paused backlog must
/// not keep a worker waiting for jobs it will never claim). Cheap enough to poll: the first match
/// along `queue_jobs_ready_idx`, and the owner's entries in `queue_jobs_running_idx`.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn backlog(pool: &PgPool, kinds: &[&str], owner: uuid::Uuid) -> Result<Backlog, QueueError> {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let row = sqlx::query!(
        r#"
SELECT EXISTS (SELECT 1 FROM queue_jobs
               WHERE state = 'queued' AND run_at <= now() AND kind = ANY($1)
                 AND kind <> ALL (ARRAY(SELECT p.kind FROM queue_paused_kinds p))) AS "due!",
       (SELECT count(*) FROM queue_jobs WHERE state = 'running' AND lease_owner = $2) AS "held!"
"#,
        &kinds,
        owner,
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        due: row.due,
        held: row.held,
    })
}

/// Queued jobs that are not due: what `worker --until-empty` leaves behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotDue {
    /// Jobs of unpaused kinds `queued` for a later `run_at` (scheduled, or backing off).
    pub scheduled: i64,
    /// The earliest `run_at` among them.
    pub next_at: Option<DateTime<Utc>>,
    /// Jobs of paused kinds `queued`, whatever their `run_at`.
    pub paused: i64,
}

/// `job_count_not_due`: the queued jobs of `kinds` that are not due ([`NotDue`]). Reads every
/// such row: for a one-off report, not for polling.
///
/// # Errors
///
/// [`QueueError::Database`] if the query fails.
pub async fn not_due(pool: &PgPool, kinds: &[&str]) -> Result<NotDue, QueueError> {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let row = sqlx::query!(
        r#"
WITH paused AS (SELECT ARRAY(SELECT p.kind FROM queue_paused_kinds p) AS kinds)
SELECT count(*) FILTER (WHERE j.kind <> ALL (paused.kinds) AND j.run_at > now()) AS "scheduled!",
       min(j.run_at) FILTER (WHERE j.kind <> ALL (paused.kinds) AND j.run_at > now()) AS next_at,
       count(*) FILTER (WHERE j.kind = ANY (paused.kinds)) AS "paused!"
FROM queue_jobs j, paused
WHERE j.state = 'queued' AND j.kind = ANY($1)
"#,
        &kinds,
    )
    .fetch_one(pool)
    .await?;
    Ok(NotDue {
        scheduled: row.scheduled,
        next_at: row.next_at,
        paused: row.paused,
    })
}
