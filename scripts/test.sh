#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit + integration tests (real binary,
# real TLS, real sled files, real sd_notify socket), the health-latency benchmark in quick mode,
# and the static aarch64 build run under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Node.js >= 20 first on PATH (install-deps.sh may have put one in the cache).
. scripts/node-env.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
results=$(mktemp)
cargo test --locked 2>&1 | tee "$results"
passed=$(grep -o 'test result: [a-zA-Z]*\. [0-9]* passed; [0-9]* failed' "$results" | awk '{p+=$4; f+=$6} END {print p+0}')
failed=$(grep -o 'test result: [a-zA-Z]*\. [0-9]* passed; [0-9]* failed' "$results" | awk '{p+=$4; f+=$6} END {print f+0}')
rm -f "$results"

step "systemd units: verify, sandbox exposure"
scripts/check-units.sh

step "fuzzing: every target for 20 s (scripts/fuzz.sh; a crash fails)"
scripts/fuzz.sh 20

step "benchmark: health endpoint latency (quick mode)"
CONFAB_BENCH_QUICK=1 cargo bench --locked --bench health_latency

step "static aarch64 build, run under qemu-aarch64-static"
scripts/build-static.sh aarch64

step "release pipeline: scripts/release.sh --dry-run --fast (reuses the aarch64 build above)"
scripts/release.sh --dry-run --fast

step "appliance image: build, boot in QEMU, update, roll back (scripts/test-image.sh)"
if [ "$(id -u)" -eq 0 ]; then
    results=$(mktemp)
    scripts/test-image.sh 2>&1 | tee "$results"
    passed=$((passed + $(grep -o 'test result: [a-zA-Z]*\. [0-9]* passed' "$results" | awk '{p+=$4} END {print p+0}')))
    rm -f "$results"
else
    echo "SKIPPED: building images needs root; run: sudo scripts/test-image.sh"
fi

# One closing line for the whole suite (cargo prints one per test binary).
echo
echo "tests: $passed passed, $failed failed"
