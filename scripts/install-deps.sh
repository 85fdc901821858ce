#!/usr/bin/env bash
# Installs what building, running and testing confab needs on a Debian machine, and nothing when
# it is already there (safe to run every time). The static cross build installs its own extras
# (scripts/build-static.sh).
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
command -v make >/dev/null || need_apt+=(make)
command -v curl >/dev/null || need_apt+=(curl)
command -v git >/dev/null || need_apt+=(git)
command -v minisign >/dev/null || need_apt+=(minisign)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The container sandbox test (tests/container.rs) runs confab under bubblewrap.
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# Browser tests (tests/browser.rs): Debian's Chromium. Node.js >= 20 and npm come with the
# machine (Debian's own nodejs is 18, too old for playwright-core); installed from Debian only
# when absent, and then checked below.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "install-deps: the browser tests need Node.js >= 20 (playwright-core); found $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi
# npm packages from their lockfiles: web/ (livekit-client, embedded into the binary by build.rs)
# and tests/browser/ (livekit-client, livekit-server-sdk, playwright-core for the browser test).
root="$(cd "$(dirname "$0")/.." && pwd)"
for dir in "$root/web" "$root/tests/browser"; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "install-deps: npm ci in ${dir#"$root"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
# The web app (web/dist), embedded into the binary by build.rs.
"$root/scripts/build-web.sh"

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: installing the Rust toolchain with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

if command -v rustup >/dev/null; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed" || rustup component add "$c"
  done
fi
