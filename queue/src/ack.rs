//! Writing attempt outcomes back: batched, and only by the lease owner.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{JobLease, JobReport, QueueError, RetryPolicy};

/// What one attempt ended with, as the backend's layer reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler succeeded: the job is `done`.
    Done,
    /// A retryable failure: consumes the attempt; `queued` after a backoff, or `failed` after
    /// the last attempt.
    Retry {
        /// Why the attempt failed.
        error: String,
    },
    /// Like [`Outcome::Retry`] (consumes the attempt) but after the server's own `delay`
    /// (`Retry-After`) instead of the policy's backoff.
    RetryAfter {
        /// Why the attempt failed.
        error: String,
        /// The delay the server asked for.
        delay: Duration,
    },
    /// Run again after `delay` without consuming the attempt (`Retry-After`, rate limits).
    Snooze {
        /// How long to wait.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// A permanent failure (poison payload, a handler that says retrying is pointless): `failed`.
    Fail {
        /// Why.
        error: String,
    },
}

/// One finished attempt waiting to be written back.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The attempt's lease.
    pub lease: JobLease,
    /// What happened.
    pub outcome: Outcome,
    /// What the handler found (result class, status code), for the audit trail.
    pub report: JobReport,
    /// How long the attempt ran, if it ran at all (a poison payload never starts).
    pub duration: Option<Duration>,
}

impl Completion {
    /// A completion with no findings and no measured duration.
    pub fn new(lease: JobLease, outcome: Outcome) -> Self {
        Self {
            lease,
            outcome,
            report: JobReport::default(),
            duration: None,
        }
    }

    /// The result class stored with the job: the handler's; for an attempt that reported
    /// nothing, `snoozed` when it was put off before doing anything (a host cooling down) and
    /// `error` when it failed without a finding (a poison payload, a panic, a timeout).
    fn result_class(&self) -> Option<String> {
        match (&self.report.result, &self.outcome) {
            (Some(result), _) => Some(result.clone()),
            (None, Outcome::Done) => None,
            (None, Outcome::Snooze { .. }) => Some("snoozed".to_owned()),
            (None, _) => Some("error".to_owned()),
        }
    }
}

/// The row update a completion turns into.
#[derive(Debug, Clone, PartialEq)]
struct Transition {
    state: &'static str,
    delay_ms: i64,
    refund_attempt: bool,
    error_kind: Option<&'static str>,
    error: Option<String>,
}

fn transition(completion: &Completion, policy: &RetryPolicy) -> Transition {
    let lease = &completion.lease;
    match &completion.outcome {
        Outcome::Done => Transition {
            state: "done",
            delay_ms: 0,
            refund_attempt: false,
            error_kind: None,
            error: None,
        },
        Outcome::Retry { error } if !lease.is_last_attempt() => Transition {
            state: "queued",
            delay_ms: duration_ms(policy.backoff(lease.attempt)),
            refund_attempt: false,
            error_kind: Some("retry"),
            error: Some(storable(error)),
        },
        Outcome::RetryAfter { error, delay } if !lease.is_last_attempt() => Transition {
            state: "queued",
            delay_ms: duration_ms(*delay),
            refund_attempt: false,
            error_kind: Some("retry"),
            error: Some(storable(error)),
        },
        Outcome::Retry { error } | Outcome::RetryAfter { error, .. } | Outcome::Fail { error } => Transition {
            state: "failed",
            delay_ms: 0,
            refund_attempt: false,
            error_kind: Some("fail"),
            error: Some(storable(error)),
        },
        Outcome::Snooze { delay, reason } => Transition {
            state: "queued",
            delay_ms: duration_ms(*delay),
            refund_attempt: true,
            error_kind: Some("snooze"),
            error: Some(storable(reason)),
        },
    }
}

/// Longest snooze written back: a bogus `Retry-After` must not park a job for years (or overflow
/// the interval arithmetic and jam the whole completion batch).
pub const MAX_SNOOZE: Duration = Duration::from_secs(24 * 3600);

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.min(MAX_SNOOZE).as_millis()).unwrap_or(i64::MAX)
}

pub use linkpulse_util::text::storable;

