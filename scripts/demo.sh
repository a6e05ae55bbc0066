#!/usr/bin/env bash
# `make demo`: the quickstart, end to end on this machine, against a local AWS emulator.
#   1. starts moto server (pinned, from .venv) on 127.0.0.1:$MOTO_PORT, stopped again on exit;
#   2. plan → apply → status for examples/user-created.yaml with the real engine and CLI
#      (the Lambda zips come from `make lambdas`, which make runs first);
#   3. creates a user through the writer's handler and follows the UserCreated event through
#      the relay's handler to the consumer's handler. The emulator cannot run Lambdas, so
#      dev/trigger plays the event source mapping and the rule's delivery (dev tooling only).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/demo-env.sh
source scripts/demo-env.sh

step "outbox-operator plan -f $manifest"
rc=0
"$operator" plan -f "$manifest" --exit-code || rc=$?
if [ "$rc" -ne 2 ]; then
  echo "expected plan to report pending changes (exit 2), got $rc" >&2
  exit 1
fi

step "outbox-operator apply -f $manifest"
"$operator" apply -f "$manifest" --timeout 3m

step "outbox-operator status -f $manifest"
"$operator" status -f "$manifest"
status_json="$target/demo-status.json"
"$operator" status -f "$manifest" -o json >"$status_json"

step "outbox-operator plan -f $manifest (a second look: nothing left to do)"
"$operator" plan -f "$manifest" --exit-code

step "create a user through the writer, follow its event to the consumer"
"$trigger" demo --status "$status_json"

step "outbox-operator status -f $manifest (after the event: is the pipeline Healthy?)"
"$operator" status -f "$manifest"
"$operator" status -f "$manifest" -o json >"$status_json"
healthy="$(python3 - "$status_json" <<'PY'
import json, sys
for status in json.load(open(sys.argv[1])).values():
    for c in status.get("conditions", []):
        if c["type"] == "Healthy":
            print(c["status"], c["reason"])
PY
)"
if [ "$healthy" != "True Flowing" ]; then
  echo "expected Healthy=True (Flowing) once the event went through, got: ${healthy:-no Healthy condition}" >&2
  exit 1
fi
