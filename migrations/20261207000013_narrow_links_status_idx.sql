-- Cheaper check write-backs: `links_status_idx` only for the statuses anyone looks up by it.
--
-- A check's write-back changes `last_checked_at`, which `links_check_due_idx` (the producer's due
-- selection) indexes, so its update of the link can never be HOT and adds an entry to every index
-- of `links` whose predicate the row meets. A full index on (status, id) took one such entry per
-- check although the status hardly ever changes. The lookups by status are the "what died"
-- reports (`links list --status inaccessible`, the API's status filter); the bulk of the table,
-- `active`, is listed in id order by the primary key as fast as by this index. A partial index
-- leaves active links out, so a check of an active link (nearly every check) no longer writes it.
--
-- Expand only in effect: no statement of the previous release changes, and its queries that
-- filter on a status other than `active` still use an index of the same shape. The new index is
-- built in this migration's transaction, which blocks writes to `links` for one scan of the table
-- (write-backs wait, they do not fail).
CREATE INDEX links_status_nonactive_idx ON links (status, id) WHERE status <> 'active';
DROP INDEX links_status_idx;
ALTER INDEX links_status_nonactive_idx RENAME TO links_status_idx;
