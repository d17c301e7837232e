#!/usr/bin/env bash
# An agent in a room vs the same people in 1:1 calls, on one core: the server pinned to core 0
# with one audio worker, the load generator on core 1, the echo agent.
#   1. a room of P publishers taking turns with an agent, S listeners on one slot each;
#   2. the same room without an agent (forwarding only);
#   3. P separate 1:1 echo calls (each talking every few seconds).
# Prints the server's CPU (% of a core) and the room's turn latency; JSON in bench-out/room_agent/.
#
#   scripts/room_agent_bench.sh [publishers=4] [subscribers=4] [duration_s=60]
set -euo pipefail
cd "$(dirname "$0")/.."
publishers=${1:-4}
subscribers=${2:-4}
duration=${3:-60}
port=18082
out=bench-out/room_agent
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin voxrelay
bin=${CARGO_TARGET_DIR:-target}/release/voxrelay
taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --api-key agent-bench --audio-workers 1 \
  --max-calls 1000 --log-level error --data-dir "$out/data" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
run() { taskset -c 1 "$bin" loadgen --url http://127.0.0.1:$port --api-key agent-bench --server-pid $server --duration "$duration" "$@" >/dev/null || true; }
run --room with-agent --agent echo --publishers "$publishers" --subscribers "$subscribers" --slots 1 --json "$out/room_agent.json"
sleep 2
run --room no-agent --publishers "$publishers" --subscribers "$subscribers" --slots 1 --json "$out/room_only.json"
sleep 2
run --sessions "$publishers" --ramp 5 --json "$out/calls.json"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
a, r, c = (json.load(open(f"{d}/{n}.json")) for n in ("room_agent", "room_only", "calls"))
t = a["agent_turn_ms"]
print("| setup | server CPU (% core) | turn latency p50 / p99 (ms) |")
print("|---|---|---|")
print(f"| room: {a['publishers']} people taking turns with an echo agent, {a['subscribers']} listeners | {a['server_cpu_pct']:.1f} | {t['p50']:.0f} / {t['p99']:.0f} ({a['agent_answered']} of {a['agent_turns']} turns answered) |")
print(f"| the same room, no agent (forwarding only; publishers talk all the time) | {r['server_cpu_pct']:.1f} | – |")
ct = c.get("turn_latency_ms") or c.get("turn_ms") or {}
lat = f"{ct.get('p50', float('nan')):.0f} / {ct.get('p99', float('nan')):.0f}" if ct else "see calls.json"
print(f"| {c.get('sessions_connected', '?')} separate 1:1 echo calls | {c.get('server_cpu_pct') or 0:.1f} | {lat} |")
PY
