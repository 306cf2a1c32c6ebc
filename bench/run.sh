#!/usr/bin/env bash
# fastproxy benchmark suite: one command. See bench/README.md.
#
#   bench/run.sh            full run: 3 repetitions (~7-8 minutes)
#   bench/run.sh --quick    1 repetition, short runs (~1-2 minutes)
#   bench/run.sh --help     every option of bench/harness.py
#
# Installs what is missing (wrk, nginx, haproxy, taskset from Debian packages; the venv through
# scripts/setup.sh), raises the open-files limit, runs bench/harness.py and makes sure every
# server it started is gone on exit, error, Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) exec python3 bench/harness.py --help ;;
esac

# --- system packages -------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the certificate of the https scenarios
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "[bench] installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the Debian packages start a system nginx/haproxy on port 80: they are not used here
  for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $SUDO systemctl stop "$svc" || true
    fi
  done
fi
export PATH="$PATH:/usr/sbin:/sbin"

# --- virtualenv ------------------------------------------------------------------------------
scripts/setup.sh

if [ "$(nproc)" -lt 2 ]; then
  echo "[bench] warning: $(nproc) CPU: the proxy and the load generator cannot have a core each" >&2
fi

# --- open files: 10,000 idle connections need more than the usual 1024 ------------------------
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true

# --- run, with a safety net for servers left behind ----------------------------------------------
pidfile=$(mktemp /tmp/fastproxy-bench-pids.XXXXXX)
harness_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # each line: pid and start time of a server (the leader of its own process group)
  local left=()
  while read -r pid start; do
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || continue
    now=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $20}')
    [ "$now" = "$start" ] || continue   # pid reused by someone else: not ours
    echo "[bench] stopping leftover server pid $pid" >&2
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    left+=("$pid")
  done < "$pidfile"
  if [ ${#left[@]} -gt 0 ]; then
    sleep 2
    for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  fi
  rm -f "$pidfile"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The harness runs in the background so that this shell's traps fire at once on a signal;
# `wait` returns early on a trapped signal, then cleanup stops the harness and any leftovers.
.venv/bin/python bench/harness.py --pidfile "$pidfile" "$@" &
harness_pid=$!
wait "$harness_pid"
