#!/usr/bin/env bash
# Chart tests (tests/chart): helm lint and render (Helm SDK from helm-python-sdk, no helm binary)
# for the default values and an install matrix, strict offline validation of every manifest,
# values-schema rejections, RBAC and security context, the chart's CRD copy, and every example
# against the CRD schema. Needs the project venv (`make venv`). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
if [ ! -x "$venv/bin/python" ]; then
  echo "chart-test: $venv/bin/python not found; run 'make venv' first" >&2
  exit 1
fi
# The venv's console scripts (kubernetes-validate, check-jsonschema) come first on PATH.
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest tests/chart -p no:cacheprovider -ra "$@"
