#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs the Debian packages the tests need
# (redis-server), the virtualenv and the Python packages, then runs pytest. Extra arguments go
# to pytest (e.g. scripts/test.sh tests/unit -k bucket); without arguments ruff checks fastproxy/
# and mypy --strict the typed packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
if [ $# -eq 0 ]; then  # the whole suite: lint, and the typed packages must type-check too
  echo "ruff check fastproxy/ (pyproject.toml [tool.ruff]):"
  .venv/bin/python -m ruff check fastproxy
  echo "mypy --strict on the typed packages (pyproject.toml [tool.mypy] files):"
  .venv/bin/python -m mypy
fi
exec .venv/bin/python -m pytest -q "$@"
