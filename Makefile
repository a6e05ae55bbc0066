# outbox-operator — developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
MOTO_PORT   ?= 5055
# One shared target dir for every build (tests, the operator, the Lambda zips).
export CARGO_TARGET_DIR ?= $(CURDIR)/target
ARTIFACTS   ?= $(CARGO_TARGET_DIR)/artifacts

# Wire-level tests talk to the local emulator with dummy credentials, never to real AWS.
TEST_ENV := OUTBOX_TEST_ENDPOINT=http://127.0.0.1:$(MOTO_PORT) \
            AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN= \
            AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_PROFILE= AWS_CONFIG_FILE=/dev/null \
            AWS_SHARED_CREDENTIALS_FILE=/dev/null OUTBOX_ARTIFACTS_DIR=$(ARTIFACTS)

.PHONY: help
help: ## list the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "%-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(VENV)/.stamp: dev/requirements.txt dev/bootstrap_pip.py
	python3 -m venv --without-pip $(VENV)
	$(VENV)/bin/python dev/bootstrap_pip.py
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r dev/requirements.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.stamp ## create the project's Python venv (emulator, packaging and chart tooling)

.PHONY: fmt
fmt: ## format the Rust code
	cargo fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with warnings denied
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: crd
crd: ## regenerate crds/outboxpipelines.yaml (and the chart's copy) from the Rust types
	cargo run -q -p outbox-operator -- crd > crds/outboxpipelines.yaml
	cargo run -q -p outbox-operator -- crd outboxaccounts > crds/outboxaccounts.yaml
	if [ -d charts/outbox-operator/crds ]; then cp crds/outboxpipelines.yaml crds/outboxaccounts.yaml charts/outbox-operator/crds/; fi

.PHONY: lambdas
lambdas: venv ## build the writer, relay and consumer zips into $(ARTIFACTS)/<arch>/<function>/bootstrap.zip
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ARTIFACTS="$(ARTIFACTS)" scripts/build-lambdas.sh

.PHONY: bench-relay
bench-relay: ## relay benchmark: release bootstrap vs a local runtime API and PutEvents (10k records, batch 10/100, 0%/5% throttled, spread and on one CPU)
	cargo build --profile lambda -q -p outbox-relay
	cargo build --profile lambda -q -p outbox-bench-relay
	$(CARGO_TARGET_DIR)/lambda/outbox-bench-relay --bootstrap $(CARGO_TARGET_DIR)/lambda/relay $(BENCH_ARGS)

.PHONY: demo
demo: venv lambdas ## quickstart: local AWS emulator, plan → apply → status of examples/user-created.yaml, a user's event end to end
	cargo build -q -p outbox-operator -p outbox-local-trigger
	MOTO_PORT=$(MOTO_PORT) ARTIFACTS="$(ARTIFACTS)" scripts/demo.sh

.PHONY: demo-replay
demo-replay: venv lambdas ## nothing parked for good: a batch parked by a failing publish, replay --dry-run, replay, the consumer gets the event
	cargo build -q -p outbox-operator -p outbox-local-trigger
	MOTO_PORT=$(MOTO_PORT) ARTIFACTS="$(ARTIFACTS)" scripts/demo-replay.sh

.PHONY: bench-scale
PIPELINES   ?= 500
CONCURRENCY ?= 4
RESYNC      ?= 300
STEADY      ?= 1
bench-scale: venv lambdas ## scale benchmark: the real operator (release) against a fake Kubernetes API and the emulator; PIPELINES=500 CONCURRENCY=4 RESYNC=300 (seconds, the operator's default) STEADY=1 (0: convergence only)
	cargo build -q --release -p outbox-operator -p outbox-fake-kube
	MOTO_PORT=$(MOTO_PORT) scripts/moto.sh start
	trap 'MOTO_PORT=$(MOTO_PORT) scripts/moto.sh stop' EXIT; \
	  $(TEST_ENV) $(CARGO_TARGET_DIR)/release/bench-scale --endpoint http://127.0.0.1:$(MOTO_PORT) \
	    --pipelines $(PIPELINES) --concurrency $(CONCURRENCY) --resync-seconds $(RESYNC) --steady $(STEADY) \
	    --operator $(CARGO_TARGET_DIR)/release/outbox-operator --artifacts-dir $(ARTIFACTS) \
	    --emulator-pid "$$(cat .moto-$(MOTO_PORT).pid)"

.PHONY: moto-start moto-stop
moto-start: venv ## start the local AWS emulator on 127.0.0.1:$(MOTO_PORT)
	MOTO_PORT=$(MOTO_PORT) scripts/moto.sh start
moto-stop: ## stop the local AWS emulator
	MOTO_PORT=$(MOTO_PORT) scripts/moto.sh stop

.PHONY: unit
unit: venv lambdas ## cargo tests, with the emulator started and stopped around them
	MOTO_PORT=$(MOTO_PORT) scripts/moto.sh start
	trap 'MOTO_PORT=$(MOTO_PORT) scripts/moto.sh stop' EXIT; \
	  $(TEST_ENV) cargo test --workspace --all-targets

.PHONY: chart-test
chart-test: venv ## Helm chart: lint, render matrix, offline validation, values schema, RBAC, CRD copy, examples
	scripts/chart-test.sh

.PHONY: scripts-check
scripts-check: venv ## bash -n and shellcheck (from the venv) on every shell script
	for f in scripts/*.sh .ci/run; do bash -n "$$f"; done
	$(VENV)/bin/shellcheck scripts/*.sh .ci/run

.PHONY: test
test: lint unit chart-test scripts-check ## everything CI runs: lint, all tests (wire-level against the emulator), script checks
