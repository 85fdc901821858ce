#!/usr/bin/env bash
# Build a statically linked release binary of confab for Linux musl.
#
#   scripts/build-static.sh [aarch64|x86_64]     (default: aarch64)
#
# Installs the missing toolchain pieces itself (rustup target, Debian cross/musl packages; apt is
# skipped when everything is present), runs `cargo build --release --locked --target <triple>
# --bin confab` (only the product: the crate's other binary, confab-bench, ships nowhere; honours
# CARGO_TARGET_DIR), checks with `file` that the result is static for the right
# architecture, runs its `--version` (under qemu-aarch64-static for aarch64), and fails above
# 18 MB (aarch64) or 22 MB (x86_64). Linker/CC settings live in .cargo/config.toml. The last line
# printed is the binary's path.
set -euo pipefail

arch="${1:-aarch64}"
case "$arch" in
    aarch64)
        triple=aarch64-unknown-linux-musl
        file_arch="ARM aarch64"
        max_mb=18
        runner=(qemu-aarch64-static)
        # command that must exist -> Debian package that provides it
        needs=(
            "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu"
            "aarch64-linux-gnu-ar binutils-aarch64-linux-gnu"
            "aarch64-linux-musl-gcc musl-dev:arm64"
            "qemu-aarch64-static qemu-user-static"
            "file file"
        )
        ;;
    x86_64)
        triple=x86_64-unknown-linux-musl
        file_arch="x86-64"
        # x86-64 code is larger (aws-lc carries several SIMD variants): 16.65 MB where aarch64 is 13.5.
        max_mb=22
        runner=()
        needs=(
            "x86_64-linux-gnu-gcc gcc"
            "ar binutils"
            "x86_64-linux-musl-gcc musl-tools"
            "file file"
        )
        ;;
    *)
        echo "usage: $0 [aarch64|x86_64]" >&2
        exit 2
        ;;
esac

max_bytes=$((max_mb * 1000 * 1000))   # see docs/development.md (Static builds)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Resolve a relative CARGO_TARGET_DIR against the caller's directory before changing directory.
if [[ -n "${CARGO_TARGET_DIR:-}" && "${CARGO_TARGET_DIR}" != /* ]]; then
    CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
    export CARGO_TARGET_DIR
fi
cd "$repo"

die() { echo "build-static: ERROR: $*" >&2; exit 1; }
log() { echo "build-static: $*"; }

# --- toolchain -------------------------------------------------------------------------------
command -v rustup >/dev/null || die "rustup not found (needed to add the $triple target)"
if ! rustup target list --installed | grep -qx "$triple"; then
    log "adding rust target $triple"
    rustup target add "$triple" >/dev/null 2>&1 || die "rustup target add $triple failed"
fi

missing=()
for entry in "${needs[@]}"; do
    read -r cmd pkg <<<"$entry"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing: ${missing[*]}"
    apt_log="$(mktemp /tmp/build-static-apt.XXXXXX.log)"
    {
        if [[ " ${missing[*]} " == *":arm64 "* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
            "${sudo[@]}" dpkg --add-architecture arm64
        fi
        "${sudo[@]}" apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >"$apt_log" 2>&1 || { tail -n 30 "$apt_log" >&2; die "apt install failed (full log: $apt_log)"; }
    rm -f "$apt_log"
    for entry in "${needs[@]}"; do
        read -r cmd pkg <<<"$entry"
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing $pkg"
    done
fi

# --- build -----------------------------------------------------------------------------------
log "cargo build --release --locked --target $triple --bin confab"
start=$(date +%s.%N)
cargo build --release --locked --target "$triple" --bin confab
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

target_dir="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)" || true
target_dir="${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}"
bin="$target_dir/$triple/release/confab"
[[ -x "$bin" ]] || die "binary not found at $bin"

# --- checks ----------------------------------------------------------------------------------
info="$(file -b "$bin")"
[[ "$info" == *"$file_arch"* ]] || die "$bin is not a $file_arch binary: $info"
[[ "$info" == *"statically linked"* || "$info" == *"static-pie linked"* ]] ||
    die "$bin is not statically linked: $info"

version="$("${runner[@]}" "$bin" --version 2>&1)" || die "'$bin --version' failed: $version"
want="confab $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1) ("
[[ "$version" == "$want"* ]] || die "'$bin --version' printed '$version', expected '$want…'"

bytes=$(stat -c %s "$bin")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1000000 }')

log "file:    $info"
log "version: $version"
log "build:   ${secs} s"
log "size:    $bytes bytes ($mb MB)"
((bytes <= max_bytes)) || die "$bin is $mb MB, above the $max_mb MB limit for $arch"
echo "$bin"
