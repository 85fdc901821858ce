#!/usr/bin/env bash
# Measures one room under load: builds confab in release mode, starts it on free high ports with a
# throw-away state directory, and runs tests/browser/load.mjs against it (N livekit-client
# participants in headless Chromium, each publishing fake camera + microphone, all subscribed to
# each other). Prints confab's CPU (% of one core) and peak RSS, the machine's and Chromium's CPU,
# the frames/s every participant decodes of every other, and join() -> first remote frame.
# It measures and reports; it asserts no thresholds.
#
#   scripts/measure-room.sh [--participants N] [--seconds S] [--keep] [-- more load.mjs options]
#
#   --participants N  participants in the room (default 4)
#   --seconds S       measured window, after the full mesh is up and a warm-up (default 30)
#   --keep            keep the temporary directory (confab's log and state) and print its path
#   after --           passed to load.mjs as is (e.g. --warmup 5, --mode v0, --verbose)
#
# Needs cargo, node/npm (tests/browser/node_modules, `npm ci` runs if it is missing), Chromium
# (CHROMIUM_PATH, default /usr/bin/chromium) and curl; scripts/install-deps.sh installs them.
# Exit status: load.mjs's (0 measured, 1 the run broke, 2 bad arguments), or 1 if confab did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

participants=4
seconds=30
keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --participants) participants=${2:?--participants needs a number}; shift 2 ;;
    --participants=*) participants=${1#*=}; shift ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "measure-room.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in cargo node npm curl; do
  command -v "$tool" >/dev/null || { echo "measure-room.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 2; }
done

echo "==> cargo build --release --locked --bin confab"
cargo build --release --locked --bin confab
bin=$root/target/release/confab

if [ ! -f tests/browser/node_modules/livekit-client/dist/livekit-client.esm.mjs ]; then
  echo "==> npm ci in tests/browser"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/confab-measure.XXXXXX")
state=$tmp/data
log=$tmp/confab.log
pid=

stop_confab() {
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    local t0=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "measure-room.sh: confab did not stop within 15 s of SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null && status=0 || status=$?
    echo "confab stopped (SIGTERM, exit status $status, $((SECONDS - t0)) s)"
  fi
  pid=
}

cleanup() {
  stop_confab
  if [ "$keep" = 1 ]; then
    echo "kept $tmp (confab.log, data/)"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Four distinct free ports (3 TCP, 1 UDP) from the kernel's ephemeral (high) range.
read -r https_port http_unused udp_port tcp_port < <(node -e '
  const net = require("node:net"), dgram = require("node:dgram");
  (async () => {
    const tcp = await Promise.all([0, 1, 2].map(() => new Promise((ok) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => ok(s));
    })));
    const u = dgram.createSocket("udp4");
    await new Promise((ok) => u.bind(0, "127.0.0.1", ok));
    const p = [...tcp.map((s) => s.address().port), u.address().port];
    console.log(p.join(" "));
    tcp.forEach((s) => s.close()); u.close();
  })();')
: "$http_unused"

api_key=APImeasure
api_secret=measure-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')

echo "==> starting confab: https $https_port, udp $udp_port, tcp $tcp_port, state $state"
env -i PATH="$PATH" HOME="$HOME" \
  CONFAB_STATE_DIR="$state" \
  CONFAB_BIND=127.0.0.1 \
  CONFAB_HTTPS_PORT="$https_port" \
  CONFAB_HTTP_PORT=0 \
  CONFAB_UDP_PORT="$udp_port" \
  CONFAB_TCP_PORT="$tcp_port" \
  CONFAB_LOG_LEVEL="${CONFAB_LOG_LEVEL:-info}" \
  CONFAB_DISABLE_UPDATE_CHECK=true \
  LIVEKIT_API_KEY="$api_key" \
  LIVEKIT_API_SECRET="$api_secret" \
  "$bin" serve >"$log" 2>&1 </dev/null &
pid=$!

ca=$state/tls/ca.crt
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "measure-room.sh: confab exited during start-up:" >&2
    cat "$log" >&2
    pid=
    exit 1
  fi
  if [ -f "$ca" ] && curl -fsS --max-time 2 --cacert "$ca" -o /dev/null "https://localhost:$https_port/api/health/ready" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "measure-room.sh: confab was not ready within 30 s:" >&2
  tail -n 50 "$log" >&2
  exit 1
fi
echo "confab ready (pid $pid, $("$bin" --version 2>/dev/null || echo "version unknown"))"

echo "==> load.mjs: $participants participants, $seconds s"
out=$tmp/load.out
set +e
(cd tests/browser && NODE_EXTRA_CA_CERTS="$ca" LIVEKIT_API_SECRET="$api_secret" \
  node load.mjs --url "wss://localhost:$https_port" --api-key "$api_key" --ca "$ca" \
    --pid "$pid" --participants "$participants" --seconds "$seconds" "${extra[@]}") 2>&1 | tee "$out"
load_status=${PIPESTATUS[0]}
set -e

confab_pid=$pid
rss_end=$(awk '/^VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo "?")
stop_confab

echo
echo "==> confab log: $(wc -l <"$log") lines; warnings and errors:"
# tracing colours its output even into a file: strip the escapes first.
if sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^[^ ]+ +(WARN|ERROR) ' >"$tmp/warn.log"; then
  # The distinct messages with counts (timestamps stripped), then the first lines as they were.
  sed -E 's/^[^ ]+ +//' "$tmp/warn.log" | sed -E 's/[0-9a-f]{8,}|[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' \
    | sort | uniq -c | sort -rn | head -n 20
  echo "  first of them as logged:"
  head -n 20 "$tmp/warn.log" | sed 's/^/  /'
else
  echo "  (none)"
fi

echo
echo "==> figures (confab pid $confab_pid was at VmHWM $rss_end before SIGTERM)"
grep -E '^load: ' "$out" || echo "load: (no figures: load.mjs exited with status $load_status)"
exit "$load_status"
