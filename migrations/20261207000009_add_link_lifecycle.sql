-- The link lifecycle of the links API: `paused` (never scheduled, never counted; an operator's
-- choice or a host rule's exclude pattern), and the reason a link has its status when someone or
-- something set it by hand (`paused by api`, `excluded by rule "…"`).
--
-- Expand only. The previous release never writes `paused`; while its producers still run they may
-- enqueue a check for a paused link (their selection does not know the status), and its workers
-- then write that check's result: a paused link can be checked once or twice during a rolling
-- upgrade, never paused or unpaused by it.
ALTER TABLE links DROP CONSTRAINT links_status_check;
ALTER TABLE links ADD CONSTRAINT links_status_check
    CHECK (status IN ('active', 'inaccessible', 'repo_unavailable', 'archived', 'paused')) NOT VALID;
ALTER TABLE links VALIDATE CONSTRAINT links_status_check;
ALTER TABLE links ADD COLUMN status_reason text;
