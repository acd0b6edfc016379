# One image with every Mercator Jupiter binary, the filter's .wasm, the configuration,
# the policies and the Envoy template. docker-compose.yml runs its pieces.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip1
COPY . .
RUN cargo build --release --locked --target wasm32-wasip1 -p mercator-filter \
 && cargo build --release --locked -p mercator-evidence-sink -p mercator-provider-standin

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin mercator \
 && mkdir -p /material /data && chown mercator /material /data \
 && mkdir -p /opt/mercator && ln -s /material /opt/mercator/.dev
COPY --from=build /src/target/release/evidence-sink /src/target/release/mercator \
     /src/target/release/provider-standin /usr/local/bin/
COPY --from=build /src/target/wasm32-wasip1/release/mercator_filter.wasm /opt/mercator/
COPY config /opt/mercator/config
COPY policies /opt/mercator/policies
COPY envoy /opt/mercator/envoy
COPY scripts/compose-init.sh /usr/local/bin/compose-init.sh
USER mercator
