#!/usr/bin/env bash
# Build the writer, relay and consumer Lambdas for the provided.al2023 runtime with cargo-lambda:
#   $ARTIFACTS/<arch>/<function>/bootstrap.zip
# x86_64 always; arm64 too when the aarch64-unknown-linux-gnu Rust target is installed.
# Then check what AL2023 requires: each binary needs glibc <= 2.34, and the relay zip is <= 8 MB.
#
# Needs cargo-lambda and ziglang (make venv installs both into .venv; make lambdas puts .venv/bin
# on PATH) and pyelftools (in .venv too; dev/glibc_needed.py reads the symbol versions). Builds
# into $CARGO_TARGET_DIR like every other build.
set -euo pipefail
cd "$(dirname "$0")/.."

artifacts="${ARTIFACTS:-${CARGO_TARGET_DIR:-$PWD/target}/artifacts}"
case "$artifacts" in /*) ;; *) artifacts="$PWD/$artifacts" ;; esac
functions=(relay writer consumer)
packages=(-p outbox-relay -p outbox-writer -p outbox-consumer)
max_glibc="2.34"
max_relay_zip_bytes=$((8 * 1024 * 1024))

fail() {
  echo "error: $*" >&2
  exit 1
}

command -v cargo-lambda >/dev/null ||
  fail "cargo-lambda not found; run 'make lambdas' (it installs cargo-lambda and ziglang into .venv)"
python="${VENV_PYTHON:-.venv/bin/python}"
[ -x "$python" ] || fail "$python not found; run 'make venv' (it installs pyelftools for the glibc check)"

archs=(x86_64)
if rustup target list --installed 2>/dev/null | grep -qx 'aarch64-unknown-linux-gnu'; then
  archs+=(arm64)
else
  echo "note: Rust target aarch64-unknown-linux-gnu not installed; building x86_64 only"
fi

# The newest glibc symbol version a binary needs (empty when it needs none).
glibc_needed() {
  "$python" dev/glibc_needed.py "$1"
}

# True when version $1 <= version $2.
version_le() {
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]
}

check_dir="$(mktemp -d)"
trap 'rm -rf "$check_dir"' EXIT

for arch in "${archs[@]}"; do
  case "$arch" in
  x86_64) arch_flag=--x86-64 ;;
  arm64) arch_flag=--arm64 ;;
  esac
  out="$artifacts/$arch"
  echo "building ${functions[*]} for $arch into $out"
  # One cargo invocation for all three binaries: one build (profile lambda), shared dependencies.
  # --locked: the zips are built from Cargo.lock as committed, never a re-resolved one.
  cargo lambda build --profile lambda --locked "$arch_flag" --output-format zip --lambda-dir "$out" "${packages[@]}"

  for fn in "${functions[@]}"; do
    zip="$out/$fn/bootstrap.zip"
    [ -f "$zip" ] || fail "$zip was not produced"
    rm -rf "${check_dir:?}/$arch-$fn"
    "$python" -m zipfile -e "$zip" "$check_dir/$arch-$fn"
    bin="$check_dir/$arch-$fn/bootstrap"
    [ -f "$bin" ] || fail "$zip has no bootstrap at its root"
    needed="$(glibc_needed "$bin")"
    if [ -n "$needed" ] && ! version_le "$needed" "$max_glibc"; then
      fail "$arch/$fn needs glibc $needed, but provided.al2023 has $max_glibc"
    fi
    size=$(wc -c <"$zip")
    if [ "$fn" = relay ] && [ "$size" -gt "$max_relay_zip_bytes" ]; then
      fail "$zip is $size bytes, over the 8 MB budget ($max_relay_zip_bytes bytes)"
    fi
    echo "ok: $arch/$fn/bootstrap.zip  ${size} bytes, needs glibc ${needed:-none} (<= $max_glibc)"
  done
done
