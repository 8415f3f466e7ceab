-- Raw-SQL ceiling of the queue: one transaction = claim 10 jobs + mark them done, the two round
-- trips a worker needs per batch, without the engine, apalis or the group-slot machinery.
-- Each statement autocommits, as in the engine. Run against a database filled by
-- `cargo run --release -p bench -- fill DATABASE_URL` (see README.md); jobs/s = tps x 10.

-- Claim: the engine's candidate scan (FOR UPDATE SKIP LOCKED, ready-index order) feeding
-- UPDATE ... RETURNING. The lease owner is one fixed uuid per pgbench client.
WITH candidates AS (
    SELECT j.id
    FROM queue_jobs j
    WHERE j.state = 'queued'
      AND j.run_at <= now()
      AND j.kind = ANY ('{noop}'::text[])
    ORDER BY j.priority, j.run_at, j.id
    LIMIT 10
    FOR UPDATE OF j SKIP LOCKED
),
claimed AS (
    UPDATE queue_jobs j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = lpad(:client_id::text, 32, '0')::uuid,
        started_at = now()
    FROM candidates c
    WHERE j.id = c.id
    RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.group_key, j.trace_context,
              j.created_at, j.run_at
)
SELECT quote_literal(coalesce(array_agg(id), '{}')::text) AS ids FROM claimed
\gset

-- Complete: fenced by owner like the engine's batched completion.
UPDATE queue_jobs
SET state = 'done',
    lease_owner = NULL,
    finished_at = now()
WHERE id = ANY (:ids::bigint[])
  AND state = 'running'
  AND lease_owner = lpad(:client_id::text, 32, '0')::uuid;
