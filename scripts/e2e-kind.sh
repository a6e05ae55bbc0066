#!/usr/bin/env bash
# End-to-end on your own machine: a kind cluster, LocalStack beside it, the operator image built
# from this checkout and installed with the Helm chart, then the users' path:
#   apply examples/user-created.yaml -> wait for Ready -> invoke the writer Lambda ->
#   find the UserCreated event in the consumer Lambda's CloudWatch logs.
# Needs Docker, kind, kubectl, helm, the AWS CLI and curl. CI cannot run it (no Docker engine).
#
# What it does not test: LocalStack's free image does not enforce IAM, so the operator runs with
# dummy credentials that may do anything there, and the least-privilege policy
# (docs/operator-iam-policy.json) and the roles' permissions boundary are not exercised.
#
# Everything this run creates is removed on exit, also on failure; KEEP=1 keeps the cluster and
# LocalStack for a look around. Settings (environment):
#   CLUSTER_NAME       kind cluster to create (default outbox-e2e; must not exist yet)
#   LOCALSTACK_IMAGE   LocalStack image (default localstack/localstack:4.14.0, pinned: it is the
#                      last tag that starts without an account; later tags refuse to start
#                      without LOCALSTACK_AUTH_TOKEN)
#   LOCALSTACK_AUTH_TOKEN  passed to LocalStack when set (needed for tags after 4.14.0)
#   LOCALSTACK_PORT    host port for LocalStack (default 4566, bound to 127.0.0.1)
#   DOCKER_SOCKET      the container engine's socket, as a path on the machine the engine runs on:
#                      LocalStack starts the Lambdas as containers through it. Default: the
#                      unix:// path of DOCKER_HOST (else of the current docker context) when the
#                      engine runs on this Linux machine (Docker, rootless Docker, Podman);
#                      /var/run/docker.sock otherwise, its path inside the VM of Docker Desktop
#                      and Colima. Set it for Podman machine (the path inside the VM:
#                      podman machine ssh -- podman info --format '{{.Host.RemoteSocket.Path}}').
#   LAMBDA_ARM64       1 (default) builds the arm64 Lambda zips into the image too, as released;
#                      0 builds x86_64 only, faster (the example pipeline runs on x86_64)
#   AWS_E2E_REGION     region for the operator and the CLI (default us-east-1)
#   READY_TIMEOUT      how long to wait for the pipeline to be Ready (default 10m)
#   EVENT_TIMEOUT      seconds to wait for the event in the consumer's logs (default 180)
#   WRITER_PAYLOAD     JSON the writer is invoked with (default: a new user)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME=${CLUSTER_NAME:-outbox-e2e}
LOCALSTACK_IMAGE=${LOCALSTACK_IMAGE:-localstack/localstack:4.14.0}
LOCALSTACK_NAME=${CLUSTER_NAME}-localstack
LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
REGION=${AWS_E2E_REGION:-us-east-1}
READY_TIMEOUT=${READY_TIMEOUT:-10m}
EVENT_TIMEOUT=${EVENT_TIMEOUT:-180}
KEEP=${KEEP:-0}
IMAGE=outbox-operator:e2e
RELEASE=outbox-operator
NAMESPACE=outbox-system
SECRET=localstack-credentials
EXAMPLE=examples/user-created.yaml
WRITER_PAYLOAD=${WRITER_PAYLOAD:-"{\"username\":\"e2e-$(date +%s)\",\"email\":\"e2e@example.com\",\"displayName\":\"E2E user\"}"}

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

# The socket LocalStack mounts to start Lambda containers: a path where the engine runs, which is
# not always where this script runs (see DOCKER_SOCKET above).
docker_socket() {
  if [ -n "${DOCKER_SOCKET:-}" ]; then
    printf '%s\n' "$DOCKER_SOCKET"
    return
  fi
  local host=${DOCKER_HOST:-} engine_os
  if [ -z "$host" ]; then
    # The current docker context (rootless Docker sets one); the podman-docker shim has none.
    host=$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)
  fi
  engine_os=$(docker info --format '{{.OperatingSystem}}' 2>/dev/null || true)
  case "$host" in
    "" | unix://*) ;;
    *) die "the engine is at $host, not a local unix socket: set DOCKER_SOCKET to its socket's path on the engine's machine" ;;
  esac
  if [ -n "$host" ] && [ "$(uname -s)" = Linux ] && [[ "$engine_os" != *"Docker Desktop"* ]]; then
    printf '%s\n' "${host#unix://}"
  else
    printf '%s\n' /var/run/docker.sock
  fi
}

