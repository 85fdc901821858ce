#!/usr/bin/env bash
# Builds the web app into web/dist (type-check with tsc, bundle with esbuild), which build.rs
# embeds into the binary. Installs web/node_modules from the lockfile first when it is missing or
# older than package-lock.json. Safe to run every time: unchanged output leaves web/dist as it is,
# so cargo does not rebuild. Needs Node.js >= 20 and npm (scripts/install-deps.sh provides them).
set -euo pipefail
web="$(cd "$(dirname "$0")/../web" && pwd)"
# shellcheck source=scripts/node-env.sh
. "$web/../scripts/node-env.sh"
cd "$web"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ] || [ ! -x node_modules/.bin/esbuild ]; then
  echo "build-web: npm ci in web/"
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
