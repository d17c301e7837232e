#!/usr/bin/env bash
# Room forwarding capacity: the server pinned to core 0, the load generator to core 1; one room
# per run with P publishers talking all the time and a growing number of subscribers on K slots.
# Writes bench-out/room_capacity/<P>x<S>.json and prints a markdown table.
#
#   scripts/room_capacity.sh "10 50 100 200" [publishers=10] [slots=3] [duration_s=20]
#
# SERVER_ARGS adds to the server's flags (e.g. "--rtc-loop false" for a webrtc-rs driver per
# participant); VOXRELAY_BIN runs another build (SKIP_BUILD=1 skips building this one).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${1:-"10 25 50 100 150 200"}
publishers=${2:-10}
slots=${3:-3}
duration=${4:-20}
port=18081
out=bench-out/room_capacity
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin voxrelay
bin=${VOXRELAY_BIN:-${CARGO_TARGET_DIR:-target}/release/voxrelay}
# shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --api-key room-bench --audio-workers 1 \
  --max-calls 5000 --log-level error --data-dir "$out/data" ${SERVER_ARGS:-} &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
echo "| publishers | subscribers | slots | joined | failed | packets/s in | packets/s out | loss p99 (%) | jitter p99 (ms) | mouth-to-ear p50 / p99 (ms) | server CPU (% core) | out packets/s per core | loadgen CPU (% core) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in $counts; do
  json="$out/${publishers}x$n.json"
  taskset -c 1 "$bin" loadgen --url http://127.0.0.1:$port --api-key room-bench --room "bench-$n" \
    --publishers "$publishers" --subscribers "$n" --slots "$slots" --ramp 50 --duration "$duration" \
    --server-pid $server --json "$json" >/dev/null || true
  python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m, l, j = r["mouth_to_ear_ms"], r["loss_pct"], r["jitter_ms"]
cpu = r.get("server_cpu_pct") or 0
per_core = r["packets_out_per_s"] * 100 / cpu if cpu else 0
print(f"| {r['publishers']} | {r['subscribers']} | {r['slots']} | {r['joined']} | {r['failed']} | {r['packets_in_per_s']:.0f} "
      f"| {r['packets_out_per_s']:.0f} | {l['p99']:.2f} | {j['p99']:.1f} | {m['p50']:.1f} / {m['p99']:.1f} | {cpu:.0f} | {per_core:.0f} | {r['loadgen_cpu_pct']:.0f} |")
PY
  sleep 2
done
