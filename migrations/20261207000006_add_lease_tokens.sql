-- Lease tokens and runs.
--
-- A lease token is minted by every claim; every completion, release and link write-back names the
-- token of the lease it acts for. (owner, attempt) alone was not unique: a snooze refunds the
-- attempt, so claim → snooze → re-claim by the same worker repeated the pair, and a replayed
-- acknowledgement of the first lease hit the second.
--
-- A run id names one run of a job: minted when the job is inserted and again when an operator
-- requeues it, kept across the retries of that run. Write-backs are idempotent per run (a retry
-- whose earlier attempt's write did commit changes nothing), while a requeued job writes its new
-- result instead of being taken for a replay.
--
-- Expand only: the previous release's workers neither set nor read these columns and keep working
-- (their fencing by owner and attempt is still checked alongside the token). No table rewrite:
-- the columns are nullable and the default applies to new rows only; a claim fills a missing run.
ALTER TABLE queue_jobs
    -- the current lease's token while running; NULL otherwise (cleared whenever a job leaves
    -- running, so a stale token never matches again)
    ADD COLUMN lease_token uuid,
    -- the current run (see above)
    ADD COLUMN run_id uuid;
ALTER TABLE queue_jobs ALTER COLUMN run_id SET DEFAULT gen_random_uuid();

-- The run whose check and refresh results a link holds: a replayed write of the same run changes
-- nothing.
ALTER TABLE links
    ADD COLUMN last_check_run   uuid,
    ADD COLUMN last_refresh_run uuid;
