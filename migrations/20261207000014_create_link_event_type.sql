-- The type of a link's status transition, in one place for every statement that writes an event
-- (the check write-back, the refresh write-back, a change by hand), which each carried their own
-- slightly different CASE. `link.down`: the link became inaccessible or its repository unavailable;
-- `link.up`: it became active again, other than by lifting a pause (a pause lifted by hand is a
-- change of schedule, not a recovery); anything else is `link.changed`. IMMUTABLE SQL, so the
-- planner inlines it: no function call per row.
--
-- Expand only: the previous release's statements keep their own CASE, which gives the same types
-- for every transition they make.
CREATE FUNCTION link_event_type(from_status text, to_status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN to_status IN ('inaccessible', 'repo_unavailable')
             AND from_status NOT IN ('inaccessible', 'repo_unavailable') THEN 'link.down'
        WHEN to_status = 'active' AND from_status NOT IN ('active', 'paused') THEN 'link.up'
        ELSE 'link.changed'
    END
$$;
