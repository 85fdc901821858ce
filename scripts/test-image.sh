#!/usr/bin/env bash
# The appliance image tests: builds the images a user would flash (static aarch64 confab, Debian
# bookworm rootfs from image/rootfs.sh, cached), then
#  - boots the generic-efi-arm64 image in QEMU and updates it (tests/image.rs,
#    qemu_boot_update_and_rollback): v1 boots and serves, data survives a reboot, a signed v2
#    installs into slot B and is committed, a v3 whose daemon cannot start is rolled back on its
#    own, bundles signed with another key or truncated are refused;
#  - checks the Raspberry Pi image's partitions, autoboot.txt and slot boot files (rpi_image_*).
# Needs root (mmdebstrap, file ownership) and ~6 GB in $CARGO_TARGET_DIR. Prints each phase's time.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
phase() { printf 'test-image: [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

need=()
for pair in "qemu-system-aarch64 qemu-system-arm" "mcopy mtools" "openssl openssl" "curl curl"; do
    command -v "${pair%% *}" >/dev/null || need+=("${pair#* }")
done
[ -f /usr/share/AAVMF/AAVMF_CODE.fd ] || need+=(qemu-efi-aarch64)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

binary=$(scripts/build-static.sh aarch64 | tail -n1)
phase "static aarch64 binary: $binary"

work="${CARGO_TARGET_DIR:-$repo/target}/image-test"
rm -rf "$work"
mkdir -p "$work"
v1=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
IFS=. read -r major minor patch <<<"${v1%%[-+]*}"
v2="$major.$minor.$((patch + 1))"
v3="$major.$minor.$((patch + 2))"

scripts/sign-release.sh --generate-key "$work/keys" >/dev/null
scripts/sign-release.sh --generate-key "$work/other-keys" >/dev/null
common=(--binary "$binary" --pubkey "$work/keys/confab.pub" --key "$work/keys/confab.key" --no-xz)

scripts/build-image.sh --board generic-efi-arm64 --version "$v1" --out "$work/v1" "${common[@]}"
phase "v1 image"
scripts/build-image.sh --board generic-efi-arm64 --version "$v2" --out "$work/v2" --slot-only "${common[@]}"
phase "v2 bundle"
# v3: a release whose daemon cannot start (the unit's command replaced by one that crashes).
broken="$work/v3-overlay/etc/systemd/system/confab.service.d"
mkdir -p "$broken"
cat > "$broken/test-crash.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=/bin/sh -c 'echo "confab test release v3: simulated start-up crash" >&2; exit 1'
UNIT
scripts/build-image.sh --board generic-efi-arm64 --version "$v3" --out "$work/v3" --slot-only \
    --overlay "$work/v3-overlay" "${common[@]}"
phase "v3 bundle (daemon crashes)"
# v3's files signed with a key the device does not trust; and v3 with its image cut in half (v3,
# newer than what runs after the rollback, so only the signature or the size can refuse them).
mkdir -p "$work/other-key"
scripts/sign-release.sh --key "$work/other-keys/confab.key" --board generic-efi-arm64 \
    --version "$v3" --image "$work/v3/update/root.img" --boot-file "$work/v3/update/linux" \
    --boot-file "$work/v3/update/initrd" --out "$work/other-key/update" >/dev/null
mkdir -p "$work/truncated"
cp -r "$work/v3/update" "$work/truncated/update"
truncate -s $(( $(stat -c %s "$work/truncated/update/root.img") / 2 )) "$work/truncated/update/root.img"

scripts/build-image.sh --board rpi --version "$v1" --out "$work/rpi" "${common[@]}"
phase "Raspberry Pi image"

CONFAB_IMAGE_DIR="$work" cargo test --locked --test image -- --ignored --nocapture --test-threads=1
phase "done"
