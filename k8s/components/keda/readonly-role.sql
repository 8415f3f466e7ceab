-- The database role KEDA's postgresql scaler logs in with: it can read queue_jobs and nothing
-- else. Run once in the linkpulse database as a role with CREATEROLE (or a superuser) that can
-- grant on queue_jobs (its owner), after `producer migrate`; then give it a password out of band,
-- e.g. in psql: \password linkpulse_keda
-- tests/tests/it/deploy.rs runs this file and the ScaledObject's query as this role.
CREATE ROLE linkpulse_keda LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 5;
GRANT USAGE ON SCHEMA public TO linkpulse_keda;
GRANT SELECT ON TABLE public.queue_jobs TO linkpulse_keda;
-- Read-only even if a later grant slips through, and never a long-running query.
ALTER ROLE linkpulse_keda SET default_transaction_read_only = on;
ALTER ROLE linkpulse_keda SET statement_timeout = '5s';
