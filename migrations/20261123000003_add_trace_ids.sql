-- The trace of the job that wrote a link's latest check or refresh result (32 hex digits, the W3C
-- trace id): `links show` and the dashboard link it to Jaeger, where the producer's cycle, the
-- queue wait, the worker's attempts, every request and the write-back are one trace.
-- No index: it is read with its row, never searched.
ALTER TABLE links ADD COLUMN last_trace_id text;
