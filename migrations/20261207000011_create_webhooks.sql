-- Webhooks: endpoints that receive link events (`link_events`, the outbox), and per endpoint and
-- link the last event delivered.
--
-- How an event travels: the producer's leader claims undispatched events (`FOR UPDATE SKIP
-- LOCKED`), enqueues one `deliver` job per subscribed endpoint and link (dedupe key
-- `deliver:<webhook>:<link>`, so at most one such job is queued or running) and marks the events
-- dispatched, in one transaction. The job, when it runs, reads the cursor below and posts every
-- later event of that link to that endpoint in `seq` order, advancing the cursor after each 2xx
-- and stopping at the first failure (the job then retries with the queue's backoff), so a later
-- event never overtakes an earlier one. An event arriving while the pair's job is *running* stays
-- undispatched until that job has finished (the running job may have read its events already);
-- one arriving while the job is queued is picked up by it.
--
-- Expand only: new tables, read by nothing of the previous release.

CREATE TABLE webhooks (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- where deliveries are POSTed; checked by the network guard when added and on every delivery
    url                   text        NOT NULL CHECK (url <> ''),
    -- the event types this endpoint subscribed to (`ping` needs no subscription)
    events                text[]      NOT NULL
                          CHECK (cardinality(events) > 0
                                 AND events <@ ARRAY['link.down', 'link.up', 'link.changed']),
    -- HMAC-SHA256 key of `X-Linkpulse-Signature` (64 hex digits). Stored as is: signing needs the
    -- key itself, so a hash would not do; shown once, by `webhooks add` / `rotate`.
    secret                text        NOT NULL CHECK (secret <> ''),
    -- the key before the last rotation: it signs too (a second `v1=`) until previous_secret_until,
    -- so receivers can switch keys without losing deliveries
    previous_secret       text,
    previous_secret_until timestamptz,
    -- a disabled endpoint gets no new deliveries and its pending jobs end without posting
    enabled               boolean     NOT NULL DEFAULT true,
    -- why it was disabled (failing for LINKPULSE_WEBHOOK_DISABLE_AFTER), shown by `webhooks list`
    disabled_reason       text,
    -- start of the current run of failed deliveries (null after a success): what
    -- LINKPULSE_WEBHOOK_DISABLE_AFTER is measured from
    failing_since         timestamptz,
    last_success_at       timestamptz,
    -- the last failed delivery's reason (status or transport error), null after a success
    last_error            text,
    -- events created before this are not delivered: an endpoint receives what happens after it
    -- was added, not the history
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- who added it: `cli:<user>`, `api`
    created_by            text        NOT NULL,
    CONSTRAINT webhooks_previous_secret_complete
        CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL))
);

-- The dispatcher and the disable sweep read the enabled endpoints (a handful of rows): no index
-- beyond the primary key.

-- Per endpoint and link, the last event delivered: where the next `deliver` job starts. No foreign
-- key to links: events outlive their link, and so does the position of their delivery (a deleted
-- link's remaining events are still delivered, and never twice).
CREATE TABLE webhook_cursors (
    webhook_id   bigint      NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    link_id      bigint      NOT NULL,
    -- `link_events.seq` of the last event this endpoint answered 2xx for (events of types it
    -- does not subscribe to are passed over, not counted)
    last_seq     bigint      NOT NULL CHECK (last_seq > 0),
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, link_id)
);
