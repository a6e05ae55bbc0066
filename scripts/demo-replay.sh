#!/usr/bin/env bash
# `make demo-replay`: nothing parked for good, end to end on this machine.
#   1. apply examples/user-created.yaml against the local emulator (as `make demo`);
#   2. create a user while the relay cannot publish (dev/trigger points it at an unreachable
#      bus): after its retries the event source mapping parks the batch in the failure bucket,
#      exactly as Lambda writes it (the invocation record with the batch);
#   3. status shows Healthy=False BatchesParked; `replay --dry-run` shows what would be
#      published and changes nothing; `replay` publishes it through the relay's code; a second
#      `replay` finds nothing;
#   4. the consumer receives the recovered event (the SQS tap on the bus, as in `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-env.sh
source scripts/demo-env.sh

expect() {
  local want="$1" rc=0
  shift
  "$@" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "expected exit $want from: $*, got $rc" >&2
    exit 1
  fi
}

step "outbox-operator apply -f $manifest"
"$operator" apply -f "$manifest" --timeout 3m
status_json="$target/demo-replay-status.json"
"$operator" status -f "$manifest" -o json >"$status_json"

step "create a user while the relay cannot publish: the batch is parked"
"$trigger" demo --status "$status_json" --fail-publish --username grace --email grace@example.com

step "outbox-operator status -f $manifest (the parked batch shows)"
"$operator" status -f "$manifest"

step "outbox-operator replay -f $manifest --dry-run (exit 2: batches would be replayed)"
expect 2 "$operator" replay -f "$manifest" --dry-run

step "outbox-operator replay -f $manifest"
expect 0 "$operator" replay -f "$manifest"

step "outbox-operator replay -f $manifest (again: nothing left)"
expect 0 "$operator" replay -f "$manifest"

step "the consumer receives the recovered event"
"$trigger" deliver --status "$status_json"
