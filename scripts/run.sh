#!/usr/bin/env bash
# Runs confab from the source tree on embedded defaults: state in ./data, a self-signed local CA,
# a per-device API key generated on first start. Extra arguments go before `serve`,
# e.g. `scripts/run.sh --config my.toml`; settings also come from CONFAB_* / LIVEKIT_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Node.js >= 20 first on PATH (install-deps.sh may have put one in the cache).
. scripts/node-env.sh
# The release build: an optimised SFU is what people should meet (a debug build forwards media
# many times slower).
echo "Building confab (release; the first time takes several minutes)..."
exec cargo run --release --locked --quiet -- "$@" serve
