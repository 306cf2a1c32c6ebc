#!/usr/bin/env bash
# Run fastproxy on the shipped default configuration (config/fastproxy.json), together with the
# demo backend it proxies to (scripts/demo_upstream.py on 127.0.0.1:8081). Ctrl-C stops both.
# Extra arguments go to `fastproxy run` (e.g. -p 9000, -w 2, --log-level debug).
# If the demo backend cannot listen on 8081, nothing is started: fastproxy would proxy to
# whatever else answers there, or to nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
demo_port=8081
# the demo backend prints one line once it listens; its errors go to the terminal
exec {demo_out}< <(exec .venv/bin/python scripts/demo_upstream.py --port "$demo_port")
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
if ! read -r -t 15 -u "$demo_out" line || [[ $line != "demo backend listening on "* ]]; then
  echo "scripts/run.sh: the demo backend could not start on 127.0.0.1:$demo_port, so fastproxy was not" \
       "started (config/fastproxy.json proxies to it). Stop what holds the port, or run" \
       "'.venv/bin/fastproxy run -c FILE' on a configuration of your own." >&2
  exit 1
fi
echo "$line"
.venv/bin/fastproxy run -c config/fastproxy.json "$@"
