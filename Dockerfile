# syntax=docker/dockerfile:1
# Build: docker build -t office365-activations-exporter .
# Run:   docker run -p 10036:10036 office365-activations-exporter --demo

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so they stay cached while only the sources change.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/parse_encode.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
ARG REVISION=unknown
ENV O365_EXPORTER_REVISION=${REVISION}
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="office365-activations-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Microsoft 365 Apps activation counts from Microsoft Graph" \
      org.opencontainers.image.source="https://github.com/office365-activations-exporter/office365-activations-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/office365-activations-exporter /usr/local/bin/office365-activations-exporter
USER nonroot:nonroot
EXPOSE 10036
ENTRYPOINT ["/usr/local/bin/office365-activations-exporter"]
