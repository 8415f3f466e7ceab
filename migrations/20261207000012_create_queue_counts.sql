-- Counters of finished jobs, kept by the statements that finish, requeue and prune them, so that
-- `queue stats`, `/api/queue/stats`, the dashboard and every `/metrics` scrape read a few hundred
-- counter rows instead of counting millions of retained jobs (a count over the job table grew
-- linearly with retention: 0.84–0.94 s at 2,000,000 finished jobs).
--
-- Expand only: the previous release's workers keep working against this schema, they just do not
-- move the counters. `queue recount` (which the prune schedule runs) corrects the totals from the
-- job table afterwards, so a rolling upgrade leaves the totals off only until the next prune run.

-- Finished jobs retained, per kind and terminal state. `shard` spreads the writers: each
-- connection adds to its own row (its backend pid modulo 4), so concurrent acknowledgements from
-- many workers do not queue on one row lock; a total is the sum over the shards. A shard's `n`
-- may go negative (one connection finished jobs, another pruned them): only the sum means
-- anything.
CREATE TABLE queue_counts (
    kind  text     NOT NULL,
    state text     NOT NULL CHECK (state IN ('done', 'failed')),
    shard smallint NOT NULL CHECK (shard >= 0),
    n     bigint   NOT NULL,
    PRIMARY KEY (kind, state, shard)
);

-- Jobs that finished per minute, kind and terminal state, with their summed durations: the last
-- 24 hours' counts and mean duration and the throughput chart read these. History, not retained
-- state: pruning or requeueing a job does not take it out of the minute it finished in. Rows
-- older than two days are deleted by the prune.
CREATE TABLE queue_finished_minutes (
    minute          timestamptz NOT NULL,
    kind            text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('done', 'failed')),
    shard           smallint    NOT NULL CHECK (shard >= 0),
    n               bigint      NOT NULL,
    -- over the jobs with a measured duration (a poison payload never ran)
    duration_ms_sum bigint      NOT NULL DEFAULT 0,
    duration_n      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, kind, state, shard)
);

-- Every acknowledgement batch updates a row in each: leave room on the page so the new row
-- version is a HOT update, and vacuum after a thousand dead versions rather than a fraction of a
-- table this small.
ALTER TABLE queue_counts SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
                              autovacuum_vacuum_threshold = 1000);
ALTER TABLE queue_finished_minutes SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
                                        autovacuum_vacuum_threshold = 1000);

-- What is already retained counts from the start.
INSERT INTO queue_counts (kind, state, shard, n)
SELECT kind, state, 0, count(*) FROM queue_jobs WHERE state IN ('done', 'failed') GROUP BY kind, state;

INSERT INTO queue_finished_minutes (minute, kind, state, shard, n, duration_ms_sum, duration_n)
SELECT date_trunc('minute', finished_at), kind, state, 0, count(*),
       coalesce(sum(duration_ms), 0), count(duration_ms)
FROM queue_jobs
WHERE state IN ('done', 'failed') AND finished_at > now() - interval '2 days'
GROUP BY 1, kind, state;

-- Moves the counters by `deltas` per (kind, state) — positive for jobs that just finished, negative
-- for finished jobs requeued or pruned — and, when `at_minute` is given, adds the finished jobs
-- and their durations to that minute. Called once per statement by the queue's own statements
-- (with the statement's already grouped rows), so the counters move in the same transaction as
-- the jobs. Rows are written in (kind, state) order, the same order in every caller, so two
-- statements cannot deadlock on counter rows. Returns the sum of the deltas.
CREATE FUNCTION queue_count_finished(kinds text[], states text[], deltas bigint[],
                                     duration_sums bigint[], timed bigint[], at_minute timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts AS c (kind, state, shard, n)
    SELECT u.kind, u.state, pg_backend_pid() % 4, u.delta
    FROM unnest(kinds, states, deltas) AS u(kind, state, delta)
    WHERE u.delta <> 0
    ORDER BY u.kind, u.state
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n;
    IF at_minute IS NOT NULL THEN
        INSERT INTO queue_finished_minutes AS m (minute, kind, state, shard, n, duration_ms_sum, duration_n)
        SELECT date_trunc('minute', at_minute), u.kind, u.state, pg_backend_pid() % 4, u.delta,
               coalesce(u.ms, 0), coalesce(u.timed, 0)
        FROM unnest(kinds, states, deltas, duration_sums, timed) AS u(kind, state, delta, ms, timed)
        WHERE u.delta > 0
        ORDER BY u.kind, u.state
        ON CONFLICT (minute, kind, state, shard) DO UPDATE
        SET n = m.n + excluded.n,
            duration_ms_sum = m.duration_ms_sum + excluded.duration_ms_sum,
            duration_n = m.duration_n + excluded.duration_n;
    END IF;
    RETURN coalesce((SELECT sum(d) FROM unnest(deltas) AS d), 0);
END
$$;