/// Writes a batch of completions in one round trip; returns how many were applied (the rest had
/// lost their lease).
///
/// `executor` is a pool, a connection, or the caller's transaction: an application that must
/// store a job's effect and its completion atomically runs its own write and this in one
/// transaction, without SQL of its own on `queue_jobs`.
///
/// The statement, `job_complete_many`, writes every outcome of the batch at once, and moves the
/// finished-job counters by the jobs it finished, in the same statement, so `queue stats` reads
/// counters instead of counting retained jobs. It writes them inline, as `queue_count_finished()`
/// (which the colder statements call) does: a PL/pgSQL call re-plans its two inserts at every
/// call under the pools' `force_custom_plan`, about 0.1–0.2 ms per acknowledgement.
///
/// `result_class`, `status_code`, `result_detail` and `duration_ms` describe the latest attempt: the audit trail of
/// a finished job, and what a retrying job found last time.
///
/// Locks the listed job rows. The `WHERE` keeps only rows still under the completion's own lease
/// (its token, and — for the previous release's workers, which mint none — its owner and attempt),
/// so the completion of an attempt whose job was rescued (its worker looked dead) and claimed
/// again, or a replayed acknowledgement after a snooze and a re-claim by the same worker, is
/// refused instead of touching the newer lease. Leaving `running` clears the token and fires the
/// slot-release trigger for grouped jobs.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails; none of the batch is applied then.
pub async fn complete_many<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    completions: &[Completion],
    policy: &RetryPolicy,
) -> Result<u64, QueueError> {
    if completions.is_empty() {
        return Ok(0);
    }
    let n = completions.len();
    let mut ids = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut refunds = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut details = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    // Lock rows in id order so two statements over overlapping jobs cannot deadlock.
    let mut sorted: Vec<&Completion> = completions.iter().collect();
    sorted.sort_by_key(|c| c.lease.job_id);
    for completion in sorted {
        let t = transition(completion, policy);
        ids.push(completion.lease.job_id);
        owners.push(completion.lease.owner);
        attempts.push(completion.lease.attempt);
        states.push(t.state);
        delays.push(t.delay_ms);
        refunds.push(t.refund_attempt);
        kinds.push(t.error_kind);
        errors.push(t.error);
        results.push(completion.result_class());
        codes.push(completion.report.status_code);
        details.push(completion.report.detail.as_deref().map(storable));
        durations.push(
            completion
                .duration
                .map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX)),
        );
        tokens.push(completion.lease.token);
    }
    // The overrides (`as &[…]`) bind arrays of borrowed or NULL-able elements: the same `text[]`
    // and `int4[]` as the `Vec<String>` and `Vec<i32>` the macro's check expects.
    let applied = sqlx::query_scalar!(
        r#"
WITH acked AS (
UPDATE queue_jobs j
SET state = u.state,
    run_at = CASE WHEN u.state = 'queued' THEN now() + make_interval(secs => u.delay_ms / 1000.0) ELSE j.run_at END,
    attempts = j.attempts - CASE WHEN u.refund THEN 1 ELSE 0 END,
    errors = CASE WHEN u.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(jsonb_build_object(
                      'attempt', j.attempts, 'at', now(), 'kind', u.error_kind, 'error', u.error))
             END,
    lease_owner = NULL,
    lease_token = NULL,
    finished_at = CASE WHEN u.state IN ('done', 'failed') THEN now() END,
    result_class = u.result_class,
    status_code = u.status_code,
    result_detail = u.result_detail,
    duration_ms = u.duration_ms
FROM unnest($1::int8[], $2::uuid[], $3::int4[], $4::text[], $5::int8[], $6::bool[], $7::text[], $8::text[],
            $9::text[], $10::int4[], $11::text[], $12::int4[], $13::uuid[])
     AS u(id, owner, attempt, state, delay_ms, refund, error_kind, error, result_class, status_code, result_detail,
          duration_ms, token)
WHERE j.id = u.id
  -- the batch's ids as an index condition: otherwise the join hashes every running job
  -- (buffered ones included: thousands at high concurrency) to find the batch's hundred
  AND j.id = ANY ($1)
  AND j.state = 'running'
  AND j.lease_token = u.token
  AND j.lease_owner = u.owner
  AND j.attempts = u.attempt
RETURNING j.kind, j.state, j.duration_ms
),
finished AS (
    SELECT kind, state, count(*) AS n, coalesce(sum(duration_ms), 0)::int8 AS ms, count(duration_ms) AS timed
    FROM acked WHERE state IN ('done', 'failed') GROUP BY kind, state
),
totals AS (
    INSERT INTO queue_counts AS c (kind, state, shard, n)
    SELECT kind, state, pg_backend_pid() % 4, n FROM finished ORDER BY kind, state
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
),
minutes AS (
    INSERT INTO queue_finished_minutes AS m (minute, kind, state, shard, n, duration_ms_sum, duration_n)
    SELECT date_trunc('minute', now()), kind, state, pg_backend_pid() % 4, n, ms, timed FROM finished ORDER BY kind, state
    ON CONFLICT (minute, kind, state, shard) DO UPDATE
    SET n = m.n + excluded.n, duration_ms_sum = m.duration_ms_sum + excluded.duration_ms_sum,
        duration_n = m.duration_n + excluded.duration_n
)
SELECT count(*) AS "applied!" FROM acked
"#,
        &ids,
        &owners,
        &attempts,
        &states as &[&str],
        &delays,
        &refunds,
        &kinds as &[Option<&str>],
        &errors as &[Option<String>],
        &results as &[Option<String>],
        &codes as &[Option<i32>],
        &details as &[Option<String>],
        &durations as &[Option<i32>],
        &tokens,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(applied).unwrap_or(0))
}

