#!/usr/bin/env bash
# Capacity curve: the server pinned to core 0, the load generator to core 1, one run per
# session count. Writes bench-out/capacity/<transport>-<N>.json and prints a markdown table;
# scripts/plot_capacity.py turns the JSON files into docs/capacity.svg.
#
#   scripts/capacity.sh [webrtc|rtp|twilio|ws] "10 25 50 100" [duration_s]
#   VOXRELAY_BIN=/tmp/voxrelay-before SERVER_ARGS="--vad energy" scripts/capacity.sh ...  # A/B runs
#   LOADGEN_BIN=/tmp/voxrelay-now VOXRELAY_BIN=/tmp/voxrelay-old ...  # an old server, today's instrument
#   LOADGEN_ARGS="--dtx false" scripts/capacity.sh ...  # callers that send every frame (no DTX)
#   AGENT=openai-realtime scripts/capacity.sh webrtc ...  # calls bridged to a Realtime provider:
#     a second voxrelay (its Realtime WebSocket API, echo agent) stands in for OpenAI on core 1,
#     next to the load generator; the server CPU column is still the server under test alone
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-webrtc}
counts=${2:-"10 25 50 75 100 150"}
duration=${3:-20}
port=18080
out=bench-out/capacity
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin voxrelay
bin=${VOXRELAY_BIN:-${CARGO_TARGET_DIR:-target}/release/voxrelay}
loadgen=${LOADGEN_BIN:-$bin}
agent=${AGENT:-echo}
provider=
server_config=()
if [ "$agent" = openai-realtime ]; then
  taskset -c 1 "$bin" serve --listen 127.0.0.1:$((port + 1)) --api-key provider-bench --max-calls 5000 \
    --log-level error --data-dir "$out/provider-data" &
  provider=$!
  printf '[providers.openai]\nbase_url = "ws://127.0.0.1:%d/v1/realtime"\n' $((port + 1)) > "$out/provider.toml"
  server_config=(--config "$out/provider.toml")
elif [ "$agent" != echo ]; then
  echo "AGENT: echo or openai-realtime, got $agent" >&2
  exit 2
fi
OPENAI_API_KEY=provider-bench taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --api-key capacity-bench --audio-workers 1 \
  --rtp-ingest --max-calls 5000 --log-level error --data-dir "$out/data" "${server_config[@]}" ${SERVER_ARGS:-} &
server=$!
trap 'kill $server $provider 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for p in $port ${provider:+$((port + 1))}; do
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$p/readyz >/dev/null && break; sleep 0.1; done
done
echo "| transport | sessions | connected | failed | turn p50 (ms) | turn p99 (ms) | loss p99 (%) | jitter p99 (ms) | server CPU (% core) | loadgen CPU (% core) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $counts; do
  json="$out/$transport-$n${provider:+-$agent}.json"
  taskset -c 1 "$loadgen" loadgen --url http://127.0.0.1:$port --api-key capacity-bench --transport "$transport" \
    --sessions "$n" --ramp 25 --duration "$duration" --server-pid $server --progress false --json "$json" --agent "$agent" ${LOADGEN_ARGS:-} >/dev/null || true
  python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t, l, j = r["turn_latency_ms"], r["loss_pct"], r["jitter_ms"]
print(f"| {sys.argv[1].split('/')[-1].split('-')[0]} | {r['sessions_requested']} | {r['sessions_connected']} | {r['sessions_failed']} "
      f"| {t['p50']:.0f} | {t['p99']:.0f} | {l['p99']:.2f} | {j['p99']:.1f} | {r.get('server_cpu_pct') or 0:.0f} | {r['loadgen_cpu_pct']:.0f} |")
PY
  sleep 2
done
