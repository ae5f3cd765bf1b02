#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests (as the postgres user; it refuses root).
# Prints the admin URL. Safe to run twice.
set -euo pipefail
PGDATA="${PGDATA:-/var/tmp/dockyard-pg}"
PGPORT="${PGPORT:-54329}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres "$PGDATA"
  su postgres -s /bin/sh -c "$bin/initdb -D $PGDATA -U postgres --auth=trust -E UTF8" >/dev/null
fi
if ! su postgres -s /bin/sh -c "$bin/pg_ctl -D $PGDATA status" >/dev/null 2>&1; then
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $PGDATA -l $PGDATA/server.log -w \
    -o '-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off' start" >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PGPORT/postgres"
