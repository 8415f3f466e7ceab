-- Hosts that asked us to back off (429, Retry-After): every job of the host waits, pool-wide,
-- not only the one that got the answer.
CREATE TABLE host_cooldowns (
    host   text PRIMARY KEY,
    -- no request to this host before this time
    until  timestamptz NOT NULL,
    reason text NOT NULL
);
