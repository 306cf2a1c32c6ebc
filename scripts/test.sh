#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs the Debian packages the tests need
# (redis-server), the virtualenv and the Python packages, then runs pytest. Extra arguments go
# to pytest (e.g. scripts/test.sh tests/unit -k bucket).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
exec .venv/bin/python -m pytest -q "$@"
