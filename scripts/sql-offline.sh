#!/usr/bin/env bash
# The compile-time checked SQL's offline data (.sqlx/): every static statement (`sqlx::query!` and
# friends) is checked against a database freshly migrated from migrations/, and the result is what
# builds use (SQLX_OFFLINE=true in .cargo/config.toml), so a build never needs a database.
#
#   scripts/sql-offline.sh          regenerate .sqlx/ after changing a statement or a migration
#   scripts/sql-offline.sh --check  fail if .sqlx/ does not match the code and the migrations (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=linkpulse_sqlx_offline
url="${base%/*}/$db"
scripts/ensure-postgres.sh
if ! command -v cargo-sqlx >/dev/null 2>&1; then
  echo "installing sqlx-cli" >&2
  cargo install sqlx-cli --version 0.9.0 --no-default-features --features postgres,rustls --locked
fi
psql "$base" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
trap 'psql "$base" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
cargo sqlx migrate run --source migrations -D "$url"
DATABASE_URL="$url" SQLX_OFFLINE=false cargo sqlx prepare --workspace "$@" -- --all-targets
