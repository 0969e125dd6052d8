# syntax=docker/dockerfile:1
#
# Container image of office365-activations-exporter.
#
#   docker build -t office365-activations-exporter \
#     --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm -p 10036:10036 office365-activations-exporter --demo
#
# Build: rust:1-bookworm, `cargo build --release --locked`, dependencies in their own cached layer.
# Run:   distroless cc (glibc + libgcc, no shell, no package manager) as uid 65532 ("nonroot").
# Linted by hadolint in the test suite (tests/deploy.rs), with every rule at every level enabled.

FROM rust:1-bookworm AS build
WORKDIR /src

# 1. Dependencies only: the manifest, the lock file and stub sources. This layer is rebuilt only
#    when Cargo.toml, Cargo.lock or build.rs change, not when src/ does.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/parse_encode.rs \
    && echo 'fn main() {}' > benches/scale.rs \
    && echo 'fn main() {}' > benches/user_detail.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The real sources. `touch` makes them newer than the stub's build artifacts whatever the
#    timestamps COPY gave them, so cargo rebuilds the crate (and only the crate).
COPY src ./src
# No .git in the build context: build.rs takes the revision for build_info from this variable.
ARG REVISION=unknown
ENV O365_EXPORTER_REVISION=${REVISION}
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/office365-activations-exporter --version

FROM gcr.io/distroless/cc-debian12:nonroot
# VERSION must equal Cargo.toml's version (tests/deploy.rs checks it).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="office365-activations-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Microsoft 365 Apps activation counts from Microsoft Graph" \
      org.opencontainers.image.source="https://github.com/office365-activations-exporter/office365-activations-exporter" \
      org.opencontainers.image.url="https://github.com/office365-activations-exporter/office365-activations-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/office365-activations-exporter /usr/local/bin/office365-activations-exporter
# 65532 is distroless's "nonroot" user. Numeric, so that Kubernetes' runAsNonRoot can verify it
# without a runAsUser in the pod spec.
USER 65532:65532
EXPOSE 10036
# The binary probes its own GET /-/healthy and exits 0 on 200: no shell, no curl in the image.
# It probes the default --web.listen-address (:10036): to serve on another port, keep 10036 inside
# the container and map the port outside (-p 9999:10036); `docker run --health-cmd` would need a
# shell, which this image does not have.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/office365-activations-exporter", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/office365-activations-exporter"]
