#!/bin/sh
# The compose deployment's first step: development material into the shared volume
# (kept across restarts), the filter next to it, and the rendered Envoy configuration.
set -eu
mercator dev-init --dir /material
cp /opt/mercator/mercator_filter.wasm /material/mercator_filter.wasm
mercator render \
  --gateway /opt/mercator/config/gateway.yaml \
  --template /opt/mercator/envoy/gateway.yaml \
  --out /material/envoy.yaml \
  --set listen_address=0.0.0.0 \
  --set gateway_port=8443 \
  --set admin_port=9901 \
  --set sink_host=evidence-sink \
  --set sink_port=8600 \
  --set provider_host=provider-standin \
  --set provider_port=8700 \
  --set tls_cert=/material/server.pem \
  --set tls_key=/material/server-key.pem \
  --set client_ca=/material/ca.pem \
  --set require_client_certificate=false \
  --set wasm_path=/material/mercator_filter.wasm
