-- The job queue: jobs, the workers that lease them, and the per-group concurrency slots.
-- The state machine and every statement that touches these tables are described in docs/queue.md.

-- One row per job. `state` speaks the operator's four states directly:
--   queued  ready now, scheduled for later, or waiting out a retry backoff (see run_at)
--   running leased by the worker in lease_owner; attempts already counts this attempt
--   done    finished successfully (kept until LINKPULSE_RETAIN_DONE)
--   failed  terminal: attempts exhausted, poison payload or discarded (kept until LINKPULSE_RETAIN_FAILED)
CREATE TABLE queue_jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- stable string naming the job type ("check", "refresh"), never a Rust type path
    kind          text        NOT NULL CHECK (kind <> ''),
    -- jobs with the same (kind, dedupe_key) never coexist while queued or running
    dedupe_key    text,
    -- at most LINKPULSE_HOST_CONCURRENCY jobs of one group run at once across the pool
    group_key     text,
    payload       jsonb       NOT NULL,
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'failed')),
    priority      smallint    NOT NULL DEFAULT 0,  -- lower runs first
    run_at        timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer     NOT NULL CHECK (max_attempts > 0),
    -- one object per failed attempt: {"attempt": n, "at": timestamp, "error": text, "kind": "retry"|"fail"|"snooze"|"lost"}
    errors        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    lease_owner   uuid,
    -- W3C trace context of the enqueuer ({"traceparent": ..., "tracestate": ...})
    trace_context jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    -- a running job always has an owner, and only a running job has one
    CONSTRAINT queue_jobs_lease_matches_state CHECK ((state = 'running') = (lease_owner IS NOT NULL)),
    CONSTRAINT queue_jobs_finished_matches_state CHECK ((state IN ('done', 'failed')) = (finished_at IS NOT NULL))
);

-- job_claim_batch: the next ready jobs in priority, run_at order.
CREATE INDEX queue_jobs_ready_idx ON queue_jobs (priority, run_at, id) WHERE state = 'queued';

-- job_insert_many: dedupe among unfinished jobs only; a finished job never blocks a new one.
CREATE UNIQUE INDEX queue_jobs_dedupe_idx ON queue_jobs (kind, dedupe_key)
    WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL;

-- job_rescue_lost / job_release_many / shutdown: running jobs by owner.
CREATE INDEX queue_jobs_running_idx ON queue_jobs (lease_owner) WHERE state = 'running';

-- job_prune_finished and job history listings: finished jobs by age.
CREATE INDEX queue_jobs_finished_idx ON queue_jobs (state, finished_at) WHERE state IN ('done', 'failed');

-- No (kind, state) index: `queue stats` reads every row anyway, and such an index misleads the
-- planner into sorting all queued rows for the claim when statistics are fresh or missing.

-- A queue table churns: vacuum and analyse it after 1 % of its rows changed instead of 20 %, so
-- dead index entries at the head of queue_jobs_ready_idx do not slow every claim.
ALTER TABLE queue_jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01);

-- One row per live worker process (a new id at every start). A worker renews heartbeat_at every
-- LINKPULSE_HEARTBEAT_INTERVAL; that renews the lease of every job it owns. A worker silent for
-- LINKPULSE_RESCUE_AFTER is dead: its row is deleted and its running jobs are rescued.
CREATE TABLE queue_workers (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    draining     boolean     NOT NULL DEFAULT false
);

-- One row per running job of a group: the slot it occupies. The claim inserts a row per grouped
-- job it starts (ON CONFLICT DO NOTHING: a slot taken by a concurrent claim means the job stays
-- queued); the trigger below deletes it when the job leaves `running`, however that happens.
CREATE TABLE queue_group_slots (
    group_key text   NOT NULL,
    slot      int    NOT NULL CHECK (slot > 0),
    job_id    bigint NOT NULL UNIQUE,
    PRIMARY KEY (group_key, slot)
);

CREATE FUNCTION queue_group_slot_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM queue_group_slots WHERE job_id = OLD.id;
    RETURN NULL;
END;
$$;

-- Fires only for grouped jobs leaving `running` (done, failed, retried, snoozed, rescued,
-- released, deleted); the WHEN clause keeps ungrouped jobs free of trigger cost.
CREATE TRIGGER queue_jobs_release_slot_on_update
    AFTER UPDATE OF state ON queue_jobs
    FOR EACH ROW
    WHEN (OLD.group_key IS NOT NULL AND OLD.state = 'running' AND NEW.state <> 'running')
    EXECUTE FUNCTION queue_group_slot_release();

CREATE TRIGGER queue_jobs_release_slot_on_delete
    AFTER DELETE ON queue_jobs
    FOR EACH ROW
    WHEN (OLD.group_key IS NOT NULL AND OLD.state = 'running')
    EXECUTE FUNCTION queue_group_slot_release();
