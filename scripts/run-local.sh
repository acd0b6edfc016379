#!/usr/bin/env bash
# Serves the gateway locally: the evidence sink, the provider stand-in and Envoy with the
# Mercator filter, in the foreground; Ctrl-C stops all three. `make run` builds what this
# needs first. Ports can be moved with the variables below.
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY_PORT=${MERCATOR_GATEWAY_PORT:-8443}
SINK_PORT=${MERCATOR_SINK_PORT:-8600}
ADMIN_PORT=${MERCATOR_ADMIN_PORT:-9901}
STANDIN_PORT=${MERCATOR_STANDIN_PORT:-8700}
DEV=.dev
BIN=target/release
WASM=target/wasm32-wasip1/release/mercator_filter.wasm

for port in "$GATEWAY_PORT" "$SINK_PORT" "$ADMIN_PORT" "$STANDIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop what holds it or set MERCATOR_*_PORT" >&2
    exit 1
  fi
done

# The stand-in's provider keys (OPENAI_API_KEY, ANTHROPIC_API_KEY), as a real provider's
# keys would be set in production.
set -a
# shellcheck source=/dev/null
source "$DEV/provider.env"
set +a
MERCATOR_SIGNING_KEY=$(cat "$DEV/signing.key")
export MERCATOR_SIGNING_KEY

"$BIN/mercator" render \
  --gateway config/gateway.yaml \
  --template envoy/gateway.yaml \
  --out "$DEV/envoy.yaml" \
  --set listen_address=127.0.0.1 \
  --set gateway_port="$GATEWAY_PORT" \
  --set admin_port="$ADMIN_PORT" \
  --set sink_host=127.0.0.1 \
  --set sink_port="$SINK_PORT" \
  --set provider_host=127.0.0.1 \
  --set provider_port="$STANDIN_PORT" \
  --set tls_cert="$PWD/$DEV/server.pem" \
  --set tls_key="$PWD/$DEV/server-key.pem" \
  --set client_ca="$PWD/$DEV/ca.pem" \
  --set require_client_certificate="${MERCATOR_REQUIRE_CLIENT_CERTIFICATE:-false}" \
  --set wasm_path="$PWD/$WASM"

# The services run in sessions of their own (setsid), so that Ctrl-C reaches only this
# script, which stops them in order: Envoy stops taking requests and gets time to deliver
# the signed records it holds, then it stops, and only then the sink.
pids=()
envoy_pid=""
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping: the gateway delivers its last evidence, then the stand-in and sink stop"
  if [[ -n "$envoy_pid" ]]; then
    curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/drain_listeners" >/dev/null 2>&1 || true
    # Records go out on the filter's timer (evidence.flush_interval_ms, 200 ms by default).
    sleep 2
    kill "$envoy_pid" 2>/dev/null || true
    wait "$envoy_pid" 2>/dev/null || true
  fi
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# The sink signs its tree heads with its own key and knows the operator token only by its
# SHA-256; the token itself is in $DEV/operator.token.
setsid "$BIN/evidence-sink" --listen "127.0.0.1:$SINK_PORT" --db "$DEV/evidence.sqlite" \
  --keys "$DEV/sink-keys.json" --tree-key "$DEV/sink-tree.key" \
  --operator-token-sha256 "$(cat "$DEV/operator-token.sha256")" &
pids+=($!)
# The stand-in expects the provider key, so a call that reaches it proves the gateway
# swapped the caller's key for the provider's.
setsid "$BIN/provider-standin" --listen "127.0.0.1:$STANDIN_PORT" --expect-api-key "$OPENAI_API_KEY" \
  --expect-api-key "$ANTHROPIC_API_KEY" &
pids+=($!)
setsid .venv/bin/envoy -c "$DEV/envoy.yaml" --use-dynamic-base-id --log-level warn \
  --component-log-level wasm:info &
envoy_pid=$!
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done

cat <<MSG

Mercator Jupiter is serving (Ctrl-C stops it):
  gateway        https://localhost:$GATEWAY_PORT/v1   (TLS 1.3, CA: $DEV/ca.pem)
  evidence sink  http://127.0.0.1:$SINK_PORT
  Envoy admin    http://127.0.0.1:$ADMIN_PORT
  provider       http://127.0.0.1:$STANDIN_PORT   (a local stand-in for OpenAI and Anthropic, not the real ones)
Demo API keys are in $DEV/demo.env. Try:
  source $DEV/demo.env
  curl --cacert $DEV/ca.pem https://localhost:$GATEWAY_PORT/v1/chat/completions \\
    -H "Authorization: Bearer \$MERCATOR_DEMO_FINANCE_KEY" -H 'content-type: application/json' \\
    -d '{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}'
The sink's query endpoints need the operator token in $DEV/operator.token:
  curl -H "Authorization: Bearer \$(cat $DEV/operator.token)" http://127.0.0.1:$SINK_PORT/v1/evidence

MSG
wait -n "${pids[@]}"
echo "a service stopped; see its output above" >&2