/// Releases `ids` leased by `owner` back to `queued`, refunding the attempt.
///
/// One statement, `job_release_many`, which hands leased jobs back to the queue without counting
/// the attempt (a draining worker's unstarted or interrupted jobs). Only the owner's leases are
/// touched.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails.
pub async fn release_many(pool: &PgPool, owner: Uuid, ids: &[i64]) -> Result<u64, QueueError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query!(
        r#"
UPDATE queue_jobs
SET state = 'queued',
    attempts = greatest(attempts - 1, 0),
    lease_owner = NULL,
    lease_token = NULL,
    run_at = now()
WHERE id = ANY($1) AND state = 'running' AND lease_owner = $2
"#,
        ids,
        owner,
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Releases every job still leased by `owner` (the end of a drain that ran out of grace).
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails.
pub async fn release_all(pool: &PgPool, owner: Uuid) -> Result<u64, QueueError> {
    let result = sqlx::query!(
        "UPDATE queue_jobs SET state = 'queued', attempts = greatest(attempts - 1, 0), \
         lease_owner = NULL, lease_token = NULL, run_at = now() WHERE state = 'running' AND lease_owner = $1",
        owner,
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn lease(attempt: i32, max: i32) -> JobLease {
        JobLease {
            job_id: 1,
            owner: Uuid::nil(),
            token: Uuid::nil(),
            run: Uuid::nil(),
            attempt,
            max_attempts: max,
            kind: "k".into(),
            group_key: None,
            trace_context: None,
            run_at: Utc::now(),
        }
    }

    #[test]
    fn retry_before_the_last_attempt_requeues_with_the_backoff_of_its_attempt() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        };
        // The delay after attempt n is drawn from [ceiling(n) / 2, ceiling(n)]: 0.5–1 s after
        // the first, 2–4 s after the third. Many draws, so a delay of the wrong attempt (or no
        // jitter floor) shows up.
        for (attempt, low, high) in [(1, 500, 1000), (3, 2000, 4000)] {
            for _ in 0..200 {
                let t = transition(
                    &Completion::new(lease(attempt, 5), Outcome::Retry { error: "boom".into() }),
                    &policy,
                );
                assert_eq!(t.state, "queued");
                assert!(
                    (low..=high).contains(&t.delay_ms),
                    "attempt {attempt}: delay {} ms outside [{low}, {high}]",
                    t.delay_ms
                );
                assert!(!t.refund_attempt);
                assert_eq!(t.error_kind, Some("retry"));
            }
        }
    }

    #[test]
    fn retry_on_the_last_attempt_fails_the_job() {
        let t = transition(
            &Completion::new(lease(3, 3), Outcome::Retry { error: "boom".into() }),
            &RetryPolicy::default(),
        );
        assert_eq!(t.state, "failed");
        assert_eq!(t.error.as_deref(), Some("boom"));
    }

    #[test]
    fn retry_after_uses_the_servers_delay_and_consumes_the_attempt() {
        let outcome = Outcome::RetryAfter {
            error: "429".into(),
            delay: Duration::from_secs(7),
        };
        let t = transition(&Completion::new(lease(1, 3), outcome.clone()), &RetryPolicy::default());
        assert_eq!((t.state, t.delay_ms, t.refund_attempt), ("queued", 7000, false));
        let last = transition(&Completion::new(lease(3, 3), outcome), &RetryPolicy::default());
        assert_eq!(last.state, "failed");
    }

    #[test]
    fn error_text_is_made_storable() {
        use linkpulse_util::text::MAX_ERROR_CHARS;
        let t = transition(
            &Completion::new(
                lease(3, 3),
                Outcome::Fail {
                    error: format!("a\0b{}", "x".repeat(5000)),
                },
            ),
            &RetryPolicy::default(),
        );
        let error = t.error.expect("error kept");
        assert!(error.starts_with("abx") && !error.contains('\0'));
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn snooze_delay_is_capped() {
        let t = transition(
            &Completion::new(
                lease(1, 3),
                Outcome::Snooze {
                    delay: Duration::from_secs(u64::MAX / 4),
                    reason: "bogus".into(),
                },
            ),
            &RetryPolicy::default(),
        );
        assert_eq!(t.delay_ms, 24 * 3600 * 1000);
    }

    #[test]
    fn snooze_refunds_the_attempt_even_on_the_last_one() {
        let t = transition(
            &Completion::new(
                lease(3, 3),
                Outcome::Snooze {
                    delay: Duration::from_secs(2),
                    reason: "429".into(),
                },
            ),
            &RetryPolicy::default(),
        );
        assert_eq!(t.state, "queued");
        assert_eq!(t.delay_ms, 2000);
        assert!(t.refund_attempt);
    }

    #[test]
    fn result_class_is_the_handlers_or_error_for_an_unreported_failure() {
        let mut done = Completion::new(lease(1, 3), Outcome::Done);
        assert_eq!(done.result_class(), None);
        done.report.result = Some("dead".into());
        assert_eq!(done.result_class().as_deref(), Some("dead"));
        let poison = Completion::new(lease(1, 3), Outcome::Fail { error: "bad".into() });
        assert_eq!(poison.result_class().as_deref(), Some("error"));
        let put_off = Completion::new(
            lease(1, 3),
            Outcome::Snooze {
                delay: Duration::from_secs(1),
                reason: "cooling down".into(),
            },
        );
        assert_eq!(put_off.result_class().as_deref(), Some("snoozed"));
    }
}
