-- Paused job kinds: an operator's "stop running these for now" (`producer queue pause KIND`).
--
-- While a kind has a row here, job_claim_batch leases none of its jobs: queued ones wait (they
-- keep their place, run_at and attempts), running ones finish as usual, and producers keep
-- enqueueing (dedupe bounds the backlog to one job per link and kind). Deleting the row
-- (`queue resume`) sends the queue's NOTIFY, so idle workers claim the kind again at once.
--
-- A table rather than a flag on queue_jobs: pausing must not touch the jobs (a backlog of
-- thousands would be rewritten twice), and the claim reads the few rows once per statement
-- (`kind <> ALL (ARRAY(SELECT kind FROM queue_paused_kinds))`), never per job.
--
-- Expand only: the previous release's workers do not read this table, so during a rolling
-- upgrade they keep claiming a paused kind until they are replaced. Pause only once every worker
-- runs this release (or pause by scaling those workers down).
CREATE TABLE queue_paused_kinds (
    -- the job kind (queue_jobs.kind) no worker may claim
    kind      text        PRIMARY KEY CHECK (kind <> ''),
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- who paused it: "cli:<user>", "api", …
    paused_by text        NOT NULL,
    -- the operator's reason, shown by `queue stats` and `GET /api/queue/paused`
    reason    text
);
-- No index beyond the primary key: the table holds at most one row per kind, and the claim reads
-- all of them.
