#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs the Debian packages the tests need
# (redis-server), the virtualenv and the Python packages (compiling the hot modules), then:
# ruff checks fastproxy/, mypy --strict the typed packages, and pytest runs the whole suite
# twice, compiled and then interpreted (FASTPROXY_NO_EXTENSIONS=1). Extra arguments go to a
# single pytest run in the current mode (e.g. scripts/test.sh tests/unit -k bucket, or
# FASTPROXY_NO_EXTENSIONS=1 scripts/test.sh tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
echo "ruff check fastproxy/ (pyproject.toml [tool.ruff]):"
.venv/bin/python -m ruff check fastproxy
echo "mypy --strict on the typed packages (pyproject.toml [tool.mypy] files):"
.venv/bin/python -m mypy
status=0
echo "pytest, compiled:"
env -u FASTPROXY_NO_EXTENSIONS .venv/bin/python -m fastproxy version | tail -1  # exits 1 on a stale build
env -u FASTPROXY_NO_EXTENSIONS .venv/bin/python -m pytest -q || status=1
echo "pytest, interpreted (FASTPROXY_NO_EXTENSIONS=1):"
FASTPROXY_NO_EXTENSIONS=1 .venv/bin/python -m pytest -q || status=1
[ "$status" = 0 ] && echo "test.sh: the suite passed compiled and interpreted" || echo "test.sh: FAILED (see above)"
exit "$status"
