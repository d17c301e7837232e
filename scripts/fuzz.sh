#!/usr/bin/env bash
# libFuzzer runs of every target in fuzz/ (cargo-fuzz, nightly toolchain), each from its checked-in
# seeds (fuzz/seeds/<target>) plus the corpus it grows (fuzz/corpus/<target>, not committed).
# A crash stops with the input in fuzz/artifacts/<target>/: make it a regression test.
#
#   scripts/fuzz.sh                       # 30 s per target (the CI share; signaling and media)
#   FUZZ_SECONDS=600 scripts/fuzz.sh      # longer
#   FUZZ_RUNS=10000000 scripts/fuzz.sh    # a fixed number of inputs per target (BENCHMARKS.md)
#   FUZZ_SERVER=1 scripts/fuzz.sh         # also the targets that build the server (webrtc-rs):
#                                         # twilio_message, turn_stun, config_files
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
targets=(sdp_offer client_event http_bodies room_token rtp_ingest)
features=()
if [ "${FUZZ_SERVER:-}" = 1 ]; then
  targets+=(twilio_message turn_stun config_files)
  features=(--features server)
fi
limit=(-max_total_time="${FUZZ_SECONDS:-30}")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t"
  status=0
  # rtp_ingest decodes every record: a 64 KiB input is thousands of Opus decodes and adds
  # nothing a hundred packets do not (the jitter buffer holds 32).
  max_len=65536
  [ "$t" = rtp_ingest ] && max_len=1024
  cargo +nightly fuzz run "${features[@]}" "$t" "corpus/$t" "seeds/$t" -- "${limit[@]}" -max_len=$max_len -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed (exit $status); a crashing input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
