-- The audit trail of a job: what its latest attempt found and how long it ran. Written by
-- job_complete_many with the outcome, so a finished job (kept until LINKPULSE_RETAIN_DONE /
-- LINKPULSE_RETAIN_FAILED) says what happened without a trip to the links table or the traces.
ALTER TABLE queue_jobs
    -- ok, dead, transient, blocked, not_modified (the handler's finding); snoozed (put off before
    -- doing anything, e.g. its host cooling down); error (failed without a finding: poison
    -- payload, panic, timeout)
    ADD COLUMN result_class text,
    -- HTTP status of the final response, when there was one
    ADD COLUMN status_code  integer,
    -- the handler's reason for any result but ok ("HTTP 404: Not Found", "no such host"): a done
    -- check that found a dead link has no error of its own, only this
    ADD COLUMN result_detail text,
    -- wall time of the latest attempt, from the handler's start to its outcome
    ADD COLUMN duration_ms  integer CHECK (duration_ms >= 0);

