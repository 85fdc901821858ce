#!/usr/bin/env bash
# Runs confab from the source tree on embedded defaults: state in ./data, a self-signed local CA,
# a per-device API key generated on first start. Extra arguments go before `serve`,
# e.g. `scripts/run.sh --config my.toml`; settings also come from CONFAB_* / LIVEKIT_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "Building confab (first time: a few minutes)..."
exec cargo run --locked --quiet -- "$@" serve
