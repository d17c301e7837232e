#!/usr/bin/env bash
# TURN relay throughput, voxrelay's embedded TURN vs coturn's turnserver, same load in one run:
# each server pinned to core 0, coturn's turnutils_uclient pinned to core 1, on 127.0.0.1,
# REST credentials, client-to-client relaying over UDP channels (-y -c), 160-byte messages.
# For each load step: messages delivered per second (best 1 s of uclient's per-second counts;
# each message crosses the server twice: client -> relay A -> relay B -> client), loss (%) as
# uclient reports it, server CPU seconds for the step (/proc/PID/stat, allocation setup
# included) and CPU ms per 1,000 delivered messages. Needs coturn (apt-get install coturn) and a release build.
#
#   scripts/turn_bench.sh ["50 100 200 400" [messages_per_session [interval_ms]]]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-"50 100 200 400"}
messages=${2:-500}
interval=${3:-10}
secret=turn-bench-secret
out=bench-out/turn
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin voxrelay
bin=${BIN:-target/release/voxrelay}
hz=$(getconf CLK_TCK)

cat > "$out/turn.conf" <<EOF
listening-ip=127.0.0.1
listening-port=13478
realm=voxrelay
use-auth-secret
static-auth-secret=$secret
min-port=30000
max-port=39999
allow-loopback-peers
user-quota=100000
no-tls
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_server() {
  case $1 in
    voxrelay) taskset -c 0 "$bin" turn --config "$out/turn.conf" >"$out/voxrelay.log" 2>&1 & ;;
    coturn) taskset -c 0 turnserver -n --listening-ip 127.0.0.1 --listening-port 13478 --realm voxrelay \
              --use-auth-secret --static-auth-secret "$secret" --min-port 30000 --max-port 39999 \
              --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stdout-log --log-file "$out/coturn.log" \
              --pidfile "$out/coturn.pid" >/dev/null 2>&1 & ;;
  esac
  server=$!
  sleep 1
}

echo "| server | sessions | offered (msg/s) | delivered, best 1 s (msg/s) | loss (%) | server CPU (s) | server CPU per 1,000 msgs (ms) |"
echo "|---|---|---|---|---|---|---|"
for name in coturn voxrelay; do
  start_server "$name"
  trap 'kill $server 2>/dev/null || true' EXIT
  for m in $steps; do
    before=$(cpu_ticks "$server")
    t0=$(date +%s.%N)
    taskset -c 1 turnutils_uclient -y -c -m "$m" -n "$messages" -l 160 -z "$interval" -e 127.0.0.1 \
      -W "$secret" -u bench -p 13478 127.0.0.1 >"$out/uclient-$name-$m.txt" 2>&1 || true
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$server")
    python3 - "$name" "$m" "$messages" "$interval" "$t0" "$t1" "$before" "$after" "$hz" "$out/uclient-$name-$m.txt" <<'PY'
import re, sys
name, m, n, iv, t0, t1, c0, c1, hz, path = sys.argv[1:]
text = open(path).read()
sent = int(re.findall(r"tot_send_msgs=(\d+)", text)[-1]) if "tot_send_msgs=" in text else 0
recv = int(re.findall(r"tot_recv_msgs=(\d+)", text)[-1]) if "tot_recv_msgs=" in text else 0
lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
sessions = sent // int(n) if sent else 0
wall = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(hz)
# uclient prints cumulative counts once a second: the relay rate is the best 1 s delivery.
counts = [int(x) for x in re.findall(r"msz=\d+, tot_send_msgs=\d+, tot_recv_msgs=(\d+)", text)]
rate = max((b - a for a, b in zip(counts, counts[1:])), default=0)
offered = sessions * 1000.0 / int(iv)
loss = lost[-1][1][:5] if lost else "n/a"
# CPU over the whole run (allocation setup included) per 1,000 delivered messages.
per_k = cpu * 1000.0 / recv * 1000.0 if recv else float("nan")
print(f"| {name} | {sessions} | {offered:.0f} | {rate} | {loss} | {cpu:.1f} | {per_k:.1f} |")
PY
  done
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  sleep 1
done
