#!/usr/bin/env bash
# Refreshes requirements-lock.txt: resolves the newest releases pyproject.toml allows in a fresh venv, runs the whole
# suite on them, and only then writes the lock (commit it: an upgrade is a deliberate change). Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lock
rm -rf "$VENV"
VENV="$VENV" UNLOCKED=1 bash scripts/test.sh "$@"
{
    echo "# Exact versions of everything scripts/setup.sh installs (CPU, Linux x86_64, Python 3.11; extras engines,"
    echo "# server, test, ray), written by scripts/lock.sh after the suite passed on them (bash scripts/lock.sh)."
    # torch without its local tag (+cpu): the same pin then takes the CUDA build on a GPU machine.
    "$VENV/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
        | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > requirements-lock.txt.new
mv requirements-lock.txt.new requirements-lock.txt
echo "requirements-lock.txt written ($(grep -c '==' requirements-lock.txt) packages), tested in $VENV" >&2
