#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit + integration tests (real binary,
# real TLS, real sled files, real sd_notify socket), the health-latency benchmark in quick mode,
# and the static aarch64 build run under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked

step "benchmark: health endpoint latency (quick mode)"
CONFAB_BENCH_QUICK=1 cargo bench --locked --bench health_latency

step "static aarch64 build, run under qemu-aarch64-static"
scripts/build-static.sh aarch64
