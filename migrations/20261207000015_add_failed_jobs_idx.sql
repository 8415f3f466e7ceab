-- no-transaction
-- The console's and `queue list --state failed`'s newest-first listing of failed jobs, paged by id:
-- without it, that listing walks the primary key backwards through every retained done job
-- (millions) to find a few failed ones. Failed jobs are few, so the index is small, and only a
-- job's move to or from `failed` touches it.
-- Built CONCURRENTLY (outside a transaction) so the workers' writes never wait for it; expand only.
CREATE INDEX CONCURRENTLY IF NOT EXISTS queue_jobs_failed_id_idx ON queue_jobs (id) WHERE state = 'failed';
