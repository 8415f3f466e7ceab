-- A link's history: its status transitions (`link_events`, also the webhooks' outbox) and its
-- recent check verdicts (`link_verdicts`, the last LINKPULSE_HISTORY_PER_LINK per link).
--
-- An event row is written in the same statement (so the same transaction) as the transition it
-- records: no event without its transition, no transition without its event. Events are kept for
-- LINKPULSE_RETAIN_EVENTS (the prune schedule deletes older ones), also after their link is
-- deleted (no foreign key: the history outlives the link; `url` keeps what it was).
--
-- Expand only: the previous release's workers write transitions without events while they still
-- run; those transitions are simply not in the history or the webhooks.

-- Per-link sequence of events: `seq` of the next event is `event_seq + 1`, taken in the UPDATE
-- that makes the transition (the row lock orders concurrent transitions of one link).
ALTER TABLE links ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE link_events (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    link_id       bigint      NOT NULL,
    -- increases by one per event of a link; webhooks deliver one link's events in this order
    seq           bigint      NOT NULL,
    url           text        NOT NULL,
    -- link.down (to inaccessible or repo_unavailable), link.up (back to active), link.changed
    type          text        NOT NULL CHECK (type IN ('link.down', 'link.up', 'link.changed')),
    from_status   text        NOT NULL,
    to_status     text        NOT NULL,
    reason        text,
    -- the job whose result made the transition, or null for a manual one
    job_id        bigint,
    -- who asked, for a manual transition (`cli:alice`, `api`, `dashboard`, `rule`)
    actor         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- the outbox: set once the deliveries of this event to every subscribed webhook are enqueued
    dispatched_at timestamptz,
    CONSTRAINT link_events_seq_key UNIQUE (link_id, seq)
);

-- The outbox: events whose deliveries are not enqueued yet, oldest first.
CREATE INDEX link_events_undispatched_idx ON link_events (id) WHERE dispatched_at IS NULL;
-- Retention (prune, oldest first).
CREATE INDEX link_events_created_idx ON link_events (created_at);

-- The last N check verdicts per link (N = LINKPULSE_HISTORY_PER_LINK, default 30): "dead since",
-- the last good check and the share of ok checks over the kept history. No foreign key: every
-- check's write-back inserts a row, and the per-row key check cost a third of that statement;
-- removing a link deletes its verdicts in the same statement instead.
CREATE TABLE link_verdicts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    link_id     bigint      NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    -- ok, dead, transient, blocked (as links.last_outcome)
    outcome     text        NOT NULL,
    status_code integer,
    duration_ms double precision,
    error       text,
    job_id      bigint
);
CREATE INDEX link_verdicts_link_idx ON link_verdicts (link_id, checked_at DESC);