# The AWS CLI against LocalStack with its dummy credentials, never a profile of yours.
awsls() {
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_PAGER= \
    aws --endpoint-url "http://127.0.0.1:${LOCALSTACK_PORT}" --region "$REGION" "$@"
}

# --- prerequisites --------------------------------------------------------------------------
missing=()
for cmd in docker kind kubectl helm aws curl; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
[ ${#missing[@]} -eq 0 ] || die "missing on PATH: ${missing[*]} (needs Docker, kind, kubectl, helm, the AWS CLI and curl)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine: is Docker running, and may this user use it?"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  die "kind cluster '$CLUSTER_NAME' already exists: delete it (kind delete cluster --name $CLUSTER_NAME) or set CLUSTER_NAME"
fi
if docker container inspect "$LOCALSTACK_NAME" >/dev/null 2>&1; then
  die "a container named '$LOCALSTACK_NAME' already exists: remove it (docker rm -f $LOCALSTACK_NAME)"
fi
[ -f "$EXAMPLE" ] || die "$EXAMPLE not found"

# --- teardown, also on failure --------------------------------------------------------------
created_cluster=0
created_localstack=0
kube() { kubectl --context "kind-${CLUSTER_NAME}" "$@"; }

diagnose() {
  log "failed: state for diagnosis"
  kube get outboxpipelines -A -o yaml || true
  kube -n "$NAMESPACE" get pods -o wide || true
  kube -n "$NAMESPACE" logs "deployment/${RELEASE}" --tail=200 || true
  kube get events -A --sort-by=.lastTimestamp | tail -n 40 || true
  docker logs --tail 100 "$LOCALSTACK_NAME" || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -eq 0 ] || diagnose
  if [ "$KEEP" = "1" ]; then
    log "KEEP=1: leaving kind cluster '$CLUSTER_NAME' and container '$LOCALSTACK_NAME'"
    echo "  kubectl --context kind-${CLUSTER_NAME} get outboxpipelines -A"
    echo "  AWS endpoint for the CLI: http://127.0.0.1:${LOCALSTACK_PORT} (credentials test/test)"
    echo "  clean up: kind delete cluster --name ${CLUSTER_NAME}; docker rm -f ${LOCALSTACK_NAME}"
    exit "$rc"
  fi
  log "tearing down"
  if [ "$created_localstack" = "1" ]; then
    # A graceful stop lets LocalStack remove the Lambda containers it started.
    docker stop -t 30 "$LOCALSTACK_NAME" >/dev/null 2>&1 || true
    docker rm -f "$LOCALSTACK_NAME" >/dev/null 2>&1 || true
  fi
  if [ "$created_cluster" = "1" ]; then
    kind delete cluster --name "$CLUSTER_NAME" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cluster and LocalStack -----------------------------------------------------------------
log "creating kind cluster $CLUSTER_NAME"
created_cluster=1
kind create cluster --name "$CLUSTER_NAME" --wait 180s

docker_sock=$(docker_socket)
log "starting $LOCALSTACK_IMAGE on the kind network (engine socket: $docker_sock)"
localstack_args=(
  --detach --name "$LOCALSTACK_NAME"
  --network kind
  --publish "127.0.0.1:${LOCALSTACK_PORT}:4566"
  # Lambdas run as sibling containers on the same network, so they reach LocalStack too.
  --env LAMBDA_DOCKER_NETWORK=kind
  --volume "${docker_sock}:/var/run/docker.sock"
)
if [ -n "${LOCALSTACK_AUTH_TOKEN:-}" ]; then
  # Passed by name, so the token never shows in a process list.
  localstack_args+=(--env LOCALSTACK_AUTH_TOKEN)
fi
created_localstack=1
docker run "${localstack_args[@]}" "$LOCALSTACK_IMAGE" >/dev/null

deadline=$((SECONDS + 120))
until curl -fsS "http://127.0.0.1:${LOCALSTACK_PORT}/_localstack/health" >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "LocalStack did not become healthy within 120s"
  sleep 2
done
# Without the engine's socket LocalStack accepts CreateFunction but cannot run a Lambda; say so
# now rather than after a 10-minute wait for Ready.
docker exec "$LOCALSTACK_NAME" test -S /var/run/docker.sock ||
  die "$docker_sock is not the engine's socket (LocalStack sees no socket there): set DOCKER_SOCKET"
# Pods reach LocalStack by its address on the kind network (no DNS needed).
localstack_ip=$(docker inspect -f '{{ (index .NetworkSettings.Networks "kind").IPAddress }}' "$LOCALSTACK_NAME")
[ -n "$localstack_ip" ] || die "LocalStack has no address on the kind network"
endpoint="http://${localstack_ip}:4566"
echo "LocalStack: $endpoint (from pods), http://127.0.0.1:${LOCALSTACK_PORT} (from here)"

# --- the operator ---------------------------------------------------------------------------
log "building $IMAGE (operator and Lambda zips) and loading it into kind"
docker build --build-arg "LAMBDA_ARM64=${LAMBDA_ARM64:-1}" -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

log "installing the chart"
kube create namespace "$NAMESPACE"
kube -n "$NAMESPACE" create secret generic "$SECRET" \
  --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test
helm --kube-context "kind-${CLUSTER_NAME}" install "$RELEASE" charts/outbox-operator \
  --namespace "$NAMESPACE" \
  --set clusterId="kind-${CLUSTER_NAME}" \
  --set aws.region="$REGION" \
  --set aws.endpointUrl="$endpoint" \
  --set aws.existingSecret="$SECRET" \
  --set image.repository="${IMAGE%%:*}" \
  --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set logFormat=text \
  --wait --timeout 5m

# --- the users' path ------------------------------------------------------------------------
log "applying $EXAMPLE"
kube apply -f "$EXAMPLE"
name=$(kube get -f "$EXAMPLE" -o jsonpath='{.metadata.name}')
ns=$(kube get -f "$EXAMPLE" -o jsonpath='{.metadata.namespace}')
consumer=$(kube get -f "$EXAMPLE" -o jsonpath='{.spec.consumers[0].name}')

log "waiting up to $READY_TIMEOUT for outboxpipeline/$name to be Ready"
kube -n "$ns" wait --for=condition=Ready "outboxpipeline/$name" --timeout="$READY_TIMEOUT"

writer_arn=$(kube -n "$ns" get "outboxpipeline/$name" -o jsonpath='{.status.writerFunctionArn}')
[ -n "$writer_arn" ] || die "status.writerFunctionArn is empty on a Ready pipeline"
consumer_arn=$(kube -n "$ns" get "outboxpipeline/$name" \
  -o go-template="{{ index .status.consumerFunctionArns \"$consumer\" }}")
case "$consumer_arn" in
  arn:*) ;;
  *) die "status.consumerFunctionArns has no ARN for consumer '$consumer' (got '$consumer_arn')" ;;
