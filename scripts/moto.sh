#!/usr/bin/env bash
# Start or stop the local AWS emulator (moto server, pinned, from the project's venv).
#   scripts/moto.sh start   -> starts it on 127.0.0.1:$MOTO_PORT unless already up, waits until it answers
#   scripts/moto.sh stop    -> stops the one this script started on that port
# Each port has its own pid and log file (.moto-PORT.pid, .moto-PORT.log), so a benchmark's
# emulator and a test run's can be started and stopped independently.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${MOTO_PORT:-5055}"
pidfile=".moto-${port}.pid"
logfile=".moto-${port}.log"
venv_python=".venv/bin/python"

# Answers when moto serves its API page (the venv's Python, so no curl is needed).
up() {
  "$venv_python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:${port}/moto-api/" 2>/dev/null
}

case "${1:-}" in
start)
  if up; then
    echo "moto already answers on 127.0.0.1:${port}"
    exit 0
  fi
  if [ ! -x "$venv_python" ]; then
    echo "error: $venv_python missing; run 'make venv' first" >&2
    exit 1
  fi
  nohup "$venv_python" dev/moto_server.py --host 127.0.0.1 --port "$port" >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if up; then
      echo "moto listening on 127.0.0.1:${port} (log: $logfile)"
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "error: moto exited during start-up; its log:" >&2
      cat "$logfile" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "error: moto did not answer on 127.0.0.1:${port} within 20 s" >&2
  exit 1
  ;;
stop)
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
