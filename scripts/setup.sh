#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with fastproxy and its test dependencies; with
# --system also the Debian packages the tests and benchmarks use (redis-server, wrk, nginx).
# Says what it does while it installs (the first run takes a while); prints nothing when
# everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--system" ]; then
  need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]} with apt-get..."
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (first run, about 20 s)..."
  "$PY" -m venv .venv
fi
stamp=.venv/.fastproxy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "setup: installing fastproxy and its dependencies into .venv..."
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'  # compiles the hot modules in place (setup.py)
  touch "$stamp"
  echo "setup: done, .venv is ready"
fi
# The compiled hot modules (COMPILED in fastproxy/_extensions.py) must match their sources: when
# a .py or .pxd differs from what its extension was built from (or an extension is missing),
# rebuild them in place, so that an edit never leaves a stale .so being imported.
current() { .venv/bin/python -c 'import sys, fastproxy._extensions as e; sys.exit(e.main())'; }
if ! why=$(current); then
  echo "setup: rebuilding the C extensions (${why%%$'\n'*})..."
  .venv/bin/python setup.py -q build_ext --inplace >/dev/null
  current >/dev/null  # exits 1 (set -e) if they are still not current
  echo "setup: C extensions rebuilt"
fi
