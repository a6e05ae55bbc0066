# syntax=docker/dockerfile:1
# The outbox-operator image: the operator binary plus the Lambda zips it deploys, at
# /artifacts/<arch>/<function>/bootstrap.zip (relay, writer, consumer).
# Needs Docker with BuildKit; only scripts/e2e-kind.sh builds it (CI machines have no Docker).
#   docker build -t outbox-operator:dev .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# The Lambdas run on x86_64 Amazon Linux 2023 whatever the build host is.
RUN rustup target add x86_64-unknown-linux-gnu
WORKDIR /src
# cargo-lambda and zig (which links the Lambdas against AL2023's glibc), at the versions
# developers use: the pins come from dev/requirements.txt, not from this file.
COPY dev/requirements.txt dev/requirements.txt
RUN python3 -m venv /opt/venv \
 && grep -E '^(cargo-lambda|ziglang)==' dev/requirements.txt > /tmp/lambda-tools.txt \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/lambda-tools.txt
ENV PATH=/opt/venv/bin:$PATH \
    CARGO_TARGET_DIR=/src/target
COPY . .
# The target dir is a cache mount, so the results are copied out to /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p outbox-operator \
 && install -D -m 0755 target/release/outbox-operator /out/outbox-operator \
 && ARTIFACTS=/out/artifacts scripts/build-lambdas.sh \
 && test -f /out/artifacts/x86_64/relay/bootstrap.zip \
 && test -f /out/artifacts/x86_64/writer/bootstrap.zip \
 && test -f /out/artifacts/x86_64/consumer/bootstrap.zip

# glibc, CA certificates and nothing else; no shell. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/outbox-operator /usr/local/bin/outbox-operator
COPY --from=builder /out/artifacts /artifacts
ENV OUTBOX_ARTIFACTS_DIR=/artifacts
USER 65532:65532
# /metrics, /healthz, /readyz (OUTBOX_METRICS_PORT)
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/outbox-operator"]
CMD ["run"]
