# syntax=docker/dockerfile:1
# The outbox-operator image: the operator binary plus the Lambda zips it deploys, at
# /artifacts/<arch>/<function>/bootstrap.zip (arch x86_64 and arm64; function relay, writer,
# consumer). Needs Docker with BuildKit (the default builder since Docker 23, and buildx).
#
# One platform (this machine's):
#   docker build -t outbox-operator:dev .
# Both platforms, pushed (what .github/workflows/release.yml runs):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/outbox-operator:TAG --push .
#
# Both build stages run on the build machine's own platform ($BUILDPLATFORM) and cross-compile,
# so a multi-platform build needs no emulation (QEMU): the Lambda zips are built once and shared
# by every image platform (they run in AWS, not in this image), and the operator binary is
# cross-compiled for each $TARGETARCH. The final stage only copies files.
#
# Build arguments:
#   LAMBDA_ARM64=0  build only the x86_64 Lambda zips (faster; a pipeline with
#                   spec.relay.architecture arm64 then fails at reconcile: artifact missing)
#   RUST_VERSION    the Rust toolchain image's version

ARG RUST_VERSION=1.95

# ---- the Lambda zips --------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS lambdas
ARG LAMBDA_ARM64=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# The Lambdas run on Amazon Linux 2023, x86_64 or arm64, whatever the build host is.
RUN rustup target add x86_64-unknown-linux-gnu
# A step of its own, so the x86_64 zips never depend on it. scripts/build-lambdas.sh builds
# arm64 whenever this target is installed (it is the host target on an arm64 build machine).
RUN case "$LAMBDA_ARM64" in \
      1) rustup target add aarch64-unknown-linux-gnu ;; \
      0) ;; \
      *) echo "LAMBDA_ARM64 must be 1 or 0, not '$LAMBDA_ARM64'" >&2; exit 1 ;; \
    esac
WORKDIR /src
# cargo-lambda and zig (which link the Lambdas against AL2023's glibc for either architecture)
# and pyelftools (scripts/build-lambdas.sh checks the zips' glibc needs with it), at the versions
# developers use: the pins come from dev/requirements.txt, not from this file.
COPY dev/requirements.txt dev/requirements.txt
RUN python3 -m venv /opt/venv \
 && grep -E '^(cargo-lambda|ziglang|pyelftools)==' dev/requirements.txt > /tmp/lambda-tools.txt \
 && test "$(wc -l < /tmp/lambda-tools.txt)" -eq 3 \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/lambda-tools.txt
# VENV_PYTHON: build-lambdas.sh otherwise looks for .venv/bin/python, which .dockerignore keeps out.
ENV PATH=/opt/venv/bin:$PATH \
    VENV_PYTHON=/opt/venv/bin/python \
    CARGO_TARGET_DIR=/src/target
COPY . .
# The target dir is a cache mount, so the zips are copied out to /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=outbox-lambdas-target,sharing=locked,target=/src/target \
    ARTIFACTS=/out/artifacts scripts/build-lambdas.sh \
 && archs=x86_64 \
 && if [ "$LAMBDA_ARM64" = 1 ]; then archs="x86_64 arm64"; fi \
 && for arch in $archs; do \
      for fn in relay writer consumer; do \
        test -f "/out/artifacts/$arch/$fn/bootstrap.zip" \
          || { echo "missing /out/artifacts/$arch/$fn/bootstrap.zip" >&2; exit 1; }; \
      done; \
    done

# ---- the operator binary, for the image's platform -------------------------------------------
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS operator
ARG TARGETARCH
ARG BUILDARCH
# The Rust target and, when it differs from the build machine's, Debian's cross gcc and libc
# (the linker, and the C compiler for aws-lc-sys and ring).
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gcc_pkg=gcc-x86-64-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gcc_pkg=gcc-aarch64-linux-gnu ;; \
      *) echo "TARGETARCH '$TARGETARCH' is not supported: the image is built for amd64 and arm64" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "$gcc_pkg" "libc6-dev-$TARGETARCH-cross"; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    rustup target add "$triple"; \
    echo "$triple" > /rust-target
WORKDIR /src
COPY . .
# Always --target, so the binary's path is the same natively and cross. The tools are named
# <arch>-linux-gnu-gcc/-ar both natively (Debian's gcc and binutils) and cross. readelf checks
# the result really is for the image's platform.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=outbox-operator-target,sharing=locked,target=/src/target \
    set -eu; \
    triple=$(cat /rust-target); \
    arch=${triple%%-*}; \
    triple_env=$(echo "$triple" | tr 'a-z-' 'A-Z_'); \
    triple_cc=$(echo "$triple" | tr '-' '_'); \
    export "CARGO_TARGET_${triple_env}_LINKER=${arch}-linux-gnu-gcc" \
           "CC_${triple_cc}=${arch}-linux-gnu-gcc" \
           "AR_${triple_cc}=${arch}-linux-gnu-ar"; \
    cargo build --release --locked -p outbox-operator --target "$triple"; \
    install -D -m 0755 "target/$triple/release/outbox-operator" /out/outbox-operator; \
    case "$arch" in x86_64) machine='X86-64' ;; aarch64) machine='AArch64' ;; esac; \
    readelf -h /out/outbox-operator | grep -q "Machine:.*$machine" \
      || { echo "/out/outbox-operator is not built for linux/$TARGETARCH" >&2; exit 1; }

# ---- the image ---------------------------------------------------------------------------------
# glibc, CA certificates and nothing else; no shell. "nonroot" is uid/gid 65532. Every file is
# world-readable, so the image also runs under an arbitrary uid (OpenShift's restricted-v2).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=operator /out/outbox-operator /usr/local/bin/outbox-operator
COPY --from=lambdas /out/artifacts /artifacts
ENV OUTBOX_ARTIFACTS_DIR=/artifacts
USER 65532:65532
# /metrics, /healthz, /readyz (OUTBOX_METRICS_PORT)
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/outbox-operator"]
CMD ["run"]
