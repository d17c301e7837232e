#!/usr/bin/env bash
# Memory per call: the server's RSS (its own /metrics gauge) before and while N echo calls run,
# server pinned to core 0 with one audio worker, the load generator on core 1.
#
#   scripts/rss_per_call.sh [N=100] [BIN=target/release/voxrelay]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
bin=${2:-${CARGO_TARGET_DIR:-target}/release/voxrelay}
port=18097
data=$(mktemp -d)
taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --api-key rss-bench --audio-workers 1 --max-calls 5000 \
  --log-level error --data-dir "$data" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
gauge() { curl -s http://127.0.0.1:$port/metrics | awk -v k="$1" '$1 == k {print $2}'; }
base=$(gauge process_resident_memory_bytes)
taskset -c 1 "$bin" loadgen --url http://127.0.0.1:$port --api-key rss-bench --sessions "$n" --ramp 50 \
  --duration 30 --progress false >/dev/null 2>&1 &
load=$!
sleep 28
at_load=$(gauge process_resident_memory_bytes)
calls=$(gauge voxrelay_active_calls)
wait $load || true
python3 -c "b, p, n = $base, $at_load, $calls; print(f'calls={n:.0f} rss_idle={b/1e6:.1f} MB rss_at_load={p/1e6:.1f} MB per_call={(p-b)/n/1e6:.2f} MB')"
