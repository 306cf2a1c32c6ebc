#!/usr/bin/env bash
# Run fastproxy on the shipped default configuration (config/fastproxy.json), together with the
# demo backend it proxies to (scripts/demo_upstream.py on 127.0.0.1:8081). Ctrl-C stops both.
# Extra arguments go to `fastproxy run` (e.g. -p 9000, -w 2, --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python scripts/demo_upstream.py --port 8081 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
.venv/bin/fastproxy run -c config/fastproxy.json "$@"
