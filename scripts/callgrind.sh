#!/usr/bin/env bash
# User-space instructions per received datagram of confab's media thread, counted by callgrind
# on one confab-bench scenario (issue 18: "compare instruction counts with callgrind before and
# after"; the method of docs/performance.md, "Where the time goes").
#
#   scripts/callgrind.sh [--confab PATH] [--bench PATH] [--scenario NAME] [--size N]
#                        [--seconds S] [--out DIR]
#
# Defaults: webinar 4 (one publisher, four subscribers), a 25 s window. Without --confab it builds
# confab and confab-bench release with line tables and symbols (CARGO_PROFILE_RELEASE_DEBUG=
# line-tables-only, STRIP=none; fat LTO as shipped) into $CONFAB_CALLGRIND_TARGET (default
# /var/cache/confab/target-callgrind); with --confab it measures that binary (build it the same
# way) and builds only confab-bench, unless --bench gives one. The same generator for "before" and
# "after" keeps the load the same.
#
# confab-bench starts confab through a wrapper that execs `valgrind --tool=callgrind
# --separate-threads=yes`, unpinned (--no-pin: valgrind runs one guest thread at a time anyway;
# callgrind counts instructions, not time) with one media thread. When the bench says its window
# starts, callgrind's counters are zeroed (callgrind_control -z); when it ends, they are dumped
# (-d), so set-up (ICE, DTLS, signalling) and teardown are left out. Printed: the media thread's
# Ir (inclusive Ir of confab::media::Loop::run by callgrind_annotate --inclusive=yes, or the
# thread's total if LTO inlined run), the datagrams the generator sent to confab in the window less
# those confab's UDP sockets dropped (/proc/net/udp), and Ir per received datagram. The run's
# files (callgrind dumps, bench output) stay in DIR (default: a new directory under /var/tmp).
# Installs valgrind with apt if it is missing. Run it twice or more: the spread is a few %.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

confab="" bench="" scenario=webinar size=4 seconds=25 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --confab) confab="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    --scenario) scenario="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "callgrind.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
die() { echo "callgrind.sh: $*" >&2; exit 1; }

# --- valgrind --------------------------------------------------------------------------------
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "callgrind.sh: installing valgrind"
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends valgrind >/dev/null
fi

