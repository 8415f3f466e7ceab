//! Claiming a batch of jobs: one statement, row locks held only for that statement.

use sqlx::PgPool;
use uuid::Uuid;

use super::{ClaimedJob, QueueError};

/// Leases up to `limit` ready jobs of `kinds` to `owner`, keeping every group under
/// `group_limit` running jobs across all workers.
///
/// One statement, `job_claim_batch`.
///
/// Locks, in order:
/// 1. `used` counts the taken slots of each group once (the slots table holds one row per running
///    grouped job, so it is small), and `candidates` locks up to `$3` ready rows in
///    `(priority, run_at, id)` order with `FOR UPDATE SKIP LOCKED`, so concurrent claimers take
///    disjoint rows and never wait on each other. Rows of a group whose slots all looked taken (in
///    this statement's snapshot) are passed over, so a full group at the head of the queue does
///    not starve the others. Rows of a paused kind are never candidates: `claimable` subtracts
///    `queue_paused_kinds` from `$2` once per statement, and the walk tests each row's kind
///    against that array as it tested it against `$2` before (no probe of the table per row).
///    `j.kind <> ALL (ARRAY(…))` would be as cheap to run but not to plan: the planner guesses
///    that an inequality to each of an unknown array's elements rejects nearly every row, and
///    sorted every queued row instead of walking `queue_jobs_ready_idx`; `= ANY` of the
///    remaining kinds it guesses right. With every kind of the worker paused the array is empty
///    and a one-time filter skips the walk. A pause thus takes effect at each worker's next
///    claim, and the paused jobs keep their place; a paused backlog at the head of the queue is
///    walked past by every claim, as a full group is.
/// 2. `taken` inserts one `queue_group_slots` row per grouped candidate, numbering the free slots
///    of each group. A group that uses `u` slots and needs `k` more finds its `k` lowest free
///    numbers among `1..=min(cap, u + k)`, so the search never grows with the cap. A slot taken by
///    a concurrent claim conflicts (`ON CONFLICT DO NOTHING` waits for that claim to commit, then
///    skips): the job is simply not claimed this time. Inserts go in `(group_key, slot)` order so
///    two claims wait on each other in one order, never in a cycle.
/// 3. The final `UPDATE` leases the ungrouped candidates and the grouped ones that got a slot,
///    by primary key (`id = ANY(ARRAY(…))`), each under a fresh lease token.
///    The other candidates' row locks end with the statement and they stay queued.
///
/// # Errors
///
/// [`QueueError::Database`] if the statement fails; nothing is leased then.
pub async fn claim_batch(
    pool: &PgPool,
    owner: Uuid,
    kinds: &[&str],
    limit: usize,
    group_limit: u32,
) -> Result<Vec<ClaimedJob>, QueueError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // `$4` is compared with counts, so the statement takes it as `int8`; the cap stays the
    // `int4` range it always had.
    let group_limit = i64::from(i32::try_from(group_limit.max(1)).unwrap_or(i32::MAX));
    let jobs = sqlx::query_as!(
        ClaimedJob,
        r#"
WITH used AS (
    SELECT group_key, count(*) AS n FROM queue_group_slots GROUP BY group_key
),
-- the worker's kinds less the paused ones (`queue pause`), read once per statement
claimable AS (
    SELECT ARRAY(SELECT unnest($2::text[]) EXCEPT SELECT p.kind FROM queue_paused_kinds p) AS kinds
),
candidates AS (
    SELECT j.id, j.group_key, j.priority, j.run_at
    FROM queue_jobs j
    WHERE j.state = 'queued'
      AND j.run_at <= now()
      AND j.kind = ANY ((SELECT c.kinds FROM claimable c)::text[])
      -- every kind paused: no walk over the backlog at all (a one-time filter)
      AND (SELECT cardinality(c.kinds) FROM claimable c) > 0
      -- a worker judged dead (row deleted by a rescue) claims nothing until it re-registers,
      -- or the next rescue would take the new jobs from it mid-run
      AND EXISTS (SELECT 1 FROM queue_workers w WHERE w.id = $1)
      AND (j.group_key IS NULL
           OR j.group_key NOT IN (SELECT u.group_key FROM used u WHERE u.n >= $4))
    ORDER BY j.priority, j.run_at, j.id
    LIMIT $3
    FOR UPDATE OF j SKIP LOCKED
),
grouped AS (
    SELECT c.id, c.group_key,
           row_number() OVER (PARTITION BY c.group_key ORDER BY c.priority, c.run_at, c.id) AS rank
    FROM candidates c
    WHERE c.group_key IS NOT NULL
),
needs AS (
    SELECT g.group_key, count(*) AS needed, coalesce(max(u.n), 0) AS used
    FROM grouped g
    LEFT JOIN used u ON u.group_key = g.group_key
    GROUP BY g.group_key
),
free_slots AS (
    SELECT nd.group_key, n AS slot, row_number() OVER (PARTITION BY nd.group_key ORDER BY n) AS rank
    FROM needs nd
    CROSS JOIN LATERAL generate_series(1, least($4::int8, nd.used + nd.needed)::int4) AS n
    WHERE NOT EXISTS (SELECT 1 FROM queue_group_slots s WHERE s.group_key = nd.group_key AND s.slot = n)
),
taken AS (
    INSERT INTO queue_group_slots (group_key, slot, job_id)
    SELECT f.group_key, f.slot, g.id
    FROM grouped g
    JOIN free_slots f ON f.group_key = g.group_key AND f.rank = g.rank
    ORDER BY f.group_key, f.slot
    ON CONFLICT DO NOTHING
    RETURNING job_id
),
picked AS (
    SELECT id FROM candidates WHERE group_key IS NULL
    UNION ALL
    SELECT job_id FROM taken
)
UPDATE queue_jobs j
SET state = 'running',
    attempts = j.attempts + 1,
    lease_owner = $1,
    -- a fresh token per lease: what completions and write-backs are fenced by
    lease_token = gen_random_uuid(),
    -- jobs inserted before runs existed get one at their first claim
    run_id = coalesce(j.run_id, gen_random_uuid()),
    started_at = now()
-- an array, not a join: the planner cannot tell how few rows `picked` holds and would hash-join
-- it against a scan of the whole table (4 ms at 20,000 jobs) instead of probing the primary key
WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.group_key, j.trace_context,
          j.created_at, j.run_at, j.lease_owner AS "lease_owner!", j.lease_token AS "lease_token!",
          j.run_id AS "run_id!"
"#,
        owner,
        // `&[&str]` is a `text[]` too: the override spares a `Vec<String>` per claim
        kinds as &[&str],
        limit,
        group_limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(jobs)
}
