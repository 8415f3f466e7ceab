-- Saved links and everything the check and refresh jobs write back.
CREATE TABLE links (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- normalised (lower-case scheme and host, default port and fragment removed); see links/url.rs
    url                  text        NOT NULL UNIQUE,
    -- host of url: the queue's concurrency group for this link's jobs
    host                 text        NOT NULL,
    status               text        NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'inaccessible', 'repo_unavailable', 'archived')),
    title                text,
    description          text,
    favicon_url          text,
    image_url            text,
    site_name            text,
    -- GitHub repository links (owner/repo parsed from url; renamed repos store the new name)
    github_owner         text,
    github_repo          text,
    github_stars         integer,
    github_description   text,
    github_archived      boolean,
    github_pushed_at     timestamptz,
    github_etag          text,
    -- conditional refresh of the page itself
    http_etag            text,
    http_last_modified   text,
    consecutive_failures integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_status_code     integer,
    -- outcome class of the last check: ok, dead, transient, blocked
    last_outcome         text CHECK (last_outcome IN ('ok', 'dead', 'transient', 'blocked')),
    last_error           text,
    last_checked_at      timestamptz,
    -- the job whose result was written last: replaying the same job (a rescued attempt that
    -- finished twice) changes nothing, so write-backs are idempotent
    last_check_job_id    bigint,
    last_refresh_job_id  bigint,
    refreshed_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- link_select_due_checks: links never checked come first, then the longest unchecked.
-- `coalesce(.., '-infinity')` makes "never" the smallest value so one index serves both, in order.
CREATE INDEX links_check_due_idx ON links ((coalesce(last_checked_at, '-infinity'::timestamptz)), id);

-- link_select_due_refreshes: same shape for metadata refreshes.
CREATE INDEX links_refresh_due_idx ON links ((coalesce(refreshed_at, '-infinity'::timestamptz)), id);

-- links list --status: the "what died" report.
CREATE INDEX links_status_idx ON links (status, id);
