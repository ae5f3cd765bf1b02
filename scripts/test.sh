#!/usr/bin/env bash
# Run the whole test suite, on SQLite and then on PostgreSQL, against the real Docker
# engine. Installs and starts what it needs. Safe to run twice.
set -euo pipefail
# install.sh takes extra Debian packages as arguments: give it none of pytest's.
args=("$@")
set --
source "$(dirname "${BASH_SOURCE[0]}")/install.sh"
pg_url=$(./scripts/start-postgres.sh)

status=0
echo "==> tests on SQLite"
DOCKYARD_TEST_DB=sqlite .venv/bin/python -m pytest -q -p no:cacheprovider "${args[@]}" || status=1
echo "==> tests on PostgreSQL (the modules whose subject is the database: BOTH_DATABASES in tests/conftest.py)"
DOCKYARD_TEST_DB="$pg_url" .venv/bin/python -m pytest -q -p no:cacheprovider "${args[@]}" || status=1
exit $status
