#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/demo-replay.sh (sourced, not run): the emulator's
# environment, the binaries, moto started on 127.0.0.1:$MOTO_PORT and stopped on exit, `step`.
# shellcheck disable=SC2034 # the variables are used by the scripts that source this one
port="${MOTO_PORT:-5055}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
manifest="${DEMO_MANIFEST:-examples/user-created.yaml}"
operator="$target/debug/outbox-operator"
trigger="$target/debug/outbox-local-trigger"

export AWS_ENDPOINT_URL="http://127.0.0.1:${port}"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN
export OUTBOX_CLUSTER_ID=demo
export OUTBOX_ARTIFACTS_DIR="${ARTIFACTS:-$target/artifacts}"

MOTO_PORT="$port" scripts/moto.sh start
trap 'MOTO_PORT="$port" scripts/moto.sh stop' EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