# --- binaries --------------------------------------------------------------------------------
target="${CONFAB_CALLGRIND_TARGET:-/var/cache/confab/target-callgrind}"
build=()
[ -n "$confab" ] || build+=(--bin confab)
[ -n "$bench" ] || build+=(--bin confab-bench)
if [ ${#build[@]} -gt 0 ]; then
  echo "callgrind.sh: cargo build --release ${build[*]} (line tables, not stripped) into $target"
  CARGO_TARGET_DIR="$target" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --locked --quiet "${build[@]}"
fi
confab="$(realpath "${confab:-$target/release/confab}")"
bench="$(realpath "${bench:-$target/release/confab-bench}")"
[ -x "$confab" ] || die "no confab at $confab"
[ -x "$bench" ] || die "no confab-bench at $bench"

out="${out:-$(mktemp -d /var/tmp/confab-callgrind.XXXXXX)}"
mkdir -p "$out"
rm -f "$out"/cg.out* "$out"/pid
wrapper="$out/confab-under-callgrind"
cat >"$wrapper" <<EOF
#!/bin/sh
# confab under callgrind, for confab-bench --confab (scripts/callgrind.sh).
echo \$\$ > "$out/pid"
exec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.out" \\
  --log-file="$out/valgrind.log" "$confab" "\$@"
EOF
chmod +x "$wrapper"

# Drops counted by the kernel on the UDP sockets of process $1.
udp_drops() {
  local inodes
  inodes=$(find "/proc/$1/fd" -maxdepth 1 -lname 'socket:*' -printf '%l\n' 2>/dev/null |
    sed 's/socket:\[\(.*\)\]/\1/' | tr '\n' ' ')
  awk -v list="$inodes" 'BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    FNR > 1 && ($10 in want) { d += $NF } END { print d + 0 }' "/proc/$1/net/udp" "/proc/$1/net/udp6"
}

# --- the run ---------------------------------------------------------------------------------
echo "callgrind.sh: $scenario $size, ${seconds} s window; confab $confab ($("$confab" --version | head -n 1)); files in $out"
"$bench" "$scenario" --sizes "$size" --seconds "$seconds" --no-pin --media-threads 1 \
  --confab "$wrapper" >"$out/bench.out" 2>"$out/bench.err" &
bench_pid=$!
# If this script stops early: the bench and the confab it started (this script started both).
cleanup() {
  kill "$bench_pid" 2>/dev/null || true
  [ -f "$out/pid" ] && kill "$(cat "$out/pid")" 2>/dev/null || true
}
trap cleanup EXIT
wait_for() { # wait_for PATTERN: until bench.err has it (or the bench exits)
  until grep -q "$1" "$out/bench.err"; do
    kill -0 "$bench_pid" 2>/dev/null || { cat "$out/bench.out" "$out/bench.err" >&2; die "the bench ended before '$1'"; }
    sleep 0.05
  done
}
wait_for "window starts"
pid=$(cat "$out/pid")
drops0=$(udp_drops "$pid")
callgrind_control -z "$pid" >/dev/null 2>&1
wait_for "window ends"
# Before the dump: while callgrind_control waits for it, the bench goes on to stop confab.
drops1=$(udp_drops "$pid")
callgrind_control -d "$pid" >/dev/null 2>&1
wait "$bench_pid" || { cat "$out/bench.out" "$out/bench.err" >&2; die "the bench failed"; }
trap - EXIT

# --- figures ---------------------------------------------------------------------------------
# The dump of the window is cg.out.1-<thread>; the media thread is the one that ran the loop.
compgen -G "$out/cg.out.1-*" >/dev/null || die "callgrind_control made no dump (valgrind log: $out/valgrind.log)"
media="" ir=""
for f in "$out"/cg.out.1-*; do
  [ -f "$f" ] || continue
  line=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
    grep -m1 -E 'confab::media::Loop::run( |$|\[)' || true)
  if [ -n "$line" ]; then
    media="$f"
    ir=$(awk '{ gsub(",", "", $1); print $1 }' <<<"$line")
    how="inclusive Ir of confab::media::Loop::run"
    break
  fi
done
if [ -z "$media" ]; then
  # LTO inlined Loop::run: the thread that ran the media loop's functions, its total.
  media=$(grep -l -E 'confab::(media::Loop::|sfu::Sfu::receive)' "$out"/cg.out.1-* | head -n 1 || true)
  [ -n "$media" ] || die "no media thread in $out/cg.out.1-*"
  ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$media")
  how="total Ir of the media thread (Loop::run inlined)"
fi
window=$(sed -n 's/.*window ends: \([0-9.]*\) s, \([0-9]*\) datagrams.*/\1/p' "$out/bench.err")
sent=$(sed -n 's/.*window ends: \([0-9.]*\) s, \([0-9]*\) datagrams.*/\2/p' "$out/bench.err")
dropped=$((drops1 - drops0))
received=$((sent - dropped))
[ "$received" -gt 0 ] || die "no datagrams in the window (bench output in $out)"
awk -v ir="$ir" -v rx="$received" -v sent="$sent" -v dr="$dropped" -v d0="$drops0" -v w="$window" -v how="$how" \
  -v f="$media" -v sc="$scenario $size" 'BEGIN {
    printf "callgrind: %s, %s s window\n", sc, w
    printf "  media thread: %.1f M Ir (%s; %s)\n", ir / 1e6, how, f
    printf "  datagrams into the SFU: %d (%d sent by the generator, %d dropped by confab'"'"'s sockets; %d before the window)\n", rx, sent, dr, d0
    printf "  Ir per received datagram: %.0f\n", ir / rx
  }'
grep '^|' "$out/bench.out" | tail -n 1