esac
log_group="/aws/lambda/${consumer_arn##*:}"

log "invoking the writer $writer_arn"
result=$(mktemp)
meta=$(awsls lambda invoke --function-name "$writer_arn" \
  --cli-binary-format raw-in-base64-out --payload "$WRITER_PAYLOAD" "$result")
response=$(cat "$result")
rm -f "$result"
echo "$meta"
echo "response: $response"
if grep -q '"FunctionError"' <<<"$meta"; then
  die "the writer failed"
fi
# A direct invoke answers {"statusCode": 201, "body": {"id": "<uuid>", ...}}.
grep -Eq '"statusCode": ?201' <<<"$response" || die "the writer did not create the user (expected statusCode 201)"
user_id=$(grep -Eo '"id": ?"[0-9a-f-]{36}"' <<<"$response" | grep -Eo '[0-9a-f-]{36}' | head -n 1)
[ -n "$user_id" ] || die "no user id in the writer's response"

# The consumer logs one line per event with its detail type and the item's keys (never the item).
log "waiting up to ${EVENT_TIMEOUT}s for UserCreated of user $user_id in $log_group"
deadline=$((SECONDS + EVENT_TIMEOUT))
found=""
while [ -z "$found" ]; do
  found=$(awsls logs filter-log-events --log-group-name "$log_group" \
    --filter-pattern '"UserCreated"' --query 'events[].message' --output text 2>/dev/null \
    | tr '\t' '\n' | grep -F "$user_id" || true)
  if [ -z "$found" ]; then
    [ "$SECONDS" -lt "$deadline" ] || die "no UserCreated event for user $user_id in $log_group after ${EVENT_TIMEOUT}s"
    sleep 5
  fi
done
printf '%s\n' "$found" | head -n 5

log "PASS: user $user_id written by the writer reached the consumer as UserCreated"
