-- Schedules as data: the producer's periodic tasks (`check`, `refresh`, `prune`) and the history of
-- their runs. The table is the truth once a row exists: the environment (LINKPULSE_CYCLE_INTERVAL,
-- LINKPULSE_CYCLE_LIMIT, LINKPULSE_CHECK_ENABLED, LINKPULSE_REFRESH_ENABLED) only seeds a row that
-- is absent, so a toggle made through the CLI, the API or the dashboard survives restarts.
--
-- Expand only: the previous release's producers ignore both tables (they cycle on their interval
-- as before), and its workers keep pruning in their maintenance pass until they are replaced,
-- which is harmless beside the `prune` schedule (both delete the same expired rows).

CREATE TABLE schedules (
    -- the task: what a run of this schedule does
    name             text        PRIMARY KEY CHECK (name IN ('check', 'refresh', 'prune')),
    -- exactly one of an interval (milliseconds) and a cron expression (5 fields, or 6 with seconds)
    every_ms         bigint      CHECK (every_ms > 0),
    cron             text        CHECK (cron <> ''),
    -- IANA time zone the cron expression is read in (an interval ignores it)
    timezone         text        NOT NULL DEFAULT 'UTC',
    enabled          boolean     NOT NULL DEFAULT true,
    -- most jobs one run enqueues (check, refresh) or deletes (prune)
    job_limit        bigint      NOT NULL CHECK (job_limit > 0),
    -- a run later than this after its planned time is recorded as `missed` and skipped
    misfire_grace_ms bigint      NOT NULL CHECK (misfire_grace_ms >= 0),
    -- the next planned occurrence; null while disabled
    next_run_at      timestamptz,
    last_run_at      timestamptz,
    last_status      text,
    last_success_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- who changed the row last: `seed`, `cli:<user>`, `api`, `dashboard`
    updated_by       text        NOT NULL,
    CONSTRAINT schedules_one_trigger CHECK ((every_ms IS NULL) <> (cron IS NULL))
);

-- One row per run, whatever started it: the planned occurrence (`schedule`), an operator
-- (`manual`, with `requested_by`), or a skipped occurrence (`missed`, recorded instead of running).
CREATE TABLE schedule_runs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule      text        NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    trigger       text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'missed')),
    requested_by  text,
    -- the occurrence a `schedule` or `missed` run stands for
    scheduled_for timestamptz,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    duration_ms   double precision,
    status        text        NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'missed', 'abandoned')),
    enqueued      bigint,
    skipped       bigint,
    -- what else the run did (prune: rows deleted per kind)
    details       jsonb,
    error         text,
    -- `hostname:pid` of the producer that ran it
    producer      text        NOT NULL,
    trace_id      text,
    CONSTRAINT schedule_runs_finished_matches_status CHECK ((status = 'running') = (finished_at IS NULL))
);

-- Coalescing, enforced by the database: never two unfinished runs of one schedule, whichever
-- replica or operator starts them ...
CREATE UNIQUE INDEX schedule_runs_one_running_idx ON schedule_runs (schedule) WHERE status = 'running';
-- ... and each planned occurrence runs (or is recorded missed) once across all producers.
CREATE UNIQUE INDEX schedule_runs_occurrence_idx ON schedule_runs (schedule, scheduled_for)
    WHERE trigger IN ('schedule', 'missed');
-- `runs list --schedule`, the dashboard's recent runs, per-schedule statistics.
CREATE INDEX schedule_runs_schedule_idx ON schedule_runs (schedule, started_at DESC);
-- `runs list` without a schedule, the 24 h statistics and the prune by age.
CREATE INDEX schedule_runs_started_idx ON schedule_runs (started_at);
