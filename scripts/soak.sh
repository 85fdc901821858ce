#!/usr/bin/env bash
# The churn soak (issue 24 §4): `confab-bench churn` — participants joining and leaving at 2/s
# in one room of SIZE — for MINUTES on a release build, sampling the server's RSS every minute.
# Prints the samples, RSS at minute 5 against the last minute (the target: within ±5 %), the
# panics in the server's log (the target: 0), and the participants confab still holds after the
# run that left or vanished (stuck; the target: 0). Exit 1 if any target is missed.
#
#   scripts/soak.sh [MINUTES] [SIZE] [VANISH]  # default 30 minutes, a room of 8; VANISH=K: every
#                                              # K-th leaver vanishes without a word (no leave,
#                                              # no close, no packets; default 0: none)
#
# CONFAB_BIN picks the confab under test and CONFAB_BENCH_BIN the load generator (default for
# both: target/release/confab and target/release/confab-bench, built first). Record the figures
# in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
size="${2:-8}"
vanish="${3:-0}"
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${CONFAB_BIN:-}" ] || [ -z "${CONFAB_BENCH_BIN:-}" ]; then
  cargo build --release --locked --quiet --bin confab --bin confab-bench
fi
CONFAB_BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-target}/release/confab}"
CONFAB_BENCH_BIN="${CONFAB_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/confab-bench}"
out=$(mktemp -d)
"$CONFAB_BENCH_BIN" churn --confab "$CONFAB_BIN" --sizes "$size" --seconds $((minutes * 60)) --no-pin \
  --vanish-every "$vanish" \
  >"$out/bench.log" 2>&1 &
bench=$!
server=""
for _ in $(seq 1 300); do
  server=$(pgrep -P "$bench" -f 'confab serve|serve$' | head -n1 || true)
  [ -n "$server" ] && break
  sleep 0.1
done
if [ -z "$server" ]; then
  echo "soak: the bench started no server; its log:" >&2
  cat "$out/bench.log" >&2
  exit 1
fi
serverlog="/tmp/confab-bench-$bench-0/stderr.log"
echo "soak: bench $bench, server $server, ${minutes} min, room of $size, every ${vanish}th leaver vanishing (0: none); log in $out"
declare -a rss
panics=0
for m in $(seq 1 "$minutes"); do
  sleep 60
  kill -0 "$server" 2>/dev/null || { echo "soak: the server exited in minute $m" >&2; break; }
  rss[m]=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")
  if [ -f "$serverlog" ]; then
    panics=$(grep -c 'panicked' "$serverlog" || true)
    cp "$serverlog" "$out/server.log"
  fi
  echo "soak: minute $m: RSS ${rss[m]} KiB, panics $panics"
done
wait "$bench" || true
tail -n 5 "$out/bench.log"
# The bench's line: "  churn N: L left, V of them vanished without leaving; S still held …".
stuck=$(sed -n 's/.* \([0-9]\+\) still held .*/\1/p' "$out/bench.log" | tail -n1)
last=${#rss[@]}
if [ "$last" -lt 5 ] || [ -z "${rss[5]:-}" ]; then
  echo "soak: fewer than 5 samples; nothing to compare" >&2
  exit 1
fi
first=${rss[5]}
final=${rss[$last]}
change=$(awk -v a="$first" -v b="$final" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
echo "soak: RSS minute 5 ${first} KiB, minute $last ${final} KiB (${change} %), panics $panics, stuck participants ${stuck:-unknown}"
ok=$(awk -v c="$change" 'BEGIN { print (c <= 5 && c >= -5) ? 1 : 0 }')
[ "$ok" = 1 ] && [ "$panics" = 0 ] && [ "${stuck:-x}" = 0 ]
