#!/usr/bin/env bash
# The test command: every unit and integration test against a real PostgreSQL (a fresh database
# per test, created and dropped by sqlx::test on the server of DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
scripts/ensure-postgres.sh
cargo test --workspace --locked "$@"
# Tests that need most of the server's connections (dozens of worker processes) run alone, after
# the rest: they are #[ignore]d in the parallel run above.
cargo test -p integration-tests --test it --locked "$@" -- --ignored --test-threads=1
