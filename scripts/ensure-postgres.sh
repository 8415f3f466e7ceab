#!/usr/bin/env bash
# Makes sure a PostgreSQL answers at $DATABASE_URL's server (default 127.0.0.1:5432): starts the
# machine's cluster if it is installed but stopped, installs PostgreSQL from Debian if missing.
set -euo pipefail
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "installing postgresql client and server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
ready && exit 0

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "installing postgresql server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version cluster 'main'" >&2
conf=/etc/postgresql/$version/main
# trust auth on loopback for the local user postgres, as the tests expect
if ! grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf/pg_hba.conf"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  ready && exit 0
  sleep 1
done
echo "PostgreSQL did not come up on $host:$port" >&2
exit 1
